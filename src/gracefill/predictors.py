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

:func:`memory_features` gives stationary alternatives to the running sums for regression
baselines: exponentially weighted anomalies (:func:`ew_anomaly`) at several time scales. The
same are predictors of their own, named ``<flux>_ew<months>`` (e.g. ``WSC_ew24``: the water
storage change P - ET - R, exponentially weighted over 24 months; fluxes P, CWB, WSC).
"""
from __future__ import annotations

import numbers
import re

import numpy as np
import xarray as xr

from gracefill.fields import PRODUCT_VARIABLES

PREDICTOR_NAMES = ("sTWSA", "CWSC", "P", "T", "CWB", "CPA", "CCWB")

#: CF standard names of the predictors that the standard-name table has (the others, anomalies of
#: fluxes and storages, have none there)
STANDARD_NAMES = {"T": "air_temperature_anomaly"}
LONG_NAMES = {
    "sTWSA": "simulated terrestrial water storage anomaly (land model)",
    "CWSC": "cumulative water storage change (running sum of P - ET - R anomalies)",
    "P": "precipitation anomaly",
    "T": "2 m air temperature anomaly",
    "CWB": "climatic water balance (P - ET) anomaly",
    "CPA": "cumulative precipitation anomaly",
    "CCWB": "cumulative climatic water balance anomaly",
}

#: named predictor sets (``predictors.names``): the paper's seven; and "memory", the running sums
#: replaced by exponentially weighted anomalies (chosen on the validation folds of five worlds,
#: bench/select_on_folds.py)
PREDICTOR_PRESETS = {
    "paper": PREDICTOR_NAMES,
    "memory": ("sTWSA", "P", "T", "CWB", "P_ew6", "P_ew24", "CWB_ew6", "CWB_ew24", "WSC_ew12", "WSC_ew48"),
}

#: memory predictors: <flux>_ew<e-folding months>
MEMORY_PREDICTOR = re.compile(r"^(P|CWB|WSC)_ew([1-9][0-9]?)$")

#: regridded variables each predictor needs: those of the predictors' raw product
REQUIRED_FIELDS = PRODUCT_VARIABLES["era5land"]
#: units each regridded field must have
FIELD_UNITS = {"precipitation": "mm month-1", "evaporation": "mm month-1", "runoff": "mm month-1",
               "temperature": "K", "land_water_storage": "mm"}
#: regridded variables the memory features need
MEMORY_FIELDS = ("precipitation", "evaporation", "runoff", "land_water_storage")
#: default e-folding time scales (months) of the memory features
MEMORY_TIME_SCALES = (3, 6, 12, 24, 48)
#: the anomalous fluxes the memory features smooth: name -> long name
MEMORY_FLUXES = {
    "P": "precipitation anomaly",
    "CWB": "climatic water balance (P - ET) anomaly",
    "WSC": "water storage change (P - ET - R) anomaly",
}


def _baseline(da: xr.DataArray, baseline: np.ndarray) -> xr.DataArray:
    if baseline.dtype != bool or baseline.shape != (da.sizes["time"],):
        raise ValueError(f"baseline must be a boolean mask over the {da.sizes['time']} months")
    if not baseline.any():
        raise ValueError("baseline selects no month")
    return da.isel(time=np.flatnonzero(baseline))


def climatology(da: xr.DataArray, baseline: np.ndarray) -> xr.DataArray:
    """Mean of each calendar month over the baseline months, indexed by ``month`` (1..12).

    Parameters
    ----------
    da : xr.DataArray
        A monthly field on (time, ...), any units.
    baseline : np.ndarray
        Boolean mask over the months of ``da`` (the training months) the statistic is taken on.

    Returns
    -------
    xr.DataArray
        The climatology on (month, ...), in the units of ``da``.

    Raises
    ------
    ValueError
        When the mask is malformed or empty, or misses a calendar month.
    """
    base = _baseline(da, baseline)
    clim = base.groupby("time.month").mean("time")
    missing = sorted(set(range(1, 13)) - set(clim["month"].values.tolist()))
    if missing:
        raise ValueError(f"baseline lacks calendar month(s) {missing}; a climatology needs every month")
    return clim


def anomaly(da: xr.DataArray, baseline: np.ndarray) -> xr.DataArray:
    """Departure from the baseline monthly climatology (:func:`climatology`).

    Parameters
    ----------
    da : xr.DataArray
        A monthly field on (time, ...), any units.
    baseline : np.ndarray
        Boolean mask over the months of ``da`` (the training months) the statistic is taken on.

    Returns
    -------
    xr.DataArray
        The anomaly on the dims of ``da``, with its attrs (units kept).
    """
    out = da.groupby("time.month") - climatology(da, baseline)
    out = out.drop_vars("month")
    out.attrs = dict(da.attrs)
    return out


def mean_anomaly(da: xr.DataArray, baseline: np.ndarray) -> xr.DataArray:
    """Departure from the baseline time mean (the seasonal cycle kept), e.g. the land model's storage.

    Parameters
    ----------
    da : xr.DataArray
        A monthly field on (time, ...), any units.
    baseline : np.ndarray
        Boolean mask over the months of ``da`` (the training months) the statistic is taken on.

    Returns
    -------
    xr.DataArray
        The departure on the dims of ``da``, with its attrs (units kept).
    """
    out = da - _baseline(da, baseline).mean("time")
    out.attrs = dict(da.attrs)
    return out


def running_sum(da: xr.DataArray, units: str) -> xr.DataArray:
    """Running sum along time from the first month (the paper's CPA, CCWB and CWSC).

    Parameters
    ----------
    da : xr.DataArray
        A monthly flux on (time, ...), e.g. an anomaly in mm month-1; a NaN month makes every later
        month NaN.
    units : str
        Units of the sum (mm for a flux in mm month-1).

    Returns
    -------
    xr.DataArray
        The running sum on the dims of ``da``, attrs of ``da`` with ``units``.
    """
    out = da.cumsum("time", skipna=False)
    out.attrs = dict(da.attrs, units=units)
    return out


def fit_linear_trend(da: xr.DataArray, fit_months: np.ndarray) -> tuple[xr.DataArray, xr.DataArray]:
    """Per-cell least-squares line a + b * t over the months selected by ``fit_months``.

    t is the month index from the first month of ``da``; NaN values are left out of the fit.

    Parameters
    ----------
    da : xr.DataArray
        A monthly field on (time, ...), units U.
    fit_months : np.ndarray
        Boolean mask over the months of ``da`` to fit on (the training months).

    Returns
    -------
    offset : xr.DataArray
        a on the dims of ``da`` but time, in U (the line's value at month 0).
    slope : xr.DataArray
        b, in U month-1. Both NaN where fewer than 2 months are valid.
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


#: how the residuals' lag-1 autocorrelation is estimated for the trend's red-noise standard error
TREND_AUTOCORRELATIONS = ("sample", "bias_corrected")


def _red_noise_slope_variance(da: xr.DataArray, fit_months: np.ndarray, offset: xr.DataArray, slope: xr.DataArray,
                              autocorrelation: str = "sample"):
    """se^2 of a least-squares slope fitted on ``fit_months``, inflated by (1 + rho) / (1 - rho)
    for the residuals' lag-1 autocorrelation rho (clipped to [0, 0.95]); also the valid month
    count, the mean month index and the mean value of the fit months, per cell.

    ``bias_corrected`` adds (1 + 4 rho) / n to the sample rho: the lag-1 estimate of n months
    with their line removed is biased low (AR(1) with rho 0.9: 0.77 on average at n = 60, 0.85 at
    n = 144), so the plain estimate understates how little a slope over a short window says."""
    if autocorrelation not in TREND_AUTOCORRELATIONS:
        raise ValueError(f"trend_autocorrelation must be one of {', '.join(TREND_AUTOCORRELATIONS)}, "
                         f"got {autocorrelation!r}")
    index = np.flatnonzero(fit_months)
    t = xr.DataArray(index.astype(np.float64), dims="time")
    y = da.astype(np.float64).isel(time=index).drop_vars("time", errors="ignore")
    residual = y - (offset + slope * t)
    valid = residual.notnull()
    n = valid.sum("time")
    t_mean = t.where(valid).sum("time") / n
    sxx = ((t - t_mean) ** 2).where(valid).sum("time")
    consecutive = xr.DataArray(np.diff(index) == 1, dims="time")
    lagged = (residual.isel(time=slice(1, None)).drop_vars("time", errors="ignore")
              * residual.isel(time=slice(None, -1)).drop_vars("time", errors="ignore")).where(consecutive)
    rho = lagged.sum("time") / (residual ** 2).sum("time")
    if autocorrelation == "bias_corrected":
        rho = rho + (1 + 4 * rho) / n
    rho = rho.clip(0.0, 0.95)
    se2 = (residual ** 2).sum("time") / (n - 2) / sxx * (1 + rho) / (1 - rho)
    return se2, n, t_mean, y.where(valid).sum("time") / n


#: |slope| / its red-noise standard error at or above which a trend counts as significant
#: (about the two-sided 95 % level) for ``predictors.trend_extension: significant``
TREND_SIGNIFICANCE = 2.0


def significant_trend(da: xr.DataArray, fit_months: np.ndarray, autocorrelation: str = "sample") -> xr.DataArray:
    """Per cell, whether the line fitted on ``fit_months`` has a slope at least
    :data:`TREND_SIGNIFICANCE` red-noise standard errors from zero (see :func:`shrunk_trend`).

    Parameters
    ----------
    da : xr.DataArray
        A monthly field on (time, ...).
    fit_months : np.ndarray
        Boolean mask over the months of ``da`` to fit on (the training months).
    autocorrelation : {"sample", "bias_corrected"}
        How the residuals' lag-1 autocorrelation is estimated (see :func:`shrunk_trend`).

    Returns
    -------
    xr.DataArray
        Boolean on the dims of ``da`` but time; False where fewer than 3 months are valid.
    """
    offset, slope = fit_linear_trend(da, fit_months)
    se2, n, _, _ = _red_noise_slope_variance(da, fit_months, offset, slope, autocorrelation)
    return ((slope ** 2 >= TREND_SIGNIFICANCE ** 2 * se2) & (n >= 3)).fillna(False).astype(bool)


def shrunk_trend(da: xr.DataArray, fit_months: np.ndarray,
                 autocorrelation: str = "sample") -> tuple[xr.DataArray, xr.DataArray]:
    """Per-cell line fitted on ``fit_months`` with its slope shrunk toward zero by its red-noise
    standard error: slope * b^2 / (b^2 + se^2), the line kept through the fit months' mean.

    se^2 is the least-squares slope variance inflated by (1 + rho) / (1 - rho), rho the lag-1
    autocorrelation of the residuals (clipped to [0, 0.95]): a storage that wanders for years
    gives a large slope over a short window that says little about the years after it, so such
    a slope is mostly removed, while a trend well above its noise is kept.

    Parameters
    ----------
    da : xr.DataArray
        A monthly field on (time, ...), units U.
    fit_months : np.ndarray
        Boolean mask over the months of ``da`` to fit on (the training months).
    autocorrelation : {"sample", "bias_corrected"}
        rho as measured, or plus (1 + 4 rho) / n for its low bias over n months with the line
        removed (``predictors.trend_autocorrelation``).

    Returns
    -------
    offset : xr.DataArray
        The line's value at month 0, in U.
    slope : xr.DataArray
        The shrunk slope, in U month-1. Both NaN where fewer than 3 months are valid.
    """
    offset, slope = fit_linear_trend(da, fit_months)
    se2, n, t_mean, y_mean = _red_noise_slope_variance(da, fit_months, offset, slope, autocorrelation)
    weight = (slope ** 2 / (slope ** 2 + se2)).fillna(0.0)
    shrunk = (slope * weight).where(n >= 3)
    new_offset = (y_mean - shrunk * t_mean).where(n >= 3)
    return new_offset.assign_attrs(offset.attrs), shrunk.assign_attrs(slope.attrs)


def trend_line(offset: xr.DataArray, slope: xr.DataArray, n_months: int, time: xr.DataArray) -> xr.DataArray:
    """The fitted line offset + slope * t evaluated at every month t = 0 .. n_months - 1.

    Parameters
    ----------
    offset, slope : xr.DataArray
        From :func:`fit_linear_trend` or :func:`shrunk_trend` (U and U month-1).
    n_months : int
        Number of months.
    time : xr.DataArray
        The time coordinate the result carries (``n_months`` long).

    Returns
    -------
    xr.DataArray
        The line on (time, ...), in U.
    """
    t = xr.DataArray(np.arange(n_months, dtype=np.float64), dims="time", coords={"time": time})
    return offset + slope * t


def trend_month_index(fit_months: np.ndarray, extension: str = "linear") -> np.ndarray:
    """The month index (from the first month) at which a line fitted on ``fit_months`` (a boolean
    mask over the months) is evaluated in each month: the month itself for ``linear`` (the line
    extrapolated before and after the fit months), clipped to the first and last fit month for
    ``flat`` (the line held at its value at the window's edges: a slope seen over a decade is
    not assumed to have held for the decades before it, nor to go on).

    Parameters
    ----------
    fit_months : np.ndarray
        Boolean mask over the months (the training months).
    extension : {"linear", "flat"}
        ``predictors.trend_extension``.

    Returns
    -------
    np.ndarray
        Month index (float64, one per month) at which to read the line.

    Raises
    ------
    ValueError
        For another ``extension``.
    """
    fit_months = np.asarray(fit_months, dtype=bool)
    if extension not in ("linear", "flat"):
        raise ValueError(f"trend extension must be one of linear, flat, got {extension!r}")
    index = np.arange(fit_months.size, dtype=np.float64)
    fit = np.flatnonzero(fit_months)
    if extension == "flat" and fit.size:
        index = np.clip(index, fit[0], fit[-1])
    return index


def detrend(da: xr.DataArray, fit_months: np.ndarray) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """Remove a per-cell linear trend fitted on ``fit_months`` (:func:`fit_linear_trend`).

    Parameters
    ----------
    da : xr.DataArray
        A monthly field on (time, ...), units U.
    fit_months : np.ndarray
        Boolean mask over the months of ``da`` to fit on (the training months).

    Returns
    -------
    detrended : xr.DataArray
        ``da`` minus the line, in U, dtype and attrs of ``da``.
    offset, slope : xr.DataArray
        The line (U, U month-1).
    """
    offset, slope = fit_linear_trend(da, fit_months)
    out = (da - trend_line(offset, slope, da.sizes["time"], da["time"])).astype(da.dtype)
    out.attrs = dict(da.attrs)
    return out, offset, slope


def detrend_predictors(ds: xr.Dataset, names, baseline: np.ndarray) -> xr.Dataset:
    """Remove each predictor's per-cell linear trend fitted on the training months, keeping
    the slopes (CF: one slope variable per predictor, in its own units per month).

    Parameters
    ----------
    ds : xr.Dataset
        The predictors ``names`` on (time, lat, lon), as :func:`build_predictors` returns them.
    names : sequence of str
        The predictors to detrend. A memory predictor (``<P|CWB|WSC>_ew<months>``) is stationary
        by construction: it is kept as it is and its slope is 0 wherever it has a value.
    baseline : np.ndarray
        Boolean mask over the months to fit on (the training months).

    Returns
    -------
    xr.Dataset
        ``ds`` with every name detrended and ``trend_slope_<name>`` (float32, U month-1) added.
    """
    ds = ds.copy()
    for name in list(names):
        units = ds[name].attrs.get("units", "1")
        if MEMORY_PREDICTOR.match(name):  # stationary by construction: its trend is noise
            slope = xr.zeros_like(ds[name].isel(time=0, drop=True)).where(ds[name].notnull().any("time"))
        else:
            ds[name], _, slope = detrend(ds[name], baseline)
        ds[f"trend_slope_{name}"] = slope.astype(np.float32).assign_attrs(
            long_name=f"linear trend removed from {name} (fitted on training months)", units=f"{units} month-1")
    return ds


def _check_fields(fields: dict[str, xr.DataArray], required: tuple[str, ...], purpose: str) -> None:
    missing = [f for f in required if f not in fields]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)} for the {purpose}")
    for name in required:
        got = fields[name].attrs.get("units")
        if got != FIELD_UNITS[name]:
            raise ValueError(f"field {name}: units {got!r}, expected {FIELD_UNITS[name]!r}")


