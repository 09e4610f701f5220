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

The model, step by step (every constant below is named at module level):

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
from __future__ import annotations

import importlib.util
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.fft
import xarray as xr
from scipy import ndimage
from scipy.special import ndtr

# --- geometry and smoothing -------------------------------------------------------------
LAND_MASK_FILE = "globe_combined_mask_compressed.npz"  # shipped by global-land-mask
LAND_MASK_BLOCK_ROWS = 256  # rows of the 1 km mask decompressed at a time
KM_PER_DEGREE = 111.195  # great-circle km per degree on a sphere of radius 6371 km
KERNEL_TRUNCATE = 3.0  # Gaussian kernels cut at this many sigmas (non-wrapping direction)
COS_LAT_FLOOR = 0.01  # keeps the longitude width finite at the poles
HALFWIDTH_TO_SIGMA = 1.0 / np.sqrt(2.0 * np.log(2.0))  # Gaussian half-width -> sigma

# --- precipitation (mm/month) -----------------------------------------------------------
PRECIP_BASE = 12.0  # everywhere, all year
PRECIP_ITCZ = 230.0  # peak of the ITCZ band
ITCZ_WIDTH_DEG = 8.0
ITCZ_SHIFT_DEG = 10.0  # seasonal excursion of the ITCZ (north in Jul-Aug)
PRECIP_MONSOON = 150.0  # summer-hemisphere monsoon band peak
MONSOON_LAT_DEG = 15.0
MONSOON_WIDTH_DEG = 6.0
PRECIP_STORM = 70.0  # mid-latitude storm tracks
STORM_LAT_DEG = 50.0
STORM_WIDTH_DEG = 10.0
STORM_WINTER_BOOST = 0.3  # relative winter excess of the storm tracks
CONTINENTAL_DRYING = 0.7  # factor 1 + drying * (0.5 - land fraction within ~800 km)
CONTINENTALITY_KM = 800.0
PRECIP_PATTERN_STD = 0.35  # log std of the static "orography" pattern
PATTERN_CORR_KM = 600.0
PRECIP_ANOM_STD = 0.35  # log std of monthly anomalies
PRECIP_ANOM_CORR_KM = 400.0
PRECIP_AR1 = 0.5
PRECIP_TREND_STD = 0.005  # log std of the trend, per year
TREND_CORR_KM = 1500.0
ENSO_PERIOD_MONTHS = 48.0
ENSO_AR2_RADIUS = 0.95  # damping of the AR(2) oscillator (closer to 1: sharper period)
ENSO_PRECIP_LOAD = 0.25  # log precipitation per unit ENSO index (tropical band)
ENSO_TEMP_LOAD = 0.3  # K per unit ENSO index (tropical band)
ENSO_BAND_DEG = 15.0
MODE_AR1 = (0.7, 0.9)  # two further large-scale modes: month-to-month persistence
MODE_PRECIP_LOAD = (0.15, 0.08)  # their log precipitation loadings
MODE_CORR_KM = 1500.0
MODE_BURN_IN = 120  # months discarded when starting the index processes

# --- temperature (K) --------------------------------------------------------------------
TEMP_EQUATOR_K = 300.15
TEMP_LAT_COEF = 0.0075  # K per degree^2 of latitude
TEMP_SEASON_MIN = 1.0  # K half-amplitude at the equator
TEMP_SEASON_SLOPE = 14.0  # K half-amplitude added at 60 degrees (grows as |lat|^1.5)
TEMP_SEASON_MAX_LAT = 70.0
TEMP_PATTERN_STD = 1.5
TEMP_ANOM_STD_EQUATOR = 0.6
TEMP_ANOM_STD_POLE = 2.5
TEMP_ANOM_CORR_KM = 600.0
TEMP_AR1 = 0.6
WARMING_K_PER_YEAR = 0.02  # at the equator; x (1 + |lat| / POLAR_AMPLIFICATION_DEG)
POLAR_AMPLIFICATION_DEG = 45.0
TREND_REFERENCE_YEAR = 2002.0

# --- water balance ----------------------------------------------------------------------
FREEZE_K = 273.15
SNOW_T_LOW_C = -2.0  # all precipitation is snow below
SNOW_T_HIGH_C = 2.0  # all rain above
DEGREE_DAY_MM = 3.0  # melt, mm per day per K above 0 C
PET_MM_PER_DAY_K = 0.15  # potential ET, mm per day per K above 0 C
ET_WET_FRACTION = 0.7  # ET is at its potential above this fraction of capacity
PET_FLOOR_MM = 1e-9  # keeps the time at potential finite when PET is 0
PERCOLATION_RATE = 0.1  # per month, x (soil / capacity)^2, to groundwater
SURFACE_RUNOFF_FRACTION = 0.5  # of saturation excess; the rest recharges
CAPACITY_MIN_MM, CAPACITY_MAX_MM = 150.0, 500.0  # before the root-zone factor
ROOT_ZONE_ARIDITY_EXPONENT = 0.5  # capacity x clip(aridity, 1, max) ** exponent: deeper roots where dry
ROOT_ZONE_MAX_ARIDITY = 4.0  # aridity = annual PET / annual precipitation
DAYS_PER_MONTH = 365.25 / 12.0
TAU_GW_MIN_MONTHS, TAU_GW_MAX_MONTHS = 12.0, 48.0  # default range of the groundwater time constant
TAU_GW_LIMIT_MONTHS = 240.0  # largest time constant accepted
TAU_FLOOR_MONTHS = 1e-6  # time constants below drain fully within the month (no division by 0)
ICE_THRESHOLD_MM = 1000.0  # snow above this drains as ice discharge
TAU_ICE_MONTHS = 12.0
SPINUP_YEARS = 5
INITIAL_SOIL_FRACTION = 0.5

# --- land model (ERA5-Land stand-in) ----------------------------------------------------
LAND_MODEL_CAPACITY_FACTOR = 0.7
LAND_MODEL_PET_FACTOR = 1.15
LAND_MODEL_RESIDUAL_FRACTION = 0.3  # soil water below wilting point, counted in storage
PRECIP_FORCING_ERROR = 0.1  # log std of reanalysis precipitation against the truth
FORCING_ERROR_CORR_KM = 300.0
FORCING_ERROR_AR1 = 0.3

