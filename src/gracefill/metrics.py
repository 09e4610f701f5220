"""Scores of a reconstruction against observations: skill maps, area-weighted summaries and
probabilistic scores (MNLP, CRPS, interval coverage, PIT, spread-skill).

Every function takes xarray DataArrays, skips NaN (a value counts only where the prediction and
the observation are both valid) and returns DataArrays with ``units`` and ``long_name``.
Deterministic inputs have dims (time, lat, lon); particle samples add a leading ``particle``
dim and come with the per-particle noise variance 1/beta (dim ``particle``), so that the
predictive distribution is the mixture (1/S) sum_s N(y_s, 1/beta_s) of model.md.

Probabilistic scores are computed per value (one grid cell in one month) and then averaged, so
they do not depend on the grid size, unlike the published per-field MNLP (kept reachable as
:func:`nlp_mixture_per_field`).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import xarray as xr
from scipy import special

PARTICLE = "particle"
DEFAULT_LEVELS = (0.5, 0.9, 0.95)
#: values per block when a particle axis is broadcast against the values (bounds memory)
_BLOCK_VALUES = 2_000_000


# --------------------------------------------------------------------------- helpers
def _require_dataarray(da, name: str) -> xr.DataArray:
    if not isinstance(da, xr.DataArray):
        raise ValueError(f"{name} must be an xarray.DataArray, got {type(da).__name__}")
    return da


def _units(*pairs: tuple[str, xr.DataArray]) -> str:
    """The common ``units`` of the arrays (those without units are ignored); '1' if none has units."""
    found = {name: da.attrs["units"] for name, da in pairs if "units" in da.attrs}
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{k}={v!r}" for k, v in found.items())
        raise ValueError(f"units differ: {listed}")
    return next(iter(found.values()), "1")


def _aligned(**arrays: xr.DataArray) -> list[xr.DataArray]:
    """The arrays, checked to share identical coordinates on their common dims."""
    for name, da in arrays.items():
        _require_dataarray(da, name)
    try:
        return list(xr.align(*arrays.values(), join="exact"))
    except ValueError:
        raise ValueError(f"coordinates of {', '.join(arrays)} differ; align them first") from None


def _dims(dim, da: xr.DataArray) -> tuple[str, ...]:
    """``dim`` as a tuple (None = every dim of ``da``), each checked to exist."""
    dims = tuple(da.dims) if dim is None else ((dim,) if isinstance(dim, str) else tuple(dim))
    for d in dims:
        if d not in da.dims:
            raise ValueError(f"dim {d!r} is not a dimension of the data {da.dims}")
    return dims


def _noise_var(noise_var, samples: xr.DataArray) -> xr.DataArray:
    """Per-particle noise variance as a positive DataArray over ``particle``."""
    if PARTICLE not in samples.dims:
        raise ValueError(f"samples must have a {PARTICLE!r} dim, got {samples.dims}")
    if isinstance(noise_var, xr.DataArray):
        nv = noise_var
    else:
        nv = xr.DataArray(np.asarray(noise_var, dtype=np.float64), dims=PARTICLE)
    if nv.dims != (PARTICLE,) or nv.size != samples.sizes[PARTICLE]:
        raise ValueError(f"noise_var must have dim ({PARTICLE!r},) of size {samples.sizes[PARTICLE]}")
    if not np.all(np.isfinite(nv.values)) or np.any(nv.values <= 0):
        raise ValueError("noise_var must be finite and positive (1/beta of each particle)")
    return nv.drop_vars([c for c in nv.coords if c != PARTICLE])


def _particle_core(core: Callable, samples: xr.DataArray, obs: xr.DataArray, *extra: np.ndarray) -> xr.DataArray:
    """Apply ``core(samples_block (n, S), obs_block (n,), *extra) -> (n,)`` over blocks of values.

    Only values where obs is valid are evaluated; the rest are NaN. Works with dask (each chunk is
    processed blockwise).
    """
    def blockwise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        shape = np.broadcast_shapes(x.shape[:-1], y.shape)
        x = np.broadcast_to(x, (*shape, x.shape[-1])).reshape(-1, x.shape[-1])
        y = np.broadcast_to(y, shape).reshape(-1)
        out = np.full(y.shape, np.nan)
        idx = np.flatnonzero(np.isfinite(y))
        step = max(1, _BLOCK_VALUES // max(1, x.shape[1]))
        for i in range(0, idx.size, step):
            sel = idx[i:i + step]
            out[sel] = core(x[sel].astype(np.float64), y[sel].astype(np.float64), *extra)
        return out.reshape(shape)

    return xr.apply_ufunc(blockwise, samples, obs, input_core_dims=[[PARTICLE], []],
                          dask="parallelized", output_dtypes=[np.float64])


def _reduce_mean(field: xr.DataArray, dim) -> xr.DataArray:
    return field.mean(_dims(dim, field), skipna=True)


# --------------------------------------------------------------------------- skill maps
def _paired(pred: xr.DataArray, obs: xr.DataArray, dim) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray, str]:
    pred, obs = _aligned(pred=pred, obs=obs)
    units = _units(("pred", pred), ("obs", obs))
    _dims(dim, obs)
    valid = pred.notnull() & obs.notnull()
    return pred.where(valid), obs.where(valid), valid, units


def pearson_r(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time", min_count: int = 3) -> xr.DataArray:
    """Per-cell Pearson correlation over ``dim`` of the pairs where both are valid.

    Parameters
    ----------
    pred : xr.DataArray
        Predicted values, e.g. TWSA [cm] on (time, lat, lon); same coordinates as ``obs``.
    obs : xr.DataArray
        Observed values on (time, lat, lon), same units as ``pred``.
    dim : str, default "time"
        Dimension to correlate over.
    min_count : int, default 3
        Least number of valid pairs per cell.

    Returns
    -------
    xr.DataArray
        R on the remaining dims (e.g. (lat, lon)), dimensionless (units "1"). Cells with fewer
        than ``min_count`` pairs or a constant series give NaN.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, or ``dim`` is not
        a dimension of ``obs``.
    """
    p, o, valid, _ = _paired(pred, obs, dim)
    n = valid.sum(dim)
    pa, oa = p - p.mean(dim), o - o.mean(dim)
    cov = (pa * oa).sum(dim)
    den = np.sqrt((pa ** 2).sum(dim) * (oa ** 2).sum(dim))
    r = (cov / den.where(den > 0)).where(n >= min_count)
    return _only_attrs(r, units="1", long_name=f"Pearson correlation R over {dim}")


def _only_attrs(da: xr.DataArray, **attrs) -> xr.DataArray:
    """``da`` with exactly ``attrs``: a score must not carry the notes of the fields it compares."""
    out = da.copy(deep=False)
    out.attrs = dict(attrs)
    return out


def nse(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time", min_count: int = 3) -> xr.DataArray:
    """Per-cell Nash-Sutcliffe efficiency 1 - sum (p - o)^2 / sum (o - mean o)^2 over ``dim``.

    1 is a perfect prediction, 0 the skill of the cell's time mean of the (paired) observations.

    Parameters
    ----------
    pred : xr.DataArray
        Predicted values, e.g. TWSA [cm] on (time, lat, lon); same coordinates as ``obs``.
    obs : xr.DataArray
        Observed values on (time, lat, lon), same units as ``pred``.
    dim : str, default "time"
        Dimension to sum over.
    min_count : int, default 3
        Least number of valid pairs per cell.

    Returns
    -------
    xr.DataArray
        NSE on the remaining dims (e.g. (lat, lon)), dimensionless (units "1"), at most 1. Cells
        with fewer than ``min_count`` pairs or constant observations give NaN.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, or ``dim`` is not
        a dimension of ``obs``.
    """
    p, o, valid, _ = _paired(pred, obs, dim)
    n = valid.sum(dim)
    sse = ((p - o) ** 2).sum(dim)
    sst = ((o - o.mean(dim)) ** 2).sum(dim)
    out = (1 - sse / sst.where(sst > 0)).where(n >= min_count)
    return _only_attrs(out, units="1", long_name=f"Nash-Sutcliffe efficiency over {dim}")


def rmse(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time", min_count: int = 1) -> xr.DataArray:
    """Per-cell root mean squared error over ``dim`` of the pairs where both are valid.

    Parameters
    ----------
    pred : xr.DataArray
        Predicted values, e.g. TWSA [cm] on (time, lat, lon); same coordinates as ``obs``.
    obs : xr.DataArray
        Observed values on (time, lat, lon), same units as ``pred``.
    dim : str, default "time"
        Dimension to average over.
    min_count : int, default 1
        Least number of valid pairs per cell (values below 1 act as 1).

    Returns
    -------
    xr.DataArray
        RMSE on the remaining dims (e.g. (lat, lon)), same units as ``obs``; NaN in cells with
        fewer than ``min_count`` pairs.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, or ``dim`` is not
        a dimension of ``obs``.
    """
    p, o, valid, units = _paired(pred, obs, dim)
    n = valid.sum(dim)
    out = np.sqrt(((p - o) ** 2).sum(dim) / n.where(n >= max(min_count, 1)))
    return _only_attrs(out, units=units, long_name=f"root mean squared error over {dim}")


def score_maps(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time", min_count: int = 3) -> xr.Dataset:
    """R, NSE and RMSE maps together (variables ``r``, ``nse``, ``rmse``).

    Parameters
    ----------
    pred : xr.DataArray
        Predicted values, e.g. TWSA [cm] on (time, lat, lon); same coordinates as ``obs``.
    obs : xr.DataArray
        Observed values on (time, lat, lon), same units as ``pred``.
    dim : str, default "time"
        Dimension to score over.
    min_count : int, default 3
        Least number of valid pairs per cell, for all three scores (RMSE included).

    Returns
    -------
    xr.Dataset
        ``r`` and ``nse`` (dimensionless, units "1") and ``rmse`` (same units as ``obs``) on the
        remaining dims (e.g. (lat, lon)); see :func:`pearson_r`, :func:`nse`, :func:`rmse`.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, or ``dim`` is not
        a dimension of ``obs``.
    """
    return xr.Dataset({"r": pearson_r(pred, obs, dim, min_count), "nse": nse(pred, obs, dim, min_count),
                       "rmse": rmse(pred, obs, dim, min_count)})


# --------------------------------------------------------------------------- area-weighted summaries
def _weights(da: xr.DataArray, weights: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    _require_dataarray(weights, "weights")
    missing = [d for d in weights.dims if d not in da.dims]
    if missing:
        raise ValueError(f"weights dims {missing} are not dims of the data {da.dims}")
    da, weights = _aligned(data=da, weights=weights)
    if np.any(weights.values < 0):
        raise ValueError("weights must be non-negative (cell areas)")
    return da, weights.fillna(0)


def weighted_mean(da: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    """Mean over the dims of ``weights`` (e.g. cell_area (lat, lon)), NaN cells skipped.

    Parameters
    ----------
    da : xr.DataArray
        Values, e.g. TWSA [cm] on (time, lat, lon); any units.
    weights : xr.DataArray
        Non-negative weights on a subset of the dims of ``da``, e.g. cell_area [m2] on (lat, lon);
        only their ratios matter. NaN weights count as 0.

    Returns
    -------
    xr.DataArray
        The weighted mean on the other dims of ``da`` (e.g. (time,)), same units as ``da`` ("1"
        if it has none); NaN where no weighted valid cell remains.

    Raises
    ------
    ValueError
        If ``weights`` is not a DataArray, has a dim that ``da`` lacks, or has a negative value,
        or if the coordinates of ``da`` and ``weights`` differ.
    """
    da, w = _weights(da, weights)
    red = list(w.dims)
    w = w.where(da.notnull(), 0)
    total = w.sum(red)
    out = (da.fillna(0) * w).sum(red) / total.where(total > 0)
    return out.assign_attrs(units=da.attrs.get("units", "1"),
                            long_name=f"area-weighted mean of {da.attrs.get('long_name', da.name or 'values')}")


def weighted_median(da: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    """Weighted median over the dims of ``weights``, NaN cells skipped.

    The smallest value whose cumulative weight reaches half the total; when the cumulative
    weight equals exactly one half, the mean of that value and the next (so equal weights
    reproduce numpy.median).

    Parameters
    ----------
    da : xr.DataArray
        Values, e.g. TWSA [cm] on (time, lat, lon); any units.
    weights : xr.DataArray
        Non-negative weights on a subset of the dims of ``da``, e.g. cell_area [m2] on (lat, lon);
        only their ratios matter. NaN weights count as 0.

    Returns
    -------
    xr.DataArray
        The weighted median on the other dims of ``da`` (e.g. (time,)), same units as ``da``
        ("1" if it has none); NaN where no weighted valid cell remains.

    Raises
    ------
    ValueError
        If ``weights`` is not a DataArray, has a dim that ``da`` lacks, or has a negative value,
        or if the coordinates of ``da`` and ``weights`` differ.
    """
    da, w = _weights(da, weights)
    red = list(w.dims)
    keep = [d for d in da.dims if d not in red]
    x = da.transpose(*keep, *red).values.reshape(*[da.sizes[d] for d in keep], -1).astype(np.float64)
    wv = np.broadcast_to(w.transpose(*red).values.reshape(-1), x.shape).astype(np.float64)
    wv = np.where(np.isnan(x), 0.0, wv)
    order = np.argsort(np.where(np.isnan(x), np.inf, x), axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, axis=-1)
    cw = np.cumsum(np.take_along_axis(wv, order, axis=-1), axis=-1)
    total = cw[..., -1:]
    half = 0.5 * total
    k = np.argmax(cw >= half * (1 - 1e-12), axis=-1)[..., None]
    lo = np.take_along_axis(xs, k, axis=-1)
    # cumulative weight exactly one half: average with the next value that carries weight
    exact = np.isclose(np.take_along_axis(cw, k, axis=-1), half, rtol=1e-12, atol=0)
    nxt = np.argmax(cw > half * (1 + 1e-12), axis=-1)[..., None]
    hi = np.take_along_axis(xs, nxt, axis=-1)
    med = np.where(exact, 0.5 * (lo + hi), lo)[..., 0]
    med = np.where(total[..., 0] > 0, med, np.nan)
    coords = {d: da[d] for d in keep if d in da.coords}
    return xr.DataArray(med, dims=keep, coords=coords).assign_attrs(
        units=da.attrs.get("units", "1"),
        long_name=f"area-weighted median of {da.attrs.get('long_name', da.name or 'values')}")


# --------------------------------------------------------------------------- predictive densities
def _nlp_mixture_core(x: np.ndarray, y: np.ndarray, var: np.ndarray) -> np.ndarray:
    log_comp = -0.5 * ((y[:, None] - x) ** 2 / var + np.log(2 * np.pi * var))
    return -(special.logsumexp(log_comp, axis=1) - math.log(x.shape[1]))


def nlp_mixture(samples: xr.DataArray, noise_var, obs: xr.DataArray) -> xr.DataArray:
    """Negative log predictive density of each value under the particle mixture.

    -log[(1/S) sum_s N(obs; y_s, noise_var_s)], by log-sum-exp.

    Parameters
    ----------
    samples : xr.DataArray
        Particle outputs on (particle, time, lat, lon) (any dims after ``particle``), e.g. TWSA
        [cm].
    noise_var : array_like or xr.DataArray
        Per-particle noise variance 1/beta, shape (particle,), finite and positive, in units of
        the data squared (e.g. [cm2]).
    obs : xr.DataArray
        Observed values on (time, lat, lon), same units as ``samples``.

    Returns
    -------
    xr.DataArray
        NLP [nat] per value, on the dims of ``obs`` (broadcast with those of ``samples`` but
        ``particle``); NaN where obs is missing. Units "1", but it is a log density in 1/units of
        the data (attribute ``density_units``), so it depends on the data's units.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, ``samples`` has no
        ``particle`` dim, or ``noise_var`` is not a finite positive (particle,) array.
    """
    samples, obs = _aligned(samples=samples, obs=obs)
    units = _units(("samples", samples), ("obs", obs))
    nv = _noise_var(noise_var, samples).values.astype(np.float64)
    out = _particle_core(_nlp_mixture_core, samples, obs, nv)
    return out.assign_attrs(units="1", density_units=f"({units})-1",
                            long_name="negative log predictive density under the particle mixture")


def mnlp_mixture(samples: xr.DataArray, noise_var, obs: xr.DataArray, dim=None) -> xr.DataArray:
    """Mean over ``dim`` (None: all values) of :func:`nlp_mixture`, missing values skipped.

    Parameters
    ----------
    samples : xr.DataArray
        Particle outputs on (particle, time, lat, lon), e.g. TWSA [cm].
    noise_var : array_like or xr.DataArray
        Per-particle noise variance 1/beta, shape (particle,), finite and positive, in units of
        the data squared (e.g. [cm2]).
    obs : xr.DataArray
        Observed values on (time, lat, lon), same units as ``samples``.
    dim : str, sequence of str or None, default None
        Dims to average over; None: every dim (a 0-d result).

    Returns
    -------
    xr.DataArray
        Mean NLP [nat] per value on the remaining dims; units "1" (a log density in 1/units of the
        data).

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, ``samples`` has no
        ``particle`` dim, ``noise_var`` is not a finite positive (particle,) array, or a ``dim``
        is not a dimension of the NLP field.
    """
    out = _reduce_mean(nlp_mixture(samples, noise_var, obs), dim)
    return out.assign_attrs(units="1", long_name="mean negative log predictive density per value (particle mixture)")


def nlp_gaussian(mean: xr.DataArray, std: xr.DataArray, obs: xr.DataArray) -> xr.DataArray:
    """Negative log density of each value under N(mean, std^2) (when samples are not kept).

    Parameters
    ----------
    mean : xr.DataArray
        Predictive mean, e.g. TWSA [cm] on (time, lat, lon).
    std : xr.DataArray
        Predictive standard deviation on the same dims, same units as ``mean``.
    obs : xr.DataArray
        Observed values on the same dims, same units as ``mean``.

    Returns
    -------
    xr.DataArray
        NLP [nat] per value on the broadcast dims of the inputs; NaN where std is not positive or a
        value is missing. Units "1", but it is a log density in 1/units of the data (attribute
        ``density_units``).

    Raises
    ------
    ValueError
        If an input is not a DataArray, or their coordinates or ``units`` differ.
    """
    mean, std, obs = _aligned(mean=mean, std=std, obs=obs)
    units = _units(("mean", mean), ("std", std), ("obs", obs))
    s = std.where(std > 0)
    out = 0.5 * ((obs - mean) / s) ** 2 + np.log(s) + 0.5 * math.log(2 * math.pi)
    return out.assign_attrs(units="1", density_units=f"({units})-1",
                            long_name="negative log predictive density under a Gaussian")


def mnlp_gaussian(mean: xr.DataArray, std: xr.DataArray, obs: xr.DataArray, dim=None) -> xr.DataArray:
    """Mean over ``dim`` (None: all values) of :func:`nlp_gaussian`, missing values skipped.

    Parameters
    ----------
    mean : xr.DataArray
        Predictive mean, e.g. TWSA [cm] on (time, lat, lon).
    std : xr.DataArray
        Predictive standard deviation on the same dims, same units as ``mean``.
    obs : xr.DataArray
        Observed values on the same dims, same units as ``mean``.
    dim : str, sequence of str or None, default None
        Dims to average over; None: every dim (a 0-d result).

    Returns
    -------
    xr.DataArray
        Mean NLP [nat] per value on the remaining dims; units "1" (a log density in 1/units of the
        data).

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, or a ``dim`` is
        not a dimension of the NLP field.
    """
    out = _reduce_mean(nlp_gaussian(mean, std, obs), dim)
    return out.assign_attrs(units="1", long_name="mean negative log predictive density per value (Gaussian)")


def nlp_mixture_per_field(samples: xr.DataArray, noise_var, obs: xr.DataArray,
                          field_dims: Sequence[str] = ("lat", "lon")) -> xr.DataArray:
    """The published per-field NLP: each whole field (D valid values) scored as one draw.

    NLP = -LSE_s[-||y - f_s||^2 / (2 v_s) - D/2 log v_s] + D/2 log 2 pi + log S, per month.
    It grows with D, so it is not comparable across grids (model.md); for comparison only.
    To reproduce the published code exactly, fill ocean with zeros in obs and samples first.

    Parameters
    ----------
    samples : xr.DataArray
        Particle outputs on (particle, time, lat, lon), e.g. TWSA [cm].
    noise_var : array_like or xr.DataArray
        Per-particle noise variance 1/beta, shape (particle,), finite and positive, in units of
        the data squared (e.g. [cm2]).
    obs : xr.DataArray
        Observed values on (time, lat, lon), same coordinates as ``samples``.
    field_dims : sequence of str, default ("lat", "lon")
        The dims of ``obs`` that make up one field.

    Returns
    -------
    xr.DataArray
        NLP [nat] of each field on the other dims (e.g. (time,)); a value counts where obs and
        every particle are valid; NaN for a field without a valid value. Units "1" (a log density
        in 1/(units of the data)^D).

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates differ, ``samples`` has no ``particle``
        dim, ``noise_var`` is not a finite positive (particle,) array, or a field dim is not a
        dimension of ``obs``.
    """
    samples, obs = _aligned(samples=samples, obs=obs)
    nv = _noise_var(noise_var, samples)
    fd = list(field_dims)
    _dims(fd, obs)
    valid = obs.notnull() & samples.notnull().all(PARTICLE)
    sq = ((samples - obs) ** 2).where(valid).sum(fd)
    d = valid.sum(fd)
    log_comp = -sq / (2 * nv) - 0.5 * d * np.log(nv)
    lse = xr.apply_ufunc(special.logsumexp, log_comp, input_core_dims=[[PARTICLE]], kwargs={"axis": -1})
    out = -lse + 0.5 * d * math.log(2 * math.pi) + math.log(samples.sizes[PARTICLE])
    return out.where(d > 0).assign_attrs(units="1", long_name="negative log predictive density of each whole field")


# --------------------------------------------------------------------------- CRPS
def _abs_gauss_mean(m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """E|Z| for Z ~ N(m, s^2)."""
    z = m / s
    return m * (2 * special.ndtr(z) - 1) + 2 * s * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def crps_gaussian(mean: xr.DataArray, std: xr.DataArray, obs: xr.DataArray) -> xr.DataArray:
    """Closed-form CRPS of N(mean, std^2): std [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)], z = (obs - mean)/std.

    std = 0 gives the absolute error. Lower is better.

    Parameters
    ----------
    mean : xr.DataArray
        Predictive mean, e.g. TWSA [cm] on (time, lat, lon).
    std : xr.DataArray
        Predictive standard deviation (non-negative) on the same dims, same units as ``mean``.
    obs : xr.DataArray
        Observed values on the same dims, same units as ``mean``.

    Returns
    -------
    xr.DataArray
        CRPS per value on the broadcast dims of the inputs, same units as ``obs``; NaN where obs,
        mean or std is missing.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, or a std is
        negative.
    """
    mean, std, obs = _aligned(mean=mean, std=std, obs=obs)
    units = _units(("mean", mean), ("std", std), ("obs", obs))
    if np.any(std.values < 0):
        raise ValueError("std must be non-negative")
    s = std.where(std > 0)
    z = (obs - mean) / s
    out = s * (z * (2 * special.ndtr(z) - 1) + 2 * np.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)
               - 1 / math.sqrt(math.pi))
    out = out.where(std > 0, np.abs(obs - mean)).where(obs.notnull() & mean.notnull() & std.notnull())
    return out.assign_attrs(units=units, long_name="continuous ranked probability score (Gaussian)")


def student_t_log_density(z, dof: float):
    """log f_nu(z) of the standard Student-t with ``dof`` degrees of freedom (the standard normal
    for dof = inf), elementwise on an array of standardised values."""
    z = np.asarray(z, dtype=np.float64)
    if not dof > 0:
        raise ValueError(f"degrees of freedom must be positive, got {dof!r}")
    if math.isinf(dof):
        return -0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)
    return (special.gammaln((dof + 1) / 2) - special.gammaln(dof / 2) - 0.5 * math.log(dof * math.pi)
            - (dof + 1) / 2 * np.log1p(z ** 2 / dof))


def student_t_std_factor(dof: float) -> float:
    """Standard deviation of the standard Student-t, sqrt(dof / (dof - 2)) (1 for inf): the
    factor from a Student-t's scale to its standard deviation (dof > 2)."""
    if math.isinf(dof):
        return 1.0
    if not dof > 2:
        raise ValueError(f"a Student-t needs more than 2 degrees of freedom for a finite variance, got {dof!r}")
    return math.sqrt(dof / (dof - 2))


