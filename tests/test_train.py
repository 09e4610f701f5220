"""Training and prediction stages: resume, checkpoints, reconstruction layout, bad inputs."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from gracefill.config import validate
from gracefill.io import UserError
from gracefill.nn import build_backbone
from gracefill.predict import reconstruct
from gracefill.train import LOG_COLUMNS, load_checkpoint, train, write_log
from tests.conftest import kill_after_first_checkpoint, tiny_tensors

SETTINGS = {"model": {"backbone": "cbam", "features": 4, "particles": 3},
            "training": {"device": "cpu", "epochs": 3, "batch_size": 8, "checkpoint_every": 1, "lr_noise": 0.1}}


def config(**training):
    cfg = validate({**SETTINGS, "training": {**SETTINGS["training"], **training}}, relations=False)
    return cfg


class Interrupted(Exception):
    pass


def test_resumed_run_ends_with_the_same_parameters(tmp_path):
    ds, _ = tiny_tensors()
    cfg = config()
    full, history = train(ds, cfg, checkpoint_path=tmp_path / "a.pt", config_hash="h", progress=False)

    def kill_after_first_epoch(epoch, row):
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(ds, cfg, checkpoint_path=tmp_path / "b.pt", config_hash="h", progress=False,
              on_epoch_end=kill_after_first_epoch)
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 1
    resumed, resumed_history = train(ds, cfg, checkpoint_path=tmp_path / "b.pt", config_hash="h", progress=False)
    assert resumed["epoch"] == full["epoch"] == 3
    for key, value in full["engine"]["ensemble"].items():
        assert torch.equal(value, resumed["engine"]["ensemble"][key]), key
    assert torch.equal(full["engine"]["log_beta"], resumed["engine"]["log_beta"])
    assert [r["train_rmse"] for r in history] == [r["train_rmse"] for r in resumed_history]


def _interrupted_run(ds, cfg, path, after_epoch: int) -> None:
    def stop(epoch, row):
        if epoch == after_epoch:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(ds, cfg, checkpoint_path=path, config_hash="h", progress=False, on_epoch_end=stop)


def _same_parameters(a: dict, b: dict) -> bool:
    return all(torch.equal(v, b["engine"]["ensemble"][k]) for k, v in a["engine"]["ensemble"].items())


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_checkpoint_is_set_aside_and_training_resumes_from_the_one_before(tmp_path, caplog, damage):
    """A corrupt or truncated newest checkpoint never blocks a rerun: it is renamed *.corrupt with
    a warning naming it, and training resumes from the checkpoint before it (kept beside it)."""
    from gracefill.train import previous_checkpoint

    ds, _ = tiny_tensors()
    cfg = config()
    full, _ = train(ds, cfg, checkpoint_path=tmp_path / "full.pt", config_hash="h", progress=False)
    path = tmp_path / "checkpoint.pt"
    _interrupted_run(ds, cfg, path, after_epoch=2)
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(previous_checkpoint(path))["epoch"] == 1
    data = path.read_bytes()
    path.write_bytes(b"not a checkpoint" * 10 if damage == "garbage" else data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="gracefill"):
        resumed, history = train(ds, cfg, checkpoint_path=path, config_hash="h", progress=False)
    assert f"{path} is unreadable: set aside as checkpoint.pt.corrupt" in caplog.text
    assert (tmp_path / "checkpoint.pt.corrupt").exists()
    assert [row["epoch"] for row in history] == [1, 2, 3] and _same_parameters(full, resumed)


def test_no_readable_checkpoint_starts_afresh_and_the_error_line_offers_no_unsafe_load(tmp_path):
    ds, _ = tiny_tensors()
    cfg = config(epochs=1)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x80\x02garbage")
    payload, history = train(ds, cfg, checkpoint_path=path, config_hash="h", progress=False)
    assert payload["epoch"] == 1 and len(history) == 1 and (tmp_path / "checkpoint.pt.corrupt").exists()
    (tmp_path / "bad.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(UserError) as info:
        load_checkpoint(tmp_path / "bad.pt")
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    assert str(info.value).startswith(f"{tmp_path / 'bad.pt'}: not a readable gracefill checkpoint")


def test_training_compile_runs_the_network_through_one_compiled_template_per_chunk_size(tmp_path, monkeypatch):
    """training.compile reaches the engine: the network runs through n-particle templates,
    compiled once per chunk size (3 particles in chunks of 2: sizes 2 and 1). torch.compile is
    replaced by the identity here (inductor on the CPU compiles for minutes), so the run must
    equal the plain one."""
    ds, _ = tiny_tensors()
    plain, _ = train(ds, config(epochs=1, particle_chunk=2), checkpoint_path=tmp_path / "p.pt", config_hash="h",
                     progress=False)
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compiled.append(kwargs) or fn)
    result, _ = train(ds, config(epochs=1, particle_chunk=2, compile=True), checkpoint_path=tmp_path / "c.pt",
                      config_hash="h", progress=False)
    assert [c["dynamic"] for c in compiled] == [False, False]
    for key, value in plain["engine"]["ensemble"].items():
        torch.testing.assert_close(result["engine"]["ensemble"][key], value, rtol=1e-6, atol=1e-7, msg=key)


def test_training_compile_blocks_compiles_each_region_of_one_template_per_chunk_size(tmp_path, monkeypatch):
    """training.compile: blocks compiles the regions of each n-particle template in place
    (nn.Module.compile, replaced here by a recorder: inductor on the CPU compiles for minutes),
    so the run equals the plain one."""
    ds, _ = tiny_tensors()
    plain, _ = train(ds, config(epochs=1, particle_chunk=2), checkpoint_path=tmp_path / "p.pt", config_hash="h",
                     progress=False)
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, **kwargs: compiled.append((type(module), kwargs)))
    result, _ = train(ds, config(epochs=1, particle_chunk=2, compile="blocks"), checkpoint_path=tmp_path / "c.pt",
                      config_hash="h", progress=False)
    regions = [type(module) for module in build_backbone("cbam", 1, 1, 1, features=4).compile_regions()]
    assert [kind for kind, _ in compiled] == regions * 2  # templates of 2 and 1 particles
    assert all(kwargs == {"backend": "inductor", "dynamic": False} for _, kwargs in compiled)
    for key, value in plain["engine"]["ensemble"].items():
        torch.testing.assert_close(result["engine"]["ensemble"][key], value, rtol=1e-6, atol=1e-7, msg=key)


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    ds, _ = tiny_tensors()
    train(ds, config(epochs=1), checkpoint_path=tmp_path / "c.pt", config_hash="old", progress=False)
    payload, history = train(ds, config(epochs=2), checkpoint_path=tmp_path / "c.pt", config_hash="new", progress=False)
    assert [r["epoch"] for r in history] == [1, 2]


def test_test_months_scored_every_few_epochs_and_at_the_last_with_the_same_training(tmp_path):
    ds, _ = tiny_tensors()
    _, every = train(ds, config(epochs=5), checkpoint_path=tmp_path / "a.pt", config_hash="h", progress=False,
                     log_path=tmp_path / "a.csv")
    _, sparse = train(ds, config(epochs=5, score_every=3), checkpoint_path=tmp_path / "b.pt", config_hash="h",
                      progress=False, log_path=tmp_path / "b.csv")
    log = pd.read_csv(tmp_path / "b.csv")
    assert list(log["epoch"]) == [1, 2, 3, 4, 5]
    assert list(log["test_rmse"].notna()) == [False, False, True, False, True]
    assert [r["train_rmse"] for r in sparse] == [r["train_rmse"] for r in every]   # scoring changes no training
    assert np.isfinite(log[["kernel_offdiag", "repulsion_ratio", "particle_distance"]].values).all()


def test_log_columns_and_checkpoint_loads_weights_only(tmp_path):
    ds, _ = tiny_tensors()
    payload, history = train(ds, config(epochs=2), checkpoint_path=tmp_path / "m.pt", config_hash="h", progress=False)
    write_log(history, tmp_path / "log.csv")
    log = pd.read_csv(tmp_path / "log.csv")
    assert list(log.columns) == LOG_COLUMNS and list(log["epoch"]) == [1, 2]
    assert np.isfinite(log[["train_rmse", "test_rmse", "test_r2", "test_mnlp", "mean_log_beta"]].values).all()
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["model"]["backbone"] == "cbam" and state["epoch"] == 2


def test_reconstruction_layout(tmp_path):
    ds, _ = tiny_tensors()
    cfg = config(epochs=1)
    payload, _ = train(ds, cfg, checkpoint_path=tmp_path / "m.pt", config_hash="h", progress=False)
    out = reconstruct(ds, payload, validate({**cfg, "prediction": {"batch_size": 7}}, relations=False),
                      save_samples=True, progress=False)
    assert out["twsa"].dims == ("time", "lat", "lon") and out.sizes["time"] == ds.sizes["time"]
    assert out["twsa_samples"].shape == (3, *out["twsa"].shape)
    land = ds["land_mask"].values.astype(bool)
    assert np.isnan(out["twsa"].values[:, ~land]).all() and np.isfinite(out["twsa"].values[:, land]).all()
    total = np.sqrt(out["twsa_std_epistemic"] ** 2 + out["twsa_std_aleatoric"] ** 2)
    np.testing.assert_allclose(out["twsa_std"].values, total.values, rtol=1e-5)
    # the mean of the samples is the predictive mean; the trend is added back to both
    np.testing.assert_allclose(out["twsa_samples"].mean("particle").values, out["twsa"].values, rtol=1e-4, atol=1e-4)
    flags = dict(zip(out["month_flag"].attrs["flag_meanings"].split(), out["month_flag"].attrs["flag_values"]))
    assert (out["month_flag"].values == flags["gap"]).sum() == 3
    for name in out.data_vars:
        assert out[name].attrs.get("units") and out[name].attrs.get("long_name"), name


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "gracefill.cli", *args], capture_output=True, text=True)


def write_tensors(ds, path):
    from gracefill.io import write_netcdf
    write_netcdf(ds, path)
    return path


@pytest.mark.parametrize("case", ["missing_variable", "small_grid", "cuda", "empty_split", "bf16_on_cpu"])
def test_bad_inputs_give_one_line_and_leave_no_model(tmp_path, case):
    ds, _ = tiny_tensors()
    settings = {**SETTINGS, "training": {**SETTINGS["training"], "epochs": 1}}
    expected = {
        "missing_variable": "missing variable(s) target",
        "small_grid": "grid 4 x 16 is too small for the network",
        "cuda": "'cuda' requested but this machine has no CUDA device",
        "empty_split": "training split is empty",
        "bf16_on_cpu": "'bf16' needs a CUDA device",
    }[case]
    if case == "missing_variable":
        ds = ds.drop_vars("target")
    elif case == "small_grid":
        ds, _ = tiny_tensors(shape=(4, 16))
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        settings["training"]["device"] = "cuda"
    elif case == "empty_split":
        ds["split"][:] = 2
    elif case == "bf16_on_cpu":
        settings["training"]["precision"] = "bf16"
    tensors = write_tensors(ds, tmp_path / "tensors.nc")
    model = tmp_path / "model" / "model.pt"
    result = run_cli("train", "--config-json", json.dumps(settings), "--tensors", str(tensors), "--model", str(model),
                     "--log-csv", str(tmp_path / "model" / "log.csv"), "--no-progress")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert not model.exists() and not (tmp_path / "model" / "checkpoint.pt").exists()
    assert not (tmp_path / "model" / "log.csv").exists()


def test_a_loss_that_turns_nan_stops_naming_the_epoch(tmp_path):
    from gracefill.months import SPLIT_FLAGS
    from gracefill.train import TrainingDiverged

    ds, _ = tiny_tensors()
    train_months = np.flatnonzero(ds["split"].values == SPLIT_FLAGS["train"])
    ds["inputs"].values[train_months[:5]] = np.nan
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1: .*not finite"):
        train(ds, config(epochs=2, checkpoint_every=1), checkpoint_path=tmp_path / "n.pt", config_hash="h", progress=False)
    assert not (tmp_path / "n.pt").exists()


def test_train_stops_when_the_process_that_launched_it_is_gone(tmp_path):
    """A workflow manager killed on its own (its shell survives it) leaves no training behind."""
    import shlex
    import time
    from pathlib import Path

    from gracefill.io import write_netcdf

    ds, _ = tiny_tensors()
    write_netcdf(ds, tmp_path / "tensors.nc")
    cfg = json.dumps({"seed": 1, **SETTINGS, "training": {**SETTINGS["training"], "epochs": 100000}})
    gracefill = Path(sys.executable).parent / "gracefill"
    stage = (f"{shlex.quote(str(gracefill))} train --config-json {shlex.quote(cfg)} --tensors {tmp_path}/tensors.nc "
             f"--model {tmp_path}/model/model.pt --log-csv {tmp_path}/model/log.csv --no-progress --stop-with-launcher "
             f"> {tmp_path}/train.log 2>&1; true")
    launcher = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                                 f"subprocess.Popen(['bash', '-c', {stage!r}]); time.sleep(600)"])
    kill_after_first_checkpoint(launcher, tmp_path)
    deadline = time.monotonic() + 60
    log = tmp_path / "train.log"
    while "interrupted" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    assert "gracefill train: interrupted; finished outputs and checkpoints are kept" in log.read_text()
    assert not (tmp_path / "model" / "model.pt").exists()
    assert load_checkpoint(tmp_path / "model" / "checkpoint.pt")["epoch"] >= 1   # training can resume


def test_epochs_chosen_on_the_folds_weigh_each_fold_by_its_own_best():
    from gracefill.train import select_epochs

    # fold 1's errors are 10x fold 2's: a plain mean would follow fold 1 alone (best at 8);
    # relative to their own best, 6 is the folds' choice; epoch 10 is past the cap
    fold1 = pd.DataFrame({"epoch": [2, 4, 6, 8, 10], "test_rmse": [30.0, 22.0, 21.0, 20.0, 1.0]})
    fold2 = pd.DataFrame({"epoch": [2, 4, 6, 8, 10], "test_rmse": [3.0, 2.0, 1.0, 1.6, 0.1]})
    epochs, table = select_epochs([fold1, fold2], max_epochs=9)
    assert epochs == 6
    assert table["epoch"].tolist() == [2, 4, 6, 8]
    assert table["relative_validation_rmse"].iloc[2] == pytest.approx((21 / 20 + 1.0) / 2)
    # epochs scored in only one fold do not count; the unscored ones (NaN) neither
    fold3 = pd.DataFrame({"epoch": [1, 2, 3, 4], "test_rmse": [5.0, np.nan, 4.0, 4.5]})
    assert select_epochs([fold2, fold3], max_epochs=10)[0] == 4
    with pytest.raises(ValueError, match="share no scored epoch"):
        select_epochs([fold1, pd.DataFrame({"epoch": [3], "test_rmse": [1.0]})], max_epochs=10)


def test_train_cli_trains_for_the_epochs_the_folds_choose(tmp_path):
    ds, _ = tiny_tensors()
    tensors = write_tensors(ds, tmp_path / "tensors.nc")
    logs = []
    for k, rmse in enumerate(([3.0, 2.0, 2.5], [5.0, 4.0, 4.4])):
        logs.append(tmp_path / f"fold{k}.csv")
        pd.DataFrame({"epoch": [1, 2, 3], "test_rmse": rmse}).to_csv(logs[-1], index=False)
    settings = {**SETTINGS, "training": {**SETTINGS["training"], "epochs": 3}}
    model, log_csv = tmp_path / "model" / "model.pt", tmp_path / "model" / "log.csv"
    result = run_cli("train", "--config-json", json.dumps(settings), "--tensors", str(tensors), "--model", str(model),
                     "--log-csv", str(log_csv), "--no-progress", "--threads", "1", "--epochs-from-folds", *map(str, logs))
    assert result.returncode == 0, result.stderr
    assert "epochs chosen on 2 validation folds: 2 of at most 3" in result.stderr
    assert "torch uses 1 CPU threads" in result.stderr
    assert pd.read_csv(log_csv)["epoch"].tolist() == [1, 2]
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"epoch": [1]}).to_csv(bad, index=False)
    result = run_cli("train", "--config-json", json.dumps(settings), "--tensors", str(tensors), "--model",
                     str(tmp_path / "m2" / "model.pt"), "--log-csv", str(tmp_path / "m2" / "log.csv"), "--no-progress",
                     "--epochs-from-folds", str(bad))
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 1 and len(errors) == 1
    assert f"{bad}: missing column(s) test_rmse; expected epoch, test_rmse" in errors[0]
    assert not (tmp_path / "m2" / "model.pt").exists()


def test_training_logs_the_device_and_one_line_per_epoch_with_an_eta(tmp_path, caplog):
    """In a log file (no terminal) the progress is one line per epoch, not a carriage-return bar."""
    import logging

    ds, _ = tiny_tensors()
    with caplog.at_level(logging.INFO, logger="gracefill"):
        train(ds, config(epochs=3, score_every=2), checkpoint_path=tmp_path / "c.pt", config_hash="h", progress=True,
              log_path=tmp_path / "log.csv")
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("training 3 particles on cpu (") for line in lines)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "test RMSE" not in epochs[0] and "test RMSE" in epochs[1]      # scored every 2 epochs and at the last
    assert all(", ETA " in line for line in epochs) and epochs[-1].endswith("ETA 0 min 00 s")
    assert "\r" not in caplog.text
    assert len(pd.read_csv(tmp_path / "log.csv")) == 3


def _exponential_fields(lat, lon, length_km, months, rng):
    """Gaussian fields (months, lat, lon) with correlation exp(-d / length_km) over great-circle distance."""
    la, lo = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    points = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1).reshape(-1, 3)
    distance = 6371.0088 * np.arccos(np.clip(points @ points.T, -1, 1))
    chol = np.linalg.cholesky(np.exp(-distance / length_km) + 1e-9 * np.eye(len(points)))
    return (chol @ rng.standard_normal((len(points), months))).T.reshape(months, lat.size, lon.size)


@pytest.mark.parametrize("length", [300.0, 700.0])
def test_the_residual_correlation_length_of_exponentially_correlated_fields(length):
    from gracefill.train import effective_sample_fraction, residual_correlation_length

    lat, lon = np.arange(-19.0, 20.0, 2.0), np.arange(1.0, 60.0, 2.0)
    fields = _exponential_fields(lat, lon, length, 300, np.random.default_rng(0))
    fields[:, :4, :6] = np.nan  # ocean
    assert residual_correlation_length(fields, lat, lon) == pytest.approx(length, rel=0.15)
    assert effective_sample_fraction(300.0, 222.0**2) == pytest.approx(222.0**2 / (2 * np.pi * 300.0**2))
    assert effective_sample_fraction(10.0, 222.0**2) == 1.0
    assert effective_sample_fraction(float("nan"), 222.0**2) == 1.0


def test_auto_temperature_is_fitted_on_training_months_and_kept_in_the_checkpoint(tmp_path, caplog):
    from gracefill.train import resolve_likelihood_temperature, TrainingData

    ds, _ = tiny_tensors()
    cfg = config(likelihood_temperature="auto", epochs=1)
    with caplog.at_level("INFO", logger="gracefill"):
        payload, _ = train(ds, cfg, checkpoint_path=tmp_path / "m.pt", config_hash="h", progress=False)
    info = payload["likelihood"]
    assert 0 < info["likelihood_temperature"] <= 1 and info["residual_correlation_length_km"] > 0
    assert any("likelihood temperature" in r.getMessage() for r in caplog.records)
    assert reconstruct(ds, payload, cfg, progress=False)["twsa"].notnull().any()  # predict takes the config as it is
    # months outside training do not move it
    training = ds["split"] == 1
    poisoned = ds.assign(target=ds["target"].where(training, 1e6), inputs=ds["inputs"].where(training, 1e6))
    data = TrainingData.from_dataset(poisoned, torch.device("cpu"))
    same, _ = resolve_likelihood_temperature(poisoned, data, cfg)
    assert same == pytest.approx(info["likelihood_temperature"])
    assert resolve_likelihood_temperature(ds, data, config(likelihood_temperature=0.5))[0] == 0.5
    with pytest.raises(UserError, match="likelihood_temperature"):
        config(likelihood_temperature="warm")


def test_commands_flush_denormal_floats_on_the_cpu():
    """train and predict set torch's CPU threads and flush denormal floats to zero (their slow
    path costs 7-10 % of a CPU epoch); a fresh interpreter keeps them."""
    probe = ("import torch; from gracefill.cli import _configure_torch_cpu; before = float(torch.tensor([1e-39]) * 1.0); "
             "_configure_torch_cpu(1); print(before, float(torch.tensor([1e-39]) * 1.0), torch.get_num_threads())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, after, threads = result.stdout.split()
    assert float(before) == pytest.approx(1e-39, rel=1e-3) and float(after) == 0.0 and threads == "1"


def _plateau_lrs(metric: list[float], lr: float, factor: float, patience: int) -> list[float]:
    """The learning rate after each epoch under torch's ReduceLROnPlateau (mode min, rel 1e-4)."""
    best, bad, rates = math.inf, 0, []
    for value in metric:
        if value < best * (1 - 1e-4):
            best, bad = value, 0
        else:
            bad += 1
        if bad > patience:
            lr, bad = lr * factor, 0
        rates.append(lr)
    return rates