def _fluxes(fields: dict[str, xr.DataArray]) -> dict[str, xr.DataArray]:
    """The monthly fluxes behind the predictors (:data:`MEMORY_FLUXES`): P, the climatic water
    balance P - ET and the water storage change P - ET - R, in mm month-1."""
    p, et, r = fields["precipitation"], fields["evaporation"], fields["runoff"]
    return {"P": p, "CWB": (p - et).assign_attrs(units="mm month-1"), "WSC": (p - et - r).assign_attrs(units="mm month-1")}


def build_predictors(fields: dict[str, xr.DataArray], baseline: np.ndarray, names=PREDICTOR_NAMES) -> xr.Dataset:
    """The predictors ``names`` from regridded fields (mm/month fluxes, K, mm storage).

    Parameters
    ----------
    fields : dict of str to xr.DataArray
        ``precipitation``, ``evaporation`` (ET, positive upward loss) and ``runoff`` in
        mm month-1, ``temperature`` in K and ``land_water_storage`` in mm, on one (time, lat, lon)
        grid (:data:`FIELD_UNITS`).
    baseline : np.ndarray
        Boolean mask over the months whose climatology and mean define the anomalies (the
        training months).
    names : sequence of str
        Predictor names: the paper's seven (:data:`PREDICTOR_NAMES`) or ``<P|CWB|WSC>_ew<months>``.

    Returns
    -------
    xr.Dataset
        One float32 variable per name on (time, lat, lon): sTWSA, CPA, CCWB and CWSC in mm; P,
        CWB and the memory predictors in mm month-1; T in K; units and long names in attrs.

    Raises
    ------
    ValueError
        For a missing field, a field in other units or an unknown name.
    """
    _check_fields(fields, REQUIRED_FIELDS, "predictors")
    fluxes = _fluxes(fields)
    p_anom = anomaly(fluxes["P"], baseline)
    cwb_anom = anomaly(fluxes["CWB"], baseline)
    balance_anom = anomaly(fluxes["WSC"], baseline)
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
        memory = MEMORY_PREDICTOR.match(name)
        if memory:
            flux, tau = memory.group(1), int(memory.group(2))
            da = ew_anomaly(fluxes[flux], baseline, tau).astype(np.float32)
            long_name = f"{MEMORY_FLUXES[flux]}, exponentially weighted over {tau} months"
        elif name in recipes:
            da = recipes[name]().astype(np.float32)
            long_name = LONG_NAMES[name]
        else:
            raise ValueError(f"unknown predictor {name!r}: expected one of {', '.join(PREDICTOR_NAMES)} "
                             "or <P|CWB|WSC>_ew<months>")
        da.attrs = {"units": da.attrs.get("units", "1"), "long_name": long_name,
                    **({"standard_name": STANDARD_NAMES[name]} if name in STANDARD_NAMES else {})}
        out[name] = da.rename(name)
    return xr.Dataset(out)