# --- GRACE ------------------------------------------------------------------------------
GRACE_HALFWIDTH_KM = 300.0
GRACE_NOISE_STD_MM = 15.0  # mean noise std over land area and observed months
GRACE_NOISE_CORR_KM = 150.0
NOISE_LAT_CONTRAST = 2.5  # noise std at the equator / at the poles (ground-track density)
NOISE_PATTERN_LOG_STD = 0.25  # log std of the static random factor of the noise std
NOISE_PATTERN_CORR_KM = 300.0
GRACE_NOISE_EPOCHS = (  # (first month, relative noise std); months before the first use the first
    ("2002-01", 1.0),  # GRACE
    ("2011-01", 1.3),  # late GRACE: battery management, degraded accelerometer data
    ("2018-06", 0.8),  # GRACE-FO
)
BASELINE_START, BASELINE_END = "2004-01", "2009-12"  # CSR: time_mean_removed 2004.0-2009.999

# --- drought ----------------------------------------------------------------------------
DROUGHT_LEAD_MONTHS = 6
DROUGHT_RECOVERY_MONTHS = 6
DROUGHT_PRECIP_DEFICIT = 0.7  # default fraction of precipitation removed
DROUGHT_WARMING_K = 2.0  # default temperature anomaly over the box (K)
DROUGHT_MAX_PRECIP_DEFICIT = 0.95
DROUGHT_MAX_WARMING_K = 10.0
DROUGHT_KEYS = ("lat_min", "lat_max", "lon_min", "lon_max", "start", "end", "depth_mm")
DROUGHT_OPTIONAL_KEYS = ("precip_deficit", "warming_k")

SOURCE_ATTR = "gracefill synthetic world"
FLUX_UNITS = "mm month-1"  # monthly totals, mm of liquid water per calendar month


class StorageTrendBox(NamedTuple):
    """A region with a linear storage trend that the fluxes and the land model do not see."""

    name: str
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float
    rate_mm_per_year: float


STORAGE_TREND_BOXES = (
    StorageTrendBox("NW India groundwater", 24.0, 32.0, 70.0, 79.0, -20.0),
    StorageTrendBox("North China Plain groundwater", 34.0, 41.0, 113.0, 120.0, -15.0),
    StorageTrendBox("California Central Valley groundwater", 35.0, 41.0, -123.0, -118.0, -20.0),
    StorageTrendBox("High Plains aquifer", 32.0, 42.0, -104.0, -97.0, -6.0),
    StorageTrendBox("Middle East groundwater", 30.0, 38.0, 40.0, 55.0, -15.0),
    StorageTrendBox("Gulf of Alaska glaciers", 58.0, 62.5, -155.0, -135.0, -50.0),
    StorageTrendBox("Patagonian icefields", -52.0, -46.0, -76.0, -72.0, -50.0),
    StorageTrendBox("Greenland and eastern Canadian Arctic ice", 59.5, 84.0, -74.0, -10.0, -50.0),
)


# ======================================================================================
# grid and smoothing
# ======================================================================================
@dataclass(frozen=True)
class Grid:
    """Regular lat/lon grid: spacing, wrap flag and land mask."""

    lat: np.ndarray
    lon: np.ndarray
    dlat: float
    dlon: float
    wrap: bool
    land: np.ndarray  # bool (nlat, nlon)

    @property
    def shape(self) -> tuple[int, int]:
        return self.lat.size, self.lon.size

    def lat2d(self) -> np.ndarray:
        return np.broadcast_to(self.lat[:, None], self.shape)

    def lon2d(self) -> np.ndarray:
        return np.broadcast_to(self.lon[None, :], self.shape)


def _regular_spacing(values: np.ndarray, name: str) -> float:
    """Spacing of a 1-D ascending regular coordinate; ValueError naming it otherwise."""
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"{name}: expected a 1-D array of at least 2 cell centres")
    step = np.diff(values)
    if not np.all(step > 0) or not np.allclose(step, step[0], rtol=1e-6, atol=1e-9):
        raise ValueError(f"{name}: expected ascending, regularly spaced cell centres")
    return float(step[0])


