"""The seven predictors of data.md, as xarray functions with units in attrs.

Every climatology, mean and trend is fitted on a *baseline* of months given by a boolean mask
(the training months), never on test or gap months, so that nothing leaks into evaluation.

| name  | definition (per cell)                                                   | units    |
|-------|-------------------------------------------------------------------------|----------|
| sTWSA | land-model storage minus its baseline mean                              | mm       |
| CWSC  | running sum of (P - ET - R) anomalies                                   | mm       |
| P     | precipitation anomaly                                                   | mm/month |
| T     | 2 m temperature anomaly                                                 | K        |
| CWB   | climatic water balance (P - ET) anomaly                                 | mm/month |
| CPA   | running sum of P anomalies                                              | mm       |
| CCWB  | running sum of CWB anomalies                                            | mm       |

"Anomaly" is the departure from the baseline monthly climatology (one mean per calendar month),
so the fluxes carry no seasonal cycle; running sums start at the first month of the period.
sTWSA keeps its seasonal cycle, as the GRACE target does.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

PREDICTOR_NAMES = ("sTWSA", "CWSC", "P", "T", "CWB", "CPA", "CCWB")

LONG_NAMES = {
    "sTWSA": "simulated terrestrial water storage anomaly (land model)",
    "CWSC": "cumulative water storage change (running sum of P - ET - R anomalies)",
    "P": "precipitation anomaly",
    "T": "2 m air temperature anomaly",
    "CWB": "climatic water balance (P - ET) anomaly",
    "CPA": "cumulative precipitation anomaly",
    "CCWB": "cumulative climatic water balance anomaly",
}

#: regridded variables each predictor needs
REQUIRED_FIELDS = ("precipitation", "temperature", "evaporation", "runoff", "land_water_storage")


def _baseline(da: xr.DataArray, baseline: np.ndarray) -> xr.DataArray:
    if baseline.dtype != bool or baseline.shape != (da.sizes["time"],):
        raise ValueError(f"baseline must be a boolean mask over the {da.sizes['time']} months")
    if not baseline.any():
        raise ValueError("baseline selects no month")
    return da.isel(time=np.flatnonzero(baseline))


def climatology(da: xr.DataArray, baseline: np.ndarray) -> xr.DataArray:
    """Mean of each calendar month over the baseline months, indexed by ``month`` (1..12)."""
    base = _baseline(da, baseline)
    clim = base.groupby("time.month").mean("time")
    missing = sorted(set(range(1, 13)) - set(clim["month"].values.tolist()))
    if missing:
        raise ValueError(f"baseline lacks calendar month(s) {missing}; a climatology needs every month")
    return clim


def anomaly(da: xr.DataArray, baseline: np.ndarray) -> xr.DataArray:
    """Departure from the baseline monthly climatology; keeps units."""
    out = da.groupby("time.month") - climatology(da, baseline)
    out = out.drop_vars("month")
    out.attrs = dict(da.attrs)
    return out


def mean_anomaly(da: xr.DataArray, baseline: np.ndarray) -> xr.DataArray:
    """Departure from the baseline time mean (seasonal cycle kept); keeps units."""
    out = da - _baseline(da, baseline).mean("time")
    out.attrs = dict(da.attrs)
    return out


def running_sum(da: xr.DataArray, units: str) -> xr.DataArray:
    """Running sum along time from the first month (a monthly flux in mm/month gives mm)."""
    out = da.cumsum("time", skipna=False)
    out.attrs = dict(da.attrs, units=units)
    return out


def fit_linear_trend(da: xr.DataArray, fit_months: np.ndarray) -> tuple[xr.DataArray, xr.DataArray]:
    """Per-cell least-squares line a + b * t over the months selected by ``fit_months``.

    t is the month index from the first month of ``da``; NaN values are left out of the fit.
    Returns (offset a, slope b per month); cells with fewer than 2 valid months give NaN.
    """
    t = xr.DataArray(np.arange(da.sizes["time"], dtype=np.float64), dims="time")
    y = _baseline(da.astype(np.float64), fit_months)
    t = t.isel(time=np.flatnonzero(fit_months))
    valid = y.notnull()
    n = valid.sum("time")
    tv = t.where(valid)
    t_mean = tv.sum("time") / n
    y_mean = y.sum("time") / n
    cov = ((tv - t_mean) * (y - y_mean)).sum("time")
    var = ((tv - t_mean) ** 2).sum("time")
    slope = (cov / var).where(n >= 2)
    offset = (y_mean - slope * t_mean).where(n >= 2)
    units = da.attrs.get("units", "1")
    offset.attrs = {"long_name": f"trend offset of {da.name}", "units": units}
    slope.attrs = {"long_name": f"trend slope of {da.name}", "units": f"{units} month-1"}
    return offset, slope


def trend_line(offset: xr.DataArray, slope: xr.DataArray, n_months: int, time: xr.DataArray) -> xr.DataArray:
    """The fitted line evaluated at every month."""
    t = xr.DataArray(np.arange(n_months, dtype=np.float64), dims="time", coords={"time": time})
    return offset + slope * t


def detrend(da: xr.DataArray, fit_months: np.ndarray) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """Remove a per-cell linear trend fitted on ``fit_months``; returns (detrended, offset, slope)."""
    offset, slope = fit_linear_trend(da, fit_months)
    out = (da - trend_line(offset, slope, da.sizes["time"], da["time"])).astype(da.dtype)
    out.attrs = dict(da.attrs)
    return out, offset, slope


def build_predictors(fields: dict[str, xr.DataArray], baseline: np.ndarray, names=PREDICTOR_NAMES) -> xr.Dataset:
    """The predictors ``names`` from regridded fields (mm/month fluxes, K, mm storage).

    ``fields`` holds precipitation, temperature, evaporation (ET, positive upward loss), runoff
    and land_water_storage on one (time, lat, lon) grid. ``baseline`` marks the months whose
    climatology and mean define the anomalies (the training months).
    """
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)} for the predictors")
    expected_units = {"precipitation": "mm month-1", "evaporation": "mm month-1", "runoff": "mm month-1",
                      "temperature": "K", "land_water_storage": "mm"}
    for name, units in expected_units.items():
        got = fields[name].attrs.get("units")
        if got != units:
            raise ValueError(f"field {name}: units {got!r}, expected {units!r}")
    p, et, r = fields["precipitation"], fields["evaporation"], fields["runoff"]
    p_anom = anomaly(p, baseline)
    cwb_anom = anomaly(p - et, baseline).assign_attrs(units="mm month-1")
    balance_anom = anomaly(p - et - r, baseline).assign_attrs(units="mm month-1")
    recipes = {
        "sTWSA": lambda: mean_anomaly(fields["land_water_storage"], baseline),
        "CWSC": lambda: running_sum(balance_anom, "mm"),
        "P": lambda: p_anom,
        "T": lambda: anomaly(fields["temperature"], baseline),
        "CWB": lambda: cwb_anom,
        "CPA": lambda: running_sum(p_anom, "mm"),
        "CCWB": lambda: running_sum(cwb_anom, "mm"),
    }
    out = {}
    for name in names:
        da = recipes[name]().astype(np.float32)
        da.attrs = {"units": da.attrs.get("units", "1"), "long_name": LONG_NAMES[name]}
        out[name] = da.rename(name)
    return xr.Dataset(out)
