"""Particles sharded over processes (gloo, 2 ranks on the CPU) equal one process."""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from gracefill.config import validate
from gracefill.io import UserError
from gracefill.predict import reconstruct
from gracefill.train import build_engine, initial_log_beta, load_checkpoint, model_settings, train, TrainingData
from tests.conftest import kill_after_first_checkpoint, tiny_tensors

WORLD = 2
SETTINGS = {"model": {"backbone": "cbam", "features": 4, "particles": 4},
            "training": {"device": "cpu", "epochs": 3, "batch_size": 8, "checkpoint_every": 1, "lr_noise": 0.1}}
RTOL, ATOL = 1e-5, 1e-6
#: the SVGD kernels whose sharded steps are compared with one process's
KERNELS = ("rbf", "last_layer", "function")


def config(**training):
    return validate({**SETTINGS, "training": {**SETTINGS["training"], **training}}, relations=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Interrupted(Exception):
    pass


def _engine_and_batch(cfg, ds, device, build):
    data = TrainingData.from_dataset(ds, device)
    settings = model_settings(cfg, data.inputs.shape[1], (ds.sizes["lat"], ds.sizes["lon"]))
    torch.manual_seed(cfg["seed"])
    engine = build(settings, data, initial_log_beta(data, cfg, settings["particles"]))
    idx = data.train_index[:8]
    return engine, (data.inputs[idx], data.target[idx], data.valid[idx])


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: two SVGD steps, an interrupted 2-epoch run, a prediction from the single run's model."""
    from gracefill import distributed

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    ranks = distributed.start("cpu")
    try:
        ds, _ = tiny_tensors()
        for kernel in KERNELS:
            cfg = config(svgd_kernel=kernel)
            engine, batch = _engine_and_batch(cfg, ds, ranks.device, lambda settings, data, lb: distributed.build_sharded_engine(
                settings, cfg, int(data.train_index.numel()), ranks, log_beta_init=lb))
            initial = engine.state_dict()
            stats = [engine.step(*batch, diagnose=True) for _ in range(2)]
            if ranks.writer:
                torch.save({"initial": initial, "after": engine.state_dict(),
                            "sse_mean": [s["sse_mean"] for s in stats]}, f"{out}/steps_{kernel}.pt")
            else:
                engine.state_dict()  # a collective: every rank takes part
        cfg = config()

        def stop(epoch, row):
            if epoch == 2:
                raise Interrupted

        try:
            distributed.train_sharded(ds, cfg, ranks, checkpoint_path=f"{out}/checkpoint.pt", config_hash="h",
                                      progress=False, on_epoch_end=stop)
        except Interrupted:
            pass
        ranks.barrier()
        single = load_checkpoint(f"{out}/single.pt")
        rec = reconstruct(ds, single, cfg, save_samples=True, progress=False, ranks=ranks)
        if ranks.writer:
            rec.to_netcdf(f"{out}/sharded.nc")
    finally:
        distributed.stop()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The 2-rank runs (one spawn for every test) and the single-process run they are compared with."""
    out = tmp_path_factory.mktemp("sharded")
    ds, _ = tiny_tensors()
    cfg = config()
    full, history = train(ds, cfg, checkpoint_path=out / "single.pt", config_hash="h", progress=False)
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return out, ds, cfg, full, history


def _close(a, b, atol=ATOL) -> None:
    torch.testing.assert_close(a, b, rtol=RTOL, atol=atol)


@pytest.mark.parametrize("kernel", KERNELS)
def test_two_ranks_start_and_step_as_one_process(sharded, kernel):
    out, ds, _, _, _ = sharded
    cfg = config(svgd_kernel=kernel)
    engine, batch = _engine_and_batch(cfg, ds, torch.device("cpu"), lambda settings, data, lb: build_engine(
        settings, cfg, int(data.train_index.numel()), torch.device("cpu"), log_beta_init=lb))
    initial = copy.deepcopy(engine.state_dict())
    sse_mean = [engine.step(*batch, diagnose=True)["sse_mean"] for _ in range(2)]
    after = engine.state_dict()
    got = torch.load(out / f"steps_{kernel}.pt", weights_only=True)
    for key, value in initial["ensemble"].items():
        assert torch.equal(got["initial"]["ensemble"][key], value), key
    assert torch.equal(got["initial"]["log_beta"], initial["log_beta"])
    for key, value in after["ensemble"].items():
        _close(got["after"]["ensemble"][key], value)
    _close(got["after"]["log_beta"], after["log_beta"])
    for i, entry in after["optimizer"]["state"].items():
        for name, value in entry.items():
            _close(got["after"]["optimizer"]["state"][i][name], value)
    _close(torch.stack(got["sse_mean"]), torch.stack(sse_mean))


def test_checkpoint_of_two_ranks_resumes_in_one_process(sharded):
    out, ds, cfg, full, history = sharded
    written = load_checkpoint(out / "checkpoint.pt")
    assert written["epoch"] == 2
    assert set(written["engine"]) == set(full["engine"])
    resumed, resumed_history = train(ds, cfg, checkpoint_path=out / "checkpoint.pt", config_hash="h", progress=False)
    assert resumed["epoch"] == 3
    # 15 Adam steps amplify the float rounding of other reduction orders (parameters ~0.1)
    for key, value in full["engine"]["ensemble"].items():
        _close(resumed["engine"]["ensemble"][key], value, atol=1e-5)
    _close(resumed["engine"]["log_beta"], full["engine"]["log_beta"])
    assert [list(row) for row in resumed_history] == [list(row) for row in history]
    for ours, theirs in zip(resumed_history, history):
        for key in ("train_rmse", "test_rmse", "test_mnlp", "mean_log_beta", "lr"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key


def test_sharded_prediction_equals_one_process(sharded):
    import xarray as xr

    out, ds, cfg, full, _ = sharded
    expected = reconstruct(ds, full, cfg, save_samples=True, progress=False)
    with xr.open_dataset(out / "sharded.nc") as got:
        got = got.load()
    for name in ("twsa", "twsa_std", "twsa_std_epistemic", "twsa_std_aleatoric", "twsa_samples", "log_beta"):
        np.testing.assert_allclose(got[name].values, expected[name].values, rtol=1e-5, atol=1e-5, err_msg=name)


def test_devices_must_divide_particles():
    with pytest.raises(UserError, match=r"'training.devices': 3 .*model.particles \(4\)"):
        validate({**SETTINGS, "training": {**SETTINGS["training"], "devices": 3}})


def test_torchrun_trains_and_predicts_through_the_cli(tmp_path, sharded):
    """``torchrun --nproc-per-node 2 -m gracefill.cli train|predict``: rank 0 writes the model, the
    log and the reconstruction, which equal the single process's."""
    import json

    import pandas as pd
    import xarray as xr

    from gracefill.io import write_netcdf

    _, ds, cfg, full, history = sharded
    write_netcdf(ds, tmp_path / "tensors.nc")
    settings = json.dumps({"seed": cfg["seed"], **SETTINGS, "training": {**SETTINGS["training"], "devices": WORLD}})
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
              "-m", "gracefill.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    model = tmp_path / "model" / "model.pt"
    result = subprocess.run([*launch, "train", "--config-json", settings, "--tensors", str(tmp_path / "tensors.nc"),
                             "--model", str(model), "--log-csv", str(tmp_path / "model" / "log.csv"), "--no-progress",
                             "--stop-with-launcher"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = load_checkpoint(model)
    for key, value in full["engine"]["ensemble"].items():
        _close(got["engine"]["ensemble"][key], value, atol=1e-5)
    assert sorted(p.name for p in model.parent.iterdir()) == ["log.csv", "model.pt"]
    assert pd.read_csv(tmp_path / "model" / "log.csv")["epoch"].tolist() == [row["epoch"] for row in history]
    result = subprocess.run([*launch, "predict", "--config-json", settings, "--tensors", str(tmp_path / "tensors.nc"),
                             "--model", str(model), "--output", str(tmp_path / "reconstruction.nc"), "--no-progress"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = reconstruct(ds, got, cfg, save_samples=True, progress=False)
    with xr.open_dataset(tmp_path / "reconstruction.nc") as rec:
        np.testing.assert_allclose(rec["twsa_samples"].values, expected["twsa_samples"].values, rtol=1e-5, atol=1e-5)


def test_torchrun_workers_stop_when_the_process_that_launched_torchrun_is_gone(tmp_path):
    """A workflow manager killed on its own leaves neither torchrun nor its workers behind."""
    import json
    import shlex
    import signal
    import time
    from pathlib import Path

    from gracefill.io import write_netcdf

    ds, _ = tiny_tensors()
    write_netcdf(ds, tmp_path / "tensors.nc")
    cfg = json.dumps({"seed": 1, **SETTINGS, "training": {**SETTINGS["training"], "epochs": 100000, "devices": WORLD}})
    stage = (f"OMP_NUM_THREADS=1 {shlex.quote(sys.executable)} -m torch.distributed.run --standalone --nproc-per-node "
             f"{WORLD} -m gracefill.cli train --config-json {shlex.quote(cfg)} --tensors {tmp_path}/tensors.nc "
             f"--model {tmp_path}/model/model.pt --log-csv {tmp_path}/model/log.csv --no-progress --stop-with-launcher "
             f"> {tmp_path}/train.log 2>&1; true")
    launcher = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                                 f"subprocess.Popen(['bash', '-c', {stage!r}]); time.sleep(600)"])

    def ours() -> list[int]:
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and str(tmp_path).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
        return pids

    kill_after_first_checkpoint(launcher, tmp_path)
    deadline = time.monotonic() + 60
    try:
        while ours():
            assert time.monotonic() < deadline, (tmp_path / "train.log").read_text()[-2000:]
            time.sleep(0.5)
    finally:  # no orphans of a failed test
        for pid in ours():
            os.kill(pid, signal.SIGKILL)
    assert "gracefill train: interrupted" in (tmp_path / "train.log").read_text()
    assert not (tmp_path / "model" / "model.pt").exists()
    assert load_checkpoint(tmp_path / "model" / "checkpoint.pt")["epoch"] >= 1


def test_scaling_bench_runs_on_the_cpu(tmp_path):
    """bench/bench_distributed.py --quick: one process, then two (gloo), one JSON of both rows."""
    import json
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "bench_distributed.py"
    out = tmp_path / "scaling.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(bench), "--quick", "--device", "cpu", "--worlds", "1,2", "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert sorted(r["world"] for r in rows) == [1, 2]
    assert all(r["s_per_epoch"] > 0 and r["predict_s"] > 0 for r in rows)
    assert "| 2 | 4 |" in result.stdout and "efficiency" in result.stdout
