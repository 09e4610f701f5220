"""Post-hoc calibration of the BCNN's predictive spread on the validation folds.

The particles' spread plus their noise is fitted to training months; under drift (the
groundwater store, trends carried forward) the errors of later months are larger, so the raw
intervals cover less than they claim, and more so the further a month lies from the fit window.
The calibration measures this on the forward-chaining folds only, with the model of the
baselines' spreads (:func:`gracefill.baselines.fit_spread`: a variance per cell times a factor
per lead bin) fitted to one of two things:

* ``absolute`` (the default): the folds' errors prediction - GRACE themselves; the calibrated
  spread is that error variance at each month's lead, the raw one only gives its shape;
* ``ratio``: the standardised errors z = error / raw predictive std; the calibrated spread is
  the raw one times the fitted factor.

The raw spread does not grow with lead and shrinks as the fit window grows (7.7, 6.9 and 6.0 cm
for the folds ending 2007, 2009 and 2011 of the reference benchmark world, 5.3 cm for the final
model), so a factor fitted to the folds' z carries over to the final model's longer leads short;
the error variance does not depend on it. An optional tail factor then makes a chosen quantile of
the errors, each fold rescaled by the fit on the other folds, that of a Gaussian. No test, gap or
pseudo-gap month enters.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import baselines as bl
from gracefill import months as mo
from gracefill.metrics import standard_quantile
from gracefill.months import SPLIT_FLAGS


#: what the folds' fit describes: the errors in the target's units, or their ratio to the raw spread
CALIBRATION_MODELS = ("absolute", "ratio")


def fit_window(ds: xr.Dataset) -> tuple[str, str]:
    """First and last month ("YYYY-MM") of the window the file's methods were fitted on."""
    window = ds.attrs.get("train_window")
    if not window:
        raise ValueError("the file has no 'train_window' attribute; rebuild it with this version")
    start, end = window.split("..")
    return start, end


def lead_months(ds: xr.Dataset, index: np.ndarray) -> np.ndarray:
    """Months from the fit window to each month of ``index`` (at least 1): after the window, the
    months since its end; before it (a hindcast), the months to its first training month (the
    first month labelled train in ``split``, else the window's start), so that the spread fitted
    on the folds' forward leads grows backwards too, on the assumption that a model knows as
    little n months before its training data as n months after them."""
    start, end = fit_window(ds)
    times = pd.DatetimeIndex(ds["time"].values)
    if "split" in ds:
        train = np.flatnonzero(ds["split"].values == SPLIT_FLAGS["train"])
        if train.size:
            start = times[train[0]]
    months = times[np.asarray(index, dtype=np.int64)]
    after = np.array([mo.months_between(end, m) for m in months], dtype=np.int64)
    before = np.array([mo.months_between(m, start) for m in months], dtype=np.int64)
    return np.maximum(np.where(before > 0, before, after), 1).astype(np.int64)


def validation_months(rec: xr.Dataset) -> np.ndarray:
    """A fold's validation months: its months labelled test (observed, after its fit window)."""
    return np.flatnonzero(rec["split"].values == SPLIT_FLAGS["test"])


def _raw_std(rec: xr.Dataset) -> xr.DataArray:
    return rec["twsa_std_uncalibrated"] if "twsa_std_uncalibrated" in rec else rec["twsa_std"]


def validation_errors(rec: xr.Dataset, model: str = "absolute") -> tuple[xr.DataArray, np.ndarray]:
    """A fold's errors on its validation months, prediction - GRACE in the target's units
    (``absolute``) or divided by the uncalibrated predictive std (``ratio``, dimensionless), and
    each month's lead."""
    index = validation_months(rec)
    err = rec["twsa"] - rec["observed_twsa"]
    if model == "ratio":
        raw = _raw_std(rec)
        err = (err / raw.where(raw > 0)).assign_attrs(units="1")
    else:
        err = err.assign_attrs(units=rec["twsa"].attrs.get("units", "cm"))
    return err.isel(time=index), lead_months(rec, index)


def fit_calibration(fold_reconstructions: list[xr.Dataset], lead_bin_months: int = 12,
                    model: str = "absolute", tail_level: float | None = None,
                    family: str = "gaussian", pooling_km: float = 0.0) -> xr.Dataset:
    """The folds' validation errors (``model``: see the module) pooled into a
    :func:`gracefill.baselines.fit_spread_pooled` Dataset: variance per cell times a factor per
    lead bin, and with ``family`` ``student_t`` the degrees of freedom of Student-t tails chosen
    out of fold (attribute ``dof``; inf for the Gaussian). ``pooling_km`` > 0 pools each cell's
    variance with its neighbours' (:func:`gracefill.baselines.pool_cell_variance`).

    With ``tail_level`` (a central-interval probability), the lead factors are multiplied by one
    tail factor that makes that quantile of |error| / fitted spread equal the fitted
    distribution's, where each fold's errors are divided by the spread fitted on the *other*
    folds; without it the fit is a plain variance match.
    """
    if model not in CALIBRATION_MODELS:
        raise ValueError(f"calibration model must be one of {', '.join(CALIBRATION_MODELS)}, got {model!r}")
    if tail_level is not None and not 0 < tail_level < 1:
        raise ValueError(f"tail_level must lie between 0 and 1, got {tail_level!r}")
    parts = [validation_errors(rec, model) for rec in fold_reconstructions]
    parts = [(err, leads) for err, leads in parts if err.sizes["time"]]
    if not parts:
        raise ValueError("no validation month in the folds' reconstructions: nothing to calibrate on")
    units = parts[0][0].attrs["units"]
    fitted = bl.fit_spread_pooled(parts, units, lead_bin_months, family=family, pooling_km=pooling_km)
    dof = fitted.attrs["dof"]
    tail = 1.0
    if tail_level is not None:
        if len(parts) > 1:  # standardised by the other folds' spread times the chosen c
            values = np.abs(bl.out_of_fold_z(parts, units, lead_bin_months, pooling_km)) / fitted.attrs["tail_scale"]
        else:
            err, leads = parts[0]
            values = np.abs(err.values / bl.predict_spread(fitted, leads).values).ravel()
            values = values[np.isfinite(values)]
        if values.size:
            tail = float(np.quantile(values, tail_level) / central_quantile(tail_level, dof)) ** 2
    fitted["lead_factor"] = fitted["lead_factor"] * tail
    what = "error variance" if model == "absolute" else "variance factor of the raw spread"
    tails = "Gaussian" if math.isinf(dof) else f"Student-t with {dof:g} degrees of freedom"
    fitted.attrs.update(title="gracefill spread calibration (fitted on the validation folds)", model=model,
                        tail_factor=tail, tail_level="none" if tail_level is None else float(tail_level),
                        comment=f"{what} = cell_variance * lead_factor (lead_factor includes tail_factor); "
                                f"predictive distribution: {tails}")
    return fitted


