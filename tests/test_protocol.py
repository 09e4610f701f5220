"""The validation protocol never reads test, gap or pseudo-gap months to fit or choose anything.

A small world goes through every stage of each validation fold exactly as the workflow's fold
rules call them (`gracefill <stage> --config-json <the fold's config>`), once as it is and once
with every month after the training window poisoned (predictors and GRACE set to absurd
values). The folds' tensors, trained networks, predictions and baselines, and the baselines'
spreads fitted on them, must not change by a single bit. The main run's fitted statistics
(normalisation, target trend) must not change when the GRACE months after training are poisoned.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gracefill import analysis, cli
from gracefill import config as config_mod
from gracefill.predictors import MEMORY_FIELDS

FIELDS = ("precipitation", "temperature", "evaporation", "runoff", "land_water_storage")
RAW = {"grace": ("twsa",), "era5land": FIELDS, "truth": ("twsa_true",)}
POISON = 1.0e6

CONFIG = {
    "run": "protocol",
    "seed": 5,
    "grid": {"resolution": 4.0, "lat_min": 20, "lat_max": 52, "lon_min": -128, "lon_max": -64},
    "sources": {"synthetic": {"native_resolution": 4.0,
                              "drought": {"lat_min": 28, "lat_max": 44, "lon_min": -108, "lon_max": -92}}},
    "split": {"pseudo_gap_start": "2019-01", "pseudo_gap_end": "2019-11"},
    "model": {"features": 4, "particles": 2},
    "training": {"device": "cpu", "epochs": 2, "checkpoint_every": 1},
    "evaluation": {"folds": {"count": 2, "min_fit_months": 60, "min_validation_months": 36}},
    "figures": {"points": [{"name": "plains", "lat": 36.0, "lon": -100.0, "radius_deg": 5.0}]},
}


def _json(cfg: dict, *sections: str) -> str:
    return json.dumps(config_mod.subset(cfg, *sections))


def _run(*argv: str) -> None:
    assert cli.main([*map(str, argv)]) == 0, argv


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The world regridded onto the target grid (its native grid: regridding is the identity)."""
    cfg = config_mod.validate(CONFIG)
    root = tmp_path_factory.mktemp("protocol")
    _run("retrieve_synthetic", "--config-json", _json(cfg, "seed", "grid", "period", "split", "sources"),
         "--out-dir", root / "raw")
    _run("build_grid", "--config-json", _json(cfg, "grid"), "--output", root / "grid.nc")
    for product, variables in RAW.items():
        for variable in variables:
            _run("regrid", "--source", root / "raw" / f"{product}.nc", "--variable", variable,
                 "--grid", root / "grid.nc", "--output", root / "regridded" / f"{variable}.nc")
    return cfg, root


def _poisoned(root: Path, after: str, variables) -> Path:
    """A copy of the regridded files with every month after ``after`` of ``variables`` poisoned."""
    out = root.parent / f"{root.name}-poisoned-{len(variables)}"
    shutil.copytree(root / "regridded", out / "regridded")
    shutil.copy(root / "grid.nc", out / "grid.nc")
    for variable in variables:
        path = out / "regridded" / f"{variable}.nc"
        with xr.open_dataset(path) as ds:
            ds = ds.load()
        late = pd.DatetimeIndex(ds["time"].values) > pd.Timestamp(after) + pd.offsets.MonthEnd(1)
        ds[variable].values[late] = POISON
        ds.to_netcdf(path)
    return out


def _run_folds(cfg: dict, root) -> list[tuple[xr.Dataset, xr.Dataset]]:
    """Every stage of every fold, as the workflow's fold rules run them; returns the folds'
    (reconstruction, baselines) and checks each fold's files exist."""
    out = []
    regridded = root / "regridded"
    for end in config_mod.fold_ends(cfg):
        fold = config_mod.fold_config(cfg, end)
        d = root / "validation" / f"fold_{end}"
        features = _json(fold, "period", "split", "predictors")
        _run("build_predictors", "--config-json", features, "--fields", *(regridded / f"{f}.nc" for f in FIELDS),
             "--output", d / "predictors.nc")
        _run("build_tensors", "--config-json", features, "--grid", root / "grid.nc", "--predictors", d / "predictors.nc",
             "--target", regridded / "twsa.nc", "--truth", regridded / "twsa_true.nc", "--output", d / "tensors.nc")
        _run("train", "--config-json", _json(fold, "seed", "model", "training"), "--tensors", d / "tensors.nc",
             "--model", d / "model" / "model.pt", "--log-csv", d / "model" / "training_log.csv", "--no-progress")
        _run("predict", "--config-json", _json(fold, "model", "training", "prediction"), "--tensors", d / "tensors.nc",
             "--model", d / "model" / "model.pt", "--output", d / "reconstruction.nc", "--no-progress")
        _run("baselines", "--config-json", _json(fold, "evaluation"), "--tensors", d / "tensors.nc",
             "--fields", *(regridded / f"{f}.nc" for f in MEMORY_FIELDS), "--output", d / "baselines.nc")
        out.append((xr.open_dataset(d / "reconstruction.nc").load(), xr.open_dataset(d / "baselines.nc").load()))
    return out


