"""Reference predictions the Bayesian CNN must beat, each fitted on training months only.

(a) :func:`climatology_trend`: per cell, a linear trend plus a monthly climatology.
(b) :func:`regression`: per-cell multiple linear regression on the CNN's own lagged input stack.
(c) :func:`land_model`: the land model's sTWSA itself, in the target's units, optionally with a
    per-cell offset or gain fitted on the training months.

The fits are per-cell least squares, vectorised over cells (batched normal equations on
centred, standardised predictors); only the training months enter them, so nothing outside
the training window can change a fit. A cell gets NaN when it has fewer valid training months
than ``min_months`` or when its predictors are collinear there (rank deficient without ridge).
"""
from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import months as mo

#: water-equivalent length units and their size in mm (1 kg m-2 of water is 1 mm)
LENGTH_UNITS_MM = MappingProxyType({"mm": 1.0, "kg m-2": 1.0, "cm": 10.0, "m": 1000.0})
FIT_MODES = ("none", "offset", "gain")
_CELL_BLOCK = 4096          # cells per block of the batched fit (bounds memory)
_RCOND = 1e-10              # relative eigenvalue below which a cell's system counts as singular


# --------------------------------------------------------------------------- helpers
def _check(da, name: str, dims: tuple[str, ...]) -> xr.DataArray:
    if not isinstance(da, xr.DataArray):
        raise ValueError(f"{name} must be an xarray.DataArray, got {type(da).__name__}")
    if set(da.dims) != set(dims):
        raise ValueError(f"{name} must have dims {dims}, got {da.dims}")
    return da.transpose(*dims)


def _train_mask(train, da: xr.DataArray, name: str = "train") -> np.ndarray:
    """Boolean mask over ``da.time``: a numpy mask of that length, or a boolean DataArray over time."""
    n = da.sizes["time"]
    if isinstance(train, xr.DataArray):
        if train.dims != ("time",):
            raise ValueError(f"{name} must be a boolean mask over time, got dims {train.dims}")
        if "time" in train.coords:
            train = train.reindex(time=da["time"], fill_value=False)
        mask = np.asarray(train.values)
    else:
        mask = np.asarray(train)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"{name} must be a boolean mask over the {n} months")
    if not mask.any():
        raise ValueError(f"{name} selects no month")
    return mask


def _same_grid(**arrays: xr.DataArray) -> None:
    spatial = {n: da.drop_vars([c for c in da.coords if c not in ("lat", "lon")]) for n, da in arrays.items()}
    ref_name, ref = next(iter(spatial.items()))
    for name, da in spatial.items():
        for dim in ("lat", "lon"):
            if ref.sizes[dim] != da.sizes[dim] or (dim in ref.coords and dim in da.coords
                                                  and not np.array_equal(ref[dim].values, da[dim].values)):
                raise ValueError(f"{name} and {ref_name} differ in {dim}; put them on one grid first")


def _month_index(time: xr.DataArray) -> np.ndarray:
    """Months since year 0 of each time stamp (robust to months missing from the axis)."""
    m = mo.to_month_start(time.values)
    return (m.year.to_numpy() * 12 + m.month.to_numpy() - 1).astype(np.int64)


