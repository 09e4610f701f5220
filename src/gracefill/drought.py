"""Drought from terrestrial water storage: deficit, WSDI, categories, events and probabilities.

- Water storage deficit (Thomas et al. 2014): TWSA minus its monthly climatology over a
  baseline of months, so the seasonal cycle is removed and negative values are drier than usual.
- WSDI (water storage deficit index): the deficit standardised per cell with the mean and
  standard deviation of the deficit over the same baseline.
- Categories: category k (1 = mild ... 5 = exceptional with the default thresholds) when
  WSDI <= threshold k; 0 = no drought.
- Events: runs of at least ``min_duration`` consecutive drought months per cell.
- Probability: the fraction of particles in drought, every particle standardised with the
  reference statistics of the gap-filled series (see :func:`drought_probability`).

All statistics are fitted on the baseline months only. The baseline is a (start, end) pair of
"YYYY-MM" strings (inclusive) or a boolean mask over ``time``. The time coordinate holds
month stamps (any day of the month is read as that month).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import months as mo
from gracefill.metrics import standard_cdf, student_t_std_factor

DEFAULT_THRESHOLDS = (-0.5, -0.8, -1.3, -1.6, -2.0)
CATEGORY_NAMES = ("none", "mild", "moderate", "severe", "extreme", "exceptional")
PARTICLE = "particle"
CRITERIA = ("deficit", "wsdi")


# --------------------------------------------------------------------------- helpers
def _check_field(da, name: str) -> xr.DataArray:
    if not isinstance(da, xr.DataArray):
        raise ValueError(f"{name} must be an xarray.DataArray, got {type(da).__name__}")
    if "time" not in da.dims:
        raise ValueError(f"{name} must have a 'time' dim, got {da.dims}")
    return da


def _months(da: xr.DataArray) -> pd.DatetimeIndex:
    return mo.to_month_start(da["time"].values)


def baseline_mask(da: xr.DataArray, baseline) -> np.ndarray:
    """Boolean mask over ``da.time`` of the baseline months ((start, end) "YYYY-MM" or a mask).

    Parameters
    ----------
    da : xr.DataArray
        Series with a ``time`` dim of month stamps (any day of the month reads as that month).
    baseline : tuple of str or array_like of bool
        Baseline months: a (start, end) pair of "YYYY-MM" strings (inclusive), or a boolean mask
        over ``time`` (array or DataArray).

    Returns
    -------
    np.ndarray
        Boolean mask of shape (time,), True for the baseline months.

    Raises
    ------
    ValueError
        If start is after end, the mask is not boolean of shape (time,), or no month is selected.
    """
    n = da.sizes["time"]
    if isinstance(baseline, (tuple, list)) and len(baseline) == 2 and all(isinstance(b, str) for b in baseline):
        start, end = baseline
        if pd.Timestamp(start) > pd.Timestamp(end):
            raise ValueError(f"baseline start {start} is after its end {end}")
        mask = mo.in_window(_months(da), start, end)
    else:
        mask = np.asarray(baseline.values if isinstance(baseline, xr.DataArray) else baseline)
        if mask.dtype != bool or mask.shape != (n,):
            raise ValueError(f"baseline must be (start, end) months or a boolean mask over the {n} months")
    if not mask.any():
        raise ValueError(f"baseline {baseline!r} selects no month of the series")
    return mask


def _units(da: xr.DataArray) -> str:
    return da.attrs.get("units", "1")


# --------------------------------------------------------------------------- deficit and WSDI
def monthly_climatology(twsa: xr.DataArray, baseline) -> xr.DataArray:
    """Mean of each calendar month over the baseline months (dim ``month`` 1..12), NaN skipped.

    Cells without a valid value of some calendar month in the baseline get NaN for that month.

    Parameters
    ----------
    twsa : xr.DataArray
        TWSA, e.g. [cm] on (time, lat, lon); any further dims are kept.
    baseline : tuple of str or array_like of bool
        Baseline months: a (start, end) pair of "YYYY-MM" strings (inclusive), or a boolean mask
        over ``time`` (array or DataArray).

    Returns
    -------
    xr.DataArray
        Climatology on (month, lat, lon) (``month`` 1..12 first, then the other dims of ``twsa``),
        same units as ``twsa``.

    Raises
    ------
    ValueError
        If ``twsa`` is not a DataArray with a ``time`` dim, the baseline is invalid (see
        :func:`baseline_mask`), or the baseline lacks a calendar month.
    """
    _check_field(twsa, "twsa")
    mask = baseline_mask(twsa, baseline)
    base = twsa.isel(time=np.flatnonzero(mask))
    cal = xr.DataArray(_months(base).month.to_numpy(), dims="time", name="month")
    clim = base.groupby(cal).mean("time", skipna=True)
    missing = sorted(set(range(1, 13)) - set(clim["month"].values.tolist()))
    if missing:
        raise ValueError(f"baseline lacks calendar month(s) {missing}; a climatology needs every month")
    return clim.assign_attrs(units=_units(twsa), long_name="monthly climatology of TWSA over the baseline")


def _subtract_climatology(twsa: xr.DataArray, clim: xr.DataArray) -> xr.DataArray:
    cal = xr.DataArray(_months(twsa).month.to_numpy(), dims="time")
    seasonal = clim.sel(month=cal).drop_vars("month", errors="ignore")
    return twsa - seasonal


def drought_reference(twsa: xr.DataArray, baseline, ddof: int = 0) -> xr.Dataset:
    """Baseline statistics that define deficit and WSDI.

    ``climatology`` (month, ...) and the baseline ``deficit_mean`` and ``deficit_std`` (ddof
    ``ddof``) per cell. Fit it on the gap-filled series and reuse it for particles
    (:func:`drought_probability`).

    Parameters
    ----------
    twsa : xr.DataArray
        TWSA, e.g. the gap-filled series [cm] on (time, lat, lon).
    baseline : tuple of str or array_like of bool
        Baseline months: a (start, end) pair of "YYYY-MM" strings (inclusive), or a boolean mask
        over ``time`` (array or DataArray).
    ddof : int, default 0
        Delta degrees of freedom of ``deficit_std``.

    Returns
    -------
    xr.Dataset
        ``climatology`` on (month, lat, lon), ``deficit_mean`` and ``deficit_std`` on (lat, lon),
        all in the units of ``twsa``; attributes ``baseline_start`` and ``baseline_end`` ("YYYY-MM"),
        ``baseline_months`` (count) and ``ddof``.

    Raises
    ------
    ValueError
        As :func:`monthly_climatology`.
    """
    mask = baseline_mask(_check_field(twsa, "twsa"), baseline)
    clim = monthly_climatology(twsa, mask)
    deficit = _subtract_climatology(twsa, clim).isel(time=np.flatnonzero(mask))
    units = _units(twsa)
    months = _months(twsa)[mask]
    return xr.Dataset(
        {
            "climatology": clim,
            "deficit_mean": deficit.mean("time", skipna=True).assign_attrs(
                units=units, long_name="baseline mean of the water storage deficit"),
            "deficit_std": deficit.std("time", skipna=True, ddof=ddof).assign_attrs(
                units=units, long_name="baseline standard deviation of the water storage deficit"),
        },
        attrs={"baseline_start": mo.month_labels(months[:1])[0], "baseline_end": mo.month_labels(months[-1:])[0],
               "baseline_months": int(mask.sum()), "ddof": int(ddof)},
    )


def _reference(baseline, reference, name: str) -> xr.Dataset | None:
    """The reference Dataset, or None when statistics are to be fitted on ``baseline``."""
    if (baseline is None) == (reference is None):
        raise ValueError(f"{name}: give exactly one of baseline or reference")
    if reference is not None and not isinstance(reference, xr.Dataset):
        raise ValueError(f"{name}: reference must be the Dataset of drought_reference")
    return reference


def storage_deficit(twsa: xr.DataArray, baseline=None, *, reference: xr.Dataset | None = None) -> xr.DataArray:
    """Water storage deficit: TWSA minus its baseline monthly climatology.

    The climatology is fitted on ``baseline`` months of ``twsa`` itself, or taken from a
    ``reference`` (:func:`drought_reference`). Extra dims (e.g. ``particle``) broadcast.

    Parameters
    ----------
    twsa : xr.DataArray
        TWSA, e.g. [cm] on (time, lat, lon), or (particle, time, lat, lon) with a reference.
    baseline : tuple of str, array_like of bool or None, default None
        Baseline months, as in :func:`baseline_mask`; None when ``reference`` is given.
    reference : xr.Dataset or None, keyword-only
        Statistics of :func:`drought_reference`; give exactly one of ``baseline`` and
        ``reference``.

    Returns
    -------
    xr.DataArray
        Deficit on the dims of ``twsa``, same units as ``twsa``; negative is drier than usual.

    Raises
    ------
    ValueError
        If ``twsa`` is not a DataArray with a ``time`` dim, both or neither of ``baseline`` and
        ``reference`` are given, ``reference`` is not a Dataset, its climatology's units differ
        from those of ``twsa``, or the baseline is invalid (see :func:`monthly_climatology`).
    """
    _check_field(twsa, "twsa")
    ref = _reference(baseline, reference, "storage_deficit")
    clim = monthly_climatology(twsa, baseline) if ref is None else ref["climatology"]
    if ref is not None and clim.attrs.get("units", _units(twsa)) != _units(twsa):
        raise ValueError(f"twsa units {_units(twsa)!r} differ from the reference's {clim.attrs['units']!r}")
    out = _subtract_climatology(twsa, clim)
    return out.assign_attrs(units=_units(twsa),
                            long_name="water storage deficit (TWSA minus baseline monthly climatology)")


def wsdi(deficit: xr.DataArray, baseline=None, *, reference: xr.Dataset | None = None, ddof: int = 0) -> xr.DataArray:
    """Water storage deficit index: (deficit - baseline mean) / baseline std, per cell.

    The statistics come from ``baseline`` months of ``deficit`` itself (std with ``ddof``), or
    from a ``reference`` (:func:`drought_reference`). Cells with zero spread give NaN.

    Parameters
    ----------
    deficit : xr.DataArray
        Water storage deficit (:func:`storage_deficit`), e.g. [cm] on (time, lat, lon); extra
        dims (e.g. ``particle``) broadcast against the reference.
    baseline : tuple of str, array_like of bool or None, default None
        Baseline months, as in :func:`baseline_mask`; None when ``reference`` is given.
    reference : xr.Dataset or None, keyword-only
        Statistics of :func:`drought_reference`; give exactly one of ``baseline`` and
        ``reference``.
    ddof : int, default 0, keyword-only
        Delta degrees of freedom of the baseline std; unused with ``reference`` (whose std is
        already fitted).

    Returns
    -------
    xr.DataArray
        WSDI on the dims of ``deficit``, dimensionless (units "1").

    Raises
    ------
    ValueError
        If ``deficit`` is not a DataArray with a ``time`` dim, both or neither of ``baseline`` and
        ``reference`` are given, ``reference`` is not a Dataset, or the baseline is invalid (see
        :func:`baseline_mask`).
    """
    _check_field(deficit, "deficit")
    ref = _reference(baseline, reference, "wsdi")
    if ref is None:
        base = deficit.isel(time=np.flatnonzero(baseline_mask(deficit, baseline)))
        mean, std = base.mean("time", skipna=True), base.std("time", skipna=True, ddof=ddof)
    else:
        mean, std = ref["deficit_mean"], ref["deficit_std"]
    out = (deficit - mean) / std.where(std > 0)
    return out.assign_attrs(units="1", long_name="water storage deficit index (baseline z-score of the deficit)")


def _check_thresholds(thresholds) -> np.ndarray:
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim != 1 or thr.size == 0 or np.any(thr > 0) or np.any(np.diff(thr) >= 0):
        raise ValueError(f"thresholds must be non-positive and strictly decreasing, got {list(thresholds)!r}")
    return thr


def drought_category(index: xr.DataArray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> xr.DataArray:
    """Drought category of each WSDI value.

    k when WSDI <= thresholds[k-1] (the highest such k), 0 = no drought, NaN where WSDI is
    missing. float32 with CF flag attrs.

    Parameters
    ----------
    index : xr.DataArray
        WSDI (dimensionless), e.g. on (time, lat, lon).
    thresholds : sequence of float, default (-0.5, -0.8, -1.3, -1.6, -2.0)
        Non-positive, strictly decreasing WSDI thresholds of categories 1, 2, ...

    Returns
    -------
    xr.DataArray
        Category 0..len(thresholds) on the dims of ``index``, float32, units "1", with attributes
        ``flag_values``, ``flag_meanings`` (the names of :data:`CATEGORY_NAMES` for five
        thresholds) and ``thresholds``.

    Raises
    ------
    ValueError
        If ``thresholds`` is empty, has a positive value or is not strictly decreasing.
    """
    thr = _check_thresholds(thresholds)
    level = xr.DataArray(thr, dims="_threshold")
    cat = (index <= level).sum("_threshold").where(index.notnull()).astype(np.float32)
    names = CATEGORY_NAMES if thr.size == 5 else ("none", *[f"category_{k}" for k in range(1, thr.size + 1)])
    return cat.assign_attrs(units="1", long_name="drought category from WSDI",
                            flag_values=np.arange(thr.size + 1, dtype=np.int8), flag_meanings=" ".join(names),
                            thresholds=thr)


# --------------------------------------------------------------------------- events
_EVENT_COLUMNS = ("onset", "end", "duration", "severity", "mean_deficit", "peak_deficit", "peak_month", "censored")


def drought_events(deficit: xr.DataArray, index: xr.DataArray | None = None, *, min_duration: int = 3,
                   criterion: str = "deficit", threshold: float = DEFAULT_THRESHOLDS[0]) -> pd.DataFrame:
    """Drought events: runs of at least ``min_duration`` consecutive drought months per cell.

    A month is a drought month when ``criterion`` = "deficit" (default, Thomas et al. 2014):
    deficit < 0; "wsdi": ``index`` (the WSDI) <= ``threshold`` and the deficit is valid. A missing
    month (NaN, or a month absent from the time axis) ends a run.

    Parameters
    ----------
    deficit : xr.DataArray
        Water storage deficit, e.g. [cm] on (time, lat, lon); the time axis holds increasing,
        distinct months.
    index : xr.DataArray or None, default None
        WSDI (dimensionless) on the coordinates of ``deficit``; needed for ``criterion="wsdi"``,
        unused otherwise.
    min_duration : int, default 3, keyword-only
        Least number of consecutive drought months of an event.
    criterion : {"deficit", "wsdi"}, default "deficit", keyword-only
        What makes a drought month (see above).
    threshold : float, default -0.5, keyword-only
        WSDI threshold (dimensionless) of the "wsdi" criterion.

    Returns
    -------
    pd.DataFrame
        One row per event (per cell, in time order) with the cell's coordinates (e.g. lat, lon;
        integer positions along a dim without a coordinate), ``onset`` and ``end`` (first and
        last drought month, month-start timestamps), ``duration`` (months), ``severity`` = mean
        deficit x duration (the summed deficit, negative under the "deficit" criterion, [units of
        deficit x month]), ``mean_deficit`` and ``peak_deficit`` (most negative deficit) [units of
        deficit], ``peak_month``, and ``censored`` (the run touches the first or last month, so it
        may be longer). Units are in ``DataFrame.attrs['units']``; ``attrs`` also hold
        ``criterion``, ``threshold`` (None for "deficit") and ``min_duration``.

    Raises
    ------
    ValueError
        If ``deficit`` (or ``index``) is not a DataArray with a ``time`` dim, ``min_duration`` is
        not a positive integer, ``criterion`` is unknown, the months are not increasing and
        distinct, ``index`` is missing for "wsdi", or the coordinates of ``index`` and ``deficit``
        differ.
    """
    _check_field(deficit, "deficit")
    if isinstance(min_duration, bool) or not isinstance(min_duration, (int, np.integer)) or min_duration < 1:
        raise ValueError(f"min_duration must be a positive integer, got {min_duration!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    months = _months(deficit)
    if months.has_duplicates or not months.is_monotonic_increasing:
        raise ValueError("deficit time axis must hold increasing, distinct months")
    full = mo.month_range(mo.month_labels(months[:1])[0], mo.month_labels(months[-1:])[0])
    d = deficit.assign_coords(time=months).reindex(time=full)
    if criterion == "deficit":
        flag = d < 0
    else:
        if index is None:
            raise ValueError("criterion 'wsdi' needs index (the WSDI)")
        _check_field(index, "index")
        w = index.assign_coords(time=_months(index)).reindex(time=full)
        try:
            d, w = xr.align(d, w, join="exact")
        except ValueError:
            raise ValueError("index and deficit coordinates differ") from None
        flag = (w <= threshold) & d.notnull()
    cell_dims = [dim for dim in d.dims if dim != "time"]
    shape = [d.sizes[k] for k in cell_dims]
    n_time = len(full)
    values = d.transpose(*cell_dims, "time").values.reshape(-1, n_time).astype(np.float64)
    inside = flag.transpose(*cell_dims, "time").values.reshape(-1, n_time)
    padded = np.zeros((inside.shape[0], n_time + 2), dtype=np.int8)
    padded[:, 1:-1] = inside
    step = np.diff(padded, axis=1)
    cell, start = np.nonzero(step == 1)          # row-major: per cell, in time order
    _, stop = np.nonzero(step == -1)              # exclusive end; pairs with start
    duration = stop - start
    keep = duration >= min_duration
    cell, start, stop, duration = cell[keep], start[keep], stop[keep], duration[keep]

    units = _units(deficit)
    cols: dict[str, np.ndarray] = {}
    unravel = np.unravel_index(cell, shape) if shape else ()
    for dim, idx in zip(cell_dims, unravel):
        coord = d[dim].values if dim in d.coords else np.arange(d.sizes[dim])
        cols[dim] = coord[idx]
    if cell.size:
        offsets = np.concatenate([[0], np.cumsum(duration)[:-1]])
        seg = np.repeat(np.arange(cell.size), duration)
        t = np.repeat(start, duration) + np.arange(duration.sum()) - np.repeat(offsets, duration)
        vals = values[np.repeat(cell, duration), t]
        total = np.add.reduceat(vals, offsets)
        first = np.lexsort((vals, seg))[offsets]          # position of the minimum of each run
        peak, peak_t = vals[first], t[first]
    else:
        total = peak = np.zeros(0)
        peak_t = np.zeros(0, dtype=int)
    cols.update({
        "onset": full[start], "end": full[stop - 1], "duration": duration.astype(np.int64),
        "severity": total, "mean_deficit": total / np.maximum(duration, 1), "peak_deficit": peak,
        "peak_month": full[peak_t], "censored": (start == 0) | (stop == n_time),
    })
    df = pd.DataFrame(cols)
    df.attrs = {"units": {"duration": "month", "severity": f"{units} month", "mean_deficit": units,
                          "peak_deficit": units},
                "criterion": criterion, "threshold": float(threshold) if criterion == "wsdi" else None,
                "min_duration": int(min_duration)}
    return df


# --------------------------------------------------------------------------- probabilities and evaluation
def drought_probability(samples: xr.DataArray, reference: xr.Dataset,
                        threshold: float = DEFAULT_THRESHOLDS[0]) -> xr.DataArray:
    """Fraction of particles in which each cell is in drought (WSDI <= ``threshold``) each month.

    Every particle's deficit and WSDI use the *same* ``reference`` (:func:`drought_reference`
    fitted on the gap-filled series), not statistics of the particle itself: inside the
    baseline the gap-filled series is observed GRACE, so the reference is the observed climate;
    a common reference makes the probability the posterior chance that storage falls below one
    fixed drought level, consistent with the WSDI map it accompanies. Standardising each particle
    by its own baseline would also standardise away its bias and spread, i.e. the very
    uncertainty the probability should carry.

    Parameters
    ----------
    samples : xr.DataArray
        Particle TWSA on (particle, time, lat, lon), same units as the reference (e.g. [cm]).
    reference : xr.Dataset
        Statistics of :func:`drought_reference`.
    threshold : float, default -0.5
        WSDI threshold (dimensionless).

    Returns
    -------
    xr.DataArray
        Probability in [0, 1] on (time, lat, lon), dimensionless (units "1"; attribute
        ``threshold``), over the particles with a valid WSDI; NaN where no particle is valid.

    Raises
    ------
    ValueError
        If ``samples`` is not a DataArray with ``time`` and ``particle`` dims, ``reference`` is not
        a Dataset, or the units of ``samples`` and of the reference's climatology differ.
    """
    _check_field(samples, "samples")
    if PARTICLE not in samples.dims:
        raise ValueError(f"samples must have a {PARTICLE!r} dim, got {samples.dims}")
    index = wsdi(storage_deficit(samples, reference=reference), reference=reference)
    count = index.notnull().sum(PARTICLE)
    out = (index <= threshold).sum(PARTICLE) / count.where(count > 0)      # NaN <= x is False
    return out.assign_attrs(units="1", threshold=float(threshold),
                            long_name=f"drought probability (fraction of particles with WSDI <= {threshold})")


def parametric_drought_probability(mean: xr.DataArray, std: xr.DataArray, reference: xr.Dataset, threshold: float,
                                    dof: float = np.inf):
    """P(WSDI <= threshold) when TWSA ~ N(mean, std^2), or the Student-t with that mean and
    standard deviation and ``dof`` degrees of freedom: :func:`drought_probability`'s fallback for
    a reconstruction without particle samples, and the probability under a calibration with
    Student-t tails.

    Parameters
    ----------
    mean, std : xr.DataArray
        Predictive mean and standard deviation of TWSA, in the units of ``reference``.
    reference : xr.Dataset
        Baseline climatology and deficit spread from :func:`drought_reference`.
    threshold : float
        WSDI threshold (dimensionless), e.g. -0.5.
    dof : float, default inf
        Degrees of freedom of the Student-t (inf: the Gaussian).

    Returns
    -------
    xr.DataArray
        Probability (units "1"), NaN where ``std`` or the deficit spread is 0.
    """
    z = wsdi(storage_deficit(mean, reference=reference), reference=reference)
    spread = std / reference["deficit_std"] / student_t_std_factor(dof)
    standardised = (threshold - z) / spread.where(spread > 0)
    prob = xr.apply_ufunc(standard_cdf, standardised, kwargs={"dof": dof})
    return prob.assign_attrs(units="1")


def gap_filled(observed: xr.DataArray, reconstruction: xr.DataArray) -> xr.DataArray:
    """Observed TWSA where observed, the reconstruction elsewhere, on the reconstruction's months.

    ``observed`` may lack months (the gap, missing months): they are taken from the reconstruction.

    Parameters
    ----------
    observed : xr.DataArray
        Observed TWSA, e.g. [cm] on (time, lat, lon); reindexed onto the time values of
        ``reconstruction`` (exact match).
    reconstruction : xr.DataArray
        Reconstructed TWSA on (time, lat, lon), same grid and units as ``observed``.

    Returns
    -------
    xr.DataArray
        Gap-filled TWSA on the dims and months of ``reconstruction``, in its units (else those of
        ``observed``, else "1").

    Raises
    ------
    ValueError
        If an input is not a DataArray with a ``time`` dim, both have ``units`` and they differ,
        or the grids differ.
    """
    _check_field(observed, "observed")
    _check_field(reconstruction, "reconstruction")
    u_obs, u_rec = observed.attrs.get("units"), reconstruction.attrs.get("units")
    if u_obs and u_rec and u_obs != u_rec:
        raise ValueError(f"observed units {u_obs!r} differ from reconstruction units {u_rec!r}")
    obs = observed.reindex(time=reconstruction["time"])
    try:
        obs, rec = xr.align(obs, reconstruction, join="exact")
    except ValueError:
        raise ValueError("observed and reconstruction grids differ; regrid first") from None
    out = obs.where(obs.notnull(), rec)
    return out.assign_attrs(units=u_rec or u_obs or "1",
                            long_name="gap-filled TWSA (observed where available, reconstruction elsewhere)")


def detection_scores(predicted: xr.DataArray, truth: xr.DataArray, threshold: float | None = None,
                     dim=None) -> xr.Dataset:
    """Hit rate and false-alarm ratio of drought cells against a truth (the synthetic twin).

    ``predicted`` and ``truth`` are drought masks (bool, or 0/1 with NaN for missing), or WSDI
    fields when ``threshold`` is given (drought = WSDI <= threshold). Counted over ``dim``
    (None: all values) where both are valid.

    Parameters
    ----------
    predicted : xr.DataArray
        Predicted drought mask or WSDI, e.g. on (time, lat, lon).
    truth : xr.DataArray
        True drought mask or WSDI on the same coordinates.
    threshold : float or None, default None
        WSDI threshold (dimensionless); None: the inputs are masks.
    dim : str, sequence of str or None, default None
        Dims to count over; None: every dim of ``predicted``.

    Returns
    -------
    xr.Dataset
        On the dims not counted over, all dimensionless (units "1"): ``hit_rate`` = hits / (hits +
        misses) (probability of detection), ``false_alarm_ratio`` = false alarms / (hits + false
        alarms), NaN when undefined, and the counts ``hits``, ``misses``, ``false_alarms`` and
        ``correct_negatives``.

    Raises
    ------
    ValueError
        If an input is not a DataArray or their coordinates differ.
    """
    for name, da in (("predicted", predicted), ("truth", truth)):
        if not isinstance(da, xr.DataArray):
            raise ValueError(f"{name} must be an xarray.DataArray, got {type(da).__name__}")
    try:
        predicted, truth = xr.align(predicted, truth, join="exact")
    except ValueError:
        raise ValueError("predicted and truth coordinates differ") from None
    valid = predicted.notnull() & truth.notnull()
    if threshold is None:
        p, t = predicted.fillna(0).astype(bool), truth.fillna(0).astype(bool)
    else:
        p, t = predicted <= threshold, truth <= threshold
    p, t = p & valid, t & valid
    dims = tuple(predicted.dims) if dim is None else ((dim,) if isinstance(dim, str) else tuple(dim))
    hits = (p & t).sum(dims)
    misses = (~p & t).sum(dims)
    false_alarms = (p & ~t).sum(dims)
    negatives = (~p & ~t & valid).sum(dims)
    count = {"units": "1"}
    return xr.Dataset({
        "hit_rate": (hits / (hits + misses).where(hits + misses > 0)).assign_attrs(
            units="1", long_name="hit rate (probability of detection) of drought"),
        "false_alarm_ratio": (false_alarms / (hits + false_alarms).where(hits + false_alarms > 0)).assign_attrs(
            units="1", long_name="false-alarm ratio of drought"),
        "hits": hits.assign_attrs(count, long_name="drought in both"),
        "misses": misses.assign_attrs(count, long_name="drought in truth only"),
        "false_alarms": false_alarms.assign_attrs(count, long_name="drought in prediction only"),
        "correct_negatives": negatives.assign_attrs(count, long_name="drought in neither"),
    })