def standard_quantile(probability, dof: float = math.inf):
    """Quantiles at ``probability`` of the standard Student-t with ``dof`` degrees of freedom, in
    units of its scale (the standard normal's for inf): the one place the two families differ."""
    return special.ndtri(probability) if math.isinf(dof) else special.stdtrit(dof, probability)


def standard_cdf(z, dof: float = math.inf):
    """Cumulative probability at ``z`` of the standard Student-t with ``dof`` degrees of freedom
    (the standard normal for inf)."""
    return special.ndtr(z) if math.isinf(dof) else special.stdtr(dof, z)


def _student_t_crps_standard(z: np.ndarray, dof: float) -> np.ndarray:
    """CRPS of the standard Student-t at z (dof > 1; Jordan, Krueger and Lerch 2019, scoringRules)."""
    density = np.exp(student_t_log_density(z, dof))
    constant = 2 * math.sqrt(dof) * special.beta(0.5, dof - 0.5) / ((dof - 1) * special.beta(0.5, dof / 2) ** 2)
    return z * (2 * special.stdtr(dof, z) - 1) + 2 * density * (dof + z ** 2) / (dof - 1) - constant


def student_t_scores(mean: xr.DataArray, std: xr.DataArray, obs: xr.DataArray,
                     dof: float) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """Per-value CRPS, negative log density and PIT of obs under the Student-t with mean
    ``mean``, standard deviation ``std`` and ``dof`` degrees of freedom, mean + scale * T_dof with
    scale = std / :func:`student_t_std_factor` (heavier tails than N(mean, std^2) for a finite
    ``dof``; the Gaussian scores for dof = inf).

    Parameters
    ----------
    mean, std : xr.DataArray
        Mean and standard deviation (positive), e.g. TWSA [cm] on (time, lat, lon).
    obs : xr.DataArray
        Observed values on the same dims, same units as ``mean``.
    dof : float
        Degrees of freedom, above 2 (a finite variance), or inf.

    Returns
    -------
    crps, nlp, pit : xr.DataArray
        CRPS in the units of ``obs``; NLP [nat] (a log density in 1/units, ``density_units``); PIT
        in [0, 1]. NaN where scale is not positive or a value is missing.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, or dof <= 2.
    """
    if math.isinf(dof):
        return crps_gaussian(mean, std, obs), nlp_gaussian(mean, std, obs), pit_gaussian(mean, std, obs)
    factor = student_t_std_factor(dof)
    mean, std, obs = _aligned(mean=mean, std=std, obs=obs)
    units = _units(("mean", mean), ("std", std), ("obs", obs))
    s = std.where(std > 0) / factor
    z = (obs - mean) / s
    crps = s * xr.apply_ufunc(_student_t_crps_standard, z, kwargs={"dof": dof})
    nlp = np.log(s) - xr.apply_ufunc(student_t_log_density, z, kwargs={"dof": dof})
    pit = xr.apply_ufunc(special.stdtr, dof, z)
    label = f"(Student-t, {dof:g} degrees of freedom)"
    return (crps.assign_attrs(units=units, long_name=f"continuous ranked probability score {label}"),
            nlp.assign_attrs(units="1", density_units=f"({units})-1", long_name=f"negative log predictive density {label}"),
            pit.assign_attrs(units="1", long_name=f"probability integral transform {label}"))


