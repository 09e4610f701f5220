#!/usr/bin/env python
"""GPU speed benchmark of the SVGD trainer against the per-particle reference loop (issue 7).

In one process, on one device, on synthetic tensors of the paper's shapes (144 training months
of 21 x 144 x 360 inputs, 1 output, batch 12, S = 30 particles, nf = 48), for each backbone:

1. checks in fp32 that the engine (:class:`gracefill.svgd.SVGD`) and the per-particle loop
   (:class:`gracefill.svgd.reference.ReferenceSVGD`), built from the same initial particles,
   produce the same update on the same batch (small S and grid; relative max errors printed);
2. times the reference loop's training step and the engine's training step as
   ``gracefill.train`` drives it (data resident on the device, batches indexed on the device),
   after warm-up, a few steps extrapolated to the steps of one epoch (said in the output);
3. times prediction of all 225 months with every particle: the engine batched, and a batch-1
   pass particle by particle (a subset of months, extrapolated);
4. reports peak device memory and achieved TFLOP/s (FLOP counts of design/model.md).

Imports only torch and gracefill.nn / gracefill.svgd / gracefill.svgd.reference (no xarray).
Engine variants are written ``PRECISION[+cl][+compile][+blocks][+bench][+plain][+subpixel][+graphs][+shared][@CHUNK]``:
``cl`` channels-last activations, ``compile`` torch.compile of the ensemble, ``blocks`` the
engine's regional compilation (its blocks one by one, ``training.compile: blocks``), ``bench``
cudnn.benchmark on for that variant, ``plain`` 1 x 1 layers as grouped convolutions (the
published code's layers) instead of batched matmuls, ``subpixel`` up-sampling as 3 x 3 conv +
pixel shuffle instead of grouped transposed convolutions, ``graphs`` inductor's CUDA graphs for
the compiled variants, ``shared`` not the engine but the shared-weight bound (one network whose
batch holds every particle's copy of the samples: the same FLOP and activations on cuDNN's dense
kernels, see :class:`SharedWeightBound`), CHUNK the training particle chunk
(``all`` or 0: no chunking). Reference loops take the same tokens without a chunk; speed-ups are
against the fastest reference loop of a precision.

    python -m bench.bench_train --backbone rrdb,cbam --out bench/results/results.json
    python -m bench.bench_train --quick --device cpu        # tiny shapes, seconds, for tests
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch


from gracefill.nn import build_backbone
from gracefill.nn.layers import EnsembleConv2d, EnsembleConvTranspose2d
from gracefill.svgd import SVGD
from gracefill.svgd.reference import ReferenceSVGD

# GFLOP per 144 x 360 sample per particle (Cin 21, Cout 1, nf 48): forward, forward + backward
PAPER_GFLOP = {"rrdb": (47.0, 140.8), "cbam": (4.29, 12.65)}
PAPER_SHAPE = dict(grid=(144, 360), in_channels=21, features=48)
PUBLISHED = {"rrdb_epoch_s": 90.4, "predict_225_s": 253.0}


# --------------------------------------------------------------------------- options
# variant option token -> Variant field, in the order names are written
OPTION_TOKENS = {"cl": "channels_last", "compile": "compile", "blocks": "compile_blocks", "bench": "cudnn_benchmark",
                 "plain": "plain_layers", "subpixel": "subpixel", "graphs": "cuda_graphs", "shared": "shared_weights"}


@dataclass(frozen=True)
class Variant:
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_blocks: bool = False
    cudnn_benchmark: bool = False
    chunk: int | None = None
    plain_layers: bool = False
    subpixel: bool = False
    cuda_graphs: bool = False
    shared_weights: bool = False

    @property
    def name(self) -> str:
        s = self.precision + "".join(f"+{token}" for token, field in OPTION_TOKENS.items() if getattr(self, field))
        return s + "@" + ("all" if self.chunk is None else str(self.chunk))

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    @property
    def engine_compiled(self) -> bool:
        """Whether the engine compiles its ensemble (whole network or block by block)."""
        return self.compile or self.compile_blocks

    @property
    def compile_scope(self) -> str:
        """The engine's ``compile_scope`` of this variant."""
        return "blocks" if self.compile_blocks else "network"


def parse_variant(text: str, default_chunk: int | None = None) -> Variant:
    body, _, chunk = text.strip().partition("@")
    tokens = body.split("+")
    if tokens[0] not in ("fp32", "bf16"):
        raise SystemExit(f"variant {text!r}: precision must be fp32 or bf16")
    unknown = set(tokens[1:]) - set(OPTION_TOKENS)
    if unknown:
        raise SystemExit(f"variant {text!r}: unknown option(s) {sorted(unknown)}")
    c = default_chunk
    if chunk:
        c = None if chunk in ("all", "0") else int(chunk)
    return Variant(tokens[0], chunk=c, **{field: token in tokens for token, field in OPTION_TOKENS.items()})


