"""Shared fixtures: small hand-made fields on a regular grid."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gracefill import months as mo

# Started in the background of a non-interactive shell, the test run inherits SIGINT ignored, and
# so would every Snakemake it starts (an ignored signal stays ignored across exec): the tests of
# Ctrl-C need it to arrive. A handler here is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Snakemake on the workflow of this checkout, in ``workdir``, with this interpreter's scripts on PATH."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def test_run(tmp_path_factory):
    """The end-to-end run of configs/test.yaml (`--cores 2`), once per test session: the local
    reference run that test_rerun and test_cluster compare against (tests/cluster/harness.py).
    test_workflow and test_cf_compliance read its results; none may change them."""
    return cluster_harness().reference_run(tmp_path_factory)


def make_field(values: np.ndarray, months: pd.DatetimeIndex, lat: np.ndarray, lon: np.ndarray,
               name: str, units: str) -> xr.DataArray:
    return xr.DataArray(values, dims=("time", "lat", "lon"),
                        coords={"time": months, "lat": lat, "lon": lon}, name=name, attrs={"units": units})


@pytest.fixture
def small_months() -> pd.DatetimeIndex:
    return mo.month_range("2002-01", "2005-12")


def tiny_tensors(shape=(8, 16), start="2002-01", end="2006-12", train_end="2004-12", seed=0, gap=("2005-07", "2005-09")):
    """A small tensors dataset whose target is a smooth function of the lag-0 predictors plus noise."""
    from gracefill.config import validate
    from gracefill.dataset import build_tensors

    h, w = shape
    cfg = validate({
        "period": {"start": start, "end": end},
        "split": {"train_start": start, "train_end": train_end, "gap_start": gap[0], "gap_end": gap[1]},
        "grid": {"resolution": 1, "lat_min": 0, "lat_max": max(h, 8), "lon_min": 0, "lon_max": max(w, 8)},
        "drought": {"baseline_start": start, "baseline_end": end},
        "figures": {"month": start},
        "sources": {"synthetic": {"drought": {"enabled": False}}},
        "predictors": {"names": ["P", "T"], "lags": 2},
    }, relations=False)
    months = mo.month_range(start, end)
    lat, lon = np.arange(h) + 0.5, np.arange(w) + 0.5
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(len(months), h, w))
    temp = rng.normal(size=(len(months), h, w))
    target = 30 * p - 20 * np.roll(temp, 1, axis=0) + rng.normal(0, 3, size=p.shape)
    preds = xr.Dataset({"P": make_field(p, months, lat, lon, "P", "mm month-1"),
                        "T": make_field(temp, months, lat, lon, "T", "K")})
    land = xr.DataArray(np.ones((h, w), dtype=np.int8), dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    land[0, 0] = 0
    area = xr.ones_like(land, dtype=np.float64)
    gap_months = mo.in_window(months, *gap)
    tgt = make_field(target, months, lat, lon, "twsa", "mm").isel(time=np.flatnonzero(~gap_months))
    return build_tensors(preds, tgt, land, area, cfg), cfg


def cluster_harness():
    """tests/cluster/harness.py, loaded once as a module (the cluster and rerun tests share its runs)."""
    name = "gracefill_test_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "cluster" / "harness.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def kill_after_first_checkpoint(launcher, run_dir: Path, timeout_s: float = 120) -> None:
    """SIGKILL ``launcher`` (a process that started a training writing to ``run_dir``) once the
    training's first checkpoint exists; its train.log is shown if none comes in time."""
    import os
    import time

    try:
        deadline = time.monotonic() + timeout_s
        while not (run_dir / "model" / "checkpoint.pt").exists():
            assert time.monotonic() < deadline, (run_dir / "train.log").read_text()[-2000:]
            time.sleep(0.2)
    finally:
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