def _crps_ensemble_core(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    s = x.shape[1]
    xs = np.sort(x, axis=1)
    weights = (2 * np.arange(1, s + 1) - s - 1) / s ** 2
    return np.abs(xs - y[:, None]).mean(axis=1) - xs @ weights


def _crps_mixture_core(x: np.ndarray, y: np.ndarray, var: np.ndarray) -> np.ndarray:
    s = x.shape[1]
    sd = np.sqrt(var)
    first = _abs_gauss_mean(y[:, None] - x, sd).mean(axis=1)
    pair = np.full(y.shape, np.sum(2 * sd / math.sqrt(math.pi)))      # i == j: E|N(0, 2 v_i)|
    for i in range(s - 1):                                              # i < j, counted twice
        pair += 2 * _abs_gauss_mean(x[:, i:i + 1] - x[:, i + 1:], np.sqrt(var[i] + var[i + 1:])).sum(axis=1)
    return first - pair / (2 * s * s)


def crps_ensemble(samples: xr.DataArray, obs: xr.DataArray, noise_var=None) -> xr.DataArray:
    """CRPS = E|X - obs| - 1/2 E|X - X'| of the particle predictive, per value.

    Without ``noise_var``: X is the empirical distribution of the S particles (the standard,
    not the "fair", ensemble CRPS), by the sorted-sample formula, O(S log S) per value.
    With ``noise_var`` (particle,): X is the mixture (1/S) sum_s N(y_s, noise_var_s), i.e. the
    aleatoric noise is added *exactly*, not by drawing noise: both expectations are evaluated
    in closed form with E|N(m, v)| = m (2 Phi(m/sqrt v) - 1) + 2 sqrt(v) phi(m/sqrt v), over the
    S particles and the S^2 particle pairs (O(S^2) per value; restrict to the months and cells
    you score).

    Parameters
    ----------
    samples : xr.DataArray
        Particle outputs on (particle, time, lat, lon), e.g. TWSA [cm].
    obs : xr.DataArray
        Observed values on (time, lat, lon), same units as ``samples``.
    noise_var : array_like, xr.DataArray or None, default None
        Per-particle noise variance 1/beta, shape (particle,), finite and positive, in units of
        the data squared (e.g. [cm2]); None: the particles alone.

    Returns
    -------
    xr.DataArray
        CRPS per value on the dims of ``obs`` (broadcast with those of ``samples`` but
        ``particle``), same units as ``obs``; NaN where obs is missing.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, ``samples`` has no
        ``particle`` dim, or ``noise_var`` is not a finite positive (particle,) array.
    """
    samples, obs = _aligned(samples=samples, obs=obs)
    units = _units(("samples", samples), ("obs", obs))
    if noise_var is None:
        if PARTICLE not in samples.dims:
            raise ValueError(f"samples must have a {PARTICLE!r} dim, got {samples.dims}")
        out = _particle_core(_crps_ensemble_core, samples, obs)
        kind = "particle ensemble"
    else:
        nv = _noise_var(noise_var, samples).values.astype(np.float64)
        out = _particle_core(_crps_mixture_core, samples, obs, nv)
        kind = "Gaussian mixture of the particles"
    return out.assign_attrs(units=units, long_name=f"continuous ranked probability score ({kind})")


# --------------------------------------------------------------------------- calibration
def _check_levels(levels) -> np.ndarray:
    lv = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if lv.ndim != 1 or lv.size == 0 or np.any((lv <= 0) | (lv >= 1)):
        raise ValueError(f"levels must be fractions in (0, 1), got {levels!r}")
    return lv


def pit_gaussian(mean: xr.DataArray, std: xr.DataArray, obs: xr.DataArray) -> xr.DataArray:
    """Probability integral transform Phi((obs - mean)/std): uniform on [0, 1] when calibrated.

    Parameters
    ----------
    mean : xr.DataArray
        Predictive mean, e.g. TWSA [cm] on (time, lat, lon).
    std : xr.DataArray
        Predictive standard deviation on the same dims, same units as ``mean``.
    obs : xr.DataArray
        Observed values on the same dims, same units as ``mean``.

    Returns
    -------
    xr.DataArray
        PIT in [0, 1] per value on the broadcast dims of the inputs, dimensionless (units "1");
        NaN where std is not positive or a value is missing.

    Raises
    ------
    ValueError
        If an input is not a DataArray, or their coordinates or ``units`` differ.
    """
    mean, std, obs = _aligned(mean=mean, std=std, obs=obs)
    _units(("mean", mean), ("std", std), ("obs", obs))
    out = xr.apply_ufunc(special.ndtr, (obs - mean) / std.where(std > 0))
    return out.assign_attrs(units="1", long_name="probability integral transform (Gaussian predictive)")


def _pit_ensemble_core(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x < y[:, None]).sum(axis=1) + 0.5 * (x == y[:, None]).sum(axis=1)) / x.shape[1]


