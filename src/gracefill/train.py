"""The training loop: mini-batches of training months, SVGD steps, per-epoch scores, checkpoints.

The tensors file gives the data; the loop keeps it resident on the device, draws each epoch's
batch order from a generator seeded by (seed, epoch) so that a resumed run repeats exactly
what an uninterrupted one does, and writes a checkpoint every ``checkpoint_every`` epochs.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from gracefill.grid import EARTH_RADIUS_M, cell_area as grid_cell_area
from gracefill.io import UserError, atomic_path, write_csv
from gracefill.months import SPLIT_FLAGS
from gracefill.nn import build_backbone
from gracefill.svgd import SVGD, StudentTPrior

log = logging.getLogger("gracefill")

CHECKPOINT_FORMAT = 1
LOG_COLUMNS = ["epoch", "train_rmse", "test_rmse", "test_r2", "test_mnlp", "test_spread", "mean_log_beta", "lr",
               "kernel_offdiag", "repulsion_ratio", "particle_distance", "seconds"]
#: the order of the input stack's dims in memory (tensors.nc keeps channel first, as CF orders dims)
INPUT_DIMS = ("time", "channel", "lat", "lon")
TENSOR_VARIABLES = ("inputs", "target", "land_mask", "split", "target_trend_offset", "target_trend_slope", "month_index")
MIN_GRID_SIDE = 8
#: the scores of :func:`evaluate` where no month is scored
NO_SCORES = {"rmse": math.nan, "r2": math.nan, "mnlp": math.nan, "spread": math.nan}


class TrainingDiverged(UserError):
    """The log joint or the training error stopped being finite."""


@dataclass
class TrainingData:
    """Tensors of one run, on one device: inputs (T, C, H, W), target with NaN as 0, valid mask."""

    inputs: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    train_index: torch.Tensor
    test_index: torch.Tensor

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, device: torch.device, land_only: bool = True) -> "TrainingData":
        h, w = ds.sizes["lat"], ds.sizes["lon"]
        if min(h, w) < MIN_GRID_SIDE:
            raise UserError(f"grid {h} x {w} is too small for the network: each side must be at least {MIN_GRID_SIDE} cells")
        split = ds["split"].values
        target = ds["target"].values[:, None]
        land = ds["land_mask"].values.astype(bool)[None, None]
        valid = np.isfinite(target) & land
        if not land_only:  # published: every cell of an observed month counts, ocean zeros included
            valid = np.broadcast_to(np.isfinite(target).any(axis=(2, 3), keepdims=True), target.shape)
        train = np.flatnonzero(split == SPLIT_FLAGS["train"])
        if train.size == 0:
            raise UserError("the training split is empty: no month is labelled train")
        return cls(
            inputs=torch.as_tensor(ds["inputs"].transpose(*INPUT_DIMS).values, dtype=torch.float32, device=device),
            target=torch.as_tensor(np.nan_to_num(target, nan=0.0), dtype=torch.float32, device=device),
            valid=torch.as_tensor(np.ascontiguousarray(valid), device=device),
            train_index=torch.as_tensor(train, device=device),
            test_index=torch.as_tensor(np.flatnonzero(split == SPLIT_FLAGS["test"]), device=device),
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when available; an explicit CUDA request without CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config key 'training.device': {name!r} requested but this machine has no CUDA device; use 'auto' or 'cpu'")
    return torch.device(name)


def model_settings(cfg: dict, in_channels: int, grid_shape: tuple[int, int]) -> dict:
    """What predict needs to rebuild the network (stored in every checkpoint)."""
    m = cfg["model"]
    return {"backbone": m["backbone"], "features": int(m["features"]), "activation": m["activation"],
            "particles": int(m["particles"]), "in_channels": int(in_channels), "out_channels": 1,
            "grid": [int(grid_shape[0]), int(grid_shape[1])]}


def initial_log_beta(data: "TrainingData", cfg: dict, particles: int) -> torch.Tensor | None:
    """None (draw from the noise prior) or -log var(training targets) with a 0.1 jitter per particle."""
    if cfg["training"]["log_beta_init"] == "prior":
        return None
    y = data.target[data.train_index][data.valid[data.train_index]].double()
    variance = float(y.var()) if y.numel() > 1 else 1.0
    return -math.log(max(variance, 1e-12)) + 0.1 * torch.randn(particles, dtype=torch.float64)


def regression_residuals(data: TrainingData, ridge: float = 0.1, min_months: int = 24,
                         cells_per_chunk: int = 4096) -> np.ndarray:
    """Training-month residuals (T, H, W; NaN where none) of a per-cell ridge regression of the
    target on the network's own inputs: a cheap stand-in for the network's residual, whose
    spatial correlation says how many independent values a target field holds.

    Each cell with at least ``min_months`` valid training months solves (X'X + ridge n I) b = X'y
    (inputs are normalised; the intercept is not penalised); other cells stay NaN.
    """
    idx = data.train_index
    valid = data.valid[idx, 0]
    t, c, h, w = data.inputs[idx].shape
    cells = torch.nonzero(valid.sum(0).reshape(-1) >= min_months).flatten()
    out = torch.full((t, h * w), math.nan, dtype=torch.float64, device=valid.device)
    for start in range(0, cells.numel(), cells_per_chunk):
        chosen = cells[start:start + cells_per_chunk]
        x = data.inputs[idx].reshape(t, c, h * w)[:, :, chosen].permute(2, 0, 1).double()  # (n, T, C)
        y = data.target[idx, 0].reshape(t, h * w)[:, chosen].T.double()  # (n, T)
        m = valid.reshape(t, h * w)[:, chosen].T.double()
        x = torch.cat([x, torch.ones_like(x[..., :1])], -1) * m[..., None]
        gram = x.transpose(1, 2) @ x
        penalty = torch.full((c + 1,), ridge, dtype=x.dtype, device=x.device)
        penalty[-1] = 0.0
        gram = gram + torch.diag_embed(penalty * m.sum(1, keepdim=True))
        coef = torch.linalg.solve(gram, (x.transpose(1, 2) @ (y * m)[..., None]))
        residual = (y - (x @ coef)[..., 0]).masked_fill(m == 0, math.nan)
        out[:, chosen] = residual.T
    return out.reshape(t, h, w).cpu().numpy()


def residual_correlation_length(residuals: np.ndarray, lat: np.ndarray, lon: np.ndarray, max_shift: int = 2,
                                min_months: int = 24) -> float:
    """e-folding length (km) of the spatial correlation of residual fields (T, H, W; NaN = none).

    The temporal correlation of every pair of cells up to ``max_shift`` cells apart (north, east
    and diagonal) is averaged per grid row and shift; the length L of rho(d) = exp(-d / L) is the
    least-squares fit of -log rho against the great-circle distance d through the origin, over
    the averages between 0.02 and 0.99. NaN when no pair is usable.
    """
    r = np.asarray(residuals, dtype=np.float64)
    lat_r, lon_r = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
    num = den = 0.0
    for dy in range(max_shift + 1):
        for dx in range(max_shift + 1):
            if dx == dy == 0 or dy >= r.shape[1] or dx >= r.shape[2]:
                continue
            a, b = r[:, :r.shape[1] - dy, :r.shape[2] - dx], r[:, dy:, dx:]
            both = np.isfinite(a) & np.isfinite(b)
            n = both.sum(0)
            a, b = np.where(both, a, 0.0), np.where(both, b, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                ma, mb = a.sum(0) / n, b.sum(0) / n
                cov = (a * b).sum(0) / n - ma * mb
                va, vb = (a * a).sum(0) / n - ma**2, (b * b).sum(0) / n - mb**2
                rho = np.where(n >= min_months, cov / np.sqrt(va * vb), np.nan)
            row_rho = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in rho])
            phi1, phi2 = lat_r[:r.shape[1] - dy], lat_r[dy:]
            dlon = lon_r[dx] - lon_r[0]
            hav = np.sin((phi2 - phi1) / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlon / 2) ** 2
            dist = 2 * EARTH_RADIUS_M / 1e3 * np.arcsin(np.sqrt(hav))
            use = np.isfinite(row_rho) & (row_rho > 0.02) & (row_rho < 0.99)
            num += float((dist[use] ** 2).sum())
            den += float((dist[use] * -np.log(row_rho[use])).sum())
    return num / den if den > 0 else math.nan


def effective_sample_fraction(length_km: float, cell_area_km2: float) -> float:
    """The fraction of a field's values that are independent: a cell's area over the integral area
    2 pi L^2 of an exponential correlation of e-folding length L, at most 1 (1 when L is unknown)."""
    if not math.isfinite(length_km) or length_km <= 0:
        return 1.0
    return float(min(1.0, cell_area_km2 / (2 * math.pi * length_km**2)))


def resolve_likelihood_temperature(ds: xr.Dataset, data: TrainingData, cfg: dict) -> tuple[float, dict]:
    """``training.likelihood_temperature`` as a number; ``auto`` is the effective sample fraction of
    the training residuals' correlation length (:func:`regression_residuals`). Returns it and what
    it came from (logged and kept in the checkpoint)."""
    value = cfg["training"]["likelihood_temperature"]
    if value != "auto":
        return float(value), {"likelihood_temperature": float(value)}
    lat, lon = ds["lat"].values, ds["lon"].values
    length = residual_correlation_length(regression_residuals(data), lat, lon)
    area = grid_cell_area(lat, lon, float(np.abs(np.diff(lat)).mean())) / 1e6  # km2
    land = data.valid[data.train_index, 0].any(0).cpu().numpy()
    cell_area = float(area[land].mean()) if land.any() else math.nan
    temperature = effective_sample_fraction(length, cell_area)
    return temperature, {"likelihood_temperature": temperature, "residual_correlation_length_km": length,
                         "mean_land_cell_area_km2": cell_area}


def build_engine(settings: dict, cfg: dict, num_train: int, device: torch.device,
                 log_beta_init: torch.Tensor | None = None, compile_network: bool | str = False) -> SVGD:
    """The ensemble backbone and its SVGD engine, initialised from the global torch RNG;
    ``compile_network`` (training.compile or prediction.compile: false, true for the whole
    forward, "blocks" for its blocks one by one) compiles its forward."""
    ensemble = build_backbone(settings["backbone"], settings["in_channels"], settings["out_channels"],
                              settings["particles"], features=settings["features"],
                              activation=settings["activation"]).to(device)
    t = cfg["training"]
    if t["precision"] == "bf16" and device.type != "cuda":
        raise UserError("config key 'training.precision': 'bf16' needs a CUDA device; use fp32 on the CPU")
    return SVGD(
        ensemble, num_train, lr=t["lr"], lr_noise=t["lr_noise"],
        weight_prior=StudentTPrior(t["weight_prior"]["shape"], t["weight_prior"]["rate"]),
        noise_prior=t["noise_prior_form"], noise_shape=t["noise_prior"]["shape"], noise_rate=t["noise_prior"]["rate"],
        land_only=t["land_only_loss"], particle_chunk=t["particle_chunk"] or None,
        autocast_dtype=torch.bfloat16 if t["precision"] == "bf16" else None,
        plateau_factor=t["scheduler"]["factor"], plateau_patience=t["scheduler"]["patience"],
        log_beta_init=log_beta_init,
        predict_chunk=cfg["prediction"]["particle_chunk"] or None,
        compile_ensemble=bool(compile_network),
        compile_scope="blocks" if compile_network == "blocks" else "network",
        # "auto" is resolved on the training data by train(); an engine built to predict never uses it
        likelihood_weight=1.0 if t["likelihood_temperature"] == "auto" else t["likelihood_temperature"],
        kernel=t["svgd_kernel"],
    )


def mixture_nlp(outputs: torch.Tensor, log_beta: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-value negative log predictive density under the mixture of N(f_s, 1/beta_s), summed over valid cells."""
    lb = log_beta.view(-1, *([1] * (outputs.dim() - 1)))
    log_dens = 0.5 * lb - 0.5 * math.log(2 * math.pi) - 0.5 * lb.exp() * (y - outputs).square()
    nlp = -(torch.logsumexp(log_dens, 0) - math.log(outputs.shape[0]))
    return nlp.masked_fill(~valid, 0.0).sum()


def evaluate(engine: SVGD, data: TrainingData, index: torch.Tensor, batch_size: int) -> dict[str, float]:
    """RMSE, R^2, per-value MNLP of the predictive mean and the particles' mean spread (root mean
    epistemic variance) on the months ``index`` (valid cells)."""
    if index.numel() == 0:
        return dict(NO_SCORES)
    sse = torch.zeros((), dtype=torch.float64, device=index.device)
    nlp = torch.zeros_like(sse)
    spread = torch.zeros_like(sse)
    sum_y, sum_y2, n = torch.zeros_like(sse), torch.zeros_like(sse), torch.zeros_like(sse)
    for start in range(0, index.numel(), batch_size):
        idx = index[start:start + batch_size]
        x, y, valid = data.inputs[idx], data.target[idx], data.valid[idx]
        outputs = engine.predict(x).float()
        mean = outputs.mean(0)
        sse += (mean - y).square().masked_fill(~valid, 0).sum().double()
        spread += outputs.var(0, correction=0).masked_fill(~valid, 0).sum().double()
        nlp += mixture_nlp(outputs, engine.all_log_beta().float(), y, valid).double()
        yv = y.masked_fill(~valid, 0).double()
        sum_y += yv.sum()
        sum_y2 += yv.square().sum()
        n += valid.sum().double()
    sst = sum_y2 - sum_y.square() / n
    return {"rmse": math.sqrt(float(sse / n)), "r2": float(1 - sse / sst), "mnlp": float(nlp / n),
            "spread": math.sqrt(float(spread / n))}


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint before the newest is kept (``checkpoint.previous.pt``)."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_checkpoint(path: Path, payload: dict, *, keep_previous: bool = False) -> None:
    """torch.save atomically (temporary name, then rename). With ``keep_previous`` the current
    file becomes :func:`previous_checkpoint` once the new one is completely written, so a
    failed or interrupted write leaves the current one, and a damaged newest file the one before."""
    with atomic_path(path, expected_bytes=tensor_bytes(payload)) as tmp:
        torch.save(payload, tmp)
        if keep_previous and path.exists():
            _link_or_copy(path, previous_checkpoint(path))


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in a (nested) checkpoint payload: the least its file takes."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes the file ``source`` is now (a hard link, else a copy); ``source`` stays
    in place, so an interruption at any point still leaves a checkpoint under its own name."""
    staging = target.with_name(target.name + ".tmp")
    staging.unlink(missing_ok=True)
    try:
        os.link(source, staging)
    except OSError:
        shutil.copy2(source, staging)
    os.replace(staging, target)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with weights_only=True (no pickled code, never anything else)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a readable gracefill checkpoint ({type(exc).__name__}); "
                        "delete it and run train again") from None
    if not isinstance(payload, dict) or "engine" not in payload:
        raise UserError(f"{path}: not a gracefill checkpoint (no engine state); delete it and run train again")
    return payload


def resume_state(path: Path, config_hash: str) -> dict | None:
    """The newest readable checkpoint of this run to resume from, or None (start afresh).

    ``path`` is tried first, then :func:`previous_checkpoint`. An unreadable file (truncated,
    corrupt) is set aside as ``<name>.corrupt`` with a warning naming it, so that it can be
    inspected and never blocks a rerun; a checkpoint of another configuration is not resumed.
    """
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.exists():
            continue
        try:
            state = load_checkpoint(candidate)
        except UserError:
            aside = candidate.with_name(candidate.name + ".corrupt")
            os.replace(candidate, aside)
            log.warning("%s is unreadable: set aside as %s; resuming from an older checkpoint or from the start",
                        candidate, aside.name)
            continue
        if state.get("config_hash") == config_hash and state.get("format") == CHECKPOINT_FORMAT:
            log.info("resuming from %s (epoch %s)", candidate, state.get("epoch"))
            return state
        return None
    return None


def train(
    ds: xr.Dataset,
    cfg: dict,
    *,
    checkpoint_path: Path,
    config_hash: str,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    log_path: Path | None = None,
    device: torch.device | None = None,
    engine_builder: Callable[..., SVGD] | None = None,
    writer: bool = True,
    barrier: Callable[[], None] | None = None,
    validation_fold: bool = False,
    lr_factors: Sequence[float] | None = None,
) -> tuple[dict, list[dict]]:
    """Train the SVGD ensemble on the tensors ``ds``; resume from ``checkpoint_path`` when it
    holds a run of the same configuration. Returns the final checkpoint payload and the log rows;
    ``log_path`` receives the log after every epoch.

    With ``training.scheduler.metric: validation`` the learning rate follows validation months,
    never test months: ``validation_fold`` says that the tensors' test months are a validation
    fold's held-out training-window months (scored every epoch, they drive the plateau
    scheduler); the final run, which has none, follows ``lr_factors`` instead (the factor of the
    learning rates after each epoch, :func:`fold_lr_factors` of the folds' logs).

    For several processes sharing the particles (``gracefill.distributed``): ``device`` (default
    ``training.device``), ``engine_builder`` (default :func:`build_engine`, same arguments),
    ``writer`` (this process writes the checkpoints and the log) and ``barrier`` (the writer
    resumes first, possibly setting an unreadable checkpoint aside; the others follow it).
    """
    from tqdm.auto import tqdm

    t = cfg["training"]
    checkpoint_path = Path(checkpoint_path)
    device = device if device is not None else resolve_device(t["device"])
    data = TrainingData.from_dataset(ds, device, land_only=t["land_only_loss"])
    settings = model_settings(cfg, data.inputs.shape[1], (ds.sizes["lat"], ds.sizes["lon"]))
    temperature, likelihood = resolve_likelihood_temperature(ds, data, cfg)
    if t["likelihood_temperature"] == "auto":
        cfg = {**cfg, "training": {**t, "likelihood_temperature": temperature}}
        if writer:
            log.info("likelihood temperature %.4g: residual correlation length %.0f km, mean land cell %.0f km2",
                     temperature, likelihood["residual_correlation_length_km"], likelihood["mean_land_cell_area_km2"])
    torch.manual_seed(cfg["seed"])
    engine = (engine_builder or build_engine)(settings, cfg, int(data.train_index.numel()), device,
                                              log_beta_init=initial_log_beta(data, cfg, settings["particles"]),
                                              compile_network=t["compile"])

    history: list[dict] = []
    first_epoch = 1
    state = resume_state(checkpoint_path, config_hash) if writer else None
    if barrier is not None:
        barrier()
        if not writer:
            state = resume_state(checkpoint_path, config_hash)
    if state is not None:
        engine.load_state_dict(state["engine"])
        history = list(state["history"])
        first_epoch = int(state["epoch"]) + 1
    del state

    n_train = int(data.train_index.numel())
    samples = epoch_samples(t, data, validation_fold)
    batch = int(t["batch_size"])
    on_validation = scheduler_on_validation(t, data, validation_fold, lr_factors)
    # a bar on a terminal; in a log file (a rule's log) one line per epoch instead of carriage returns
    show_bar = progress and sys.stderr.isatty()
    if writer:
        log.info("training %d particles on %s (%d CPU threads), %d training months, %d mini-batch samples an "
                 "epoch, epochs %d-%d", settings["particles"], device, torch.get_num_threads(), n_train, samples,
                 first_epoch, t["epochs"])
    bar = tqdm(range(first_epoch, t["epochs"] + 1), initial=first_epoch - 1, total=t["epochs"],
               desc="train", unit="epoch", disable=not show_bar)
    def checkpoint_payload(epoch: int) -> dict:
        return {"format": CHECKPOINT_FORMAT, "epoch": epoch, "config_hash": config_hash, "model": settings,
                "likelihood": likelihood, "engine": _to_cpu(engine.state_dict()), "history": list(history)}

    payload: dict = {}
    for epoch in bar:
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch)
        order = epoch_order(data.train_index, samples, generator)
        sse_sum = torch.zeros((), dtype=torch.float64, device=device)
        n_sum = torch.zeros_like(sse_sum)
        for start in range(0, samples, batch):
            idx = order[start:start + batch]
            stats = engine.step(data.inputs[idx], data.target[idx], data.valid[idx], diagnose=start == 0)
            sse_sum += stats["sse_mean"].double()
            n_sum += stats["n_y"].double()
        train_rmse = math.sqrt(float(sse_sum / n_sum))  # the mean over every particle (of every process)
        log_beta = engine.all_log_beta()
        if not math.isfinite(train_rmse) or not bool(torch.isfinite(log_beta).all()):
            raise TrainingDiverged(f"training diverged at epoch {epoch}: the training error or log beta is "
                                   "not finite; lower training.lr or check the tensors")
        scored = on_validation or epoch % t["score_every"] == 0 or epoch == t["epochs"]
        scores = (evaluate(engine, data, data.test_index, batch) if scored
                  else dict(NO_SCORES))
        if on_validation:
            engine.scheduler_step(scores["rmse"])
        elif lr_factors is not None:
            engine.set_lr_factor(lr_factors[epoch - 1])
        else:
            engine.scheduler_step(train_rmse)
        row = {"epoch": epoch, "train_rmse": train_rmse, "test_rmse": scores["rmse"], "test_r2": scores["r2"],
               "test_mnlp": scores["mnlp"], "test_spread": scores["spread"],
               "mean_log_beta": float(log_beta.mean()), "lr": engine.lrs[0],
               **{name: float(value) for name, value in engine.diagnostics.items() if name in LOG_COLUMNS},
               "seconds": time.perf_counter() - started}
        history.append(row)
        if log_path is not None and writer:
            write_log(history, log_path)
        bar.set_postfix(train_rmse=f"{train_rmse:.3g}", test_rmse=f"{scores['rmse']:.3g}")
        if writer and not show_bar:  # the pace leaves out this run's first epoch (compilation, warm-up)
            paces = [r["seconds"] for r in history[-(epoch - first_epoch + 1):]]
            log.info(epoch_line(row, t["epochs"], float(np.mean(paces[1:] or paces))))
        if epoch % t["checkpoint_every"] == 0 or epoch == t["epochs"]:
            payload = checkpoint_payload(epoch)
            if writer:
                save_checkpoint(checkpoint_path, payload, keep_previous=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    if not payload:  # resumed from a checkpoint that already finished
        payload = checkpoint_payload(first_epoch - 1)
    return payload, history


def epoch_samples(t: dict, data: TrainingData, validation_fold: bool) -> int:
    """How many months one epoch's mini-batches draw: one pass over the training months, except in a
    validation fold's run under ``training.fold_epoch_length: window``, where an epoch draws as many
    as the whole training window holds (the fold's training and validation months, i.e. the final
    model's training months). Fold epoch k has then taken the final model's steps at its epoch k,
    so the epoch count, the learning-rate schedule and the calibration chosen on the folds describe
    models trained as long as the final one."""
    n_train = int(data.train_index.numel())
    if validation_fold and t["fold_epoch_length"] == "window":
        return n_train + int(data.test_index.numel())
    return n_train


def epoch_order(train_index: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """The months of one epoch in mini-batch order: a random permutation of the training months,
    continued by further permutations up to ``samples`` (so every month is drawn as evenly as the
    count allows; with ``samples`` = the training months, one plain permutation)."""
    n = int(train_index.numel())
    passes = -(-samples // n)
    drawn = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])[:samples]
    return train_index[drawn.to(train_index.device)]


def scheduler_on_validation(t: dict, data: TrainingData, validation_fold: bool,
                            lr_factors: Sequence[float] | None) -> bool:
    """Whether the plateau scheduler watches the validation RMSE (a fold's run under
    ``training.scheduler.metric: validation``); checks that such a run has what it needs."""
    key = "config key 'training.scheduler.metric'"
    if t["scheduler"]["metric"] != "validation":
        if lr_factors is not None:
            raise UserError(f"{key}: the folds' learning rates are followed with 'validation' only, got "
                            f"{t['scheduler']['metric']!r}")
        return False
    if validation_fold:
        if data.test_index.numel() == 0:
            raise UserError(f"{key}: 'validation' needs held-out months in a fold's run; its tensors have none")
        return True
    if lr_factors is None:
        raise UserError(f"{key}: 'validation' needs a validation fold's run (train --validation-fold) or the "
                        "folds' training logs (train --lr-from-folds); the test months never drive it")
    if len(lr_factors) < t["epochs"]:
        raise UserError(f"{key}: the folds' learning rates cover {len(lr_factors)} epochs, expected "
                        f"{t['epochs']} (training.epochs)")
    return False


def fold_lr_factors(fold_logs: list[pd.DataFrame], epochs: int, lr: float) -> list[float]:
    """The final run's learning-rate schedule, learned on the validation folds: after each epoch
    1..``epochs``, the median over the folds of their logged ``lr`` divided by ``training.lr``
    (each fold's ReduceLROnPlateau driven by its validation RMSE). Raises ValueError when a log
    lacks an epoch's learning rate."""
    factors = []
    for k, log in enumerate(fold_logs):
        if not {"epoch", "lr"} <= set(log.columns):
            raise ValueError(f"fold log {k + 1} has no epoch or lr column")
        rates = log.set_index("epoch")["lr"].astype(float).reindex(range(1, epochs + 1))
        if not np.isfinite(rates.values).all() or (rates.values <= 0).any():
            raise ValueError(f"fold log {k + 1} has no positive learning rate for every epoch 1-{epochs}")
        factors.append(rates.values / lr)
    if not factors:
        raise ValueError("no fold log to learn the learning rates from")
    return [float(f) for f in np.median(np.stack(factors), axis=0)]


def epoch_line(row: dict, epochs: int, seconds_per_epoch: float) -> str:
    """One epoch of the training log as a line: scores, time and the estimated time left."""
    left = max(epochs - row["epoch"], 0) * seconds_per_epoch
    test = (f", test RMSE {row['test_rmse']:.4g}, test MNLP {row['test_mnlp']:.4g}"
            if math.isfinite(row["test_rmse"]) else "")
    return (f"epoch {row['epoch']}/{epochs}: train RMSE {row['train_rmse']:.4g}{test}, "
            f"mean log beta {row['mean_log_beta']:.3g}, {row['seconds']:.1f} s, ETA {_duration(left)}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _to_cpu(state):
    """A state on the host: it is kept until the next checkpoint (on every process)."""
    if torch.is_tensor(state):
        return state.cpu()
    if isinstance(state, dict):
        return {key: _to_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(value) for value in state)
    return state


def select_epochs(fold_logs: list[pd.DataFrame], max_epochs: int) -> tuple[int, pd.DataFrame]:
    """The number of epochs to train for, chosen on the validation folds' training logs.

    Each log's ``test_rmse`` is its fold's validation RMSE (scored every ``training.score_every``
    epochs). Per fold it is divided by its best value, so every fold weighs the same whatever its
    error level; the epoch with the lowest mean over the folds that scored it in every fold wins
    (the earlier on a tie), capped at ``max_epochs``. Returns the epoch and the table
    (epoch, mean relative validation RMSE, folds).
    """
    columns = []
    for k, log in enumerate(fold_logs):
        if not {"epoch", "test_rmse"} <= set(log.columns):
            raise ValueError(f"fold log {k + 1} has no epoch or test_rmse column")
        rmse = log.set_index("epoch")["test_rmse"].astype(float).dropna()
        rmse = rmse[(rmse.index <= max_epochs) & np.isfinite(rmse.values)]
        if rmse.empty:
            raise ValueError(f"fold log {k + 1} has no validation score up to epoch {max_epochs}")
        columns.append(rmse / rmse.min())
    relative = pd.concat(columns, axis=1).dropna()
    if relative.empty:
        raise ValueError("the folds' logs share no scored epoch: train them with the same score_every")
    table = pd.DataFrame({"epoch": relative.index.astype(int), "relative_validation_rmse": relative.mean(axis=1).values,
                          "folds": len(columns)})
    return int(table["epoch"].iloc[int(np.argmin(table["relative_validation_rmse"].values))]), table


def write_log(history: list[dict], path: Path) -> None:
    """The per-epoch CSV log, written atomically."""
    write_csv(pd.DataFrame(history, columns=LOG_COLUMNS), path)
