"""Reference predictions the Bayesian CNN must beat, each fitted on training months only.

(a) :func:`climatology_trend`: per cell, a linear trend plus a monthly climatology.
(b) :func:`regression`: per-cell ridge regression on the CNN's own lagged input stack.
(c) :func:`land_model`: the land model's sTWSA itself, in the target's units, optionally with a
    per-cell offset or gain fitted on the training months.
(d) :func:`memory_regression`: per-cell ridge regression on stationary memory features
    (exponentially weighted anomalies, :func:`gracefill.predictors.memory_features`).

The fits are per-cell least squares, vectorised over cells (batched normal equations on
centred, standardised predictors); only the training months enter them, so nothing outside
the training window can change a fit. A cell gets NaN when it has fewer valid training months
than ``min_months``. Collinear predictors do not give NaN: a cell's standardised system (ridge
included) is solved by an eigen-decomposition truncated at condition number
:data:`MAX_CONDITION`, i.e. directions the training months barely vary along are dropped
instead of getting huge, out-of-sample explosive coefficients (a predictor constant over a
cell's training months gets coefficient 0).

:func:`fit_spread` and :func:`predict_spread` turn any point baseline into a Gaussian predictive
distribution whose spread is fitted on validation residuals only.
"""
from __future__ import annotations

import math
import numbers
from types import MappingProxyType

import numpy as np
import pandas as pd
import xarray as xr
from scipy import optimize

from gracefill import months as mo
from gracefill.grid import regular_spacing, smooth_on_sphere, wraps_globe
from gracefill.metrics import student_t_log_density, student_t_std_factor

#: water-equivalent length units and their size in mm (1 kg m-2 of water is 1 mm)
LENGTH_UNITS_MM = MappingProxyType({"mm": 1.0, "kg m-2": 1.0, "cm": 10.0, "m": 1000.0})
FIT_MODES = ("none", "offset", "gain")
_CELL_BLOCK = 4096          # cells per block of the batched fit (bounds memory)
#: largest condition number of a cell's standardised system (ridge included) solved as it is;
#: eigen-directions with eigenvalue below (largest eigenvalue) / MAX_CONDITION are dropped
MAX_CONDITION = 1e3
#: default ridge of the regressions, on the correlation-like matrix of the standardised predictors
DEFAULT_RIDGE = 0.1


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
               min_months: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least squares y = a + x @ b per cell. x (cell, time, p), y (cell, time), NaN rows dropped.

    Predictors are centred and scaled per cell; ``ridge`` is added to the diagonal of their
    correlation-like matrix A (so it is scale-free); the intercept is not penalised.
    Condition guard: A = V diag(e) V^T is inverted on the eigen-directions with
    e >= e_max / MAX_CONDITION only (truncated eigen-decomposition: coefficient 0 along the
    dropped directions, the minimum-norm solution). A direction with in-sample variance e can
    get a standardised coefficient up to sd(y) / sqrt(e), which multiplies any out-of-sample
    departure along it; near-collinear predictors (lags of a running sum, float32 rounding of
    exact identities) have e ~ 0, so without the guard they get huge opposite coefficients.
    A cell within the limit is solved exactly; a predictor constant over a cell's months gets
    coefficient 0. Returns (b (cell, p), a (cell,), n (cell,), rank (cell,): directions kept);
    b and a are NaN where a cell has fewer than ``min_months`` valid months.
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
    evals, evecs = np.linalg.eigh(a)                               # ascending
    keep = (evals > 0) & (evals >= evals[:, -1:] / MAX_CONDITION)
    inv = np.where(keep, 1.0 / np.where(keep, evals, 1.0), 0.0)
    inv = np.where((n >= min_months)[:, None], inv, np.nan)
    proj = np.einsum("ckj,ck->cj", evecs, rhs)
    beta_z = np.einsum("cij,cj->ci", evecs, inv * proj)
    coef = beta_z / scale
    intercept = ybar - (coef * xbar).sum(axis=1)
    return coef, intercept, n, keep.sum(axis=1)


