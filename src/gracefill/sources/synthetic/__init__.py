"""The synthetic world: a complete, offline stand-in for the GRACE and ERA5-Land downloads.

`generate_world` builds, from one seed, three datasets on the native grid in the
normalised layout every source produces (dims ``(time, lat, lon)``, lat ascending, lon in
-180..180, float32, NaN over ocean):

``grace``    ``twsa`` (mm): GRACE-like TWSA and its noise std ``uncertainty`` (mm),
             observed months only, attr ``months_missing``.
``era5land`` ``precipitation``, ``temperature``, ``evaporation``, ``runoff`` and
             ``land_water_storage``: what a reanalysis land model gives, all months.
``truth``    ``twsa_true`` (mm): the noise-free GRACE-resolution truth, all months, so the
             workflow can score its gap reconstruction (twin experiment), and
             ``twsa_direct_deficit`` (mm): the drought's direct part of it (step 5).

The model, step by step (every constant below is named in the module of its step: ``geometry``
(step 1), ``climate`` (2), ``storage`` (3 and the land model's biases), ``world`` (4-7, and
`generate_world`, which runs the steps as a chain of named functions)):

1. Grid and land. Land = ``global_land_mask.globe.is_land`` at cell centres. Spatial
   smoothing is a separable Gaussian in kilometres: constant width in latitude, width in
   longitude cells growing as 1/cos(lat); it wraps in longitude when the region spans
   360 degrees (done in Fourier space), otherwise the region edge is a hard boundary.
   "Correlated noise" is white noise smoothed this way and rescaled to unit variance
   exactly (the variance of the filter is computed, not estimated).
2. Climate. Precipitation (mm/month) = climatology x exp(anomaly). The climatology is
   zonal bands that move with the sun: an ITCZ oscillating +-``ITCZ_SHIFT_DEG``, a
   summer monsoon band, winter-strong mid-latitude storm tracks and a small base rate,
   scaled by continentality (interior drier) and a static random "orography" pattern.
   The log anomaly is correlated noise (``PRECIP_ANOM_CORR_KM``, AR(1) ``PRECIP_AR1``),
   plus an ENSO-like mode (AR(2) with a ~4-year quasi-period) loading on the tropics,
   two further large-scale modes with random patterns, and a small trend.
   Temperature (K) = latitude climatology + a seasonal cycle growing with latitude and
   continentality + a static pattern + correlated AR(1) anomalies + ENSO + a warming
   trend (``WARMING_K_PER_YEAR``, amplified toward the poles).
3. Water balance (`run_water_balance`, per cell, vectorised, one step per month):
   snow falls below ``SNOW_T_HIGH_C`` (all snow below ``SNOW_T_LOW_C``) and melts by
   degree days; snow above ``ICE_THRESHOLD_MM`` drains as ice discharge; rain and melt
   fill a soil bucket of capacity 150..500 mm (random) x a root-zone factor growing with
   aridity (annual PET / precipitation, clipped to 1..``ROOT_ZONE_MAX_ARIDITY``, to the
   power ``ROOT_ZONE_ARIDITY_EXPONENT``: dry climates grow deeper root zones); ET follows
   dS/dt = -PET x min(1, soil / (``ET_WET_FRACTION`` x capacity)), solved exactly over the
   month (at PET, then an exponential dry-down), with PET linear in temperature above
   0 C; saturation excess splits into surface runoff and recharge; percolation adds
   recharge; a linear groundwater reservoir gives baseflow, its time constant drawn per
   cell within ``groundwater_tau_months`` (default 12..48 months; 0 = no memory, the
   month's recharge leaves as baseflow at once). Runoff = surface + baseflow + ice
   discharge. Storage = soil + snow + groundwater, and dS = P - ET - R holds exactly.
   Spin-up repeats the period's mean annual cycle, with the slow stores set to
   equilibrium after the first pass, so there is no initial transient.
4. True storage = that water balance (monthly mean of the stores) + human and ice terms
   the fluxes do not see: linear trends in ``STORAGE_TREND_BOXES`` (groundwater depletion,
   ice loss; linear in time over the whole period, so they continue past the training
   months; off with ``storage_trends=False``) + the drought's direct storage deficit.
5. The drought (optional), over its box from ``DROUGHT_LEAD_MONTHS`` before the start to
   the end: precipitation x (1 - ``precip_deficit``) and temperature + ``warming_k``
   (which raises PET, so ET, in the true water balance and in the land model, and shows
   in the temperature predictor); defaults ``DROUGHT_PRECIP_DEFICIT`` and
   ``DROUGHT_WARMING_K``. These flux-driven parts are seen by the predictors. On top, a
   direct storage deficit (``depth_mm``, may be 0) that no predictor sees: ramping
   linearly from 0 at the lead start to ``depth_mm`` at the start, held to the end,
   recovering linearly over ``DROUGHT_RECOVERY_MONTHS``, scaled so that its box mean at
   GRACE resolution (step 6) is ``depth_mm`` x that ramp. ``twsa_direct_deficit`` holds
   this direct part at GRACE resolution, as an anomaly over the same baseline (so exactly
   that ramp, <= 0, unless the drought overlaps the baseline months), and
   ``twsa_true - twsa_direct_deficit`` is the world without it. The spin-up ignores the
   drought.
6. GRACE resolution: the true storage smoothed with a Gaussian of half-width
   ``GRACE_HALFWIDTH_KM`` (weight 1/2 at that distance), normalised over land (no ocean
   leakage); anomaly relative to the mean over the observed months of 2004-01..2009-12
   (as CSR), or, if the period has none, over the observed (training) months. ``grace``
   adds measurement noise: correlated noise over ``GRACE_NOISE_CORR_KM``, independent
   month to month, times a std (mm, written as ``uncertainty``). Homoscedastic: the std
   is ``grace_noise_std_mm`` everywhere. Heteroscedastic (default): a static map,
   1 + (``NOISE_LAT_CONTRAST`` - 1) cos^2(lat) (sparser ground tracks at low latitudes)
   times exp(``NOISE_PATTERN_LOG_STD`` x correlated noise over ``NOISE_PATTERN_CORR_KM``),
   times a per-month factor from ``GRACE_NOISE_EPOCHS`` (late GRACE noisier, GRACE-FO
   quieter); scaled so that its mean over land area and observed months is
   ``grace_noise_std_mm``. ``grace - truth`` is the noise.
7. Land model (``era5land``): the same bucket run with biased parameters (capacity x
   ``LAND_MODEL_CAPACITY_FACTOR``, PET x ``LAND_MODEL_PET_FACTOR``), no groundwater store
   (drainage leaves as runoff at once), no human or ice terms and no direct drought
   deficit, forced by the precipitation it reports, which carries a forcing error of
   ``PRECIP_FORCING_ERROR`` (log std) against the true precipitation, and by the true
   temperature. Its evaporation and runoff are its own fluxes; ``land_water_storage`` is
   the absolute monthly-mean storage (residual soil water ``LAND_MODEL_RESIDUAL_FRACTION``
   x capacity + soil + snow), so ``diff(land_water_storage)[t] = (F[t-1] + F[t]) / 2``
   with ``F = P - ET - R``.

Random draws come from one generator in a fixed order (static fields, indices, monthly
fields, GRACE noise, then the noise-std pattern, drawn whatever the options), so the world
is reproducible from the seed.
"""

from .climate import precipitation_climatology, temperature_climatology
from .geometry import Grid, correlated_noise, land_mask, make_grid, smooth
from .storage import BucketParams, root_zone_factor, run_water_balance
from .world import FLUX_UNITS, GRACE_NOISE_STD_MM, STORAGE_TREND_BOXES, generate_world, write_world

__all__ = [
    "BucketParams", "FLUX_UNITS", "GRACE_NOISE_STD_MM", "Grid", "STORAGE_TREND_BOXES", "correlated_noise",
    "generate_world", "land_mask", "make_grid", "precipitation_climatology", "root_zone_factor", "run_water_balance",
    "smooth", "temperature_climatology", "write_world",
]
