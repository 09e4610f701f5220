"""Post-hoc calibration of the BCNN's predictive spread on the validation folds.

The particles' spread plus their noise is fitted to training months; under drift (the
groundwater store, trends carried forward) the errors of later months are larger, so the raw
intervals cover less than they claim, and more so the further a month lies from the fit window.
The calibration measures this on the forward-chaining folds only: each fold's standardised
errors z = (prediction - GRACE) / predictive std on its validation months give a variance
factor per cell and per lead bin (the same model as the baselines' spreads,
:func:`gracefill.baselines.fit_spread`), times one tail factor that gives the rescaled errors
the 90 % quantile of a Gaussian, and the reconstruction's spread is multiplied by the square
root of that factor at the lead of each month. No test, gap or pseudo-gap month enters.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import baselines as bl
from gracefill import months as mo
from gracefill.months import SPLIT_FLAGS


#: the central interval whose coverage the calibration matches on the folds, and its Gaussian |z|
TAIL_LEVEL = 0.9
TAIL_QUANTILE = 1.6448536269514722


def fit_window(ds: xr.Dataset) -> tuple[str, str]:
    """First and last month ("YYYY-MM") of the window the file's methods were fitted on."""
    window = ds.attrs.get("train_window")
    if not window:
        raise ValueError("the file has no 'train_window' attribute; rebuild it with this version")
    start, end = window.split("..")
    return start, end


def lead_months(ds: xr.Dataset, index: np.ndarray) -> np.ndarray:
    """Months from the end of the fit window to each month of ``index`` (at least 1)."""
    end = fit_window(ds)[1]
    months = pd.DatetimeIndex(ds["time"].values[index])
    return np.maximum([mo.months_between(end, m) for m in months], 1).astype(np.int64)


def validation_months(rec: xr.Dataset) -> np.ndarray:
    """A fold's validation months: its months labelled test (observed, after its fit window)."""
    return np.flatnonzero(rec["split"].values == SPLIT_FLAGS["test"])


def standardised_errors(rec: xr.Dataset) -> tuple[xr.DataArray, np.ndarray]:
    """(prediction - GRACE) / uncalibrated predictive std on a fold's validation months, and
    each month's lead; dimensionless."""
    index = validation_months(rec)
    std = rec["twsa_std_uncalibrated"] if "twsa_std_uncalibrated" in rec else rec["twsa_std"]
    z = ((rec["twsa"] - rec["observed_twsa"]) / std.where(std > 0)).isel(time=index)
    return z.assign_attrs(units="1"), lead_months(rec, index)


def _rescaled(part: tuple[xr.DataArray, np.ndarray], factors: xr.Dataset) -> np.ndarray:
    """|z| of one fold divided by the spread factor fitted on (other) folds."""
    z, leads = part
    return np.abs(z.values) / bl.predict_spread(factors, leads).values


def fit_calibration(fold_reconstructions: list[xr.Dataset], lead_bin_months: int = 12) -> xr.Dataset:
    """Variance factor of the BCNN's spread per cell and lead bin, from the folds' standardised
    validation errors pooled (a :func:`gracefill.baselines.fit_spread` Dataset of z), times a
    tail factor.

    The tail factor makes the 90 % quantile of |z| / factor that of a Gaussian where each fold's
    errors are rescaled by the factors fitted on the *other* folds (all folds with one): a
    factor fitted per cell on some 100 values is noisy, and the months ahead drift more than
    those it was fitted on, so an in-sample variance match leaves the intervals short.
    """
    parts = [standardised_errors(rec) for rec in fold_reconstructions]
    parts = [(z, leads) for z, leads in parts if z.sizes["time"]]
    if not parts:
        raise ValueError("no validation month in the folds' reconstructions: nothing to calibrate on")
    fitted = bl.fit_spread_pooled(parts, "1", lead_bin_months)
    if len(parts) > 1:
        rescaled = [_rescaled(part, bl.fit_spread_pooled(parts[:k] + parts[k + 1:], "1", lead_bin_months))
                    for k, part in enumerate(parts)]
    else:
        rescaled = [_rescaled(parts[0], fitted)]
    values = np.concatenate([r.ravel() for r in rescaled])
    values = values[np.isfinite(values)]
    tail = float(np.quantile(values, TAIL_LEVEL) / TAIL_QUANTILE) ** 2 if values.size else 1.0
    fitted["lead_factor"] = fitted["lead_factor"] * tail
    fitted.attrs.update(title="gracefill spread calibration (fitted on the validation folds)", tail_factor=tail,
                        comment="variance factor of the BCNN's predictive spread = cell_variance * lead_factor "
                                f"(lead_factor includes tail_factor: the {TAIL_LEVEL:.0%} quantile of the folds' "
                                "errors, each rescaled by the factors of the other folds, matches a Gaussian's)")
    return fitted


def calibration_scale(calibration: xr.Dataset, rec: xr.Dataset) -> xr.DataArray:
    """Factor (time, lat, lon) on the predictive standard deviation of every month of ``rec``:
    sqrt(variance factor) at the month's lead; 1 where the folds had no value for a cell."""
    leads = lead_months(rec, np.arange(rec.sizes["time"]))
    scale = bl.predict_spread(calibration, leads, time=rec["time"].values)
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
                                "of the forward-chaining folds (per cell and lead bin)")
    out.attrs["calibration_lead_bin_months"] = int(calibration.attrs["lead_bin_months"])
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