def central_quantile(level: float, dof: float = math.inf) -> float:
    """Half-width, in units of the scale, of the central ``level`` interval of the standard
    Student-t with ``dof`` degrees of freedom (the standard normal for inf)."""
    return float(standard_quantile(0.5 + level / 2, dof))


def refit_like(rec: xr.Dataset, fold_reconstructions: list[xr.Dataset]) -> xr.Dataset:
    """:func:`fit_calibration` on other folds with the settings ``rec`` was calibrated with."""
    tail = rec.attrs.get("calibration_tail_level", "none")
    return fit_calibration(fold_reconstructions, int(rec.attrs["calibration_lead_bin_months"]),
                           model=rec.attrs.get("calibration_model", "absolute"),
                           tail_level=None if isinstance(tail, str) else float(tail),
                           family=rec.attrs.get("calibration_family", "gaussian"),
                           pooling_km=float(rec.attrs.get("calibration_pooling_km", 0.0)))


def calibration_dof(rec: xr.Dataset) -> float:
    """Degrees of freedom of the reconstruction's calibrated Student-t predictive distribution
    (inf: Gaussian, also for a reconstruction that is not calibrated)."""
    return float(rec.attrs.get("calibration_dof", math.inf))


def calibration_scale(calibration: xr.Dataset, rec: xr.Dataset) -> xr.DataArray:
    """Factor (time, lat, lon) on the raw predictive standard deviation of every month of ``rec``:
    the calibrated std at the month's lead over the raw one (``absolute``) or sqrt(variance
    factor) (``ratio``); 1 where the folds had no value for a cell."""
    leads = lead_months(rec, np.arange(rec.sizes["time"]))
    scale = bl.predict_spread(calibration, leads, time=rec["time"].values)
    if calibration.attrs.get("model") == "absolute":
        raw = _raw_std(rec)
        scale = scale / raw.where(raw > 0)
    scale = scale.fillna(1.0).where(rec["twsa"].notnull())
    return scale.astype(np.float32).assign_attrs(
        long_name="factor applied to the predictive standard deviation (calibrated on the validation folds)", units="1")


def apply_calibration(rec: xr.Dataset, calibration: xr.Dataset) -> xr.Dataset:
    """``rec`` with ``twsa_std`` calibrated, the raw spread kept as ``twsa_std_uncalibrated`` and
    the factor as ``calibration_scale`` (the particles are kept raw: a forecast from samples
    scales their spread about the mean by it)."""
    if "calibration_scale" in rec:
        raise ValueError("the reconstruction is already calibrated")
    scale = calibration_scale(calibration, rec)
    out = rec.copy()
    out["twsa_std_uncalibrated"] = rec["twsa_std"].assign_attrs(
        long_name="total predictive standard deviation before calibration")
    out["twsa_std"] = (rec["twsa_std"] * scale).astype(np.float32).assign_attrs(
        long_name="total predictive standard deviation (calibrated on the validation folds)",
        units=rec["twsa_std"].attrs.get("units", ""))
    out["calibration_scale"] = scale
    out.attrs["calibration"] = (f"spread calibrated on {int(calibration['n_samples'].sum())} validation months "
                                f"of the forward-chaining folds ({calibration.attrs['model']} errors, per cell and lead bin)")
    out.attrs["calibration_lead_bin_months"] = int(calibration.attrs["lead_bin_months"])
    out.attrs["calibration_model"] = calibration.attrs["model"]
    out.attrs["calibration_tail_level"] = calibration.attrs["tail_level"]
    out.attrs["calibration_family"] = calibration.attrs.get("family", "gaussian")
    out.attrs["calibration_dof"] = float(calibration.attrs.get("dof", math.inf))
    out.attrs["calibration_pooling_km"] = float(calibration.attrs.get("pooling_km", 0.0))
    return out


def scaled_samples(rec: xr.Dataset) -> xr.DataArray | None:
    """The particles with their spread about the mean scaled by ``calibration_scale`` (raw when
    the reconstruction is not calibrated); None without samples."""
    if "twsa_samples" not in rec:
        return None
    if "calibration_scale" not in rec:
        return rec["twsa_samples"]
    mean = rec["twsa_samples"].mean("particle")
    return (mean + rec["calibration_scale"] * (rec["twsa_samples"] - mean)).assign_attrs(rec["twsa_samples"].attrs)
