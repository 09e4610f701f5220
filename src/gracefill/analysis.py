"""Evaluation and drought analysis of a reconstruction: the orchestration above metrics,
baselines and drought, shared by the ``evaluate``, ``baselines`` and ``drought`` stages.

Every method (the BCNN and each baseline) is scored by the same code, on the same months and
cells, with the trend added back: test months against GRACE, and, where the world's truth is
known (the synthetic twin experiment), the gap months against truth.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import baselines as bl
from gracefill import drought as dr
from gracefill import metrics as me
from gracefill.months import MONTH_FLAGS, SPLIT_FLAGS

BASELINES = ("climatology_trend", "regression", "land_model")


def _months(ds: xr.Dataset, flag: str) -> np.ndarray:
    return np.flatnonzero(ds["split"].values == SPLIT_FLAGS[flag])


def baseline_predictions(tensors: xr.Dataset, land_storage_mm: xr.DataArray, ridge: float) -> xr.Dataset:
    """The three baselines for every month, in the target's units, trend added back.

    (a) climatology + trend and (b) per-cell regression on the same lagged inputs are fitted on
    the training months; (c) is the land model's storage anomaly with a per-cell offset matching
    GRACE's mean over the training months (the two anomalies refer to different base periods).
    """
    units = tensors["target"].attrs["units"]
    train = tensors["split"].values == SPLIT_FLAGS["train"]
    trend = (tensors["target_trend_offset"] + tensors["target_trend_slope"] * tensors["month_index"]).transpose("time", "lat", "lon")
    observed = (tensors["target"] + trend).assign_attrs(units=units)
    land = tensors["land_mask"].astype(bool)
    clim = bl.climatology_trend(observed, train)
    regression = bl.regression(tensors["inputs"], tensors["target"], train, ridge=ridge) + trend
    storage = land_storage_mm.assign_coords(time=tensors["time"].values)
    land_model = bl.land_model(storage - storage.isel(time=np.flatnonzero(train)).mean("time"),
                               observed, train, fit="offset")
    out = xr.Dataset({
        "climatology_trend": clim.assign_attrs(long_name="baseline: monthly climatology + linear trend (training months)"),
        "regression": regression.assign_attrs(long_name="baseline: per-cell linear regression on the lagged predictors"),
        "land_model": land_model.assign_attrs(long_name="baseline: land-model storage anomaly, offset to GRACE"),
    })
    for name in out.data_vars:
        out[name] = out[name].where(land).astype(np.float32).assign_attrs(units=units)
    out.attrs["title"] = "gracefill baselines"
    return out


def _summary(maps: xr.Dataset, area: xr.DataArray) -> dict:
    row = {}
    for name in ("r", "nse", "rmse"):
        row[f"{name}_median"] = float(me.weighted_median(maps[name], area))
        row[f"{name}_mean"] = float(me.weighted_mean(maps[name], area))
    return row


def evaluate(reconstruction: xr.Dataset, baselines: xr.Dataset, area: xr.DataArray, levels, bins: int):
    """Score table, score maps, calibration table and spread-skill table.

    Returns (table DataFrame: one row per method and period; maps Dataset (method, period, lat,
    lon); calibration DataFrame (method, period, nominal, observed); spread-skill DataFrame).
    """
    rec = reconstruction
    units = rec["twsa"].attrs["units"]
    periods = {"test": (_months(rec, "test"), rec["observed_twsa"])}
    if "truth" in rec:
        periods["gap"] = (_months(rec, "gap"), rec["truth"])
    rows, maps, calibration, spread = [], [], [], []
    noise_var = np.exp(-rec["log_beta"].values.astype(np.float64))
    for period, (index, reference) in periods.items():
        if index.size == 0:
            continue
        obs = reference.isel(time=index).assign_attrs(units=units)
        methods = {"bcnn": rec["twsa"]} | {name: baselines[name] for name in BASELINES}
        for method, prediction in methods.items():
            pred = prediction.isel(time=index).assign_attrs(units=units)
            score = me.score_maps(pred, obs)
            maps.append(score.expand_dims(method=[method], period=[period]))
            row = {"method": method, "period": period, "months": int(index.size), **_summary(score, area)}
            if method == "bcnn":
                row.update(_uncertainty_scores(rec, index, obs, noise_var, levels, bins, calibration, spread, period))
            else:
                zero = xr.zeros_like(pred)
                row["crps"] = float(me.crps_gaussian(pred, zero, obs).mean())
            rows.append(row)
    table = pd.DataFrame(rows)
    score_maps = xr.combine_by_coords(maps) if maps else xr.Dataset()
    return table, score_maps, pd.DataFrame(calibration), pd.concat(spread, ignore_index=True) if spread else pd.DataFrame()


def _uncertainty_scores(rec, index, obs, noise_var, levels, bins, calibration, spread, period) -> dict:
    """MNLP, CRPS and interval coverage of the particle mixture (Gaussian when no samples)."""
    units = obs.attrs["units"]
    mean = rec["twsa"].isel(time=index).assign_attrs(units=units)
    std = rec["twsa_std"].isel(time=index).assign_attrs(units=units)
    if "twsa_samples" in rec:
        samples = rec["twsa_samples"].isel(time=index).assign_attrs(units=units)
        mnlp = float(me.mnlp_mixture(samples, noise_var, obs))
        crps = float(me.crps_ensemble(samples, obs, noise_var).mean())
        coverage = me.coverage_samples(samples, obs, noise_var, levels=levels)
    else:
        mnlp = float(me.mnlp_gaussian(mean, std, obs))
        crps = float(me.crps_gaussian(mean, std, obs).mean())
        coverage = me.coverage_gaussian(mean, std, obs, levels=levels)
    row = {"mnlp": mnlp, "crps": crps}
    for level, value in zip(coverage["level"].values, coverage.values):
        row[f"coverage_{int(round(level * 100))}"] = float(value)
        calibration.append({"method": "bcnn", "period": period, "nominal": float(level), "observed": float(value)})
    table = me.spread_skill(mean, std, obs, n_bins=bins).to_dataframe().reset_index()
    table.insert(0, "period", period)
    spread.append(table)
    return row


def analyse_droughts(rec: xr.Dataset, cfg: dict):
    """WSDI, categories, probability, events and (synthetic) detection scores of the gap-filled series.

    Returns (fields Dataset over all months, events DataFrame, detection DataFrame or None).
    """
    d = cfg["drought"]
    baseline = (d["baseline_start"], d["baseline_end"])
    threshold = float(d["thresholds"][0])
    filled = dr.gap_filled(rec["observed_twsa"], rec["twsa"])
    reference = dr.drought_reference(filled, baseline)
    deficit = dr.storage_deficit(filled, reference=reference)
    index = dr.wsdi(deficit, reference=reference)
    if "twsa_samples" in rec:
        probability = dr.drought_probability(rec["twsa_samples"], reference, threshold)
    else:
        probability = gaussian_drought_probability(rec["twsa"], rec["twsa_std"], reference, threshold)
    observed = rec["month_flag"] == MONTH_FLAGS["observed"]
    probability = probability.where(~observed, (index <= threshold).astype(np.float32).where(index.notnull()))
    fields = xr.Dataset({
        "gap_filled_twsa": filled,
        "deficit": deficit,
        "wsdi": index,
        "category": dr.drought_category(index, d["thresholds"]),
        "probability": probability.assign_attrs(
            long_name=f"probability that WSDI <= {threshold} (fraction of particles; 0/1 where GRACE observed)"),
        "month_flag": rec["month_flag"],
    })
    events = dr.drought_events(deficit, index, min_duration=d["min_duration"], criterion=d["event_criterion"],
                               threshold=threshold)
    detection = None
    if "truth" in rec:
        truth_ref = dr.drought_reference(rec["truth"], baseline)
        truth_index = dr.wsdi(dr.storage_deficit(rec["truth"], reference=truth_ref), reference=truth_ref)
        fields["wsdi_truth"] = truth_index.assign_attrs(long_name="WSDI of the synthetic world's true storage")
        gap = _months(rec, "gap")
        scores = dr.detection_scores(index.isel(time=gap), truth_index.isel(time=gap), threshold=threshold)
        detection = pd.DataFrame([{"period": "gap", "threshold": threshold,
                                   **{k: float(v) for k, v in scores.data_vars.items()}}])
    return fields, events, detection


def gaussian_drought_probability(mean: xr.DataArray, std: xr.DataArray, reference: xr.Dataset, threshold: float):
    """P(WSDI <= threshold) when TWSA ~ N(mean, std^2): the fallback without particle samples."""
    from scipy.stats import norm

    z = dr.wsdi(dr.storage_deficit(mean, reference=reference), reference=reference)
    spread = std / reference["deficit_std"]
    prob = xr.apply_ufunc(norm.cdf, (threshold - z) / spread.where(spread > 0))
    return prob.assign_attrs(units="1")