def _fit_cells(x_tcc: np.ndarray, y_tc: np.ndarray, ridge: float, min_months: int):
    """Batched fit over cells in blocks. x (time, p, cell) or (time, p) shared; y (time, cell).

    Returns (coef (cell, p), intercept (cell,), valid months (cell,), directions kept (cell,)).
    """
    n_cell = y_tc.shape[1]
    p = x_tcc.shape[1]
    coef = np.full((n_cell, p), np.nan)
    intercept = np.full(n_cell, np.nan)
    count = np.zeros(n_cell, dtype=np.int64)
    rank = np.zeros(n_cell, dtype=np.int64)
    active = np.flatnonzero(np.isfinite(y_tc).any(axis=0))      # cells with any valid target
    for i in range(0, active.size, _CELL_BLOCK):
        cells = active[i:i + _CELL_BLOCK]
        y = y_tc[:, cells].T.astype(np.float64)
        if x_tcc.ndim == 2:
            x = np.broadcast_to(x_tcc.astype(np.float64), (cells.size, *x_tcc.shape))
        else:
            x = np.moveaxis(x_tcc[:, :, cells], 2, 0).astype(np.float64)
        coef[cells], intercept[cells], count[cells], rank[cells] = _fit_block(x, y, ridge, min_months)
    return coef, intercept, count, rank