def land_mask(lat2d: np.ndarray, lon2d: np.ndarray) -> np.ndarray:
    """``global_land_mask.globe.is_land`` at the given points, without holding its 1 GB mask.

    Importing ``globe`` inflates a 21600 x 43200 mask (about 6 s, 0.9 GB); this streams the
    same file row block by row block and keeps only the rows it needs (same index rule, so
    the same answer). If ``globe`` is already imported, it is simply called.
    """
    lat2d = np.asarray(lat2d, dtype=np.float64)
    lon2d = np.asarray(lon2d, dtype=np.float64)
    globe = sys.modules.get("global_land_mask.globe")
    if globe is not None:
        return np.asarray(globe.is_land(lat2d, lon2d), dtype=bool)
    spec = importlib.util.find_spec("global_land_mask")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("global_land_mask: package not installed (pip install global-land-mask)")
    path = Path(list(spec.submodule_search_locations)[0]) / LAND_MASK_FILE
    if not path.is_file():  # a future release stores it differently: use the package itself
        from global_land_mask import globe as globe_module

        return np.asarray(globe_module.is_land(lat2d, lon2d), dtype=bool)
    with zipfile.ZipFile(path) as archive:
        with archive.open("lat.npy") as f:
            mask_lat = np.load(f)
        with archive.open("lon.npy") as f:
            mask_lon = np.load(f)
        # the package's lat_to_index / lon_to_index
        lat_c = np.clip(lat2d, mask_lat.min(), mask_lat.max())
        lon_c = np.clip(lon2d, mask_lon.min(), mask_lon.max())
        lat_i = ((lat_c - mask_lat[0]) / (mask_lat[1] - mask_lat[0])).astype(int)
        lon_i = ((lon_c - mask_lon[0]) / (mask_lon[1] - mask_lon[0])).astype(int)
        rows, row_of = np.unique(lat_i, return_inverse=True)
        with archive.open("mask.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if fortran or dtype != np.bool_ or len(shape) != 2:
                raise ValueError(f"{LAND_MASK_FILE}: unexpected mask layout {shape}, {dtype}")
            ncol = shape[1]
            kept = np.empty((rows.size, ncol), dtype=bool)
            first = 0
            for start in range(0, int(rows[-1]) + 1, LAND_MASK_BLOCK_ROWS):
                n = min(LAND_MASK_BLOCK_ROWS, shape[0] - start)
                block = np.frombuffer(f.read(n * ncol), dtype=bool).reshape(n, ncol)
                last = np.searchsorted(rows, start + n)
                kept[first:last] = block[rows[first:last] - start]
                first = last
    is_ocean = kept[row_of.reshape(lat_i.shape), lon_i]
    return ~is_ocean


def make_grid(lat: np.ndarray, lon: np.ndarray) -> Grid:
    """Validate the native grid and attach the real land mask (land where the centre is land)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    dlat = _regular_spacing(lat, "lat")
    dlon = _regular_spacing(lon, "lon")
    if lat[0] < -90 or lat[-1] > 90:
        raise ValueError("lat: cell centres must lie within -90..90")
    if lon[0] < -180 or lon[-1] > 180:
        raise ValueError("lon: cell centres must lie within -180..180")
    wrap = bool(np.isclose(lon.size * dlon, 360.0, atol=1e-6))
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    return Grid(lat=lat, lon=lon, dlat=dlat, dlon=dlon, wrap=wrap, land=land_mask(lat2d, lon2d))


def _gauss_kernel(sigma: float, truncate: float = KERNEL_TRUNCATE) -> np.ndarray:
    """Normalised sampled Gaussian of width ``sigma`` cells, cut at ``truncate`` sigmas."""
    radius = int(np.ceil(truncate * sigma))
    if radius < 1:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def smooth(field: np.ndarray, grid: Grid, sigma_km: float, *, squared: bool = False) -> np.ndarray:
    """Gaussian smoothing of ``field[..., lat, lon]`` with width ``sigma_km`` on the sphere.

    Separable: latitude pass with a constant width in cells, longitude pass with a width of
    ``sigma_km / (dx cos(lat))`` cells per row (circular, in Fourier space, when the grid
    wraps; otherwise cut at the region edge). ``squared=True`` uses the squared weights,
    which applied to ones gives the variance of smoothed unit white noise.
    """
    field = np.asarray(field)
    nlat, nlon = grid.shape
    coslat = np.maximum(np.cos(np.deg2rad(grid.lat)), COS_LAT_FLOOR)
    sig_lon = sigma_km / (KM_PER_DEGREE * grid.dlon * coslat)
    if grid.wrap:
        freq = scipy.fft.rfftfreq(nlon)
        spec = np.exp(-2.0 * np.pi**2 * sig_lon[:, None] ** 2 * freq[None, :] ** 2)
        if squared:
            kern = scipy.fft.irfft(spec, n=nlon, axis=-1)
            spec = scipy.fft.rfft(kern**2, axis=-1).real
        spec = spec.astype(field.dtype if field.dtype == np.float32 else np.float64)
        out = scipy.fft.irfft(scipy.fft.rfft(field, axis=-1) * spec, n=nlon, axis=-1)
    else:
        out = np.empty(field.shape, dtype=np.result_type(field.dtype, np.float32))
        for j in range(nlat):
            w = _gauss_kernel(sig_lon[j])
            out[..., j, :] = ndimage.correlate1d(
                field[..., j, :], w**2 if squared else w, axis=-1, mode="constant"
            )
    w = _gauss_kernel(sigma_km / (KM_PER_DEGREE * grid.dlat))
    return ndimage.correlate1d(out, w**2 if squared else w, axis=-2, mode="constant")


def correlated_noise(rng: np.random.Generator, grid: Grid, sigma_km: float, n: int | None = None) -> np.ndarray:
    """Unit-variance Gaussian noise on the grid, smoothed over ``sigma_km``; shape (n, lat, lon) or (lat, lon)."""
    shape = grid.shape if n is None else (n, *grid.shape)
    white = rng.standard_normal(shape, dtype=np.float32)
    var = smooth(np.ones(grid.shape), grid, sigma_km, squared=True)
    field = smooth(white, grid, sigma_km)
    field /= np.sqrt(var).astype(np.float32)
    return field


def _ar1_in_place(noise: np.ndarray, phi: float) -> np.ndarray:
    """Turn independent unit-variance months (axis 0) into a stationary AR(1) with the same variance."""
    scale = np.float32(np.sqrt(1.0 - phi**2))
    for t in range(1, noise.shape[0]):
        noise[t] *= scale
        noise[t] += np.float32(phi) * noise[t - 1]
    return noise


def _box_mask(grid: Grid, lat_min: float, lat_max: float, lon_min: float, lon_max: float) -> np.ndarray:
    """Cells whose centre lies in the box; lon_min > lon_max means the box crosses the dateline."""
    lat_ok = (grid.lat >= lat_min) & (grid.lat <= lat_max)
    if lon_min <= lon_max:
        lon_ok = (grid.lon >= lon_min) & (grid.lon <= lon_max)
    else:
        lon_ok = (grid.lon >= lon_min) | (grid.lon <= lon_max)
    return lat_ok[:, None] & lon_ok[None, :]


def _lon_distance(lon: np.ndarray, centre: float) -> np.ndarray:
    """Signed longitude difference in -180..180 degrees."""
    return (lon - centre + 180.0) % 360.0 - 180.0


# ======================================================================================
# climate
# ======================================================================================
def _season(month_index: np.ndarray | int) -> np.ndarray:
    """Seasonal phase: +1 in mid July-August (northern summer), -1 in mid January-February."""
    return np.cos(2.0 * np.pi * (np.asarray(month_index) - 6.5) / 12.0)


def precipitation_climatology(grid: Grid, land_frac: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Mean precipitation (mm/month) for each calendar month, shape (12, lat, lon).

    Zonal bands moving with the sun (ITCZ, summer monsoon, winter-strong storm tracks) on a
    base rate, times continentality (1 + CONTINENTAL_DRYING (0.5 - land_frac)) and
    exp(pattern) (a static field of unit variance, scaled by PRECIP_PATTERN_STD).
    """
    lat = grid.lat2d()
    hemi = np.sign(lat) + (lat == 0)
    scale = (1.0 + CONTINENTAL_DRYING * (0.5 - land_frac)) * np.exp(
        PRECIP_PATTERN_STD * pattern - 0.5 * PRECIP_PATTERN_STD**2
    )
    out = np.empty((12, *grid.shape))
    for m in range(12):
        s = float(_season(m))
        itcz = PRECIP_ITCZ * np.exp(-0.5 * ((lat - ITCZ_SHIFT_DEG * s) / ITCZ_WIDTH_DEG) ** 2)
        monsoon = (
            PRECIP_MONSOON
            * np.exp(-0.5 * ((np.abs(lat) - MONSOON_LAT_DEG) / MONSOON_WIDTH_DEG) ** 2)
            * np.maximum(s * hemi, 0.0) ** 1.5
        )
        storm = (
            PRECIP_STORM
            * np.exp(-0.5 * ((np.abs(lat) - STORM_LAT_DEG) / STORM_WIDTH_DEG) ** 2)
            * (1.0 - STORM_WINTER_BOOST * s * hemi)
        )
        out[m] = (PRECIP_BASE + itcz + monsoon + storm) * scale
    return out


def temperature_climatology(grid: Grid, land_frac: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Mean 2 m temperature (K) for each calendar month, shape (12, lat, lon).

    Warm equator, cold poles; the seasonal half-amplitude grows with |lat|^1.5 and with
    continentality; hemispheres in opposite phase; plus a static pattern (unit variance,
    scaled by TEMP_PATTERN_STD) standing in for elevation.
    """
    lat = grid.lat2d()
    alat = np.minimum(np.abs(lat), TEMP_SEASON_MAX_LAT)
    amp = (TEMP_SEASON_MIN + TEMP_SEASON_SLOPE * (alat / 60.0) ** 1.5) * (0.5 + land_frac)
    mean = TEMP_EQUATOR_K - TEMP_LAT_COEF * lat**2 + TEMP_PATTERN_STD * pattern
    hemi = np.tanh(lat / 5.0)
    return np.stack([mean + amp * hemi * float(_season(m)) for m in range(12)])


def enso_index(rng: np.random.Generator, n: int) -> np.ndarray:
    """ENSO-like index: AR(2) oscillator with a ~ENSO_PERIOD_MONTHS quasi-period, unit std."""
    r = ENSO_AR2_RADIUS
    a1, a2 = 2.0 * r * np.cos(2.0 * np.pi / ENSO_PERIOD_MONTHS), -(r**2)
    eps = rng.standard_normal(n + MODE_BURN_IN)
    x = np.zeros(n + MODE_BURN_IN)
    for t in range(2, x.size):
        x[t] = a1 * x[t - 1] + a2 * x[t - 2] + eps[t]
    x = x[MODE_BURN_IN:]
    return (x - x.mean()) / x.std()


def ar1_index(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Stationary AR(1) index of unit std (a large-scale climate mode)."""
    eps = rng.standard_normal(n + MODE_BURN_IN)
    x = np.zeros(n + MODE_BURN_IN)
    for t in range(1, x.size):
        x[t] = phi * x[t - 1] + eps[t]
    x = x[MODE_BURN_IN:]
    return (x - x.mean()) / x.std()


def _decimal_years(months: pd.DatetimeIndex) -> np.ndarray:
    """Mid-month decimal years relative to TREND_REFERENCE_YEAR."""
    return months.year.to_numpy() + (months.month.to_numpy() - 0.5) / 12.0 - TREND_REFERENCE_YEAR


# ======================================================================================
# water balance
# ======================================================================================
@dataclass(frozen=True)
class BucketParams:
    """Parameters of the bucket model per cell; ``tau_gw=None`` means no groundwater store."""

    capacity: np.ndarray  # mm, soil bucket capacity
    tau_gw: np.ndarray | None  # months, groundwater time constant (0: recharge leaves at once)
    pet_coef: float = PET_MM_PER_DAY_K
    et_wet_fraction: float = ET_WET_FRACTION
    percolation_rate: float = PERCOLATION_RATE
    surface_fraction: float = SURFACE_RUNOFF_FRACTION
    degree_day: float = DEGREE_DAY_MM


def root_zone_factor(p_clim: np.ndarray, t_clim: np.ndarray) -> np.ndarray:
    """Soil capacity factor: clip(aridity, 1, ROOT_ZONE_MAX_ARIDITY) ** ROOT_ZONE_ARIDITY_EXPONENT.

    Aridity = annual PET (as in the water balance) / annual precipitation, from the
    climatologies (12, lat, lon): drier climates grow deeper root zones.
    """
    pet = PET_MM_PER_DAY_K * DAYS_PER_MONTH * np.maximum(t_clim - FREEZE_K, 0.0).sum(axis=0)
    aridity = pet / np.maximum(p_clim.sum(axis=0), PET_FLOOR_MM)
    return np.clip(aridity, 1.0, ROOT_ZONE_MAX_ARIDITY) ** ROOT_ZONE_ARIDITY_EXPONENT


def _outflow_fraction(tau: np.ndarray) -> np.ndarray:
    """Fraction of a linear reservoir leaving in one month, 1 - exp(-1/tau); 1 for tau = 0."""
    return 1.0 - np.exp(-1.0 / np.maximum(tau, TAU_FLOOR_MONTHS))


def _evapotranspiration(soil: np.ndarray, pet: np.ndarray, wet: np.ndarray) -> np.ndarray:
    """ET (mm) over one month: the exact solution of dS/dt = -PET min(1, S / wet) from S = ``soil``.

    At PET while the soil holds more than ``wet``, then an exponential dry-down at rate
    PET / wet per month, so the soil never empties within a month.
    """
    at_potential = np.clip((soil - wet) / np.maximum(pet, PET_FLOOR_MM), 0.0, 1.0)  # fraction of the month
    decayed = np.minimum(soil, wet) * np.exp(-(pet / wet) * (1.0 - at_potential))
    return soil - np.where(at_potential >= 1.0, soil - pet, decayed)


def _bucket_step(soil, snow, gw, precip, temp, days, p: BucketParams):
    """One month of the bucket model; returns the new stores and the fluxes (all mm)."""
    tc = temp - FREEZE_K
    warm = np.maximum(tc, 0.0)
    snow_frac = np.clip((SNOW_T_HIGH_C - tc) / (SNOW_T_HIGH_C - SNOW_T_LOW_C), 0.0, 1.0)
    snowfall = precip * snow_frac
    snow = snow + snowfall
    melt = np.minimum(snow, p.degree_day * days * warm)
    snow = snow - melt
    ice = np.maximum(snow - ICE_THRESHOLD_MM, 0.0) * (1.0 - np.exp(-1.0 / TAU_ICE_MONTHS))
    snow = snow - ice
    soil = soil + (precip - snowfall) + melt
    pet = p.pet_coef * days * warm
    et = _evapotranspiration(soil, pet, p.et_wet_fraction * p.capacity)
    soil = soil - et
    excess = np.maximum(soil - p.capacity, 0.0)
    soil = soil - excess
    perc = p.percolation_rate * soil * (soil / p.capacity) ** 2
    soil = soil - perc
    surface = p.surface_fraction * excess
    recharge = excess - surface + perc
    if p.tau_gw is None:
        runoff = surface + recharge + ice
    else:
        base = (gw + recharge) * _outflow_fraction(p.tau_gw)
        gw = gw + recharge - base
        runoff = surface + base + ice
    return soil, snow, gw, et, runoff, recharge


def run_water_balance(
    precip: np.ndarray,
    temperature: np.ndarray,
    days: np.ndarray,
    params: BucketParams,
    *,
    spinup_years: int = SPINUP_YEARS,
    spinup_forcing: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Run the bucket model over months (axis 0) for cells (axis 1) after a spin-up.

    ``precip`` mm/month, ``temperature`` K, ``days`` days per month. The spin-up repeats
    the period's mean annual cycle ``spinup_years`` times (``spinup_forcing`` = (precip,
    temperature) of that cycle replaces it, e.g. to keep an imposed drought out of the
    initial state); after the first pass the groundwater and perennial snow jump to their
    equilibrium, so the run starts without a transient. Returns end-of-month stores
    ``soil``, ``snow``, ``groundwater``, ``storage`` (their sum), the fluxes ``et``,
    ``runoff``, ``recharge`` (mm/month), and ``storage_initial`` (storage before month 0),
    so that ``diff([storage_initial, *storage]) == precip - et - runoff`` exactly.
    """
    precip = np.asarray(precip, dtype=np.float64)
    temperature = np.asarray(temperature, dtype=np.float64)
    days = np.asarray(days, dtype=np.float64)
    nt, nc = precip.shape
    cap = np.broadcast_to(np.asarray(params.capacity, dtype=np.float64), (nc,))
    soil = INITIAL_SOIL_FRACTION * cap
    snow = np.zeros(nc)
    gw = np.zeros(nc)
    if spinup_forcing is None:
        p_year, t_year = mean_annual_cycle(precip), mean_annual_cycle(temperature)
    else:
        p_year, t_year = (np.asarray(x, dtype=np.float64) for x in spinup_forcing)
    year = p_year.shape[0]
    for cycle in range(spinup_years):
        snow_start = snow.copy()
        recharge_sum = np.zeros(nc)
        for t in range(year):
            soil, snow, gw, _, _, rch = _bucket_step(soil, snow, gw, p_year[t], t_year[t], days[t], params)
            recharge_sum += rch
        if cycle == 0:  # jump the slow stores to equilibrium, then let the remaining years settle
            if params.tau_gw is not None:
                k = _outflow_fraction(params.tau_gw)
                gw = recharge_sum / year * (1.0 - k) / k
            gain = (snow - snow_start) / year  # perennial accumulation per month
            k_ice = 1.0 - np.exp(-1.0 / TAU_ICE_MONTHS)
            snow = np.where(gain > 0.01, np.maximum(snow, ICE_THRESHOLD_MM + gain / k_ice), snow)
    out = {k: np.empty((nt, nc)) for k in ("soil", "snow", "groundwater", "et", "runoff", "recharge")}
    storage_initial = soil + snow + gw
    for t in range(nt):
        soil, snow, gw, et, runoff, rch = _bucket_step(soil, snow, gw, precip[t], temperature[t], days[t], params)
        out["soil"][t], out["snow"][t], out["groundwater"][t] = soil, snow, gw
        out["et"][t], out["runoff"][t], out["recharge"][t] = et, runoff, rch
    out["storage"] = out["soil"] + out["snow"] + out["groundwater"]
    out["storage_initial"] = storage_initial
    return out


def mean_annual_cycle(x: np.ndarray) -> np.ndarray:
    """Mean over the years of each calendar month (axis 0), aligned with the first month; <= 12 rows."""
    return np.stack([x[k::12].mean(axis=0) for k in range(min(12, x.shape[0]))])


def _monthly_mean_storage(storage: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Mean storage over each month, approximated by the mean of its start and end states."""
    start = np.concatenate([initial[None], storage[:-1]], axis=0)
    return 0.5 * (start + storage)


# ======================================================================================
# the world
# ======================================================================================
def _check_drought(drought: dict | None) -> dict | None:
    """Validate the drought dict and fill the optional keys; ValueError with one line naming the problem."""
    if drought is None:
        return None
    missing = [k for k in DROUGHT_KEYS if k not in drought]
    if missing:
        raise ValueError(f"drought: missing key(s) {', '.join(missing)}; expected {', '.join(DROUGHT_KEYS)}")
    unknown = [k for k in drought if k not in DROUGHT_KEYS + DROUGHT_OPTIONAL_KEYS]
    if unknown:
        raise ValueError(
            f"drought: unknown key(s) {', '.join(map(str, unknown))}; "
            f"expected {', '.join(DROUGHT_KEYS + DROUGHT_OPTIONAL_KEYS)}"
        )
    d = {"precip_deficit": DROUGHT_PRECIP_DEFICIT, "warming_k": DROUGHT_WARMING_K, **drought}
    try:
        d["start"] = pd.Period(str(d["start"]), freq="M")
        d["end"] = pd.Period(str(d["end"]), freq="M")
    except ValueError as exc:
        raise ValueError(f"drought: start/end must be 'YYYY-MM', got {drought['start']!r}, {drought['end']!r}") from exc
    if d["end"] < d["start"] or float(d["lat_min"]) > float(d["lat_max"]):
        raise ValueError("drought: expected start <= end and lat_min <= lat_max")
    if not float(d["depth_mm"]) >= 0:
        raise ValueError(f"drought: depth_mm must be >= 0 (a deficit size), got {d['depth_mm']}")
    if not 0.0 <= float(d["precip_deficit"]) <= DROUGHT_MAX_PRECIP_DEFICIT:
        raise ValueError(
            f"drought: precip_deficit must lie in 0..{DROUGHT_MAX_PRECIP_DEFICIT}, got {d['precip_deficit']}"
        )
    if not 0.0 <= float(d["warming_k"]) <= DROUGHT_MAX_WARMING_K:
        raise ValueError(f"drought: warming_k must lie in 0..{DROUGHT_MAX_WARMING_K} K, got {d['warming_k']}")
    return d


def _check_tau(tau_range) -> tuple[float, float]:
    """Validate ``groundwater_tau_months`` (min, max); ValueError naming it otherwise."""
    try:
        lo, hi = (float(x) for x in tau_range)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"groundwater_tau_months: expected two numbers (min, max), got {tau_range!r}") from exc
    if not 0.0 <= lo <= hi <= TAU_GW_LIMIT_MONTHS:
        raise ValueError(
            f"groundwater_tau_months: expected 0 <= min <= max <= {TAU_GW_LIMIT_MONTHS:g}, got ({lo:g}, {hi:g})"
        )
    return lo, hi