def _pit_mixture_core(x: np.ndarray, y: np.ndarray, var: np.ndarray) -> np.ndarray:
    return special.ndtr((y[:, None] - x) / np.sqrt(var)).mean(axis=1)


def pit_samples(samples: xr.DataArray, obs: xr.DataArray, noise_var=None) -> xr.DataArray:
    """PIT of obs under the particles.

    The mixture CDF mean_s Phi((obs - y_s)/sd_s) with ``noise_var``, else the empirical CDF
    (ties count one half).

    Parameters
    ----------
    samples : xr.DataArray
        Particle outputs on (particle, time, lat, lon), e.g. TWSA [cm].
    obs : xr.DataArray
        Observed values on (time, lat, lon), same units as ``samples``.
    noise_var : array_like, xr.DataArray or None, default None
        Per-particle noise variance 1/beta, shape (particle,), finite and positive, in units of
        the data squared (e.g. [cm2]); None: the empirical CDF of the particles.

    Returns
    -------
    xr.DataArray
        PIT in [0, 1] per value on the dims of ``obs`` (broadcast with those of ``samples`` but
        ``particle``), dimensionless (units "1"); NaN where obs is missing.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, ``samples`` has no
        ``particle`` dim, or ``noise_var`` is not a finite positive (particle,) array.
    """
    samples, obs = _aligned(samples=samples, obs=obs)
    _units(("samples", samples), ("obs", obs))
    if noise_var is None:
        if PARTICLE not in samples.dims:
            raise ValueError(f"samples must have a {PARTICLE!r} dim, got {samples.dims}")
        out = _particle_core(_pit_ensemble_core, samples, obs)
    else:
        out = _particle_core(_pit_mixture_core, samples, obs, _noise_var(noise_var, samples).values.astype(np.float64))
    return out.assign_attrs(units="1", long_name="probability integral transform (particle predictive)")


