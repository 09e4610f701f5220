#!/usr/bin/env python
"""Where an RRDB training step spends its time, layer by layer, and what other formulations of
the slow layers would cost (issue 7).

Times forward + backward (bf16 autocast by default, as the paper configuration trains) of the
layers one dense residual block is made of, at the finest U-net level of the paper grid
(72 x 180 after the stride-2 input convolution, batch 12, a chunk of n particles, nf 48):

* the four grouped 3x3 dense convolutions (48, 96, 144 and 192 input channels per particle);
* the DAU's 1x1 merge (96 -> 48) as a grouped convolution and as a batched matmul;
* the DAU's spatial-attention 3x3 convolution (2 -> 1 per particle) as a grouped convolution
  and as unfold + batched matmul;
* the last up-sampling (72 x 180 -> 144 x 360, 96 -> 48 per particle) as a grouped 4 x 4
  transposed convolution, as a 3 x 3 convolution + pixel shuffle (sub-pixel) and as four
  2 x 2 convolutions + pixel shuffle (one per output pixel parity);
* whole DAU and dense-block modules of gracefill.nn, eager and compiled, NCHW and channels-last.

Prints one table (ms per call, and ms per training step when multiplied by the number of such
calls in the whole RRDB U-net for the 30 particles) and writes it as JSON.

    python -m bench.bench_layers --out bench/results/layers.json
    python -m bench.bench_layers --quick --device cpu       # tiny shapes, seconds, for tests
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F


from gracefill.nn.blocks import DAU, DenseResidualBlock
from gracefill.nn.layers import EnsembleActivation, EnsembleConvTranspose2d

# Calls per forward pass of the whole RRDB U-net (5 RRDBs of 3 dense blocks, 5 skip DAUs) at the
# finest level, where E1 and D1 run (2 RRDBs) and the skips of inc and E1 (2 DAUs). The coarser
# levels add 1/4 (E2, D2) and 1/16 (C) of that work, so the full step is ~1.3x these rows.
FINE_LEVEL_CALLS = {"conv3x3": 2 * 3, "dau": 2 * 8 + 2, "dense_block": 2 * 3, "up0": 1}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--grid", default="72x180", help="grid of the level timed (default: the finest level)")
    ap.add_argument("--features", type=int, default=48)
    ap.add_argument("--chunk", type=int, default=6, help="particles evaluated together")
    ap.add_argument("--particles", type=int, default=30, help="particles per step (for the per-step column)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled module rows")
    ap.add_argument("--forward-only", action="store_true", help="time forward passes without autograd (prediction)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU, seconds; used by the tests)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default="bench/results/layers.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.grid, args.features, args.chunk, args.particles = 2, "8x16", 8, 2, 4
        args.warmup, args.iters, args.no_compile = 1, 2, True
    return args


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device, precision):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_fwd_bwd(fn, inputs, args, device) -> float:
    """Median ms of forward + backward of ``fn(*inputs)`` (a random upstream gradient), or of
    the forward pass alone without autograd with ``--forward-only``."""
    def once():
        if args.forward_only:  # as in prediction: no autograd graph
            with torch.no_grad(), autocast(device, args.precision):
                fn(*inputs)
            return
        with autocast(device, args.precision):
            y = fn(*inputs)
        y.backward(torch.ones_like(y))

    for _ in range(args.warmup):
        once()
    times = []
    for _ in range(args.iters):
        sync(device)
        t0 = time.perf_counter()
        once()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def leaf(shape, device, channels_last=False):
    t = torch.randn(*shape, device=device)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_()


# ---------------------------------------------------------------- alternative formulations
def pointwise_as_matmul(x, weight, n):
    """Grouped 1x1 convolution as one batched matmul: (B, n*Cin, H, W), weight (n*Cout, Cin, 1, 1)."""
    B, _, H, W = x.shape
    w = weight.reshape(n, -1, weight.shape[1])                    # (n, Cout, Cin)
    y = torch.matmul(w, x.reshape(B, n, -1, H * W))               # (B, n, Cout, HW)
    return y.reshape(B, -1, H, W)


def small_conv_as_unfold(x, weight, n):
    """Grouped 3x3 convolution with few channels (2 -> 1 per particle) as unfold + matmul."""
    B, _, H, W = x.shape
    cols = F.unfold(x, 3, padding=1)                               # (B, n*Cin*9, HW)
    w = weight.reshape(n, weight.shape[0] // n, -1)                # (n, Cout, Cin*9)
    y = torch.matmul(w, cols.reshape(B, n, -1, H * W))             # (B, n, Cout, HW)
    return y.reshape(B, -1, H, W)


def upsample_as_parity_convs(x, weight, n):
    """Grouped 4 x 4, stride-2, padding-1 transposed convolution (weight (n*Cin, Cout, 4, 4)) as
    four grouped 2 x 2 convolutions, one per output pixel parity (a, b), and a pixel shuffle:
    output pixel (2i + a, 2j + b) correlates input rows i + a - 1 + t (t = 0, 1) with kernel rows
    3 - a - 2t, likewise for columns."""
    B, C, H, W = x.shape
    cin, cout = C // n, weight.shape[1]
    w = weight.reshape(n, cin, cout, 4, 4).transpose(1, 2).flip(-1, -2)   # kernel index k -> 3 - k
    xp = F.pad(x, (1, 1, 1, 1))
    ys = [F.conv2d(xp[:, :, a:a + H + 1, b:b + W + 1], w[..., a::2, b::2].reshape(n * cout, cin, 2, 2), groups=n)
          for a in (0, 1) for b in (0, 1)]
    return F.pixel_shuffle(torch.stack(ys, 2).reshape(B, n * cout * 4, H, W), 2)


def check_forms(device) -> dict:
    """Max relative error of each alternative against the grouped convolution (float64)."""
    g = torch.Generator().manual_seed(0)
    n, errs = 3, {}
    x = torch.randn(2, n * 8, 5, 7, generator=g, dtype=torch.float64).to(device)
    w = torch.randn(n * 4, 8, 1, 1, generator=g, dtype=torch.float64).to(device)
    ref = F.conv2d(x, w, groups=n)
    errs["pointwise_as_matmul"] = ((pointwise_as_matmul(x, w, n) - ref).abs().max() / ref.abs().max()).item()
    x = torch.randn(2, n * 2, 5, 7, generator=g, dtype=torch.float64).to(device)
    w = torch.randn(n, 2, 3, 3, generator=g, dtype=torch.float64).to(device)
    ref = F.conv2d(x, w, padding=1, groups=n)
    errs["small_conv_as_unfold"] = ((small_conv_as_unfold(x, w, n) - ref).abs().max() / ref.abs().max()).item()
    x = torch.randn(2, n * 6, 5, 7, generator=g, dtype=torch.float64).to(device)
    w = torch.randn(n * 6, 4, 4, 4, generator=g, dtype=torch.float64).to(device)
    ref = F.conv_transpose2d(x, w, stride=2, padding=1, groups=n)
    errs["upsample_as_parity_convs"] = ((upsample_as_parity_convs(x, w, n) - ref).abs().max() / ref.abs().max()).item()
    return errs


def rows_for(args, device):
    B, nf, n = args.batch, args.features, args.chunk
    H, W = (int(v) for v in args.grid.lower().split("x"))
    per_step = args.particles / n  # chunks per training step
    rows = []

    def add(layer, form, ms, calls):
        rows.append(dict(layer=layer, form=form, ms_per_call=round(ms, 3),
                         ms_per_step=round(ms * calls * per_step, 1)))
        print(f"  {layer}, {form}: {ms:.3f} ms", flush=True)  # progress (the table comes at the end)

    for cin_mult in (1, 2, 3, 4):
        cin = cin_mult * nf
        w = leaf((n * nf, cin, 3, 3), device)
        for cl in (False, True):
            x = leaf((B, n * cin, H, W), device, cl)
            ms = time_fwd_bwd(lambda x, w: F.conv2d(x, w, padding=1, groups=n), (x, w), args, device)
            add(f"conv3x3 {cin}->{nf}", "grouped conv" + (" (channels-last)" if cl else ""), ms,
                FINE_LEVEL_CALLS["conv3x3"])
        # particles paired (block-diagonal weight of 2 particles per group: twice the FLOP, wider
        # groups) and the whole chunk as one dense convolution (n times the FLOP)
        wider = {2: "pairs, block-diagonal (2x FLOP)", n: f"dense over chunk ({n}x FLOP)"}
        for per_group, label in wider.items():
            if n % per_group or per_group == 1:
                continue
            wg = leaf((n * nf, per_group * cin, 3, 3), device)
            for cl in (False, True):
                x = leaf((B, n * cin, H, W), device, cl)
                ms = time_fwd_bwd(lambda x, w, g=n // per_group: F.conv2d(x, w, padding=1, groups=g), (x, wg), args, device)
                add(f"conv3x3 {cin}->{nf}", label + (" (channels-last)" if cl else ""), ms, FINE_LEVEL_CALLS["conv3x3"])

    dau_calls = FINE_LEVEL_CALLS["dau"]
    w1 = leaf((n * nf, 2 * nf, 1, 1), device)
    for cl in (False, True):
        x = leaf((B, n * 2 * nf, H, W), device, cl)
        ms = time_fwd_bwd(lambda x, w: F.conv2d(x, w, groups=n), (x, w1), args, device)
        add(f"DAU merge 1x1 {2 * nf}->{nf}", "grouped conv" + (" (channels-last)" if cl else ""), ms, dau_calls)
    x = leaf((B, n * 2 * nf, H, W), device)
    add(f"DAU merge 1x1 {2 * nf}->{nf}", "batched matmul",
        time_fwd_bwd(lambda x, w: pointwise_as_matmul(x, w, n), (x, w1), args, device), dau_calls)

    ws = leaf((n, 2, 3, 3), device)
    for cl in (False, True):
        x = leaf((B, n * 2, H, W), device, cl)
        ms = time_fwd_bwd(lambda x, w: F.conv2d(x, w, padding=1, groups=n), (x, ws), args, device)
        add("DAU spatial 3x3 2->1", "grouped conv" + (" (channels-last)" if cl else ""), ms, dau_calls)
    x = leaf((B, n * 2, H, W), device)
    add("DAU spatial 3x3 2->1", "unfold + batched matmul",
        time_fwd_bwd(lambda x, w: small_conv_as_unfold(x, w, n), (x, ws), args, device), dau_calls)

    up = EnsembleConvTranspose2d(n, 2 * nf, nf, 4, 2, 1).to(device)
    for form, up.subpixel in {"grouped transposed conv": False, "3x3 conv + pixel shuffle": True}.items():
        x = leaf((B, n * 2 * nf, H, W), device)
        add(f"up-sampling 4x4 s2 {2 * nf}->{nf}", form, time_fwd_bwd(lambda x: up(x), (x,), args, device),
            FINE_LEVEL_CALLS["up0"])
    x, wu = leaf((B, n * 2 * nf, H, W), device), leaf((n * 2 * nf, nf, 4, 4), device)
    add(f"up-sampling 4x4 s2 {2 * nf}->{nf}", "four 2x2 convs + pixel shuffle",
        time_fwd_bwd(lambda x, w: upsample_as_parity_convs(x, w, n), (x, wu), args, device), FINE_LEVEL_CALLS["up0"])

    act = EnsembleActivation(n).to(device)
    particles = slice(None)
    for name, cls in (("DAU", DAU), ("dense block", DenseResidualBlock)):
        module = cls(n, nf).to(device)
        calls = dau_calls if cls is DAU else FINE_LEVEL_CALLS["dense_block"]
        forms = [("eager", False, False), ("eager channels-last", True, False)]
        if not args.no_compile:
            forms += [("compiled", False, True), ("compiled channels-last", True, True)]
        for form, cl, compiled in forms:
            fn = (lambda x, m=module: m(x, particles, act))
            if compiled:
                torch._dynamo.reset()
                fn = torch.compile(fn)
            x = leaf((B, n * nf, H, W), device, cl)
            t0 = time.perf_counter()
            ms = time_fwd_bwd(fn, (x,), args, device)
            add(name, form, ms, calls)
            if compiled:
                rows[-1]["compile_and_run_s"] = round(time.perf_counter() - t0, 1)
    return rows


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    check = check_forms(device)
    rows = rows_for(args, device)
    print(f"device: {name}; torch {torch.__version__}; {args.precision}; batch {args.batch}, grid {args.grid}, "
          f"nf {args.features}, chunk {args.chunk} of {args.particles} particles; "
          + ("forward only" if args.forward_only else "forward + backward"))
    print(f"{'layer':<24} {'form':<46} {'ms/call':>9} {'ms/step':>9}")
    for r in rows:
        print(f"{r['layer']:<24} {r['form']:<46} {r['ms_per_call']:>9.3f} {r['ms_per_step']:>9.1f}")
    print("alternative forms against the grouped convolution (float64, max rel. error): "
          + ", ".join(f"{k} {v:.1e}" for k, v in check.items()))
    out = dict(device=name, torch=torch.__version__, config=vars(args), check=check, rows=rows)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)
    return out


if __name__ == "__main__":
    main()