def _check_ridge(ridge) -> float:
    if (not isinstance(ridge, numbers.Real) or isinstance(ridge, (bool, np.bool_))
            or not np.isfinite(ridge) or ridge < 0):
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
    coef, intercept, count, _ = _fit_cells(design[mask], y, 0.0, min_months)
    valid = np.isfinite(y).astype(np.float64)
    seen = ((cal[mask][:, None] == np.arange(12)[None, :]).astype(np.float64).T @ valid) > 0   # (12, cell)
    coef[~seen.all(axis=0)] = np.nan          # a calendar month without data: no climatology
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
def fit_regression(inputs: xr.DataArray, target: xr.DataArray, train, ridge: float = DEFAULT_RIDGE,
                   min_months: int | None = None) -> xr.Dataset:
    """Per-cell multiple linear regression target ~ intercept + sum_c coef_c * input_c.

    ``inputs`` (time, channel, lat, lon) is the CNN's lagged input stack; ``target`` (time,
    lat, lon) may lack months of ``inputs.time`` (they count as missing); ``train`` is a boolean
    mask over ``inputs.time``. Months where the target or any channel is NaN are left out per
    cell. ``ridge`` >= 0 penalises the coefficients of the standardised predictors: ridge r is
    added to the diagonal of their correlation matrix, a N(0, sigma^2 / (n r)) prior on each
    standardised coefficient (n training months, sigma the residual SD); the fit along an
    eigen-direction of variance e shrinks by e / (e + r). The default 0.1 (a prior SD of about
    sigma / 3.6 at n = 133) costs an uncorrelated predictor about 10 % and damps the
    near-collinear differences of the 21 lags of running sums strongly; 0 is least squares,
    with the :data:`MAX_CONDITION` guard dropping (near-)singular directions. A cell needs
    ``min_months`` (default channels + 2) valid training months; ``rank`` counts the
    eigen-directions of its standardised system the guard kept (channels when it did not act).
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
    coef, intercept, count, rank = _fit_cells(x, y, ridge, min_months)
    units = target.attrs.get("units", "1")
    coords = {k: v for k, v in inputs.coords.items() if k != "time" and "time" not in v.dims}
    return xr.Dataset(
        {
            "coef": (("channel", "lat", "lon"), coef.T.reshape(p, ny, nx),
                     {"units": f"{units} per input unit", "long_name": "regression coefficient of each input channel"}),
            "intercept": (("lat", "lon"), intercept.reshape(ny, nx), {"units": units, "long_name": "intercept"}),
            "n_train": (("lat", "lon"), count.reshape(ny, nx), {"units": "1", "long_name": "valid training months"}),
            "rank": (("lat", "lon"), rank.reshape(ny, nx),
                     {"units": "1",
                      "long_name": "eigen-directions of the standardised system kept by the condition guard"}),
        },
        coords=coords, attrs={"ridge": ridge, "min_months": min_months, "max_condition": MAX_CONDITION},
    )


def predict_regression(fit: xr.Dataset, inputs: xr.DataArray) -> xr.DataArray:
    """Evaluate a :func:`fit_regression` result on an input stack (time, channel, lat, lon)."""
    inputs = _check(inputs, "inputs", ("time", "channel", "lat", "lon"))
    if inputs.sizes["channel"] != fit.sizes["channel"]:
        raise ValueError(f"inputs have {inputs.sizes['channel']} channels, the fit {fit.sizes['channel']}")
    coef = fit["coef"].drop_vars([c for c in fit["coef"].coords if c not in ("lat", "lon")])
    x = inputs.drop_vars([c for c in inputs.coords if "channel" in inputs[c].dims])
    out = (xr.dot(x.astype(np.float64), coef, dim="channel") + fit["intercept"]).transpose("time", "lat", "lon")
    out.attrs = {"units": fit["intercept"].attrs["units"], "long_name": "per-cell linear regression baseline"}
    return out


def regression(inputs: xr.DataArray, target: xr.DataArray, train, ridge: float = DEFAULT_RIDGE,
               min_months: int | None = None) -> xr.DataArray:
    """Baseline (b): :func:`fit_regression` on the training months, predicted for every month of
    ``inputs`` (NaN where a channel is missing)."""
    return predict_regression(fit_regression(inputs, target, train, ridge, min_months), inputs)


# --------------------------------------------------------------------------- (d) memory-feature regression
def memory_regression(features: xr.DataArray, target: xr.DataArray, train, ridge: float = DEFAULT_RIDGE,
                      min_months: int | None = None) -> xr.DataArray:
    """Baseline (d): per-cell ridge regression of ``target`` on memory features, fitted on the
    ``train`` months (boolean mask over ``features.time``) and predicted for every month.

    ``features`` (time, feature, lat, lon), e.g. :func:`gracefill.predictors.memory_features`:
    exponentially weighted anomalies that stay in their training range out of sample, unlike
    the running sums of the lagged stack. The fit is :func:`fit_regression` (same ridge,
    condition guard and ``min_months``, default features + 2) with ``feature`` as the channels.
    """
    features = _check(features, "features", ("time", "feature", "lat", "lon"))
    out = regression(features.rename(feature="channel"), target, train, ridge, min_months)
    return out.assign_attrs(long_name="per-cell ridge regression on memory features baseline")


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
    sim = sim.copy(deep=False)
    sim.attrs = {"units": units, "long_name": long_name}  # not the notes of the storage field it came from
    return sim


# --------------------------------------------------------------------------- predictive spreads
def _leads(lead_months, n: int | None, allow_nan: bool) -> np.ndarray:
    """Leads in months as float64 (1-D, length ``n`` when given, finite values >= 1)."""
    values = np.asarray(lead_months.values if isinstance(lead_months, xr.DataArray) else lead_months)
    if values.ndim != 1 or (n is not None and values.shape[0] != n):
        expected = f"{n} leads" if n is not None else "leads"
        raise ValueError(f"lead_months must be a 1-D array of {expected} in months, got shape {values.shape}")
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"lead_months must be numbers of months, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if np.isnan(values).any() and not allow_nan:
        raise ValueError("lead_months has NaN; every validation sample needs its lead")
    given = values[~np.isnan(values)]
    if np.isinf(given).any() or (given < 1).any():
        raise ValueError(f"lead_months must be finite and >= 1 (months since the end of the fit window), "
                         f"got minimum {given.min() if given.size else np.nan}")
    return values


#: the predictive distributions a fitted spread may describe (see :func:`fit_spread_pooled`)
SPREAD_FAMILIES = ("gaussian", "student_t")
#: degrees of freedom :func:`fit_spread_pooled` chooses among for ``student_t`` (inf: the Gaussian)
STUDENT_T_DOF = (3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 30.0, math.inf)


def out_of_fold_z(parts, units: str, lead_bin_months: float = 12, pooling_km: float = 0.0) -> np.ndarray:
    """Each fold's residuals divided by the (Gaussian) spread fitted on the *other* folds (finite
    values, flattened): the standardised errors the spread model makes on folds it has not seen."""
    if len(parts) < 2:
        raise ValueError("out-of-fold errors need at least 2 folds")
    values = []
    for k, (residuals, leads) in enumerate(parts):
        other = fit_spread_pooled(parts[:k] + parts[k + 1:], units, lead_bin_months, pooling_km=pooling_km)
        values.append((residuals.values / predict_spread(other, leads).values).ravel())
    values = np.concatenate(values)
    return values[np.isfinite(values)]


def choose_tails(z: np.ndarray, candidates=STUDENT_T_DOF) -> tuple[float, float]:
    """The Student-t c * T_dof (dof among ``candidates``, c > 0) that gives the standardised
    errors ``z`` the highest mean log density: (dof, c). c rescales the spread the errors were
    standardised by, so that tails and width are chosen together (inf and 1 for no errors)."""
    z = np.asarray(z, dtype=np.float64)
    if not z.size:
        return math.inf, 1.0
    best = (-math.inf, math.inf, 1.0)
    for dof in candidates:
        def loss(log_c):
            return -(np.mean(student_t_log_density(z / math.exp(log_c), dof)) - log_c)
        fit = optimize.minimize_scalar(loss, bounds=(math.log(0.2), math.log(5.0)), method="bounded",
                                       options={"xatol": 1e-4})
        if -fit.fun > best[0]:
            best = (-fit.fun, float(dof), math.exp(fit.x))
    return best[1], best[2]


#: share of a cell's log error variance that :func:`pool_cell_variance` takes from its neighbours
POOLING_WEIGHT = 0.5


def pool_cell_variance(cell_variance: xr.DataArray, radius_km: float, weight: float = POOLING_WEIGHT) -> xr.DataArray:
    """Per-cell variances pooled with their neighbours': exp((1 - w) log v + w <log v>), <.> the
    Gaussian average of width ``radius_km`` on the sphere over the cells with a positive variance.

    A cell's error variance from the folds rests on a few persistent departures and is noisy, while
    its neighbours (GRACE resolves about 300 km; storage errors are spatially correlated) err alike;
    too small a variance costs more coverage than too large a one gains. The geometric mean keeps
    one far-off cell from inflating its neighbours. Cells without a positive variance keep theirs.
    ``cell_variance`` is on (lat, lon), ascending regular cell centres in degrees.
    """
    if radius_km <= 0:
        return cell_variance
    if not 0 <= weight <= 1:
        raise ValueError(f"pooling weight must lie between 0 and 1, got {weight!r}")
    lat, lon = (np.asarray(cell_variance[d].values, dtype=np.float64) for d in ("lat", "lon"))
    try:
        dlat, dlon = regular_spacing(lat, "lat"), regular_spacing(lon, "lon")
    except ValueError as error:
        raise ValueError(f"pooling the spread: {error}") from None
    v = cell_variance.transpose("lat", "lon").values.astype(np.float64)
    ok = np.isfinite(v) & (v > 0)
    log_v = np.where(ok, np.log(np.where(ok, v, 1.0)), 0.0)
    wrap = wraps_globe(lon.size, dlon)
    smooth = (lambda f: smooth_on_sphere(f, lat, dlat, dlon, wrap, radius_km))  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        neighbours = smooth(log_v) / smooth(ok.astype(np.float64))
    pooled = np.where(ok, np.exp((1 - weight) * log_v + weight * neighbours), v)
    return cell_variance.transpose("lat", "lon").copy(data=pooled)


def fit_spread_pooled(parts, units: str, lead_bin_months: float = 12, family: str = "gaussian",
                      pooling_km: float = 0.0) -> xr.Dataset:
    """:func:`fit_spread` of several folds' residuals pooled: ``parts`` is a list of (residuals
    (time, lat, lon), leads over time), one per fold; their months are stacked as samples.

    ``pooling_km`` > 0 pools each cell's variance with its neighbours' over that radius
    (:func:`pool_cell_variance`; attribute ``pooling_km``).

    ``family`` ``student_t`` also chooses the tails: the predictive distribution is
    mean + c * spread * T_dof, dof from :data:`STUDENT_T_DOF` and the factor c by the out-of-fold
    log density of each fold's residuals under the spread fitted on the other folds
    (:func:`choose_tails`; inf, the Gaussian, stays among the candidates; with one fold there is
    nothing out of fold and the Gaussian is taken). Errors whose variance the folds can only
    estimate from a few persistent departures, or that are heavier tailed than a Gaussian (a few
    cells drifting far), get wider outer intervals without wider central ones. c^2 is folded
    into ``lead_factor``; the choice is in the attributes ``dof`` (inf for ``gaussian``) and
    ``tail_scale`` (c).
    """
    if family not in SPREAD_FAMILIES:
        raise ValueError(f"spread family must be one of {', '.join(SPREAD_FAMILIES)}, got {family!r}")
    pooled = xr.concat([residuals.drop_vars("time", errors="ignore") for residuals, _ in parts], dim="time",
                       coords="minimal", compat="override", join="override")
    fitted = fit_spread(pooled.rename(time="sample").assign_attrs(units=units),
                        np.concatenate([leads for _, leads in parts]), lead_bin_months=lead_bin_months)
    fitted["cell_variance"] = pool_cell_variance(fitted["cell_variance"], pooling_km)
    dof, scale = math.inf, 1.0
    if family == "student_t" and len(parts) > 1:
        dof, scale = choose_tails(out_of_fold_z(parts, units, lead_bin_months, pooling_km))
        fitted["lead_factor"] = fitted["lead_factor"] * scale ** 2
    fitted.attrs.update(family=family, dof=dof, tail_scale=scale, pooling_km=float(pooling_km))
    return fitted


def fit_spread(residuals: xr.DataArray, lead_months, lead_bin_months: float = 12,
               min_count: int = 12) -> xr.Dataset:
    """Gaussian predictive variance of a point baseline, fitted on validation residuals only.

    ``residuals`` (sample, lat, lon): validation errors (prediction minus observation) pooled
    over forward-chaining folds, NaN where there is no value; ``lead_months`` (1-D over sample):
    months since the end of each sample's fit window, >= 1. Model: variance(cell, lead) =
    cell_variance(cell) * lead_factor(bin of lead). cell_variance is the cell's mean squared
    residual over all its samples (the error is taken as zero-mean: a bias counts as spread);
    lead_factor is the mean over cells (unweighted) of the cell's mean squared residual in the
    bin divided by its cell_variance, pooled because one cell has too few samples per bin.
    Bins are ``lead_bin_months`` wide from lead 1; a bin with fewer than ``min_count`` samples
    holding a value is merged into the previous one (a first bin into the next); leads past the
    last bin use the last. Only ``residuals`` and ``lead_months`` enter the fit.

    Returns a Dataset: ``cell_variance`` (lat, lon; NaN without residuals), ``n_valid`` (lat,
    lon), ``lead_factor``, ``lead_lower``, ``lead_upper`` (inclusive / exclusive lead in months)
    and ``n_samples`` over ``lead_bin``; attrs ``units`` (the residuals' units), the settings.
    """
    residuals = _check(residuals, "residuals", ("sample", "lat", "lon"))
    n_sample = residuals.sizes["sample"]
    leads = _leads(lead_months, n_sample, allow_nan=False)
    if (not isinstance(lead_bin_months, numbers.Real) or isinstance(lead_bin_months, (bool, np.bool_))
            or not np.isfinite(lead_bin_months) or lead_bin_months <= 0):
        raise ValueError(f"lead_bin_months must be a positive number of months, got {lead_bin_months!r}")
    if isinstance(min_count, (bool, np.bool_)) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    r = residuals.values.reshape(n_sample, -1).astype(np.float64)
    valid = np.isfinite(r)
    has_value = valid.any(axis=1)
    if not has_value.any():
        raise ValueError("residuals has no finite value")
    raw = np.floor((leads - 1.0) / lead_bin_months).astype(np.int64)
    n_raw = int(raw[has_value].max()) + 1
    counts = np.bincount(raw[has_value], minlength=n_raw)
    group_of_raw, group_counts = np.empty(n_raw, dtype=np.int64), []     # merge sparse bins
    for k in range(n_raw):
        if group_counts and counts[k] < min_count:
            group_counts[-1] += int(counts[k])
        else:
            group_counts.append(int(counts[k]))
        group_of_raw[k] = len(group_counts) - 1
    if len(group_counts) > 1 and group_counts[0] < min_count:
        first = group_counts.pop(0)
        group_counts[0] += first
        group_of_raw = np.maximum(group_of_raw - 1, 0)
    n_group = len(group_counts)
    first_raw = np.array([np.flatnonzero(group_of_raw == g)[0] for g in range(n_group)])
    last_raw = np.array([np.flatnonzero(group_of_raw == g)[-1] for g in range(n_group)])

    sq = np.where(valid, r, 0.0) ** 2
    n_cell = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_var = np.where(n_cell > 0, sq.sum(axis=0) / n_cell, np.nan)
        group = group_of_raw[np.clip(raw, 0, n_raw - 1)]
        onehot = ((group[:, None] == np.arange(n_group)[None, :]) & has_value[:, None]).astype(np.float64)
        n_bin = onehot.T @ valid.astype(np.float64)                          # (group, cell)
        bin_var = np.where(n_bin > 0, (onehot.T @ sq) / n_bin, np.nan)
        ratio = np.where((n_bin > 0) & (cell_var > 0), bin_var / cell_var, np.nan)
    contributing = np.isfinite(ratio).sum(axis=1)
    factor = np.where(contributing > 0, np.nansum(ratio, axis=1) / np.maximum(contributing, 1), 1.0)

    units = residuals.attrs.get("units", "1")
    ny, nx = residuals.sizes["lat"], residuals.sizes["lon"]
    coords = {d: residuals[d] for d in ("lat", "lon") if d in residuals.coords}
    return xr.Dataset(
        {
            "cell_variance": (("lat", "lon"), cell_var.reshape(ny, nx),
                              {"units": "1" if units == "1" else f"{units}2" if " " not in units else f"({units})2",
                               "long_name": "mean squared validation residual of the cell"}),
            "n_valid": (("lat", "lon"), n_cell.reshape(ny, nx),
                        {"units": "1", "long_name": "validation residuals of the cell"}),
            "lead_factor": ("lead_bin", factor,
                            {"units": "1", "long_name": "variance factor of the lead bin, mean over cells"}),
            "lead_lower": ("lead_bin", 1.0 + lead_bin_months * first_raw,
                           {"units": "month", "long_name": "first lead of the bin (inclusive)"}),
            "lead_upper": ("lead_bin", 1.0 + lead_bin_months * (last_raw + 1),
                           {"units": "month", "long_name": "end of the bin (exclusive; the last bin also "
                                                           "serves longer leads)"}),
            "n_samples": ("lead_bin", np.asarray(group_counts, dtype=np.int64),
                          {"units": "1", "long_name": "validation samples with a value in the bin"}),
        },
        coords={**coords, "lead_bin": ("lead_bin", np.arange(n_group), {
            "long_name": "lead bin (leads lead_lower to lead_upper)", "units": "1"})},
        attrs={"units": units, "lead_bin_months": float(lead_bin_months), "min_count": int(min_count),
               "comment": "predictive variance = cell_variance * lead_factor of the lead's bin"},
    )


def predict_spread(spread: xr.Dataset, lead_months, time=None) -> xr.DataArray:
    """Predictive standard deviation sqrt(cell_variance * lead_factor) (time, lat, lon) of a
    :func:`fit_spread` result, in the residuals' units; for Student-t tails (a finite ``dof``
    attribute, :func:`fit_spread_pooled`) that is the scale, and the standard deviation is
    sqrt(dof / (dof - 2)) times it.

    ``lead_months``: the lead (months since the end of the fit window, >= 1) of each month to
    predict, a DataArray over ``time`` or a 1-D array whose month stamps ``time`` may give (a
    NaN lead, e.g. a training month, gives NaN). Leads past the last fitted bin use the last
    bin; cells without validation residuals are NaN.
    """
    needed = ("cell_variance", "lead_factor", "lead_lower")
    if not isinstance(spread, xr.Dataset) or any(v not in spread for v in needed):
        raise ValueError(f"spread must be a fit_spread Dataset with {', '.join(needed)}")
    if isinstance(lead_months, xr.DataArray):
        if lead_months.dims != ("time",):
            raise ValueError(f"lead_months must be over time, got dims {lead_months.dims}")
        if time is None and "time" in lead_months.coords:
            time = lead_months["time"].values
    leads = _leads(lead_months, None, allow_nan=True)
    if time is not None:
        time = np.asarray(time.values if isinstance(time, (xr.DataArray, pd.Index)) else time)
        if time.shape != leads.shape:
            raise ValueError(f"time must hold the {leads.size} months of lead_months, got shape {time.shape}")
    lower = spread["lead_lower"].values
    ok = ~np.isnan(leads)
    index = np.clip(np.searchsorted(lower, np.where(ok, leads, 1.0), side="right") - 1, 0, lower.size - 1)
    factor = np.where(ok, spread["lead_factor"].values[index], np.nan)
    var = spread["cell_variance"].transpose("lat", "lon")
    std = np.sqrt(factor[:, None, None] * var.values[None]) * student_t_std_factor(spread.attrs.get("dof", math.inf))
    coords = {"lat": var["lat"], "lon": var["lon"]} if "lat" in var.coords else {}
    if time is not None:
        coords["time"] = ("time", time)
    return xr.DataArray(std, dims=("time", "lat", "lon"), coords=coords,
                        attrs={"units": spread.attrs.get("units", "1"),
                               "long_name": "predictive standard deviation fitted on validation residuals"})