def test_a_folds_scheduler_follows_its_validation_rmse_and_the_final_run_their_learning_rates(tmp_path):
    """scheduler.metric validation: a fold's run scores its held-out months every epoch and the
    plateau scheduler steps on them; the final run follows the median of the folds' logged
    learning rates; without either it is one line naming the key (test months never drive it)."""
    from gracefill.train import fold_lr_factors

    ds, _ = tiny_tensors()
    # a high rate, so that the validation RMSE of these tiny tensors rises at some epoch while the training RMSE falls
    cfg = config(epochs=6, lr=0.1, score_every=100, scheduler={"factor": 0.5, "patience": 0, "metric": "validation"})
    _, fold = train(ds, cfg, checkpoint_path=tmp_path / "f.pt", config_hash="h", progress=False, validation_fold=True)
    log = pd.DataFrame(fold)
    assert np.isfinite(log["test_rmse"]).all()                     # scored every epoch, not every 100
    expected = _plateau_lrs(log["test_rmse"].tolist(), 0.1, 0.5, 0)
    assert log["lr"].tolist() == pytest.approx(expected)
    assert min(expected) < 0.1                                        # the schedule did act
    assert expected != pytest.approx(_plateau_lrs(log["train_rmse"].tolist(), 0.1, 0.5, 0))

    logs = [pd.DataFrame({"epoch": range(1, 7), "lr": 0.0025 * np.array(f)})
            for f in ([1, 1, .1, .1, .1, .01], [1, .1, .1, .1, .01, .01], [1, 1, 1, .1, .1, .1])]
    factors = fold_lr_factors(logs, 6, 0.0025)
    assert factors == pytest.approx([1, 1, .1, .1, .1, .01])
    _, final = train(ds, cfg, checkpoint_path=tmp_path / "m.pt", config_hash="h", progress=False, lr_factors=factors)
    assert [row["lr"] for row in final] == pytest.approx(0.1 * np.array(factors))
    assert np.isfinite([row["test_rmse"] for row in final]).sum() == 1  # the test months: scored at the end only

    with pytest.raises(UserError, match=r"^config key 'training.scheduler.metric': 'validation' needs a validation "
                                        r"fold's run .* the test months never drive it$"):
        train(ds, cfg, checkpoint_path=tmp_path / "x.pt", config_hash="h", progress=False)
    with pytest.raises(ValueError, match="fold log 2 has no positive learning rate for every epoch 1-6"):
        fold_lr_factors([logs[0], logs[1].iloc[:4]], 6, 0.0025)