def coverage_from_pit(pit: xr.DataArray, levels, dim=None) -> xr.DataArray:
    """Share of values whose PIT lies in the central interval of each level (the interval covers obs).

    A value is inside the central l-interval when |PIT - 0.5| <= l/2; NaN PIT values are skipped.

    Parameters
    ----------
    pit : xr.DataArray
        PIT values in [0, 1] (dimensionless), e.g. on (time, lat, lon).
    levels : float or sequence of float
        Nominal coverages, fractions in (0, 1).
    dim : str, sequence of str or None, default None
        Dims to reduce over; None: every dim.

    Returns
    -------
    xr.DataArray
        Fraction of valid values inside the interval, dimensionless (units "1"), with a leading
        ``level`` dim (coordinate: the levels) before the dims not reduced.

    Raises
    ------
    ValueError
        If a level is not in (0, 1) or a ``dim`` is not a dimension of ``pit``.
    """
    lv = _check_levels(levels)
    dims = _dims(dim, pit)
    level = xr.DataArray(lv, dims="level", coords={"level": lv}, attrs={"units": "1", "long_name": "nominal coverage"})
    inside = (np.abs(pit - 0.5) <= level / 2 + 1e-12).where(pit.notnull())
    out = inside.mean(dims, skipna=True)
    out = out.transpose("level", *[d for d in out.dims if d != "level"])
    return out.assign_attrs(units="1", long_name="fraction of observations inside the central prediction interval")


