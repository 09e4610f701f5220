"""Training tensors: lagged predictor stacks, the detrended GRACE target, masks and split labels.

Everything the later stages need travels in one self-describing dataset (``tensors.nc``):
the inputs already normalised, the target's trend to add back, and the statistics used.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import months as mo
from gracefill.predictors import (TREND_SIGNIFICANCE, fit_linear_trend, shrunk_trend, significant_trend,
                                  trend_month_index)

UNIT_FACTORS_FROM_MM = {"mm": 1.0, "cm": 0.1}


def pseudo_gap_window(split_cfg: dict) -> tuple[str, str] | None:
    """(start, end) of the configured pseudo-gap, or None."""
    start, end = split_cfg.get("pseudo_gap_start"), split_cfg.get("pseudo_gap_end")
    return (start, end) if start and end else None


def target_trend(ds: xr.Dataset) -> xr.DataArray:
    """The target's trend (time, lat, lon) in every month of a tensors dataset: offset + slope *
    trend_month_index (month_index in files written before the trend extension existed), or
    trend_month_index_held in the cells flagged trend_held."""
    index = ds["trend_month_index"] if "trend_month_index" in ds else ds["month_index"]
    if "trend_held" in ds:  # trend_extension significant: flat in the cells without a significant trend
        index = xr.where(ds["trend_held"] == 1, ds["trend_month_index_held"], index)
    return (ds["target_trend_offset"] + ds["target_trend_slope"] * index).transpose("time", "lat", "lon")


def stack_lags(predictors: xr.Dataset, names, lags: int) -> xr.DataArray:
    """Input stack (time, channel, lat, lon), predictor-major: p1 lag 0..L-1, p2 lag 0..L-1, ...

    Channel (p, k) at month t holds predictor p at month t - k; months before the first carry NaN.
    """
    layers = []
    for name in names:
        for k in range(lags):
            layers.append(predictors[name].shift(time=k))
    stacked = xr.concat(layers, dim="channel", coords="minimal", compat="override").transpose("time", "channel", "lat", "lon")
    return stacked.assign_coords(
        channel=np.arange(len(layers), dtype=np.int16),
        channel_predictor=("channel", np.repeat(np.asarray(names, dtype=str), lags)),
        channel_lag=("channel", np.tile(np.arange(lags, dtype=np.int16), len(names))),
    )


def normalisation_stats(predictors: xr.Dataset, names, train: np.ndarray, land: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each predictor over the training months' land cells."""
    idx = np.flatnonzero(train)
    means, stds = [], []
    for name in names:
        values = predictors[name].isel(time=idx).where(land.astype(bool)).values
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError(f"predictor {name} has no finite land value in the training months")
        means.append(values.mean(dtype=np.float64))
        stds.append(max(values.std(dtype=np.float64), 1e-12))
    return np.asarray(means), np.asarray(stds)


