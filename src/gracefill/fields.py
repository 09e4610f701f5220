"""The variables of the normalised raw products: the vocabulary that the sources write and the
predictors, the baselines and the regridding read, whatever the source."""

#: Raw product -> the variables its file (resources/raw/<source>/<run>/<product>.nc) holds.
#: ``era5land`` is the predictors' product (ERA5-Land or the synthetic world's), ``truth`` only
#: the synthetic world writes, ``land_model`` is GLDAS's storage with ``sources.land_model: gldas``.
PRODUCT_VARIABLES = {
    "grace": ("twsa",),
    "era5land": ("precipitation", "temperature", "evaporation", "runoff", "land_water_storage"),
    "truth": ("twsa_true", "twsa_direct_deficit"),
    "land_model": ("land_water_storage",),
}