def _fit_block(x: np.ndarray, y: np.ndarray, ridge: float,
               min_months: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares y = a + x @ b per cell. x (cell, time, p), y (cell, time), NaN rows dropped.

    Predictors are centred and scaled per cell; ``ridge`` is added to the diagonal of their
    correlation-like matrix (so it is scale-free); the intercept is not penalised.
    Returns (b (cell, p), a (cell,), n (cell,)); NaN where too few months or singular.
    """
    valid = np.isfinite(y) & np.isfinite(x).all(axis=-1)
    w = valid.astype(np.float64)
    n = w.sum(axis=1)
    nn = np.maximum(n, 1.0)
    x = np.where(valid[..., None], x, 0.0)
    y = np.where(valid, y, 0.0)
    xbar = x.sum(axis=1) / nn[:, None]
    ybar = y.sum(axis=1) / nn
    xc = (x - xbar[:, None, :]) * w[..., None]
    yc = (y - ybar[:, None]) * w
    scale = np.sqrt((xc ** 2).sum(axis=1) / nn[:, None])
    scale = np.where(scale > 0, scale, 1.0)
    z = xc / scale[:, None, :]
    zt = np.swapaxes(z, 1, 2)
    a = zt @ z / nn[:, None, None]
    rhs = (zt @ yc[..., None])[..., 0] / nn[:, None]
    p = x.shape[-1]
    a = a + ridge * np.eye(p)
    evals, evecs = np.linalg.eigh(a)
    ok = (n >= min_months) & (evals[:, 0] > _RCOND * np.maximum(evals[:, -1], 1e-300))
    inv = np.where(ok[:, None], 1.0 / np.where(evals > 0, evals, 1.0), np.nan)
    proj = np.einsum("ckj,ck->cj", evecs, rhs)
    beta_z = np.einsum("cij,cj->ci", evecs, inv * proj)
    coef = beta_z / scale
    intercept = ybar - (coef * xbar).sum(axis=1)
    return coef, intercept, n


def _fit_cells(x_tcc: np.ndarray, y_tc: np.ndarray, ridge: float, min_months: int):
    """Batched fit over cells in blocks. x (time, p, cell) or (time, p) shared; y (time, cell)."""
    n_cell = y_tc.shape[1]
    p = x_tcc.shape[1]
    coef = np.full((n_cell, p), np.nan)
    intercept = np.full(n_cell, np.nan)
    count = np.zeros(n_cell, dtype=np.int64)
    active = np.flatnonzero(np.isfinite(y_tc).any(axis=0))      # cells with any valid target
    for i in range(0, active.size, _CELL_BLOCK):
        cells = active[i:i + _CELL_BLOCK]
        y = y_tc[:, cells].T.astype(np.float64)
        if x_tcc.ndim == 2:
            x = np.broadcast_to(x_tcc.astype(np.float64), (cells.size, *x_tcc.shape))
        else:
            x = np.moveaxis(x_tcc[:, :, cells], 2, 0).astype(np.float64)
        coef[cells], intercept[cells], count[cells] = _fit_block(x, y, ridge, min_months)
    return coef, intercept, count


def _check_ridge(ridge) -> float:
    if not np.isscalar(ridge) or not np.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be a non-negative number, got {ridge!r}")
    return float(ridge)


# --------------------------------------------------------------------------- (a) climatology + trend
def fit_climatology_trend(target: xr.DataArray, train, min_months: int = 24) -> xr.Dataset:
    """Per-cell fit of y = offset + slope * t + seasonal[calendar month] on the training months.

    Trend and the 12 monthly means are fitted jointly (not one after the other, which biases
    both when the training window is not a whole number of years). t counts months from the
    first month of ``target``; ``seasonal`` has zero mean over the 12 months. A cell needs
    ``min_months`` valid training months and every calendar month among them, else NaN.
    """
    target = _check(target, "target", ("time", "lat", "lon"))
    mask = _train_mask(train, target)
    if min_months < 14:
        raise ValueError(f"min_months must be at least 14 (13 parameters), got {min_months!r}")
    mi = _month_index(target["time"])
    t = (mi - mi[0]).astype(np.float64)
    cal = mi % 12
    design = np.column_stack([t, (cal[:, None] == np.arange(1, 12)[None, :]).astype(np.float64)])
    ny, nx = target.sizes["lat"], target.sizes["lon"]
    y = target.values[mask].reshape(int(mask.sum()), -1)
    coef, intercept, count = _fit_cells(design[mask], y, 0.0, min_months)
    raw = np.concatenate([np.zeros((coef.shape[0], 1)), coef[:, 1:]], axis=1)       # Jan = reference
    raw = np.where(np.isfinite(coef[:, :1]), raw, np.nan)
    smean = raw.mean(axis=1)
    units = target.attrs.get("units", "1")
    grid = {"lat": target["lat"], "lon": target["lon"]}
    return xr.Dataset(
        {
            "offset": (("lat", "lon"), (intercept + smean).reshape(ny, nx),
                       {"units": units, "long_name": "trend line at the first month (seasonal mean removed)"}),
            "slope": (("lat", "lon"), coef[:, 0].reshape(ny, nx),
                      {"units": f"{units} month-1", "long_name": "linear trend"}),
            "seasonal": (("month", "lat", "lon"), (raw - smean[:, None]).T.reshape(12, ny, nx),
                         {"units": units, "long_name": "monthly climatology about the trend (zero mean)"}),
            "n_train": (("lat", "lon"), count.reshape(ny, nx),
                        {"units": "1", "long_name": "valid training months"}),
        },
        coords={**grid, "month": ("month", np.arange(1, 13), {"long_name": "calendar month"})},
        attrs={"reference_month": mo.month_labels(mo.to_month_start(target["time"].values[:1]))[0]},
    )


def predict_climatology_trend(fit: xr.Dataset, time: xr.DataArray) -> xr.DataArray:
    """Evaluate a :func:`fit_climatology_trend` result at the months ``time``."""
    mi = _month_index(time)
    ref = pd.Timestamp(fit.attrs["reference_month"])
    t = xr.DataArray((mi - (ref.year * 12 + ref.month - 1)).astype(np.float64), dims="time",
                     coords={"time": time.values})
    cal = xr.DataArray(mi % 12 + 1, dims="time", coords={"time": time.values})
    out = fit["offset"] + fit["slope"] * t + fit["seasonal"].sel(month=cal).drop_vars("month")
    return out.transpose("time", "lat", "lon").assign_attrs(
        units=fit["offset"].attrs["units"], long_name="climatology + linear trend baseline")


def climatology_trend(target: xr.DataArray, train, time: xr.DataArray | None = None,
                      min_months: int = 24) -> xr.DataArray:
    """Baseline (a): per-cell trend + monthly climatology fitted on ``train`` (boolean mask over
    ``target.time``), predicted for every month of ``time`` (default: ``target.time``)."""
    fit = fit_climatology_trend(target, train, min_months)
    return predict_climatology_trend(fit, target["time"] if time is None else time)


# --------------------------------------------------------------------------- (b) per-cell regression
def fit_regression(inputs: xr.DataArray, target: xr.DataArray, train, ridge: float = 0.0,
                   min_months: int | None = None) -> xr.Dataset:
    """Per-cell multiple linear regression target ~ intercept + sum_c coef_c * input_c.

    ``inputs`` (time, channel, lat, lon) is the CNN's lagged input stack; ``target`` (time,
    lat, lon) may lack months of ``inputs.time`` (they count as missing); ``train`` is a boolean
    mask over ``inputs.time``. Months where the target or any channel is NaN are left out per
    cell. ``ridge`` >= 0 penalises the coefficients of the standardised predictors (a small
    value, e.g. 1e-3, tames collinear lags); 0 is ordinary least squares. A cell needs
    ``min_months`` (default channels + 2) valid training months.
    """
    inputs = _check(inputs, "inputs", ("time", "channel", "lat", "lon"))
    target = _check(target, "target", ("time", "lat", "lon"))
    _same_grid(inputs=inputs, target=target)
    ridge = _check_ridge(ridge)
    mask = _train_mask(train, inputs)
    p = inputs.sizes["channel"]
    min_months = p + 2 if min_months is None else int(min_months)
    if min_months < p + 1:
        raise ValueError(f"min_months must be at least {p + 1} (channels + intercept), got {min_months}")
    try:
        tgt = target.reindex(time=inputs["time"])
    except ValueError:
        raise ValueError("target time axis cannot be matched to the inputs' time axis") from None
    if int(tgt.notnull().sum()) < int(target.notnull().sum()):
        raise ValueError("target has months that are not in inputs.time")
    idx = np.flatnonzero(mask)
    ny, nx = inputs.sizes["lat"], inputs.sizes["lon"]
    x = inputs.values[idx].reshape(idx.size, p, ny * nx)
    y = tgt.values[idx].reshape(idx.size, ny * nx)
    coef, intercept, count = _fit_cells(x, y, ridge, min_months)
    units = target.attrs.get("units", "1")
    coords = {k: v for k, v in inputs.coords.items() if k != "time" and "time" not in v.dims}
    return xr.Dataset(
        {
            "coef": (("channel", "lat", "lon"), coef.T.reshape(p, ny, nx),
                     {"units": f"{units} per input unit", "long_name": "regression coefficient of each input channel"}),
            "intercept": (("lat", "lon"), intercept.reshape(ny, nx), {"units": units, "long_name": "intercept"}),
            "n_train": (("lat", "lon"), count.reshape(ny, nx), {"units": "1", "long_name": "valid training months"}),
        },
        coords=coords, attrs={"ridge": ridge, "min_months": min_months},
    )


def predict_regression(fit: xr.Dataset, inputs: xr.DataArray) -> xr.DataArray:
    """Evaluate a :func:`fit_regression` result on an input stack (time, channel, lat, lon)."""
    inputs = _check(inputs, "inputs", ("time", "channel", "lat", "lon"))
    if inputs.sizes["channel"] != fit.sizes["channel"]:
        raise ValueError(f"inputs have {inputs.sizes['channel']} channels, the fit {fit.sizes['channel']}")
    coef = fit["coef"].drop_vars([c for c in fit["coef"].coords if c not in ("lat", "lon")])
    x = inputs.drop_vars([c for c in inputs.coords if "channel" in inputs[c].dims])
    out = xr.dot(x.astype(np.float64), coef, dim="channel") + fit["intercept"]
    return out.transpose("time", "lat", "lon").assign_attrs(
        units=fit["intercept"].attrs["units"], long_name="per-cell linear regression baseline")


def regression(inputs: xr.DataArray, target: xr.DataArray, train, ridge: float = 0.0,
               min_months: int | None = None) -> xr.DataArray:
    """Baseline (b): :func:`fit_regression` on the training months, predicted for every month of
    ``inputs`` (NaN where a channel is missing)."""
    return predict_regression(fit_regression(inputs, target, train, ridge, min_months), inputs)


# --------------------------------------------------------------------------- (c) the land model
def convert_units(da: xr.DataArray, units: str) -> xr.DataArray:
    """Rescale a water-equivalent length (mm, kg m-2, cm, m) to ``units``."""
    src = da.attrs.get("units")
    if src not in LENGTH_UNITS_MM:
        raise ValueError(f"units {src!r} of {da.name or 'the data'} are not one of {sorted(LENGTH_UNITS_MM)}")
    if units not in LENGTH_UNITS_MM:
        raise ValueError(f"target units {units!r} are not one of {sorted(LENGTH_UNITS_MM)}")
    factor = LENGTH_UNITS_MM[src] / LENGTH_UNITS_MM[units]
    out = da * factor if factor != 1.0 else da.copy()
    return out.assign_attrs(dict(da.attrs, units=units))


def land_model(stwsa: xr.DataArray, target: xr.DataArray, train=None, fit: str = "none") -> xr.DataArray:
    """Baseline (c): the land model's sTWSA as the prediction, in ``target``'s units.

    ``fit`` = "none": unit conversion only (the land model as it is; its anomaly refers to its
    own baseline mean). "offset": plus a per-cell constant so that its mean over the training
    months (where the target is valid) equals the target's, i.e. the same reference period.
    "gain": a per-cell target ~ a + g * sTWSA by least squares on the training months, which
    also corrects amplitude (land models often miss storage components, e.g. groundwater).
    ``train`` is a boolean mask over ``stwsa.time`` (needed for "offset" and "gain").
    """
    stwsa = _check(stwsa, "stwsa", ("time", "lat", "lon"))
    target = _check(target, "target", ("time", "lat", "lon"))
    _same_grid(stwsa=stwsa, target=target)
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    units = target.attrs.get("units")
    if units is None:
        raise ValueError("target has no units attribute; cannot rescale the land model to it")
    sim = convert_units(stwsa, units)
    long_name = "land model sTWSA baseline"
    if fit != "none":
        if train is None:
            raise ValueError(f"fit={fit!r} needs train (a boolean mask over stwsa.time)")
        mask = _train_mask(train, sim)
        tgt = target.reindex(time=sim["time"])
        if fit == "offset":
            both = (sim.notnull() & tgt.notnull()).isel(time=np.flatnonzero(mask))
            s, o = sim.isel(time=np.flatnonzero(mask)), tgt.isel(time=np.flatnonzero(mask))
            shift = o.where(both).mean("time") - s.where(both).mean("time")
            sim = sim + shift
            long_name += " (offset to the target's training mean)"
        else:
            stack = sim.expand_dims(channel=[0], axis=1)
            sim = regression(stack, tgt, mask, ridge=0.0, min_months=3)
            long_name += " (per-cell gain and offset fitted on training months)"
    return sim.assign_attrs(units=units, long_name=long_name)