def build_tensors(
    predictors: xr.Dataset,
    target: xr.DataArray,
    land: xr.DataArray,
    cell_area: xr.DataArray,
    cfg: dict,
    truth: xr.DataArray | None = None,
) -> xr.Dataset:
    """Assemble the tensors dataset from the predictors, the regridded GRACE target (mm) and the grid.

    ``target`` carries only the months the product has; the others become NaN and are flagged
    missing, never zero-filled. Trend and normalisation are fitted on training months only.
    """
    names = list(cfg["predictors"]["names"])
    lags = int(cfg["predictors"]["lags"])
    split_cfg = cfg["split"]
    months = pd.DatetimeIndex(predictors["time"].values)
    if target.attrs.get("units") != "mm":
        raise ValueError(f"target units {target.attrs.get('units')!r}, expected 'mm'")
    factor = UNIT_FACTORS_FROM_MM[cfg["predictors"]["target_units"]]
    units = cfg["predictors"]["target_units"]
    land_bool = land.astype(bool)

    target = target.assign_coords(time=mo.to_month_start(target["time"].values))
    if target.indexes["time"].duplicated().any():
        dup = mo.month_labels(target.indexes["time"][target.indexes["time"].duplicated()])
        raise ValueError(f"target has more than one field for month(s) {', '.join(dup)}")
    delivered = np.asarray(months.isin(target.indexes["time"]))
    target = target.reindex(time=months) * factor
    target = target.where(land_bool)
    observed = np.asarray(target.notnull().any(("lat", "lon")))
    empty = mo.month_labels(months[delivered & ~observed])  # in the product, but no value on land

    has_inputs = np.arange(len(months)) >= lags - 1
    split = mo.split_labels(months, observed, has_inputs,
                            (split_cfg["train_start"], split_cfg["train_end"]),
                            (split_cfg["gap_start"], split_cfg["gap_end"]),
                            pseudo_gap_window(split_cfg))
    train = split == mo.SPLIT_FLAGS["train"]
    if not train.any():
        raise ValueError("the training split is empty: no observed month with a full input stack "
                         f"between {split_cfg['train_start']} and {split_cfg['train_end']}")

    target.name = "target"
    target_trend = cfg["predictors"]["target_trend"]
    extension = cfg["predictors"]["trend_extension"]
    stored_index = xr.DataArray(trend_month_index(train, "linear" if extension == "significant" else extension),
                                dims="time", coords={"time": target["time"]})
    trend_index, held = stored_index, None
    if extension == "significant":  # per cell: flat where the trend is not significant
        held = ~significant_trend(target, train, cfg["predictors"]["trend_autocorrelation"]) & land_bool
        held_index = xr.DataArray(trend_month_index(train, "flat"), dims="time", coords={"time": target["time"]})
        trend_index = xr.where(held, held_index, stored_index)
    if cfg["predictors"]["detrend"]:
        if target_trend == "fit":
            offset, slope = fit_linear_trend(target, train)
        elif target_trend == "shrunk":
            offset, slope = shrunk_trend(target, train, cfg["predictors"]["trend_autocorrelation"])
        else:  # none: only the training months' mean is removed
            offset = target.isel(time=np.flatnonzero(train)).mean("time").astype(np.float64)
            slope = xr.zeros_like(offset).where(offset.notnull())
        target_anomaly = (target - (offset + slope * trend_index)).astype(target.dtype)
    else:
        target_anomaly = target
        offset = xr.zeros_like(land, dtype=np.float64).where(land_bool)
        slope = xr.zeros_like(land, dtype=np.float64).where(land_bool)

    if cfg["predictors"]["normalise"]:
        mean, std = normalisation_stats(predictors, names, train, land)
    else:
        mean, std = np.zeros(len(names)), np.ones(len(names))
    normalised = xr.Dataset({
        name: ((predictors[name] - mean[i]) / std[i]).where(land_bool) for i, name in enumerate(names)
    })
    inputs = stack_lags(normalised, names, lags).fillna(0.0).astype(np.float32)

    data_vars = {
        "inputs": inputs.assign_attrs(
            long_name="lagged predictor stack, predictor-major, normalised, 0 over ocean and before the record",
            units="1"),
        "target": target_anomaly.astype(np.float32).assign_attrs(
            long_name="GRACE TWSA anomaly, detrended; NaN where missing or ocean", units=units),
        "target_trend_offset": offset.astype(np.float32).assign_attrs(
            long_name="target trend at month_index 0 (fitted on training months)", units=units),
        "target_trend_slope": slope.astype(np.float32).assign_attrs(
            long_name="target trend slope (fitted on training months)", units=f"{units} month-1"),
        "land_mask": land.astype(np.int8).assign_attrs(
            long_name="land mask", units="1", flag_values=np.array([0, 1], dtype=np.int8), flag_meanings="ocean land"),
        "cell_area": cell_area.assign_attrs(long_name="cell area", units="m2", standard_name="cell_area"),
        "observed": xr.DataArray(observed.astype(np.int8), dims="time", attrs={
            "long_name": "GRACE field available", "units": "1", "flag_values": np.array([0, 1], dtype=np.int8),
            "flag_meanings": "missing observed"}),
        "split": xr.DataArray(split, dims="time", attrs=dict(mo.split_attrs(), units="1")),
        "month_index": xr.DataArray(np.arange(len(months), dtype=np.int32), dims="time", attrs={
            "long_name": "months since the first month of the period", "units": "1"}),
        "trend_month_index": xr.DataArray(stored_index.values.astype(np.float32), dims="time", attrs={
            "long_name": "month_index at which the target's trend is evaluated (predictors.trend_extension "
                         f"{extension}: {'held at the training edges' if extension == 'flat' else 'extrapolated'} "
                         "outside the training months" + (", except in the cells of trend_held" if held is not None
                                                          else "") + ")", "units": "1"}),
    }
    if held is not None:
        data_vars["trend_month_index_held"] = held_index.astype(np.float32).assign_attrs(
            long_name="month_index at which the trend of a trend_held cell is evaluated (held at the training edges)",
            units="1")
        data_vars["trend_held"] = held.astype(np.int8).assign_attrs(
            long_name="cell whose trend is held at the training edges (not significant at |slope| >= "
                      f"{TREND_SIGNIFICANCE:g} red-noise standard errors)", units="1",
            flag_values=np.array([0, 1], dtype=np.int8), flag_meanings="extrapolated held")
    predictor_units = [predictors[name].attrs.get("units", "1") for name in names]
    for i, (name, unit) in enumerate(zip(names, predictor_units)):  # one variable each: CF units are per variable
        data_vars[f"input_mean_{name}"] = xr.DataArray(np.float32(mean[i]), attrs={
            "long_name": f"training-month land mean of {name} (subtracted)", "units": unit})
        data_vars[f"input_std_{name}"] = xr.DataArray(np.float32(std[i]), attrs={
            "long_name": f"training-month land standard deviation of {name} (divided by)", "units": unit})
    if truth is not None:
        truth = truth.assign_coords(time=mo.to_month_start(truth["time"].values)).reindex(time=months)
        data_vars["truth"] = (truth * factor).where(land_bool).astype(np.float32).assign_attrs(
            long_name="true TWSA anomaly of the synthetic world (not detrended)", units=units)
    ds = xr.Dataset(data_vars, coords={"time": mo.time_coord(months), "predictor": np.asarray(names, dtype=str),
                                       "predictor_units": ("predictor", np.asarray(predictor_units, dtype=str))})
    ds["predictor"].attrs["long_name"] = "predictor name"
    ds["predictor_units"].attrs["long_name"] = "units of the predictor"
    ds["channel"].attrs["long_name"] = "input channel (predictor-major, then lag)"
    ds["channel_predictor"].attrs["long_name"] = "predictor of each input channel"
    ds["channel_lag"].attrs.update(long_name="lag of each input channel", units="month")
    ds.attrs.update({
        "title": "gracefill training tensors",
        "lags": lags,
        "target_units": units,
        "train_months": int(train.sum()),
        "test_months": int((split == mo.SPLIT_FLAGS["test"]).sum()),
        "gap_months": int((split == mo.SPLIT_FLAGS["gap"]).sum()),
        "missing_months": int((split == mo.SPLIT_FLAGS["missing"]).sum()),
        "pseudo_gap_months": int((split == mo.SPLIT_FLAGS["pseudo_gap"]).sum()),
        "empty_target_months": ", ".join(empty) or "none",
        "train_window": f"{split_cfg['train_start']}..{split_cfg['train_end']}",
        "detrended": int(bool(cfg["predictors"]["detrend"])),
        "target_trend": target_trend if cfg["predictors"]["detrend"] else "none (not detrended)",
        "normalised": int(bool(cfg["predictors"]["normalise"])),
        "trend_extension": extension,
        "comment": "reconstruction = prediction + target_trend_offset + target_trend_slope * trend_month_index",
    })
    return ds