def _assert_same_files(a, b, name: str) -> None:
    with xr.open_dataset(a / name) as x, xr.open_dataset(b / name) as y:
        xr.testing.assert_equal(x.load(), y.load())


def test_fold_config_ends_the_period_at_the_training_window(world):
    cfg, _ = world
    ends = config_mod.fold_ends(cfg)
    assert ends == ["2007-03", "2011-03"]
    fold = config_mod.fold_config(cfg, ends[0])
    assert fold["period"]["end"] == cfg["split"]["train_end"] == "2014-03"
    assert fold["split"]["train_end"] == "2007-03"
    assert fold["split"]["pseudo_gap_start"] is None   # 2019 lies beyond the fold's period
    with pytest.raises(config_mod.UserError, match="validation fold '2008-01'"):
        config_mod.fold_config(cfg, "2008-01")


def test_poisoning_months_after_training_changes_no_fold_and_no_spread(world):
    cfg, root = world
    clean = _run_folds(cfg, root)
    poisoned_root = _poisoned(root, cfg["split"]["train_end"], FIELDS + ("twsa", "twsa_true"))
    with xr.open_dataset(poisoned_root / "regridded" / "precipitation.nc") as ds:
        assert float(ds["precipitation"].max()) == POISON   # the poison is really there
    poisoned = _run_folds(cfg, poisoned_root)
    for end in config_mod.fold_ends(cfg):
        a, b = root / "validation" / f"fold_{end}", poisoned_root / "validation" / f"fold_{end}"
        for name in ("predictors.nc", "tensors.nc", "reconstruction.nc", "baselines.nc"):
            _assert_same_files(a, b, name)
        weights_a = torch.load(a / "model" / "model.pt", weights_only=True)["engine"]
        weights_b = torch.load(b / "model" / "model.pt", weights_only=True)["engine"]
        for key, value in weights_a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, weights_b[key]), key
        # each fold validates on months of its own training window only
        rec = clean[config_mod.fold_ends(cfg).index(end)][0]
        assert pd.Timestamp(rec["time"].values[-1]) == pd.Timestamp(cfg["split"]["train_end"])
    names = [n for n in analysis.BASELINES if n in clean[0][1]]
    spread_clean = analysis.fit_baseline_spreads(clean, names, 12)
    spread_poisoned = analysis.fit_baseline_spreads(poisoned, names, 12)
    assert set(spread_clean) == set(names)
    for name in names:
        xr.testing.assert_equal(spread_clean[name], spread_poisoned[name])


def test_main_run_statistics_ignore_grace_after_training(world):
    """Poisoning GRACE (and the truth) after the training window leaves the main run's target
    trend and normalisation unchanged: they are fitted on training months only."""
    cfg, root = world
    poisoned_root = _poisoned(root, cfg["split"]["train_end"], ("twsa", "twsa_true"))
    for base in (root, poisoned_root):
        features = _json(cfg, "period", "split", "predictors")
        _run("build_predictors", "--config-json", features,
             "--fields", *(base / "regridded" / f"{f}.nc" for f in FIELDS), "--output", base / "predictors.nc")
        _run("build_tensors", "--config-json", features, "--grid", base / "grid.nc", "--predictors",
             base / "predictors.nc", "--target", base / "regridded" / "twsa.nc", "--output", base / "tensors.nc")
    with xr.open_dataset(root / "tensors.nc") as a, xr.open_dataset(poisoned_root / "tensors.nc") as b:
        stats = [name for name in a.data_vars if name.startswith(("input_mean_", "input_std_"))]
        assert len(stats) == 2 * len(cfg["predictors"]["names"])
        for name in ("inputs", "target_trend_offset", "target_trend_slope", *stats, "split"):
            xr.testing.assert_equal(a[name].load(), b[name].load())
        train = a["split"].values == 1
        xr.testing.assert_equal(a["target"][train].load(), b["target"][train].load())
        held_out = a["split"].values == 5
        assert held_out.sum() == 11 and not np.array_equal(a["target"][held_out].values, b["target"][held_out].values)