def trainer_label(variant: Variant) -> str:
    return "shared-weight bound" if variant.shared_weights else "engine"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="rrdb,cbam", help="rrdb, cbam or a comma list (default both)")
    ap.add_argument("--particles", type=int, default=30)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--months", type=int, default=144, help="training months (steps per epoch = ceil(months / batch))")
    ap.add_argument("--predict-months", type=int, default=225)
    ap.add_argument("--grid", default="144x360")
    ap.add_argument("--in-channels", type=int, default=21)
    ap.add_argument("--features", type=int, default=48)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="engine precision (headline variant)")
    ap.add_argument("--channels-last", action="store_true", help="headline variant: channels-last activations")
    ap.add_argument("--compile", action="store_true", help="headline variant: torch.compile the ensemble")
    ap.add_argument("--chunk", default=None, help="training particle chunk of the engine (default: all particles)")
    ap.add_argument("--variants", default=None,
                    help="comma list of engine variants PREC[+cl][+compile][+blocks][+bench][+plain][+subpixel][+graphs][+shared][@CHUNK]; "
                         "default: the headline one")
    ap.add_argument("--ref-variants", default=None,
                    help="comma list of reference loops PREC[+cl][+bench][+plain][+subpixel] "
                         "(default: the headline precision)")
    ap.add_argument("--rrdb-variants", default=None, help="engine variants for rrdb only (overrides --variants)")
    ap.add_argument("--rrdb-ref-variants", default=None, help="reference variants for rrdb only")
    ap.add_argument("--cbam-ref-variants", default=None, help="reference variants for cbam only")
    ap.add_argument("--cbam-variants", default=None, help="engine variants for cbam only (overrides --variants)")
    ap.add_argument("--predict-batch", default="8",
                    help="months per engine.predict call (paper config: 8); a comma list times each size, the "
                         "table reports the fastest and the JSON every one")
    ap.add_argument("--predict-chunk", default="all", help="particle chunk of engine.predict (default all)")
    ap.add_argument("--predict-timed-months", type=int, default=None,
                    help="engine: time this many months and extrapolate to --predict-months (default: all)")
    ap.add_argument("--full-predict", default=None,
                    help="comma list of engine variant names whose prediction is timed on all months")
    ap.add_argument("--ref-predict-months", type=int, default=3,
                    help="reference batch-1 pass: months timed (x all particles), extrapolated")
    ap.add_argument("--warmup", type=int, default=2, help="engine warm-up steps")
    ap.add_argument("--steps", type=int, default=3, help="engine timed steps")
    ap.add_argument("--ref-warmup", type=int, default=1)
    ap.add_argument("--ref-steps", type=int, default=1)
    ap.add_argument("--check-particles", type=int, default=4)
    ap.add_argument("--check-grid", default="32x48")
    ap.add_argument("--check-batch", type=int, default=2)
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--check-compile", default="",
                    help="comma list of backbones whose first compiled variant is checked against the eager engine "
                         "(fp32, check shapes; compiling the RRDB twice more takes minutes)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="cudnn.benchmark on for the whole run")
    ap.add_argument("--profile", action="store_true", help="profile one step of the first variant; top kernels")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU in seconds; used by the tests)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/results.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.particles, args.batch, args.months, args.predict_months = 2, 2, 4, 4
        args.grid, args.features = "8x16", 4
        args.warmup, args.steps, args.ref_warmup, args.ref_steps = 1, 1, 1, 1
        args.check_particles, args.check_grid, args.ref_predict_months = 2, "8x16", 1
        args.check_batch = 2
        args.predict_batch = "2" if args.predict_batch == ap.get_default("predict_batch") else args.predict_batch
    try:
        args.predict_batches = [int(v) for v in str(args.predict_batch).split(",")]
        if min(args.predict_batches) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--predict-batch {args.predict_batch!r}: expected positive integers separated by commas")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick and args.device == "cpu":
        torch.set_num_threads(1)  # tiny tensors: threads only add contention
    return args


def parse_grid(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


# --------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def variant_settings(spec: Variant):
    """The global switches of a variant while it runs, restored afterwards (same values either
    way): ``bench`` cudnn.benchmark; ``plain`` 1 x 1 layers as grouped convolutions (the
    published code's layers; the engine before the fourth measurement round of 2026-11-25) instead of batched matmuls;
    ``subpixel`` up-sampling as 3 x 3 conv + pixel shuffle instead of the grouped transposed
    convolution; ``graphs`` inductor records its compiled graphs as CUDA graphs
    (``triton.cudagraphs``, the ``reduce-overhead`` mode of torch.compile)."""
    import torch._inductor.config as inductor_config

    previous = (torch.backends.cudnn.benchmark, EnsembleConv2d.pointwise_matmul, EnsembleConvTranspose2d.subpixel,
                inductor_config.triton.cudagraphs)
    torch.backends.cudnn.benchmark = previous[0] or spec.cudnn_benchmark
    EnsembleConv2d.pointwise_matmul = not spec.plain_layers
    EnsembleConvTranspose2d.subpixel = spec.subpixel
    inductor_config.triton.cudagraphs = previous[3] or spec.cuda_graphs
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, EnsembleConv2d.pointwise_matmul, EnsembleConvTranspose2d.subpixel,
         inductor_config.triton.cudagraphs) = previous


@contextlib.contextmanager
def exact_fp32():
    """No TF32 anywhere (for the equality check)."""
    prev = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
            torch.get_float32_matmul_precision())
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev[:2]
        torch.set_float32_matmul_precision(prev[2])


