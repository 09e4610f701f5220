"""Choose model options on the validation folds of several worlds (never on test or gap months).

For every world (a finished benchmark run, or a folder with its regridded files and grid.nc),
every validation fold and every variant (a set of config keys over the benchmark configuration),
runs the fold's stages build_predictors, build_tensors, train and predict exactly as the
workflow's *_fold rules do, and scores each fold's validation months against GRACE: pooled RMSE,
area-weighted median NSE, mean CRPS and the coverage of the central 90 % interval, raw and after
the spread calibration fitted on the other folds (as the predict stage fits it on all folds).
The per-cell ridge regression on the same fold is scored beside them. Prints the mean over worlds
and folds of each variant and writes every row to ``--out``/folds.csv.

    python bench/select_on_folds.py --worlds results/benchmark-reference ... --out results/selection
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from gracefill import baselines as bl
from gracefill import calibration as ca
from gracefill import metrics as me
from gracefill.analysis import Forecast, _probabilistic
from gracefill.config import fold_config, fold_ends, validate
from gracefill.months import SPLIT_FLAGS
from gracefill.predictors import REQUIRED_FIELDS

MEMORY = ["sTWSA", "P", "T", "CWB", "P_ew6", "P_ew24", "CWB_ew6", "CWB_ew24", "WSC_ew12", "WSC_ew48"]
VARIANTS = {
    "default": {},
    "memory": {"predictors": {"names": MEMORY}},
    "shrunk": {"predictors": {"target_trend": "shrunk"}},
    "memory_shrunk": {"predictors": {"names": MEMORY, "target_trend": "shrunk"}},
    "memory_none": {"predictors": {"names": MEMORY, "target_trend": "none"}},
    "tempered": {"training": {"likelihood_temperature": 0.1}},
    "ensemble": {"training": {"svgd_kernel": "none"}},
    "memory_shrunk_tempered": {"predictors": {"names": MEMORY, "target_trend": "shrunk"},
                               "training": {"likelihood_temperature": 0.1}},
    "memory_shrunk_ensemble": {"predictors": {"names": MEMORY, "target_trend": "shrunk"},
                               "training": {"svgd_kernel": "none"}},
    # 2026-12-03, over the default of 2026-11-29 (memory predictors, shrunk trend)
    "temperature_auto": {"training": {"likelihood_temperature": "auto"}},
    "kernel_last_layer": {"training": {"svgd_kernel": "last_layer"}},
    "kernel_function": {"training": {"svgd_kernel": "function"}},
    "trend_flat": {"predictors": {"trend_extension": "flat"}},
    "trend_significant": {"predictors": {"trend_extension": "significant"}},
    # 2026-12-05: the same or less training time at a higher learning rate (the folds still improve at epoch 12)
    "lr_double": {"training": {"lr": 0.005}},
    "lr_double_8_epochs": {"training": {"lr": 0.005, "epochs": 8}},
    "lr_triple_6_epochs": {"training": {"lr": 0.0075, "epochs": 6}},
    # 2026-12-06: folds that train as many steps as the final model (training.fold_epoch_length), so that
    # optimisation settings compare at the final model's steps; half the batch, twice the steps an epoch
    "window": {"training": {"fold_epoch_length": "window"}},
    "window_batch6": {"training": {"fold_epoch_length": "window", "batch_size": 6}},
    # 2026-12-06: the shrunk trend's red-noise standard error with the lag-1 autocorrelation's low bias corrected
    "rho_corrected": {"predictors": {"trend_autocorrelation": "bias_corrected"}},
}


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run_stage(*argv) -> None:
    from gracefill import cli

    if cli.main([str(a) for a in argv]) != 0:
        raise RuntimeError(f"stage failed: {argv[0]}")


def fold_run(world: Path, cfg: dict, fold: str, out: Path) -> Path:
    """The fold's reconstruction of one variant (reused when it exists)."""
    rec = out / "reconstruction.nc"
    if rec.exists():
        return rec
    out.mkdir(parents=True, exist_ok=True)
    fold_cfg = json.dumps(fold_config(cfg, fold))
    regridded = world / "regridded"
    run_stage("build_predictors", "--config-json", fold_cfg, "--fields",
              *[regridded / f"{name}.nc" for name in REQUIRED_FIELDS], "--output", out / "predictors.nc")
    run_stage("build_tensors", "--config-json", fold_cfg, "--grid", world / "grid.nc",
              "--predictors", out / "predictors.nc", "--target", regridded / "twsa.nc", "--output", out / "tensors.nc")
    run_stage("train", "--config-json", fold_cfg, "--tensors", out / "tensors.nc", "--model", out / "model.pt",
              "--log-csv", out / "training_log.csv", "--validation-fold", "--no-progress")
    run_stage("predict", "--config-json", fold_cfg, "--tensors", out / "tensors.nc", "--model", out / "model.pt",
              "--output", rec)
    return rec