def coverage_gaussian(mean: xr.DataArray, std: xr.DataArray, obs: xr.DataArray,
                      levels: Sequence[float] = DEFAULT_LEVELS, dim=None) -> xr.DataArray:
    """Empirical coverage of the central intervals mean +- z_l std, z_l = Phi^-1((1 + l)/2).

    Computed from :func:`pit_gaussian` by :func:`coverage_from_pit`; values with a missing input
    or a non-positive std are skipped.

    Parameters
    ----------
    mean : xr.DataArray
        Predictive mean, e.g. TWSA [cm] on (time, lat, lon).
    std : xr.DataArray
        Predictive standard deviation on the same dims, same units as ``mean``.
    obs : xr.DataArray
        Observed values on the same dims, same units as ``mean``.
    levels : float or sequence of float, default (0.5, 0.9, 0.95)
        Nominal coverages, fractions in (0, 1).
    dim : str, sequence of str or None, default None
        Dims to reduce over; None: every dim.

    Returns
    -------
    xr.DataArray
        Fraction of valid values inside the interval, dimensionless (units "1"), with a leading
        ``level`` dim (coordinate: the levels) before the dims not reduced.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, a level is not in
        (0, 1), or a ``dim`` is not a dimension of the data.
    """
    return coverage_from_pit(pit_gaussian(mean, std, obs), levels, dim)


