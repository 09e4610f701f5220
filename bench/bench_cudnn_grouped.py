#!/usr/bin/env python
"""Which cuDNN settings run the RRDB's grouped 3 x 3 convolutions fastest? (issue 7)

Times the forward pass, the data gradient, the weight gradient and forward + backward of the four
dense-block convolutions (48..192 -> 48 per particle, 72 x 180, batch 12, a chunk of particles,
bf16) for each memory layout (NCHW, channels-last) and algorithm choice (cuDNN's heuristics;
``cudnn.benchmark`` with torch's default limit of 10 candidates; ``benchmark`` over all
candidates, ``benchmark_limit = 0``). Medians by ``triton.testing.do_bench`` (L2 flushed).
Prints one table and writes it as JSON.

    python -m bench.bench_cudnn_grouped --out bench/results/cudnn_grouped.json   # GPU
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
import triton.testing

SETTINGS = {  # name: (channels_last, cudnn.benchmark, cudnn.benchmark_limit)
    "nchw": (False, False, 10),
    "nchw+bench": (False, True, 10),
    "nchw+bench-all": (False, True, 0),
    "cl": (True, False, 10),
    "cl+bench": (True, True, 10),
    "cl+bench-all": (True, True, 0),
}


def dense_block_layers(args, device):
    """(cin, x, w, dy, gflop) of the four dense-block convolutions: bf16 input, weights and
    upstream gradient for a chunk of ``args.chunk`` particles, and the forward GFLOP."""
    H, W = (int(v) for v in args.grid.split("x"))
    B, n, nf = args.batch, args.chunk, args.features
    for mult in (1, 2, 3, 4):
        cin = mult * nf
        x = torch.randn(B, n * cin, H, W, device=device, dtype=torch.bfloat16)
        w = torch.randn(n * nf, cin, 3, 3, device=device, dtype=torch.bfloat16) / (3 * cin ** 0.5)
        dy = torch.randn(B, n * nf, H, W, device=device, dtype=torch.bfloat16)
        yield cin, x, w, dy, 2 * B * H * W * n * nf * cin * 9 / 1e9


def passes(x, w, dy, groups):
    """The four timed callables of one layer (inputs already in the layout of the setting)."""
    xg, wg = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    return {
        "forward": lambda: F.conv2d(x, w, padding=1, groups=groups),
        "input_grad": lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, padding=1, groups=groups),
        "weight_grad": lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, padding=1, groups=groups),
        "fwd_bwd": lambda: torch.autograd.grad(F.conv2d(xg, wg, padding=1, groups=groups), (xg, wg), dy),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--grid", default="72x180")
    ap.add_argument("--features", type=int, default=48)
    ap.add_argument("--chunk", type=int, default=6)
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--out", default="bench/results/cudnn_grouped.json")
    args = ap.parse_args(argv)
    unknown = set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        ap.error(f"--settings: unknown {', '.join(sorted(unknown))}; expected some of {', '.join(SETTINGS)}")
    dev = torch.device("cuda")
    n, nf = args.chunk, args.features
    torch.manual_seed(0)
    rows = []
    for cin, x, w, dy, gflop in dense_block_layers(args, dev):
        for name in args.settings.split(","):
            channels_last, bench, limit = SETTINGS[name]
            torch.backends.cudnn.benchmark, torch.backends.cudnn.benchmark_limit = bench, limit
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            calls = passes(*(t.contiguous(memory_format=fmt) for t in (x, w, dy)), n)
            row = dict(layer=f"{cin}->{nf}", chunk=n, setting=name, ms={}, tflops={})
            for p, fn in calls.items():
                ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
                row["ms"][p] = ms
                row["tflops"][p] = gflop * (3 if p == "fwd_bwd" else 1) / ms
            rows.append(row)
            print(f"{row['layer']:>8} {name:>15}: " + ", ".join(
                f"{p} {ms:.3f} ms ({row['tflops'][p]:.0f})" for p, ms in row["ms"].items()), flush=True)
    out = dict(device=torch.cuda.get_device_name(dev), torch=torch.__version__,
               cudnn=torch.backends.cudnn.version(), batch=args.batch, grid=args.grid, chunk=n, rows=rows)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    main()