def _check_noise_std(value) -> float:
    """Validate ``grace_noise_std_mm``; ValueError naming it otherwise."""
    try:
        std = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"grace_noise_std_mm: expected a number, got {value!r}") from exc
    if not (np.isfinite(std) and std >= 0):
        raise ValueError(f"grace_noise_std_mm: expected a finite number >= 0, got {value!r}")
    return std


def grace_noise_std(
    grid: Grid,
    months: pd.DatetimeIndex,
    observed: np.ndarray,
    pattern: np.ndarray,
    std_mm: float,
    heteroscedastic: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """GRACE noise std (mm) as a static map (lat, lon) and a per-month factor (time,).

    Heteroscedastic: 1 + (NOISE_LAT_CONTRAST - 1) cos^2(lat), times exp(NOISE_PATTERN_LOG_STD
    x ``pattern``) (unit-variance correlated noise), times the GRACE_NOISE_EPOCHS factor;
    the map's land-area mean is ``std_mm`` and the factor's mean over observed months is 1.
    Otherwise ``std_mm`` everywhere and a factor of 1.
    """
    if not heteroscedastic:
        return np.full(grid.shape, float(std_mm)), np.ones(months.size)
    lat2d = grid.lat2d()
    std = (1.0 + (NOISE_LAT_CONTRAST - 1.0) * np.cos(np.deg2rad(lat2d)) ** 2) * np.exp(
        NOISE_PATTERN_LOG_STD * pattern
    )
    area = np.cos(np.deg2rad(lat2d)) * grid.land
    std *= std_mm / ((std * area).sum() / area.sum())
    factor = np.full(months.size, GRACE_NOISE_EPOCHS[0][1])
    for first, value in GRACE_NOISE_EPOCHS[1:]:
        factor[np.asarray(months >= pd.Timestamp(first))] = value
    if observed.any():
        factor /= factor[observed].mean()
    return std, factor


def _drought_series(months: pd.DatetimeIndex, d: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-month drought weights: flux deficit (precipitation, warming) on/off and the storage-deficit ramp (0..1)."""
    index = months.year.to_numpy() * 12 + months.month.to_numpy()
    start_off = index - (d["start"].year * 12 + d["start"].month)  # months since start
    end_off = index - (d["end"].year * 12 + d["end"].month)  # months since end
    drought_on = (start_off >= -DROUGHT_LEAD_MONTHS) & (end_off <= 0)
    ramp = np.clip((start_off + DROUGHT_LEAD_MONTHS) / DROUGHT_LEAD_MONTHS, 0.0, 1.0)
    recovery = np.clip(1.0 - end_off / DROUGHT_RECOVERY_MONTHS, 0.0, 1.0)
    ramp = np.where(end_off > 0, recovery, ramp)
    return drought_on, ramp


def _baseline_months(months: pd.DatetimeIndex, observed: np.ndarray, train: np.ndarray | None) -> np.ndarray:
    """Months whose mean is removed: observed months in 2004-01..2009-12, else observed (training) months."""
    period = months.to_period("M")
    in_window = (period >= pd.Period(BASELINE_START, "M")) & (period <= pd.Period(BASELINE_END, "M"))
    base = observed & np.asarray(in_window)
    if base.any():
        return base
    if train is not None and (observed & train).any():
        return observed & train
    if observed.any():
        return observed.copy()
    return np.ones(months.size, dtype=bool)


def _coords(grid: Grid, times: np.ndarray) -> dict:
    """Normalised coordinates with CF attrs."""
    return {
        "time": ("time", times.astype("datetime64[ns]"), {"standard_name": "time", "long_name": "month", "axis": "T"}),
        "lat": (
            "lat",
            grid.lat,
            {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude", "axis": "Y"},
        ),
        "lon": (
            "lon",
            grid.lon,
            {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude", "axis": "X"},
        ),
    }


def _to_grid(values: np.ndarray, land: np.ndarray) -> np.ndarray:
    """Scatter (time, land cell) values onto (time, lat, lon) float32, NaN over ocean."""
    out = np.full((values.shape[0], *land.shape), np.nan, dtype=np.float32)
    out[:, land] = values
    return out


def generate_world(
    *,
    lat: np.ndarray,
    lon: np.ndarray,
    months: pd.DatetimeIndex,
    observed: np.ndarray,
    seed: int,
    drought: dict | None,
    train_months: np.ndarray | None = None,
    groundwater_tau_months: tuple[float, float] = (TAU_GW_MIN_MONTHS, TAU_GW_MAX_MONTHS),
    storage_trends: bool = True,
    grace_noise_std_mm: float = GRACE_NOISE_STD_MM,
    heteroscedastic_noise: bool = True,
) -> dict[str, xr.Dataset]:
    """Build the synthetic world; returns ``{"grace", "era5land", "truth"}`` datasets.

    ``observed`` (bool per month) selects GRACE's months; ``train_months`` (bool per month,
    optional) only serves as the anomaly baseline when the period has no observed month in
    2004..2009. ``drought``: keys DROUGHT_KEYS, optionally DROUGHT_OPTIONAL_KEYS (module
    docstring, step 5). ``groundwater_tau_months`` (min, max) bounds the per-cell
    groundwater time constant (0 = no memory); ``storage_trends`` switches the
    STORAGE_TREND_BOXES trends; ``grace_noise_std_mm`` and ``heteroscedastic_noise`` set
    the GRACE noise (step 6). Everything follows from ``seed`` (one
    ``numpy.random.default_rng``).
    """
    months = pd.DatetimeIndex(months)
    nt = months.size
    observed = np.asarray(observed, dtype=bool)
    if observed.shape != (nt,):
        raise ValueError(f"observed: expected {nt} booleans (one per month), got shape {observed.shape}")
    if train_months is not None:
        train_months = np.asarray(train_months, dtype=bool)
        if train_months.shape != (nt,):
            raise ValueError(f"train_months: expected {nt} booleans (one per month), got shape {train_months.shape}")
    if nt < 2 or not (months.is_month_start.all() and months.is_monotonic_increasing):
        raise ValueError("months: expected at least 2 increasing month-start timestamps")
    d = _check_drought(drought)
    tau_min, tau_max = _check_tau(groundwater_tau_months)
    noise_std_mm = _check_noise_std(grace_noise_std_mm)
    grid = make_grid(lat, lon)
    land = grid.land
    if not land.any():
        raise ValueError("region: the grid has no land cell")
    rng = np.random.default_rng(int(seed))
    years = _decimal_years(months)
    moy = months.month.to_numpy() - 1
    days = months.days_in_month.to_numpy().astype(np.float64)
    lat2d = grid.lat2d()

    # ---- static fields (order of draws is part of reproducibility) --------------------
    ones = np.ones(grid.shape)
    land_frac = smooth(land.astype(np.float64), grid, CONTINENTALITY_KM) / smooth(ones, grid, CONTINENTALITY_KM)
    p_pattern = correlated_noise(rng, grid, PATTERN_CORR_KM).astype(np.float64)
    t_pattern = correlated_noise(rng, grid, PATTERN_CORR_KM).astype(np.float64)
    p_trend = PRECIP_TREND_STD * correlated_noise(rng, grid, TREND_CORR_KM).astype(np.float64)
    area = np.cos(np.deg2rad(lat2d)) * land
    mode_patterns = []  # teleconnection-like: zero mean over the region's land, so no global wet/dry swing
    for _ in MODE_AR1:
        pattern = correlated_noise(rng, grid, MODE_CORR_KM).astype(np.float64)
        mode_patterns.append(pattern - (pattern * area).sum() / area.sum())
    u_cap = ndtr(correlated_noise(rng, grid, PATTERN_CORR_KM).astype(np.float64))
    u_tau = ndtr(correlated_noise(rng, grid, PATTERN_CORR_KM).astype(np.float64))
    p_clim = precipitation_climatology(grid, land_frac, p_pattern)
    t_clim = temperature_climatology(grid, land_frac, t_pattern)
    capacity = (CAPACITY_MIN_MM + (CAPACITY_MAX_MM - CAPACITY_MIN_MM) * u_cap) * root_zone_factor(p_clim, t_clim)
    tau_gw = tau_min + (tau_max - tau_min) * u_tau
    enso = enso_index(rng, nt)
    modes = [ar1_index(rng, nt, phi) for phi in MODE_AR1]
    tropics = np.exp(-0.5 * (lat2d / ENSO_BAND_DEG) ** 2)
    enso_p = -tropics * (0.3 + 0.7 * np.cos(np.deg2rad(_lon_distance(grid.lon2d(), 120.0))))

    # ---- monthly fields ---------------------------------------------------------------
    log_p = _ar1_in_place(correlated_noise(rng, grid, PRECIP_ANOM_CORR_KM, nt), PRECIP_AR1)
    t_anom = _ar1_in_place(correlated_noise(rng, grid, TEMP_ANOM_CORR_KM, nt), TEMP_AR1)
    f_err = _ar1_in_place(correlated_noise(rng, grid, FORCING_ERROR_CORR_KM, nt), FORCING_ERROR_AR1)
    grace_noise = correlated_noise(rng, grid, GRACE_NOISE_CORR_KM, nt)
    noise_pattern = correlated_noise(rng, grid, NOISE_PATTERN_CORR_KM).astype(np.float64)  # drawn in any case
    noise_map, noise_factor = grace_noise_std(
        grid, months, observed, noise_pattern, noise_std_mm, bool(heteroscedastic_noise)
    )

    t_std = TEMP_ANOM_STD_EQUATOR + (TEMP_ANOM_STD_POLE - TEMP_ANOM_STD_EQUATOR) * np.abs(lat2d) / 90.0
    warming = WARMING_K_PER_YEAR * (1.0 + np.abs(lat2d) / POLAR_AMPLIFICATION_DEG)
    if d is not None:
        drought_box = _box_mask(grid, *(float(d[k]) for k in ("lat_min", "lat_max", "lon_min", "lon_max")))
        drought_on, ramp = _drought_series(months, d)
    else:
        drought_box, drought_on, ramp = np.zeros(grid.shape, bool), np.zeros(nt, bool), np.zeros(nt)
    log_drought = np.log1p(-float(d["precip_deficit"]) if d is not None else 0.0) * drought_box
    warm_drought = (float(d["warming_k"]) if d is not None else 0.0) * drought_box

    p_true = np.empty((nt, *grid.shape), dtype=np.float32)
    temp = np.empty((nt, *grid.shape), dtype=np.float32)
    for t in range(nt):
        lp = PRECIP_ANOM_STD * log_p[t] - 0.5 * PRECIP_ANOM_STD**2 + ENSO_PRECIP_LOAD * enso[t] * enso_p
        for load, index, pattern in zip(MODE_PRECIP_LOAD, modes, mode_patterns):
            lp = lp + load * index[t] * pattern
        lp = lp + p_trend * years[t] + (log_drought if drought_on[t] else 0.0)
        p_true[t] = p_clim[moy[t]] * np.exp(lp)
        temp[t] = t_clim[moy[t]] + t_std * t_anom[t] + ENSO_TEMP_LOAD * enso[t] * tropics + warming * years[t]
        if drought_on[t]:
            temp[t] += warm_drought
        # reanalysis precipitation: the truth times a forcing error (stored in place of f_err)
        f_err[t] = p_true[t] * np.exp(PRECIP_FORCING_ERROR * f_err[t] - 0.5 * PRECIP_FORCING_ERROR**2)
    p_era5 = f_err
    del log_p, t_anom

    # ---- water balance on land cells ---------------------------------------------------
    # spin-up on the mean annual cycle without the drought, so it cannot leak into the start
    undo = np.exp(-np.outer(drought_on, log_drought[land]))
    t_cycle = mean_annual_cycle(temp[:, land] - np.outer(drought_on, warm_drought[land]))
    true_wb = run_water_balance(
        p_true[:, land],
        temp[:, land],
        days,
        BucketParams(capacity=capacity[land], tau_gw=tau_gw[land]),
        spinup_forcing=(mean_annual_cycle(p_true[:, land] * undo), t_cycle),
    )
    cap_lm = LAND_MODEL_CAPACITY_FACTOR * capacity[land]
    lm = run_water_balance(
        p_era5[:, land],
        temp[:, land],
        days,
        BucketParams(capacity=cap_lm, tau_gw=None, pet_coef=LAND_MODEL_PET_FACTOR * PET_MM_PER_DAY_K),
        spinup_forcing=(mean_annual_cycle(p_era5[:, land] * undo), t_cycle),
    )
    del undo
    lm_storage = LAND_MODEL_RESIDUAL_FRACTION * cap_lm + _monthly_mean_storage(lm["storage"], lm["storage_initial"])

    # ---- true storage: water balance + human/ice trends + drought deficit ---------------
    storage = _monthly_mean_storage(true_wb["storage"], true_wb["storage_initial"])
    del true_wb
    for box in STORAGE_TREND_BOXES if storage_trends else ():
        mask = _box_mask(grid, box.lat_min, box.lat_max, box.lon_min, box.lon_max)[land]
        if mask.any():
            storage[:, mask] += box.rate_mm_per_year * years[:, None]

    # ---- GRACE resolution, anomaly, noise ----------------------------------------------
    sigma_grace = GRACE_HALFWIDTH_KM * HALFWIDTH_TO_SIGMA
    land_weight = smooth(land.astype(np.float64), grid, sigma_grace)[land]
    full = np.zeros((nt, *grid.shape))
    full[:, land] = storage
    del storage
    smoothed = smooth(full, grid, sigma_grace)[:, land] / land_weight
    del full
    # the direct drought deficit (separable in time, so smoothed once): box mean at GRACE
    # resolution = depth_mm x ramp
    direct = np.zeros_like(smoothed)
    in_box = drought_box[land]
    if d is not None and in_box.any():
        seen = smooth(np.where(land & drought_box, 1.0, 0.0), grid, sigma_grace)[land] / land_weight
        direct -= float(d["depth_mm"]) / seen[in_box].mean() * ramp[:, None] * seen[None, :]
    base = _baseline_months(months, observed, train_months)
    direct -= direct[base].mean(axis=0)
    twsa_true = smoothed - smoothed[base].mean(axis=0) + direct
    del smoothed
    noise_std = noise_factor[observed, None] * noise_map[land][None, :]
    twsa = twsa_true[observed] + noise_std * grace_noise[observed][:, land]

    # ---- datasets ----------------------------------------------------------------------
    times = months.to_numpy()
    ocean = ~land
    for arr in (p_true, temp, p_era5):
        arr[:, ocean] = np.nan
    del p_true
    common = {"source": SOURCE_ATTR, "seed": int(seed)}
    drought_attr = (
        "none"
        if d is None
        else f"lat {d['lat_min']}..{d['lat_max']}, lon {d['lon_min']}..{d['lon_max']}, "
        f"{d['start']}..{d['end']}, depth_mm {float(d['depth_mm'])}, "
        f"precip_deficit {float(d['precip_deficit'])}, warming_k {float(d['warming_k'])}"
    )
    base_periods = months[base].to_period("M")
    baseline_attr = f"{base_periods[0]} to {base_periods[-1]} ({int(base.sum())} observed months)"
    missing = ",".join(str(p) for p in months[~observed].to_period("M"))

    grace = xr.Dataset(
        {
            "twsa": (
                ("time", "lat", "lon"),
                _to_grid(twsa, land),
                {"units": "mm", "long_name": "terrestrial water storage anomaly (GRACE-like, synthetic)"},
            ),
            "uncertainty": (
                ("time", "lat", "lon"),
                _to_grid(noise_std, land),
                {"units": "mm", "long_name": "standard deviation of the measurement noise in twsa (1 sigma)"},
            ),
        },
        coords=_coords(grid, times[observed]),
        attrs={
            **common,
            "title": "Synthetic GRACE-like terrestrial water storage anomalies",
            "months_missing": missing,
            "time_mean_removed": baseline_attr,
            "smoothing": f"Gaussian, half-width {GRACE_HALFWIDTH_KM:g} km, normalised over land",
            "noise_std_mm": noise_std_mm,
            "noise": (
                f"correlated over {GRACE_NOISE_CORR_KM:g} km, independent month to month; std "
                + (
                    f"varying with latitude (equator/pole {NOISE_LAT_CONTRAST:g}), a random pattern and the "
                    f"mission epoch, mean {noise_std_mm:g} mm over land area and observed months"
                    if heteroscedastic_noise
                    else f"{noise_std_mm:g} mm everywhere"
                )
            ),
            "drought": drought_attr,
        },
    )
    truth = xr.Dataset(
        {
            "twsa_true": (
                ("time", "lat", "lon"),
                _to_grid(twsa_true, land),
                {"units": "mm", "long_name": "true terrestrial water storage anomaly at GRACE resolution (noise-free)"},
            ),
            "twsa_direct_deficit": (
                ("time", "lat", "lon"),
                _to_grid(direct, land),
                {
                    "units": "mm",
                    "long_name": "direct drought storage deficit included in twsa_true (at GRACE resolution)",
                    "note": "not seen by any predictor; twsa_true - twsa_direct_deficit is the world without it",
                },
            ),
        },
        coords=_coords(grid, times),
        attrs={
            **common,
            "title": "Synthetic true terrestrial water storage anomalies (twin experiment)",
            "time_mean_removed": baseline_attr,
            "drought": drought_attr,
            "groundwater_tau_months": f"{tau_min:g}..{tau_max:g}",
            "storage_trends": int(bool(storage_trends)),
        },
    )
    era5 = xr.Dataset(
        {
            "precipitation": (
                ("time", "lat", "lon"),
                p_era5,
                {
                    "units": FLUX_UNITS,
                    "long_name": "total precipitation (monthly total)",
                    "standard_name": "lwe_precipitation_rate",
                },
            ),
            "temperature": (
                ("time", "lat", "lon"),
                temp,
                {"units": "K", "long_name": "2 m air temperature", "standard_name": "air_temperature"},
            ),
            "evaporation": (
                ("time", "lat", "lon"),
                _to_grid(lm["et"], land),
                {
                    "units": FLUX_UNITS,
                    "long_name": "total evapotranspiration (monthly total)",
                    "note": "positive = water leaving the land (opposite to ECMWF's sign convention)",
                },
            ),
            "runoff": (
                ("time", "lat", "lon"),
                _to_grid(lm["runoff"], land),
                {"units": FLUX_UNITS, "long_name": "total runoff, surface + subsurface (monthly total)"},
            ),
            "land_water_storage": (
                ("time", "lat", "lon"),
                _to_grid(lm_storage, land),
                {
                    "units": "mm",
                    "long_name": (
                        "land model water storage: soil water of all layers + snow water equivalent + canopy water"
                    ),
                    "note": (
                        "absolute monthly-mean storage, not an anomaly; no groundwater, no human water use; "
                        "canopy water is not modelled separately (< 1 mm)"
                    ),
                },
            ),
        },
        coords=_coords(grid, times),
        attrs={
            **common,
            "title": "Synthetic ERA5-Land-like monthly predictors (biased land model)",
            "land_model": (
                f"bucket capacity x{LAND_MODEL_CAPACITY_FACTOR}, PET x{LAND_MODEL_PET_FACTOR}, "
                f"no groundwater store, precipitation forcing error {PRECIP_FORCING_ERROR} (log std)"
            ),
        },
    )
    return {"grace": grace, "era5land": era5, "truth": truth}


def write_world(world: dict[str, xr.Dataset], out_dir: str | Path) -> list[Path]:
    """Write ``grace.nc``, ``era5land.nc`` and ``truth.nc`` into ``out_dir``; return their paths."""
    from gracefill.io import write_netcdf

    out_dir = Path(out_dir)
    return [write_netcdf(world[name], out_dir / f"{name}.nc") for name in ("grace", "era5land", "truth")]