def coverage_samples(samples: xr.DataArray, obs: xr.DataArray, noise_var=None,
                     levels: Sequence[float] = DEFAULT_LEVELS, dim=None) -> xr.DataArray:
    """Empirical coverage of the central intervals of the particle predictive.

    obs lies in the central l-interval when its PIT (:func:`pit_samples`; the mixture with
    ``noise_var``, the empirical particle CDF without) is within [(1 - l)/2, (1 + l)/2]; this
    avoids inverting the mixture CDF.

    Parameters
    ----------
    samples : xr.DataArray
        Particle outputs on (particle, time, lat, lon), e.g. TWSA [cm].
    obs : xr.DataArray
        Observed values on (time, lat, lon), same units as ``samples``.
    noise_var : array_like, xr.DataArray or None, default None
        Per-particle noise variance 1/beta, shape (particle,), in units of the data squared
        (e.g. [cm2]); None: the particles alone.
    levels : float or sequence of float, default (0.5, 0.9, 0.95)
        Nominal coverages, fractions in (0, 1).
    dim : str, sequence of str or None, default None
        Dims to reduce over; None: every dim.

    Returns
    -------
    xr.DataArray
        Fraction of valid values inside the interval, dimensionless (units "1"), with a leading
        ``level`` dim (coordinate: the levels) before the dims not reduced.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, ``samples`` has no
        ``particle`` dim, ``noise_var`` is not a finite positive (particle,) array, a level is not
        in (0, 1), or a ``dim`` is not a dimension of the PIT field.
    """
    return coverage_from_pit(pit_samples(samples, obs, noise_var), levels, dim)