def scores(rec: xr.Dataset, area: xr.DataArray, prediction: xr.DataArray | None = None,
           std: xr.DataArray | None = None) -> dict:
    """Validation-month scores of the BCNN in ``rec`` (or of a Gaussian ``prediction``/``std``)."""
    index = ca.validation_months(rec)
    obs = rec["observed_twsa"].isel(time=index)
    if prediction is None:
        scale = rec["calibration_scale"].isel(time=index) if "calibration_scale" in rec else None
        forecast = Forecast(rec["twsa"].isel(time=index), rec["twsa_std"].isel(time=index),
                            rec["twsa_samples"].isel(time=index),
                            np.exp(-rec["log_beta"].values.astype(np.float64)), scale)
    else:
        forecast = Forecast(prediction.isel(time=index), None if std is None else std.isel(time=index))
    maps = me.score_maps(forecast.mean, obs)
    row = {"rmse": float(np.sqrt(np.nanmean((forecast.mean - obs).values ** 2))),
           "nse_median": float(me.weighted_median(maps["nse"], area))}
    probabilistic = _probabilistic(forecast, obs)
    if probabilistic is not None:
        crps, _, pit = probabilistic
        row["crps"] = float(crps.mean())
        row["coverage_90"] = float(me.coverage_from_pit(pit, [0.9]).values[0])
    return row


def world_rows(world: Path, base: dict, variants: dict, out: Path) -> list[dict]:
    torch_threads = int(os.environ.get("SELECT_THREADS", "0"))
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    area = xr.open_dataset(world / "grid.nc")["cell_area"].load()
    rows = []
    for name, extra in variants.items():
        cfg = validate(merge(base, extra))
        folds = fold_ends(cfg)
        recs = [xr.open_dataset(fold_run(world, cfg, fold, out / world.name / name / fold)).load() for fold in folds]
        for k, (fold, rec) in enumerate(zip(folds, recs)):
            others = [r for j, r in enumerate(recs) if j != k]
            calibrated = ca.apply_calibration(rec, ca.fit_calibration(others or [rec], 12))
            raw, cal = scores(rec, area), scores(calibrated, area)
            rows.append({"world": world.name, "fold": fold, "variant": name, **raw,
                         "crps_calibrated": cal["crps"], "coverage_90_calibrated": cal["coverage_90"]})
            if name == "default":  # the per-cell ridge regression on the same fold's tensors
                tensors = xr.open_dataset(out / world.name / name / fold / "tensors.nc").load()
                train = tensors["split"].values == SPLIT_FLAGS["train"]
                trend = tensors["target_trend_offset"] + tensors["target_trend_slope"] * tensors["month_index"]
                regression = bl.regression(tensors["inputs"], tensors["target"], train,
                                           ridge=cfg["evaluation"]["regression_ridge"]) + trend
                regression = regression.transpose("time", "lat", "lon").assign_attrs(units=rec["twsa"].attrs["units"])
                rows.append({"world": world.name, "fold": fold, "variant": "regression",
                             **scores(rec, area, prediction=regression)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", required=True, help="folders with regridded/ and grid.nc")
    parser.add_argument("--config", nargs="+", default=["config.yaml", "configs/benchmark.yaml"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--set", default="{}", help="JSON of config keys over every variant (e.g. fewer epochs)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--jobs", type=int, default=1, help="worlds run at the same time")
    args = parser.parse_args()
    base: dict = {}
    for path in args.config:
        base = merge(base, yaml.safe_load(Path(path).read_text()))
    base.pop("benchmark", None)
    base = merge(base, json.loads(args.set))
    variants = {name: VARIANTS[name] for name in args.variants}
    out = Path(args.out)
    with ProcessPoolExecutor(args.jobs) as pool:
        parts = list(pool.map(world_rows, [Path(w) for w in args.worlds], [base] * len(args.worlds),
                              [variants] * len(args.worlds), [out] * len(args.worlds)))
    table = pd.DataFrame([row for part in parts for row in part])
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "folds.csv", index=False)
    summary = table.drop(columns=["world", "fold"]).groupby("variant", sort=False).mean()
    print(f"validation folds: {table['world'].nunique()} worlds x {table['fold'].nunique()} folds, mean")
    print(summary.round(3).to_string())
    summary.to_csv(out / "summary.csv")


if __name__ == "__main__":
    main()
