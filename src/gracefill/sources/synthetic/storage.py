"""The synthetic world, step 3: the per-cell water balance (snow, soil bucket, groundwater) and the land model's biases."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