class Data:
    """Synthetic tensors resident on the device: inputs of every month, targets and the valid
    (land) mask of the training months, indexed on the device as gracefill.train does."""

    def __init__(self, args, device: torch.device, seed: int):
        g = torch.Generator(device="cpu").manual_seed(seed)
        h, w = parse_grid(args.grid)
        n_all = max(args.predict_months, args.months)
        self.inputs = torch.randn(n_all, args.in_channels, h, w, generator=g).to(device)
        land = torch.nn.functional.avg_pool2d(torch.randn(1, 1, h, w, generator=g), 5, 1, 2) > 0.0
        target = torch.randn(args.months, 1, h, w, generator=g)
        self.valid = land.expand(args.months, 1, h, w).contiguous().to(device)
        self.target = target.masked_fill(~land, 0.0).to(device)
        self.train_index = torch.arange(args.months, device=device)
        self.n_train = args.months

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.inputs, self.target, self.valid))


def make_ensemble(args, backbone: str, device: torch.device, channels_last: bool, seed: int,
                  particles: int | None = None, grid_features=None):
    torch.manual_seed(seed)
    features = args.features if grid_features is None else grid_features
    return build_backbone(backbone, args.in_channels, 1, particles or args.particles, features=features,
                          channels_last=channels_last).to(device)


def make_engine(ensemble, num_train: int, variant: Variant, predict_chunk: int | None, log_beta_init=None):
    # as gracefill.train.build_engine with the paper's settings (defaults of SVGD)
    return SVGD(ensemble, num_train, particle_chunk=variant.chunk, autocast_dtype=variant.autocast_dtype,
                predict_chunk=predict_chunk, log_beta_init=log_beta_init,
                compile_ensemble=variant.engine_compiled, compile_scope=variant.compile_scope)


class SharedWeightBound:
    """What batching the particles could reach at best with the same kernels: one network
    (S = 1) trained on a batch that holds every particle's copy of the samples (chunk x batch
    samples per pass, S / chunk passes accumulated per step, one fused Adam step), predicting
    with every particle's copy in one batch. Same FLOP and activation sizes as the engine, but
    dense convolutions instead of grouped ones and no SVGD kernel (0.3 s per RRDB epoch,
    design/model.md); a masked MSE stands in for the likelihood. Offers the engine's ``step``
    and ``predict`` so that the engine's timing code runs it unchanged."""

    def __init__(self, args, backbone: str, device: torch.device, variant: Variant, seed: int):
        self.num_particles = args.particles
        self.chunk = variant.chunk or args.particles
        self.predict_chunk = args.particles
        self._predict_batch = None  # read and reset by time_engine_prediction, as on the engine
        self.net = make_ensemble(args, backbone, device, variant.channels_last, seed, particles=1)
        self.forward = torch.compile(self.net, dynamic=False) if variant.compile else self.net
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3, fused=device.type == "cuda")
        self.device, self.precision = device, variant.precision

    def _copies(self, chunk: int) -> list[int]:
        return [min(chunk, self.num_particles - start) for start in range(0, self.num_particles, chunk)]

    def step(self, x, y, mask) -> dict:
        self.net.train()
        n_y = mask.sum()
        sse_sum = torch.zeros((), device=x.device)
        for n in self._copies(self.chunk):
            with autocast(self.device, self.precision):
                out = self.forward(x.repeat(n, 1, 1, 1))[0]
            sse = ((out.float() - y.repeat(n, 1, 1, 1)).square() * mask.repeat(n, 1, 1, 1)).sum()
            (sse / n_y).backward()
            sse_sum = sse_sum + sse.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"sse_mean": sse_sum / self.num_particles, "n_y": n_y}

    def predict(self, x) -> torch.Tensor:
        """(S, B, Cout, H, W): the one network's output for each particle's copy of ``x``."""
        self.net.eval()
        with torch.inference_mode(), autocast(self.device, self.precision):
            outs = [self.forward(x.repeat(n, 1, 1, 1))[0] for n in self._copies(self.predict_chunk)]
        return torch.cat(outs).unflatten(0, (self.num_particles, x.shape[0]))


def flops(args, backbone: str) -> tuple[float, float] | None:
    """(forward, forward + backward) GFLOP per sample per particle, from model.md at the paper's
    shapes; None for other shapes."""
    if (parse_grid(args.grid) == PAPER_SHAPE["grid"] and args.in_channels == PAPER_SHAPE["in_channels"]
            and args.features == PAPER_SHAPE["features"]):
        return PAPER_GFLOP[backbone]
    return None


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- check
def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    den = b.abs().max().item()
    return (a - b).abs().max().item() / (den if den > 0 else 1.0)