def ew_anomaly(da: xr.DataArray, baseline: np.ndarray, time_scale_months: float) -> xr.DataArray:
    """Exponentially weighted average of the anomaly of ``da`` (departure from the baseline
    monthly climatology, :func:`anomaly`); a memory of the last ~``time_scale_months`` months.

    x_t = a x_{t-1} + (1 - a) anom_t with a = exp(-1 / time_scale_months), x = 0 before the
    first month. Causal: month t depends on the anomalies of t and earlier months only (the
    climatology is the baseline's, as for every predictor). A NaN anomaly leaves the state
    unchanged (no decay, no update) and gives NaN that month, so a cell that is never valid
    stays NaN; months absent from the time axis count the same way (one step per time stamp,
    which must increase). Unlike a running sum, x is a weighted mean of anomalies (and of the
    initial 0), never beyond the largest anomaly so far, so it does not drift; the first
    ~``time_scale_months`` months are damped towards 0 (spin-up). Not detrended.

    Parameters
    ----------
    da : xr.DataArray
        A monthly field on (time, ...), any units; time strictly increasing.
    baseline : np.ndarray
        Boolean mask over the months of the climatology (the training months).
    time_scale_months : float
        The e-folding time scale, months (> 0).

    Returns
    -------
    xr.DataArray
        The weighted anomaly on the dims of ``da``, in its units, with ``time_scale_months`` in
        attrs.

    Raises
    ------
    ValueError
        For a non-positive time scale, no time dimension or a time axis that does not increase.
    """
    if (not isinstance(time_scale_months, numbers.Real) or isinstance(time_scale_months, (bool, np.bool_))
            or not np.isfinite(time_scale_months) or time_scale_months <= 0):
        raise ValueError(f"time_scale_months must be a positive number of months, got {time_scale_months!r}")
    if "time" not in da.dims:
        raise ValueError(f"da must have a time dimension, got dims {da.dims}")
    index = da.indexes.get("time")
    if index is not None and not (index.is_monotonic_increasing and index.is_unique):
        raise ValueError("da.time must be strictly increasing")
    anom = anomaly(da, baseline).transpose("time", ...)
    a = float(np.exp(-1.0 / time_scale_months))
    values = anom.values.astype(np.float64)
    out = np.full_like(values, np.nan)
    state = np.zeros(values.shape[1:])
    for t in range(values.shape[0]):          # recursion over months, vectorised over cells
        valid = np.isfinite(values[t])
        state = np.where(valid, a * state + (1.0 - a) * np.where(valid, values[t], 0.0), state)
        out[t] = np.where(valid, state, np.nan)
    dtype = anom.dtype if np.issubdtype(anom.dtype, np.floating) else np.float64
    result = anom.copy(data=out.astype(dtype)).transpose(*da.dims)
    result.attrs = dict(anom.attrs, time_scale_months=float(time_scale_months),
                        long_name=f"exponentially weighted anomaly ({time_scale_months:g}-month time scale)")
    return result