def test_train_cli_follows_the_folds_learning_rates(tmp_path):
    ds, _ = tiny_tensors()
    tensors = write_tensors(ds, tmp_path / "tensors.nc")
    logs = []
    for k, factors in enumerate(([1, 0.1, 0.1], [1, 1, 0.1], [1, 0.1, 0.01])):
        logs.append(tmp_path / f"fold{k}.csv")
        pd.DataFrame({"epoch": [1, 2, 3], "lr": 0.0025 * np.array(factors)}).to_csv(logs[-1], index=False)
    settings = {**SETTINGS, "training": {**SETTINGS["training"], "epochs": 3, "scheduler": {"metric": "validation"}}}
    model, log_csv = tmp_path / "model" / "model.pt", tmp_path / "model" / "log.csv"
    result = run_cli("train", "--config-json", json.dumps(settings), "--tensors", str(tensors), "--model", str(model),
                     "--log-csv", str(log_csv), "--no-progress", "--threads", "1", "--lr-from-folds", *map(str, logs))
    assert result.returncode == 0, result.stderr
    assert "learning rate after each epoch, from 3 validation folds: training.lr times 1, 0.1, 0.1" in result.stderr
    assert pd.read_csv(log_csv)["lr"].tolist() == pytest.approx([0.0025, 0.00025, 0.00025])
    result = run_cli("train", "--config-json", json.dumps(settings), "--tensors", str(tensors), "--model",
                     str(tmp_path / "m2" / "model.pt"), "--log-csv", str(tmp_path / "m2" / "log.csv"), "--no-progress")
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert "config key 'training.scheduler.metric': 'validation' needs a validation fold's run" in errors[0]
    assert not (tmp_path / "m2" / "model.pt").exists()