def check_same_update(args, backbone: str, variant: Variant, device: torch.device) -> dict:
    """Engine (configured like ``variant`` but fp32, chunked when S > 1) vs the per-particle
    reference from the same initial particles: one step on the same batch, no TF32.

    Compared: the SVGD direction phi that Adam received (read back from Adam's first moment),
    the parameters after the step, the BatchNorm running statistics, and the eval-mode
    predictions of the initial particles. Adam's first step moves every element by about
    lr * sign(phi), so an element whose phi is at rounding level (the biases of convolutions
    followed by BatchNorm: their likelihood gradient is exactly zero, only the prior's is
    left) can move in opposite directions in two correct implementations; such sign flips are
    counted and their |phi| reported relative to max |phi|.
    """
    s = args.check_particles
    h, w = parse_grid(args.check_grid)
    b = args.check_batch
    chunk = None if variant.chunk is None else max(1, min(variant.chunk, s - 1))
    with exact_fp32():
        ens = make_ensemble(args, backbone, device, variant.channels_last, seed=args.seed + 101, particles=s)
        g = torch.Generator(device="cpu").manual_seed(args.seed + 7)
        x = torch.randn(b, args.in_channels, h, w, generator=g).to(device)
        y = torch.randn(b, 1, h, w, generator=g).to(device)
        mask = (torch.rand(1, 1, h, w, generator=g) > 0.3).expand(b, 1, h, w).to(device)
        log_beta = torch.full((s,), 2.0) + 0.1 * torch.arange(s, dtype=torch.float32)
        engine = SVGD(ens, 20, particle_chunk=chunk, log_beta_init=log_beta)
        ref = ReferenceSVGD(ens, 20, log_beta_init=log_beta)  # copies the particles before any step
        theta0 = engine.theta().clone()
        assert torch.equal(theta0, ref.theta()), "engine and reference start from different particles"
        pred_e, pred_r = engine.predict(x), ref.predict(x)
        engine.step(x, y, mask)
        ref.step(x, y, mask)
        te, tr = engine.theta(), ref.theta()
        phi_e = _engine_phi(engine)
        phi_r = _phi_from_adam_ref(ref)
        buf_errs = []
        for i in range(s):
            es = engine.ensemble.particle_state(i)
            for k, v in ref.particles[i].named_buffers():
                if v.is_floating_point():
                    buf_errs.append(rel_err(es[k].to(v.dtype), v))
        du_e, du_r = te - theta0, tr - theta0
        flips = (du_e.sign() != du_r.sign()) & (du_r != 0)
        phi_max = phi_r.abs().max().item()
        out = {
            "particles": s, "grid": [h, w], "batch": b, "chunk": chunk, "channels_last": variant.channels_last,
            "phi_rel_err": rel_err(phi_e, phi_r),
            "param_rel_err": rel_err(te, tr),
            "update_rel_err": rel_err(du_e, du_r),
            "update_sign_flips": int(flips.sum()),
            "update_elements": int(du_r.numel()),
            "flip_max_phi_rel": (phi_r.abs()[flips].max().item() / phi_max) if bool(flips.any()) else 0.0,
            "state_rel_err": max(buf_errs) if buf_errs else 0.0,
            "predict_rel_err": rel_err(pred_e, pred_r),
        }
    out["ok"] = bool(out["phi_rel_err"] < 1e-4 and out["state_rel_err"] < 1e-4 and out["predict_rel_err"] < 1e-4
                     and out["flip_max_phi_rel"] < 1e-3)
    del engine, ref, ens
    return out