def spread_skill(mean: xr.DataArray, std: xr.DataArray, obs: xr.DataArray, n_bins: int = 10,
                 bins: Sequence[float] | None = None) -> xr.Dataset:
    """Binned predicted spread against observed error, as a tidy Dataset over ``bin``.

    Values where mean, std and obs are all valid are binned by predicted std (``n_bins``
    equal-count bins from its quantiles, coinciding edges merged, or the explicit edges ``bins``;
    bins are closed on the left, the last also on the right, and values outside the edges are
    left out). Per bin: ``spread`` = sqrt(mean predicted variance), ``rmse`` of the predictive
    mean, ``count``; a calibrated predictive has rmse ~ spread. Use ``.to_dataframe()`` for a
    table.

    Parameters
    ----------
    mean : xr.DataArray
        Predictive mean, e.g. TWSA [cm] on (time, lat, lon).
    std : xr.DataArray
        Predictive standard deviation on the same dims, same units as ``mean``.
    obs : xr.DataArray
        Observed values on the same dims, same units as ``mean``.
    n_bins : int, default 10
        Number of equal-count bins (used when ``bins`` is None).
    bins : sequence of float or None, default None
        Strictly increasing bin edges of the std, same units as ``std``.

    Returns
    -------
    xr.Dataset
        On dim ``bin`` (0, 1, ...): ``std_lower``, ``std_upper`` (bin edges), ``spread`` and
        ``rmse``, all in the units of the data, and ``count`` (units "1"). Empty bins have
        NaN spread and rmse.

    Raises
    ------
    ValueError
        If an input is not a DataArray, their coordinates or ``units`` differ, no value is valid
        in all three, ``n_bins`` < 1, or ``bins`` is not at least two strictly increasing edges.
    """
    mean, std, obs = _aligned(mean=mean, std=std, obs=obs)
    units = _units(("mean", mean), ("std", std), ("obs", obs))
    valid = (mean.notnull() & std.notnull() & obs.notnull()).values
    s = std.values[valid].astype(np.float64)
    err = (mean.values[valid] - obs.values[valid]).astype(np.float64)
    if s.size == 0:
        raise ValueError("spread_skill: no value where mean, std and obs are all valid")
    if bins is None:
        if int(n_bins) < 1:
            raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
        edges = np.unique(np.quantile(s, np.linspace(0, 1, int(n_bins) + 1)))
        if edges.size == 1:
            edges = np.array([edges[0], edges[0]])
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bins must be at least two strictly increasing edges")
    nb = edges.size - 1
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, nb - 1)
    inside = (s >= edges[0]) & (s <= edges[-1])
    idx, s, err = idx[inside], s[inside], err[inside]
    count = np.bincount(idx, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.sqrt(np.bincount(idx, s ** 2, minlength=nb) / count)
        skill = np.sqrt(np.bincount(idx, err ** 2, minlength=nb) / count)
    b = np.arange(nb)
    return xr.Dataset(
        {
            "std_lower": ("bin", edges[:-1], {"units": units, "long_name": "lower edge of predicted std bin"}),
            "std_upper": ("bin", edges[1:], {"units": units, "long_name": "upper edge of predicted std bin"}),
            "spread": ("bin", spread, {"units": units, "long_name": "root mean predicted variance in bin"}),
            "rmse": ("bin", skill, {"units": units, "long_name": "RMSE of the predictive mean in bin"}),
            "count": ("bin", count, {"units": "1", "long_name": "number of values in bin"}),
        },
        coords={"bin": ("bin", b, {"long_name": "predicted std bin"})},
        attrs={"title": "spread-skill comparison"},
    )