def _counting_engine(batches: list[int]):
    """build_engine whose engine records the size of every mini-batch it steps on."""
    from gracefill.train import build_engine

    def builder(*args, **kwargs):
        engine = build_engine(*args, **kwargs)
        step = engine.step

        def counted(inputs, *rest, **options):
            batches.append(int(inputs.shape[0]))
            return step(inputs, *rest, **options)
        engine.step = counted
        return engine
    return builder


@pytest.mark.parametrize("length", ["fold", "window"])
def test_a_folds_epoch_draws_the_whole_windows_months_under_fold_epoch_length_window(tmp_path, length):
    """fold_epoch_length window: a validation fold's epoch takes as many mini-batch months as its
    training and validation months together (the final model's training months), every training
    month drawn once or twice and no validation month; fold (the default) and the final run: one
    pass over the training months, the same draws as before the option existed."""
    from gracefill.train import TrainingData, epoch_order

    ds, _ = tiny_tensors()
    data = TrainingData.from_dataset(ds, torch.device("cpu"))
    n_train, n_held = int(data.train_index.numel()), int(data.test_index.numel())
    assert (n_train, n_held) == (35, 21)
    cfg = config(epochs=2, batch_size=8, fold_epoch_length=length)
    for validation_fold in (True, False):
        batches: list[int] = []
        train(ds, cfg, checkpoint_path=tmp_path / f"{validation_fold}.pt", config_hash="h", progress=False,
              validation_fold=validation_fold, engine_builder=_counting_engine(batches))
        months = n_train + n_held if validation_fold and length == "window" else n_train
        per_epoch = [8] * (months // 8) + ([months % 8] if months % 8 else [])
        assert batches == per_epoch * 2

    generator = torch.Generator().manual_seed(7)
    order = epoch_order(data.train_index, n_train + n_held, generator)
    counts = np.bincount(order.numpy(), minlength=ds.sizes["time"])
    assert sorted(set(counts[data.train_index.numpy()])) == [1, 2]
    assert counts.sum() == n_train + n_held and counts[data.test_index.numpy()].sum() == 0
    assert torch.equal(epoch_order(data.train_index, n_train, torch.Generator().manual_seed(7)),
                       data.train_index[torch.randperm(n_train, generator=torch.Generator().manual_seed(7))])