def memory_features(fields: dict[str, xr.DataArray], baseline: np.ndarray,
                    time_scales=MEMORY_TIME_SCALES) -> xr.DataArray:
    """Stationary memory features (time, feature, lat, lon) for regression baselines.

    Features: "sTWSA" (land-model storage minus its baseline mean, :func:`mean_anomaly`, mm)
    and, per time scale tau in ``time_scales`` (months), the :func:`ew_anomaly` of precipitation
    "P_ew<tau>", of the climatic water balance P - ET "CWB_ew<tau>" and of the water storage
    change P - ET - R "WSC_ew<tau>" (mm month-1). They carry the same memory as the running
    sums CPA, CCWB and CWSC but are stationary by construction: a running sum of anomalies
    random-walks away from its training range, so a regression on it extrapolates out of
    sample, while an exponentially weighted mean stays within the anomalies' range (after a
    spin-up of ~tau months from 0 at the first month, see :func:`ew_anomaly`).
    ``fields`` as for :func:`build_predictors` (temperature not needed); anomalies and means
    are fitted on ``baseline``.

    Parameters
    ----------
    fields : dict of str to xr.DataArray
        ``precipitation``, ``evaporation``, ``runoff`` (mm month-1) and ``land_water_storage``
        (mm) on one (time, lat, lon) grid.
    baseline : np.ndarray
        Boolean mask over the months of the anomalies and means (the training months).
    time_scales : sequence of float
        Distinct positive e-folding time scales, months.

    Returns
    -------
    xr.DataArray
        float32 on (time, feature, lat, lon); units per feature in the ``feature_units``
        coordinate, time scales (0 for sTWSA) in ``feature_time_scale``.

    Raises
    ------
    ValueError
        For missing fields, fields in other units or bad time scales.
    """
    _check_fields(fields, MEMORY_FIELDS, "memory features")
    scales = np.atleast_1d(np.asarray(time_scales))
    if (scales.ndim != 1 or scales.size == 0 or scales.dtype == bool or not np.issubdtype(scales.dtype, np.number)
            or not np.isfinite(scales).all() or (scales <= 0).any() or np.unique(scales).size != scales.size):
        raise ValueError(f"time_scales must be distinct positive numbers of months, got {time_scales!r}")
    fluxes = _fluxes(fields)
    storage = mean_anomaly(fields["land_water_storage"], baseline)
    layers, names, units, taus, long_names = [storage], ["sTWSA"], ["mm"], [0.0], [LONG_NAMES["sTWSA"]]
    for flux, da in fluxes.items():
        for tau in scales.tolist():
            layers.append(ew_anomaly(da, baseline, tau))
            names.append(f"{flux}_ew{tau:g}")
            units.append("mm month-1")
            taus.append(float(tau))
            long_names.append(f"{MEMORY_FLUXES[flux]}, exponentially weighted over {tau:g} months")
    layers = [layer.transpose("time", "lat", "lon").astype(np.float32).drop_vars("feature", errors="ignore")
              for layer in layers]
    out = xr.concat(layers, dim="feature", coords="minimal", compat="override", join="exact")
    out = out.transpose("time", "feature", "lat", "lon").assign_coords(
        feature=("feature", names),
        feature_units=("feature", units),
        feature_time_scale=("feature", taus, {"units": "month", "long_name": "e-folding time scale (0: none)"}),
        feature_long_name=("feature", long_names),
    )
    out.attrs = {"long_name": "memory features (exponentially weighted anomalies, storage anomaly)",
                 "comment": "units per feature in feature_units"}
    return out.rename("memory_features")
