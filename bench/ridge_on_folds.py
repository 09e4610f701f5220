"""Validation-fold RMSE of the two regression baselines for several ridge penalties.

Reads the validation folds of finished benchmark worlds (``gracefill benchmark``), refits the
lagged-input regression and the memory-feature regression on each fold's training months for
each ridge, and prints the RMSE (cm, all land values of the validation months pooled, mean over
folds and worlds). The defaults of ``evaluation.regression_ridge`` and
``evaluation.memory_regression.ridge`` are the lowest of this table: no test, pseudo-gap or gap
month is read.

    python bench/ridge_on_folds.py benchmark-reference benchmark-short-memory ...
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import baselines as bl
from gracefill import months as mo
from gracefill import predictors as pr
from gracefill.calibration import fit_window
from gracefill.months import SPLIT_FLAGS

RIDGES = (0.0, 0.01, 0.1, 1.0, 10.0)


def fold_rmse(world: str, fold: Path) -> list[dict]:
    tensors = xr.open_dataset(fold / "tensors.nc").load()
    months = pd.DatetimeIndex(tensors["time"].values)
    fields = {}
    for name in pr.MEMORY_FIELDS:
        da = xr.open_dataset(f"results/{world}/regridded/{name}.nc")[name]
        fields[name] = da.assign_coords(time=mo.to_month_start(da["time"].values)).sel(time=months).load()
    train = tensors["split"].values == SPLIT_FLAGS["train"]
    validation = tensors["split"].values == SPLIT_FLAGS["test"]  # a fold's test months are its validation
    window = mo.in_window(months, *fit_window(tensors))
    features = pr.memory_features(fields, window)
    observed = tensors["target"].values[validation]
    rows = []
    for ridge in RIDGES:
        fits = {"regression": bl.regression(tensors["inputs"], tensors["target"], train, ridge=ridge),
                "memory_regression": bl.memory_regression(features, tensors["target"], train, ridge=ridge)}
        for method, prediction in fits.items():
            error = prediction.values[validation] - observed
            rows.append({"world": world, "fold": fold.name, "method": method, "ridge": ridge,
                         "rmse": float(np.sqrt(np.nanmean(error ** 2)))})
    return rows


def main(worlds: list[str]) -> None:
    rows = [row for world in worlds for fold in sorted(Path(f"results/{world}/validation").glob("fold_*"))
            for row in fold_rmse(world, fold)]
    if not rows:
        sys.exit("no validation folds found; run `gracefill benchmark` first and pass its run names")
    table = pd.DataFrame(rows).groupby(["ridge", "method"])["rmse"].mean().unstack("method")
    print(f"validation RMSE (cm), mean over {len(rows) // (2 * len(RIDGES))} folds")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main(sys.argv[1:])
