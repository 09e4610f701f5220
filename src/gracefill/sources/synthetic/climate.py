"""The synthetic world, step 2: precipitation and temperature climatologies and climate modes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .geometry import Grid

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

