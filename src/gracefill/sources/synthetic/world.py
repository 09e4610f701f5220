"""The synthetic world assembled (steps 4-7): true storage, GRACE, the land model's predictors, the drought."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import ndtr

from .climate import (
    ENSO_BAND_DEG, ENSO_PRECIP_LOAD, ENSO_TEMP_LOAD, MODE_AR1, MODE_CORR_KM, MODE_PRECIP_LOAD, PATTERN_CORR_KM,
    POLAR_AMPLIFICATION_DEG, PRECIP_ANOM_CORR_KM, PRECIP_ANOM_STD, PRECIP_AR1, PRECIP_TREND_STD, TEMP_ANOM_CORR_KM,
    TEMP_ANOM_STD_EQUATOR, TEMP_ANOM_STD_POLE, TEMP_AR1, TREND_CORR_KM, WARMING_K_PER_YEAR, CONTINENTALITY_KM,
    _decimal_years, ar1_index, enso_index, precipitation_climatology, temperature_climatology,
)
from .geometry import (HALFWIDTH_TO_SIGMA, Grid, _ar1_in_place, _box_mask, _lon_distance, correlated_noise, make_grid,
                       smooth)
from .storage import (
    CAPACITY_MAX_MM, CAPACITY_MIN_MM, FORCING_ERROR_AR1, FORCING_ERROR_CORR_KM, LAND_MODEL_CAPACITY_FACTOR,
    LAND_MODEL_PET_FACTOR, LAND_MODEL_RESIDUAL_FRACTION, PET_MM_PER_DAY_K, PRECIP_FORCING_ERROR, TAU_GW_LIMIT_MONTHS,
    TAU_GW_MAX_MONTHS, TAU_GW_MIN_MONTHS, BucketParams, _monthly_mean_storage, mean_annual_cycle, root_zone_factor,
    run_water_balance,
)

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


class StaticFields(NamedTuple):
    """What the generator draws once (step 1-3): patterns, soil and groundwater parameters, climate modes."""

    land_frac: np.ndarray
    p_trend: np.ndarray
    mode_patterns: list
    p_clim: np.ndarray
    t_clim: np.ndarray
    capacity: np.ndarray
    tau_gw: np.ndarray
    enso: np.ndarray
    modes: list


class MonthlyNoise(NamedTuple):
    """The monthly random fields (unit variance) and the GRACE noise std (step 6)."""

    log_p: np.ndarray
    t_anom: np.ndarray
    forcing_error: np.ndarray
    grace: np.ndarray
    std_map: np.ndarray
    std_factor: np.ndarray


class DroughtForcing(NamedTuple):
    """Where and when the drought acts (step 5): its box, its months and the ramp of its direct deficit."""

    box: np.ndarray
    on: np.ndarray
    ramp: np.ndarray
    log_precip: np.ndarray
    warming: np.ndarray


def _check_months(months, observed, train_months) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray | None]:
    """The month axis and its masks, checked; ValueError naming the argument otherwise."""
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
    return months, observed, train_months


def draw_static_fields(rng: np.random.Generator, grid: Grid, nt: int, tau_range: tuple[float, float]) -> StaticFields:
    """Steps 2-3, drawn once: continentality, the static patterns, the climatologies, each cell's
    soil capacity and groundwater time constant, and the climate-mode indices (order of draws
    is part of reproducibility)."""
    land = grid.land
    ones = np.ones(grid.shape)
    land_frac = smooth(land.astype(np.float64), grid, CONTINENTALITY_KM) / smooth(ones, grid, CONTINENTALITY_KM)
    p_pattern = correlated_noise(rng, grid, PATTERN_CORR_KM).astype(np.float64)
    t_pattern = correlated_noise(rng, grid, PATTERN_CORR_KM).astype(np.float64)
    p_trend = PRECIP_TREND_STD * correlated_noise(rng, grid, TREND_CORR_KM).astype(np.float64)
    area = np.cos(np.deg2rad(grid.lat2d())) * land
    mode_patterns = []  # teleconnection-like: zero mean over the region's land, so no global wet/dry swing
    for _ in MODE_AR1:
        pattern = correlated_noise(rng, grid, MODE_CORR_KM).astype(np.float64)
        mode_patterns.append(pattern - (pattern * area).sum() / area.sum())
    u_cap = ndtr(correlated_noise(rng, grid, PATTERN_CORR_KM).astype(np.float64))
    u_tau = ndtr(correlated_noise(rng, grid, PATTERN_CORR_KM).astype(np.float64))
    p_clim = precipitation_climatology(grid, land_frac, p_pattern)
    t_clim = temperature_climatology(grid, land_frac, t_pattern)
    capacity = (CAPACITY_MIN_MM + (CAPACITY_MAX_MM - CAPACITY_MIN_MM) * u_cap) * root_zone_factor(p_clim, t_clim)
    tau_min, tau_max = tau_range
    tau_gw = tau_min + (tau_max - tau_min) * u_tau
    enso = enso_index(rng, nt)
    modes = [ar1_index(rng, nt, phi) for phi in MODE_AR1]
    return StaticFields(land_frac, p_trend, mode_patterns, p_clim, t_clim, capacity, tau_gw, enso, modes)


def draw_monthly_noise(rng: np.random.Generator, grid: Grid, months: pd.DatetimeIndex, observed: np.ndarray,
                       std_mm: float, heteroscedastic: bool) -> MonthlyNoise:
    """The monthly draws: precipitation and temperature anomalies (AR(1) in time), the reanalysis
    forcing error, GRACE's measurement noise and its std (step 6; the std pattern is drawn in any case)."""
    nt = months.size
    log_p = _ar1_in_place(correlated_noise(rng, grid, PRECIP_ANOM_CORR_KM, nt), PRECIP_AR1)
    t_anom = _ar1_in_place(correlated_noise(rng, grid, TEMP_ANOM_CORR_KM, nt), TEMP_AR1)
    f_err = _ar1_in_place(correlated_noise(rng, grid, FORCING_ERROR_CORR_KM, nt), FORCING_ERROR_AR1)
    grace_noise = correlated_noise(rng, grid, GRACE_NOISE_CORR_KM, nt)
    noise_pattern = correlated_noise(rng, grid, NOISE_PATTERN_CORR_KM).astype(np.float64)
    std_map, std_factor = grace_noise_std(grid, months, observed, noise_pattern, std_mm, heteroscedastic)
    return MonthlyNoise(log_p, t_anom, f_err, grace_noise, std_map, std_factor)