def check_compiled(args, backbone: str, variant: Variant, device: torch.device) -> dict:
    """Compiled engine (torch.compile through particle templates, chunked like ``variant``)
    vs the eager engine from the same particles, fp32 without TF32, check shapes: eval-mode
    predictions of a full and a ragged batch, then the log-joint gradients G of every particle
    (all chunks) and the BatchNorm running statistics after that training-mode pass. (After
    an Adam step the two would no longer be comparable: Adam's first step moves elements
    whose gradient is at rounding level by lr * sign.) Also counts the graphs compiled: one
    for training and one for eval whatever the chunk start (with ``blocks``, one per region
    class and input shape in each mode)."""
    import copy

    import torch._dynamo

    s = args.check_particles
    h, w = parse_grid(args.check_grid)
    b = args.check_batch
    chunk = None if variant.chunk is None else max(1, min(variant.chunk, s // 2))
    with exact_fp32():
        ens = make_ensemble(args, backbone, device, variant.channels_last, seed=args.seed + 103, particles=s)
        twin = copy.deepcopy(ens)
        g = torch.Generator(device="cpu").manual_seed(args.seed + 9)
        x = torch.randn(b, args.in_channels, h, w, generator=g).to(device)
        y = torch.randn(b, 1, h, w, generator=g).to(device)
        mask = (torch.rand(1, 1, h, w, generator=g) > 0.3).expand(b, 1, h, w).to(device)
        eager = SVGD(ens, 20, particle_chunk=chunk, log_beta_init=2.0)
        compiled = SVGD(twin, 20, particle_chunk=chunk, log_beta_init=2.0, compile_ensemble=True,
                        compile_scope=variant.compile_scope)
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        t0 = time.perf_counter()
        pred_err = max(rel_err(compiled.predict(xb), eager.predict(xb)) for xb in (x, x[:1]))
        grads_c, _ = compiled.log_joint_grads(x, y, mask)
        grads_e, _ = eager.log_joint_grads(x, y, mask)
        buf_errs = [rel_err(bc, be) for be, bc in zip(ens.buffers(), twin.buffers()) if be.is_floating_point()]
        out = {
            "particles": s, "grid": [h, w], "batch": b, "chunk": chunk, "seconds": time.perf_counter() - t0,
            "graphs": int(torch._dynamo.utils.counters["stats"]["unique_graphs"]),
            "grad_rel_err": rel_err(grads_c, grads_e),
            "state_rel_err": max(buf_errs) if buf_errs else 0.0,
            "predict_rel_err": pred_err,
        }
    out["ok"] = bool(out["grad_rel_err"] < 1e-4 and out["state_rel_err"] < 1e-4 and out["predict_rel_err"] < 1e-4)
    del eager, compiled, ens, twin
    return out


def _engine_phi(engine: SVGD) -> torch.Tensor:
    s = engine.num_particles
    beta1 = engine.optimizer.param_groups[0]["betas"][0]
    return torch.cat([engine.optimizer.state[v]["exp_avg"].reshape(s, -1) for v in engine._variables], 1) / -(1.0 - beta1)


def _phi_from_adam_ref(ref: ReferenceSVGD) -> torch.Tensor:
    rows = []
    for i, opt in enumerate(ref.optimizers):
        beta1 = opt.param_groups[0]["betas"][0]
        rows.append(torch.cat([opt.state[v]["exp_avg"].reshape(-1) for v in ref._variables(i)]) / -(1.0 - beta1))
    return torch.stack(rows)


# --------------------------------------------------------------------------- training
def run_epoch_steps(step_fn, data: Data, batch: int, n_steps: int, epoch: int, seed: int, device):
    """``n_steps`` training steps as gracefill.train does them (order drawn per epoch, batches
    indexed on the device, statistics accumulated on the device)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = data.train_index[torch.randperm(data.n_train, generator=generator).to(device)]
    sse_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_sum = torch.zeros_like(sse_sum)
    done = 0
    while done < n_steps:
        for start in range(0, data.n_train, batch):
            if done == n_steps:
                break
            idx = order[start:start + batch]
            stats = step_fn(data.inputs[idx], data.target[idx], data.valid[idx])
            sse_sum += stats["sse_mean"].double()
            n_sum += stats["n_y"].double()
            done += 1
    return sse_sum, n_sum


def time_training(step_fn, data, args, warmup: int, steps: int, device) -> dict:
    t0 = time.perf_counter()
    run_epoch_steps(step_fn, data, args.batch, warmup, 0, args.seed, device)
    sync(device)
    t1 = time.perf_counter()
    sse, n = run_epoch_steps(step_fn, data, args.batch, steps, 1, args.seed, device)
    sync(device)
    t2 = time.perf_counter()
    steps_per_epoch = math.ceil(args.months / args.batch)
    per_step = (t2 - t1) / steps
    return {"warmup_s": t1 - t0, "warmup_steps": warmup, "timed_steps": steps, "s_per_step": per_step,
            "steps_per_epoch": steps_per_epoch, "s_per_epoch": per_step * steps_per_epoch,
            "extrapolated": steps != steps_per_epoch, "train_rmse_finite": bool(torch.isfinite(sse / n))}


def count_host_syncs(engine: SVGD, data: Data, args, device) -> int | None:
    """Host synchronisations during one engine step (torch.cuda sync debug mode)."""
    if device.type != "cuda":
        return None
    idx = data.train_index[: args.batch]
    x, y, m = data.inputs[idx], data.target[idx], data.valid[idx]
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode(1)
        try:
            engine.step(x, y, m)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    sync(device)
    syncs = [str(c.message) for c in caught if "synchroniz" in str(c.message).lower()
             and "prototype feature" not in str(c.message)]
    for s in syncs[:5]:
        log(f"    host sync: {s[:200]}")
    return len(syncs)


def profile_step(engine: SVGD, data: Data, args, device, top: int = 25) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    idx = data.train_index[: args.batch]
    x, y, m = data.inputs[idx], data.target[idx], data.valid[idx]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        engine.step(x, y, m)
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    # on the GPU a kernel's time shows twice, under the aten op that launched it and as the
    # kernel itself: shares are of the kernels (and memsets, copies) alone
    kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    total = sum(getattr(e, key) for e in (kernels or events)) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    rows = [{"name": e.key[:110], "ms": getattr(e, key) / 1e3, "share": getattr(e, key) / total, "calls": e.count}
            for e in events[:top]]
    log(f"    profile of one step (total {'kernel' if kernels else 'device'} time {total / 1e3:.1f} ms), top {top}:")
    for r in rows:
        log(f"    {r['ms']:9.1f} ms {100 * r['share']:5.1f}% {r['calls']:6d}  {r['name']}")
    return rows


def bench_reference(args, backbone: str, spec: Variant, data: Data, device) -> dict:
    """Per-particle loop: training steps and batch-1 per-particle prediction."""
    fl = flops(args, backbone)
    s, b = args.particles, args.batch
    with variant_settings(spec):
        reset_peak(device)
        ens = make_ensemble(args, backbone, device, spec.channels_last, seed=args.seed + 1)
        ref = ReferenceSVGD(ens, data.n_train)
        del ens
        with autocast(device, spec.precision):
            res = time_training(ref.step, data, args, args.ref_warmup, args.ref_steps, device)
        res["peak_gb"] = peak_gb(device)
        if fl:
            res["tflops"] = fl[1] * b * s / res["s_per_step"] / 1e3
        # prediction: batch 1, one particle at a time, eval mode
        m_t = min(args.ref_predict_months, args.predict_months)
        for module in ref.particles:
            module.eval()

        def pass_months(months):
            acc = None
            with torch.inference_mode(), autocast(device, spec.precision):
                for mth in months:
                    x = data.inputs[mth:mth + 1]
                    for module in ref.particles:
                        out = module(x)[0].float()
                        acc = out if acc is None else acc + out
            return acc

        pass_months(range(1))  # warm-up
        sync(device)
        t0 = time.perf_counter()
        pass_months(range(m_t))
        sync(device)
        dt = time.perf_counter() - t0
        pred = {"timed_months": m_t, "s_timed": dt, "s_total": dt * args.predict_months / m_t,
                "extrapolated": m_t != args.predict_months, "months": args.predict_months, "particles": s}
        if fl:
            pred["tflops"] = fl[0] * m_t * s / dt / 1e3
        res["predict"] = pred
        del ref
    return res


def time_engine_prediction(engine: SVGD, data: Data, args, n_pred: int, predict_batch: int, fl, device) -> dict:
    """Seconds to predict ``n_pred`` months (extrapolated to all) with every particle, ``predict_batch``
    months per call, after a one-batch warm-up (which, when compiled, compiles this batch size)."""
    reset_peak(device)
    engine._predict_batch = None  # compiled: pad ragged batches to this size, not an earlier one

    def predict_months(n):
        mean_sum = None
        for start in range(0, n, predict_batch):
            x = data.inputs[start:min(start + predict_batch, n)]
            outputs = engine.predict(x)[:, :, 0].float()
            mean, var = outputs.mean(0), outputs.var(0, correction=0)
            part = mean.sum() + var.sum()
            mean_sum = part if mean_sum is None else mean_sum + part
        return mean_sum

    t0 = time.perf_counter()
    predict_months(min(n_pred, predict_batch))
    sync(device)
    t1 = time.perf_counter()
    predict_months(n_pred)
    sync(device)
    dt = time.perf_counter() - t1
    pred = {"warmup_s": t1 - t0, "timed_months": n_pred, "s_timed": dt,
            "s_total": dt * args.predict_months / n_pred, "extrapolated": n_pred != args.predict_months,
            "months": args.predict_months, "particles": args.particles, "predict_batch": predict_batch,
            "predict_chunk": engine.predict_chunk, "peak_gb": peak_gb(device)}
    if fl:
        pred["tflops"] = fl[0] * n_pred * args.particles / dt / 1e3
    log(f"    predict, {predict_batch} months per call: {pred['s_total']:.2f} s for {args.predict_months} months "
        f"(warm-up {pred['warmup_s']:.1f} s, peak {fmt(pred['peak_gb'])} GB)")
    return pred


def bench_engine(args, backbone: str, variant: Variant, data: Data, device, profile: bool) -> dict:
    fl = flops(args, backbone)
    s, b = args.particles, args.batch
    pchunk = None if args.predict_chunk in ("all", "0", None) else int(args.predict_chunk)
    res: dict = {"variant": variant.name}
    with variant_settings(variant):
        reset_peak(device)
        base = torch.cuda.memory_allocated(device) / 1e9 if device.type == "cuda" else None
        if variant.shared_weights:
            engine = SharedWeightBound(args, backbone, device, variant, seed=args.seed + 1)
        else:
            ens = make_ensemble(args, backbone, device, variant.channels_last, seed=args.seed + 1)
            engine = make_engine(ens, data.n_train, variant, pchunk or s)
            del ens
        res.update(time_training(engine.step, data, args, args.warmup, args.steps, device))
        res["peak_gb"] = peak_gb(device)
        res["resident_before_gb"] = base
        if fl:
            res["tflops"] = fl[1] * b * s / res["s_per_step"] / 1e3
        res["host_syncs_per_step"] = count_host_syncs(engine, data, args, device)
        if profile:
            res["profile"] = profile_step(engine, data, args, device)
        # prediction: all months (or a timed subset), every particle, eval mode, at each batch size
        full = variant.name in [v.strip() for v in (args.full_predict or "").split(",")]
        n_pred = args.predict_months if (args.predict_timed_months is None or full) else min(
            args.predict_timed_months, args.predict_months)
        by_batch = [time_engine_prediction(engine, data, args, n_pred, pb, fl, device) for pb in args.predict_batches]
        res["predict"] = min(by_batch, key=lambda p: p["s_total"])
        res["predict_by_batch"] = by_batch
        del engine
    return res


# --------------------------------------------------------------------------- main
def fmt(v, spec="{:.3g}"):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return spec.format(v)


def fastest_references(references: dict) -> dict:
    """Per precision, the fastest reference loop of the run (epoch and prediction taken
    separately), so that a speed-up is never measured against the slower of two references."""
    best: dict = {}
    for name, ref in references.items():
        if "error" in ref:
            continue
        b = best.setdefault(name.split("+")[0], {"s_per_epoch": math.inf, "predict_s": math.inf})
        b["s_per_epoch"] = min(b["s_per_epoch"], ref["s_per_epoch"])
        b["predict_s"] = min(b["predict_s"], ref["predict"]["s_total"])
    return best


def build_table(out: dict) -> list[dict]:
    """One row per trainer. Speed-ups: ``*_vs_fp32`` against the fp32 reference loop (the
    published code's precision), ``*_same`` against the reference loop of the same precision."""
    rows = []
    for backbone, r in out["results"].items():
        refs = fastest_references(r.get("reference", {}))
        for name, ref in r.get("reference", {}).items():
            if "error" in ref:
                rows.append({"backbone": backbone, "trainer": f"reference loop {name}", "error": ref["error"]})
                continue
            rows.append({"backbone": backbone, "trainer": f"reference loop {name}", "s_per_epoch": ref["s_per_epoch"],
                         "peak_gb": ref["peak_gb"], "train_tflops": ref.get("tflops"),
                         "predict_s": ref["predict"]["s_total"], "predict_tflops": ref["predict"].get("tflops"),
                         "epoch_extrapolated_from_steps": ref["timed_steps"],
                         "predict_extrapolated_from_months": ref["predict"]["timed_months"]})
        for name, eng in r.get("engine", {}).items():
            variant = parse_variant(name)
            label = trainer_label(variant)
            if "error" in eng:
                rows.append({"backbone": backbone, "trainer": f"{label} {name}", "error": eng["error"]})
                continue
            prec = variant.precision
            row = {"backbone": backbone, "trainer": f"{label} {name}", "s_per_epoch": eng["s_per_epoch"],
                   "peak_gb": eng["peak_gb"], "train_tflops": eng.get("tflops"),
                   "predict_s": eng["predict"]["s_total"], "predict_tflops": eng["predict"].get("tflops"),
                   "predict_batch": eng["predict"]["predict_batch"], "predict_peak_gb": eng["predict"]["peak_gb"],
                   "host_syncs_per_step": eng["host_syncs_per_step"],
                   "epoch_extrapolated_from_steps": eng["timed_steps"],
                   "predict_extrapolated_from_months": eng["predict"]["timed_months"]}
            for tag, ref in (("vs_fp32", refs.get("fp32")), ("same", refs.get(prec))):
                if ref is not None:
                    row[f"speedup_epoch_{tag}"] = ref["s_per_epoch"] / eng["s_per_epoch"]
                    row[f"predict_speedup_{tag}"] = ref["predict_s"] / eng["predict"]["s_total"]
            rows.append(row)
    return rows


def print_table(out: dict) -> None:
    cols = [("backbone", "backbone", "{}"), ("trainer", "trainer", "{}"), ("s/epoch", "s_per_epoch", "{:.2f}"),
            ("x ref fp32", "speedup_epoch_vs_fp32", "{:.1f}"), ("x ref same", "speedup_epoch_same", "{:.1f}"),
            ("peak GB", "peak_gb", "{:.1f}"), ("TFLOP/s", "train_tflops", "{:.1f}"),
            ("predict s", "predict_s", "{:.2f}"), ("months/call", "predict_batch", "{}"),
            ("x ref fp32", "predict_speedup_vs_fp32", "{:.1f}"),
            ("x ref same", "predict_speedup_same", "{:.1f}"), ("pred TFLOP/s", "predict_tflops", "{:.1f}"),
            ("syncs/step", "host_syncs_per_step", "{}")]
    lines = [[c[0] for c in cols]]
    for row in out["table"]:
        if "error" in row:
            lines.append([row["backbone"], row["trainer"], "ERROR: " + row["error"][:60]] + [""] * (len(cols) - 3))
            continue
        lines.append([fmt(row.get(k), f) for _, k, f in cols])
    widths = [max(len(l[i]) for l in lines) for i in range(len(cols))]
    c = out["config"]
    log("")
    log(f"device: {out['device']}; torch {out['torch']}; S={c['particles']}, batch {c['batch']}, {c['months']} "
        f"training months on {c['grid']}, {c['in_channels']} input channels, nf {c['features']}; TF32 convs "
        f"{'on' if out['tf32_conv'] else 'off'} (torch default)")
    log("| " + " | ".join(v.ljust(wd) for v, wd in zip(lines[0], widths)) + " |")
    log("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for l in lines[1:]:
        log("| " + " | ".join(v.ljust(wd) for v, wd in zip(l, widths)) + " |")
    log("s/epoch: timed over a few steps after warm-up and extrapolated to ceil(months/batch) steps "
        "(engine: --steps timed steps, reference: --ref-steps). predict s: all months x all particles; the "
        "reference is a batch-1 pass particle by particle (eval mode), timed on --ref-predict-months months and "
        "extrapolated; the engine is timed on all months or on --predict-timed-months and extrapolated (see the "
        "JSON), at each --predict-batch size, and the fastest is shown (months/call). 'x ref fp32': speed-up "
        "over the fastest fp32 reference loop, 'x ref same': over the fastest reference loop of the same "
        "precision, both in this run. 'shared-weight bound' rows: not a trainer but one network on every "
        "particle's copy of the batch (dense convolutions, same FLOP; the best that batching can reach with "
        "these kernels). TFLOP/s from model.md's FLOP counts. peak GB: "
        "torch.cuda.max_memory_allocated, synthetic data resident on the device included.")
    for row in out["table"]:
        if row["backbone"] == "rrdb" and not row["trainer"].startswith("reference") and row.get("s_per_epoch") \
                and row.get("predict_s"):
            log(f"rrdb {row['trainer']} against the published code's H100 times (issue 7: "
                f"{PUBLISHED['rrdb_epoch_s']} s/epoch, {PUBLISHED['predict_225_s']} s to predict): "
                f"{PUBLISHED['rrdb_epoch_s'] / row['s_per_epoch']:.1f}x per epoch, "
                f"{PUBLISHED['predict_225_s'] / row['predict_s']:.1f}x prediction")
    for backbone, ch in out.get("check", {}).items():
        log(f"check {backbone}: engine vs reference, one fp32 step (no TF32), S={ch['particles']}, grid "
            f"{ch['grid']}, chunk {ch['chunk']}: phi rel err {ch['phi_rel_err']:.2e}, BN running stats rel err "
            f"{ch['state_rel_err']:.2e}, predict rel err {ch['predict_rel_err']:.2e}, params after the step rel "
            f"err {ch['param_rel_err']:.2e} (update rel err {ch['update_rel_err']:.2e}; "
            f"{ch['update_sign_flips']} of {ch['update_elements']} elements moved the other way, all with "
            f"|phi| <= {ch['flip_max_phi_rel']:.1e} max|phi|) -> {'OK' if ch['ok'] else 'MISMATCH'}")
    for backbone, ch in out.get("check_compile", {}).items():
        if "error" in ch:
            log(f"check compiled {backbone}: {ch['error']}")
            continue
        log(f"check compiled {backbone}: compiled vs eager engine, fp32 (no TF32), S={ch['particles']}, grid "
            f"{ch['grid']}, chunk {ch['chunk']}: {ch['graphs']} graphs compiled (training + eval), log-joint "
            f"gradient rel err {ch['grad_rel_err']:.2e}, BN running stats {ch['state_rel_err']:.2e}, eval "
            f"predictions (full and ragged batch) {ch['predict_rel_err']:.2e} -> {'OK' if ch['ok'] else 'MISMATCH'}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    default_chunk = None if args.chunk in (None, "all", "0") else int(args.chunk)
    headline = Variant(args.precision, args.channels_last, args.compile, False, default_chunk)
    backbones = [b.strip().lower() for b in args.backbone.split(",") if b.strip()]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    out: dict = {
        "device": dev_name, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "tf32_conv": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": args.cudnn_benchmark,
        "config": {"particles": args.particles, "batch": args.batch, "months": args.months,
                   "predict_months": args.predict_months, "grid": args.grid, "in_channels": args.in_channels,
                   "features": args.features, "quick": args.quick, "seed": args.seed,
                   "argv": sys.argv[1:] if argv is None else list(argv)},
        "published": PUBLISHED, "check": {}, "results": {}, "table": [],
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out["table"] = build_table(out)
        out_path.write_text(json.dumps(out, indent=1))

    log(f"device {dev_name}, torch {torch.__version__}, backbones {backbones}")
    data = Data(args, device, args.seed)
    log(f"data resident on {device}: {data.nbytes() / 1e9:.2f} GB")
    for backbone in backbones:
        per_bb = getattr(args, f"{backbone}_variants") or args.variants
        variants = [parse_variant(v, default_chunk) for v in per_bb.split(",")] if per_bb else [headline]
        ref_text = getattr(args, f"{backbone}_ref_variants") or args.ref_variants or args.precision
        ref_specs = [parse_variant(v) for v in ref_text.split(",")]
        out["results"][backbone] = {"reference": {}, "engine": {}}
        if not args.no_check:
            t0 = time.perf_counter()
            c = check_same_update(args, backbone, variants[0], device)
            out["check"][backbone] = c
            log(f"[{backbone}] check ({time.perf_counter() - t0:.1f} s): phi rel err {c['phi_rel_err']:.2e}, "
                f"param rel err {c['param_rel_err']:.2e} ({c['update_sign_flips']} sign flips, |phi| <= "
                f"{c['flip_max_phi_rel']:.1e} max), BN stats {c['state_rel_err']:.2e}, "
                f"predict {c['predict_rel_err']:.2e} -> {'OK' if c['ok'] else 'MISMATCH'}")
            save()
        compiled_variant = next((v for v in variants if v.engine_compiled), None)
        if backbone in args.check_compile.split(",") and compiled_variant is not None:
            t0 = time.perf_counter()
            try:
                c = check_compiled(args, backbone, compiled_variant, device)
            except Exception as exc:  # record and go on with the timings
                c = {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "ok": False}
            out.setdefault("check_compile", {})[backbone] = c
            log(f"[{backbone}] compiled vs eager ({time.perf_counter() - t0:.0f} s): "
                + (c["error"] if "error" in c else
                   f"{c['graphs']} graphs, grad rel err {c['grad_rel_err']:.2e}, BN stats {c['state_rel_err']:.2e}, "
                   f"predict {c['predict_rel_err']:.2e} -> {'OK' if c['ok'] else 'MISMATCH'}"))
            save()
        if not args.skip_reference:
            for spec in ref_specs:
                name = spec.name.split("@")[0]
                t0 = time.perf_counter()
                try:
                    r = bench_reference(args, backbone, spec, data, device)
                except torch.cuda.OutOfMemoryError as exc:  # keep going with the other runs
                    r = {"error": f"out of memory: {str(exc)[:200]}"}
                out["results"][backbone]["reference"][name] = r
                if "error" not in r:
                    log(f"[{backbone}] reference {name} ({time.perf_counter() - t0:.0f} s): {r['s_per_step']:.3f} s/step, "
                        f"{r['s_per_epoch']:.2f} s/epoch, peak {fmt(r['peak_gb'])} GB, predict {r['predict']['s_total']:.1f} s")
                else:
                    log(f"[{backbone}] reference {name}: {r['error']}")
                save()
        for k, variant in enumerate(variants):
            t0 = time.perf_counter()
            try:
                r = bench_engine(args, backbone, variant, data, device, profile=args.profile and k == 0)
            except torch.cuda.OutOfMemoryError as exc:
                r = {"variant": variant.name, "error": f"out of memory: {str(exc)[:200]}"}
            except Exception as exc:  # e.g. compile failures: record and go on
                r = {"variant": variant.name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            out["results"][backbone]["engine"][variant.name] = r
            if "error" not in r:
                log(f"[{backbone}] {trainer_label(variant)} {variant.name} ({time.perf_counter() - t0:.0f} s): {r['s_per_step']:.3f} s/step, "
                    f"{r['s_per_epoch']:.2f} s/epoch (warm-up {r['warmup_s']:.1f} s), peak {fmt(r['peak_gb'])} GB, "
                    f"predict {r['predict']['s_total']:.2f} s, syncs/step {r['host_syncs_per_step']}")
            else:
                log(f"[{backbone}] {trainer_label(variant)} {variant.name}: {r['error']}")
            save()
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    save()
    print_table(out)
    log(f"wrote {out_path}")
    return out


if __name__ == "__main__":
    main()