def drought_forcing(grid: Grid, months: pd.DatetimeIndex, d: dict | None) -> DroughtForcing:
    """Step 5's box, months and ramp, and its log-precipitation and temperature offsets (zero without a drought)."""
    nt = months.size
    if d is not None:
        box = _box_mask(grid, *(float(d[k]) for k in ("lat_min", "lat_max", "lon_min", "lon_max")))
        on, ramp = _drought_series(months, d)
    else:
        box, on, ramp = np.zeros(grid.shape, bool), np.zeros(nt, bool), np.zeros(nt)
    log_precip = np.log1p(-float(d["precip_deficit"]) if d is not None else 0.0) * box
    warming = (float(d["warming_k"]) if d is not None else 0.0) * box
    return DroughtForcing(box, on, ramp, log_precip, warming)


def monthly_climate(grid: Grid, months: pd.DatetimeIndex, static: StaticFields, noise: MonthlyNoise,
                    drought: DroughtForcing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 2 month by month: true precipitation (mm/month), temperature (K) and the reanalysis'
    precipitation (the truth times a forcing error; written over ``noise.forcing_error``)."""
    nt = months.size
    years = _decimal_years(months)
    moy = months.month.to_numpy() - 1
    lat2d = grid.lat2d()
    tropics = np.exp(-0.5 * (lat2d / ENSO_BAND_DEG) ** 2)
    enso_p = -tropics * (0.3 + 0.7 * np.cos(np.deg2rad(_lon_distance(grid.lon2d(), 120.0))))
    t_std = TEMP_ANOM_STD_EQUATOR + (TEMP_ANOM_STD_POLE - TEMP_ANOM_STD_EQUATOR) * np.abs(lat2d) / 90.0
    warming = WARMING_K_PER_YEAR * (1.0 + np.abs(lat2d) / POLAR_AMPLIFICATION_DEG)
    p_true = np.empty((nt, *grid.shape), dtype=np.float32)
    temp = np.empty((nt, *grid.shape), dtype=np.float32)
    f_err, enso = noise.forcing_error, static.enso
    for t in range(nt):
        lp = PRECIP_ANOM_STD * noise.log_p[t] - 0.5 * PRECIP_ANOM_STD**2 + ENSO_PRECIP_LOAD * enso[t] * enso_p
        for load, index, pattern in zip(MODE_PRECIP_LOAD, static.modes, static.mode_patterns):
            lp = lp + load * index[t] * pattern
        lp = lp + static.p_trend * years[t] + (drought.log_precip if drought.on[t] else 0.0)
        p_true[t] = static.p_clim[moy[t]] * np.exp(lp)
        temp[t] = static.t_clim[moy[t]] + t_std * noise.t_anom[t] + ENSO_TEMP_LOAD * enso[t] * tropics + warming * years[t]
        if drought.on[t]:
            temp[t] += drought.warming
        f_err[t] = p_true[t] * np.exp(PRECIP_FORCING_ERROR * f_err[t] - 0.5 * PRECIP_FORCING_ERROR**2)
    return p_true, temp, f_err


def water_balances(grid: Grid, months: pd.DatetimeIndex, static: StaticFields, drought: DroughtForcing,
                   p_true: np.ndarray, temp: np.ndarray, p_era5: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
    """Steps 3 and 7 on the land cells: the true monthly-mean storage (mm), the land model's run and
    its absolute storage (mm). Both spin up on the mean annual cycle without the drought, so that
    it cannot leak into the start."""
    land = grid.land
    days = months.days_in_month.to_numpy().astype(np.float64)
    undo = np.exp(-np.outer(drought.on, drought.log_precip[land]))
    t_cycle = mean_annual_cycle(temp[:, land] - np.outer(drought.on, drought.warming[land]))
    true_wb = run_water_balance(
        p_true[:, land],
        temp[:, land],
        days,
        BucketParams(capacity=static.capacity[land], tau_gw=static.tau_gw[land]),
        spinup_forcing=(mean_annual_cycle(p_true[:, land] * undo), t_cycle),
    )
    cap_lm = LAND_MODEL_CAPACITY_FACTOR * static.capacity[land]
    lm = run_water_balance(
        p_era5[:, land],
        temp[:, land],
        days,
        BucketParams(capacity=cap_lm, tau_gw=None, pet_coef=LAND_MODEL_PET_FACTOR * PET_MM_PER_DAY_K),
        spinup_forcing=(mean_annual_cycle(p_era5[:, land] * undo), t_cycle),
    )
    lm_storage = LAND_MODEL_RESIDUAL_FRACTION * cap_lm + _monthly_mean_storage(lm["storage"], lm["storage_initial"])
    return _monthly_mean_storage(true_wb["storage"], true_wb["storage_initial"]), lm, lm_storage


def add_storage_trends(storage: np.ndarray, grid: Grid, months: pd.DatetimeIndex) -> np.ndarray:
    """Step 4: the linear human and ice trends of STORAGE_TREND_BOXES added to the land cells' storage (in place)."""
    years = _decimal_years(months)
    for box in STORAGE_TREND_BOXES:
        mask = _box_mask(grid, box.lat_min, box.lat_max, box.lon_min, box.lon_max)[grid.land]
        if mask.any():
            storage[:, mask] += box.rate_mm_per_year * years[:, None]
    return storage


def grace_resolution(storage: np.ndarray, grid: Grid, base: np.ndarray, drought: DroughtForcing,
                     d: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """Step 6 (and step 5's direct part): the true storage smoothed to GRACE's resolution as an
    anomaly over the ``base`` months, with the direct drought deficit in it, and that deficit (mm,
    land cells)."""
    land = grid.land
    nt = storage.shape[0]
    sigma_grace = GRACE_HALFWIDTH_KM * HALFWIDTH_TO_SIGMA
    land_weight = smooth(land.astype(np.float64), grid, sigma_grace)[land]
    full = np.zeros((nt, *grid.shape))
    full[:, land] = storage
    smoothed = smooth(full, grid, sigma_grace)[:, land] / land_weight
    del full
    # the direct drought deficit (separable in time, so smoothed once): box mean at GRACE
    # resolution = depth_mm x ramp
    direct = np.zeros_like(smoothed)
    in_box = drought.box[land]
    if d is not None and in_box.any():
        seen = smooth(np.where(land & drought.box, 1.0, 0.0), grid, sigma_grace)[land] / land_weight
        direct -= float(d["depth_mm"]) / seen[in_box].mean() * drought.ramp[:, None] * seen[None, :]
    direct -= direct[base].mean(axis=0)
    return smoothed - smoothed[base].mean(axis=0) + direct, direct


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
    2004..2009. ``drought``: keys DROUGHT_KEYS, optionally DROUGHT_OPTIONAL_KEYS (package
    docstring, step 5). ``groundwater_tau_months`` (min, max) bounds the per-cell
    groundwater time constant (0 = no memory); ``storage_trends`` switches the
    STORAGE_TREND_BOXES trends; ``grace_noise_std_mm`` and ``heteroscedastic_noise`` set
    the GRACE noise (step 6). Everything follows from ``seed`` (one
    ``numpy.random.default_rng``), drawn in the order of the steps below.
    """
    months, observed, train_months = _check_months(months, observed, train_months)
    d = _check_drought(drought)
    tau_range = _check_tau(groundwater_tau_months)
    noise_std_mm = _check_noise_std(grace_noise_std_mm)
    grid = make_grid(lat, lon)
    if not grid.land.any():
        raise ValueError("region: the grid has no land cell")
    rng = np.random.default_rng(int(seed))

    static = draw_static_fields(rng, grid, months.size, tau_range)
    noise = draw_monthly_noise(rng, grid, months, observed, noise_std_mm, bool(heteroscedastic_noise))
    dry = drought_forcing(grid, months, d)
    p_true, temp, p_era5 = monthly_climate(grid, months, static, noise, dry)
    storage, land_model, land_model_storage = water_balances(grid, months, static, dry, p_true, temp, p_era5)
    if storage_trends:
        storage = add_storage_trends(storage, grid, months)
    base = _baseline_months(months, observed, train_months)
    twsa_true, direct = grace_resolution(storage, grid, base, dry, d)
    del storage
    noise_std = noise.std_factor[observed, None] * noise.std_map[grid.land][None, :]
    twsa = twsa_true[observed] + noise_std * noise.grace[observed][:, grid.land]
    for arr in (temp, p_era5):
        arr[:, ~grid.land] = np.nan
    return _datasets(grid, months, observed, base, seed, d, tau_range, storage_trends, noise_std_mm,
                     heteroscedastic_noise, twsa=twsa, noise_std=noise_std, twsa_true=twsa_true, direct=direct,
                     temp=temp, p_era5=p_era5, land_model=land_model, land_model_storage=land_model_storage)


def _datasets(grid: Grid, months: pd.DatetimeIndex, observed: np.ndarray, base: np.ndarray, seed: int,
              d: dict | None, tau_range: tuple[float, float], storage_trends: bool, noise_std_mm: float,
              heteroscedastic_noise: bool, *, twsa, noise_std, twsa_true, direct, temp, p_era5, land_model,
              land_model_storage) -> dict[str, xr.Dataset]:
    """The three datasets in the normalised layout, with units, long names and provenance attrs."""
    land = grid.land
    lm, lm_storage = land_model, land_model_storage
    tau_min, tau_max = tau_range
    times = months.to_numpy()
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
