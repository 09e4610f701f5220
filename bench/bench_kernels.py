"""Seconds per SVGD step and peak memory of each kernel (training.svgd_kernel) on one network.

Every kernel steps the same ensemble from the same initialisation on one random mini-batch:
``rbf`` (all parameters, the paper), ``last_layer``, ``function`` (function space: one more
forward pass a step) and ``none`` (a deep ensemble). Prints a table and writes it as JSON.

    python -m bench.bench_kernels                                  # the default run's network, CPU
    python -m bench.bench_kernels --backbone rrdb --features 48 --particles 30 --grid 144 360 \\
        --channels 21 --chunk 6 --precision bf16 --out $OUT/kernels.json       # the paper's, GPU
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gracefill.nn import build_backbone
from gracefill.svgd import SVGD

KERNELS = ("rbf", "last_layer", "function", "none")


def time_kernel(kernel: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Mean seconds per step after the warm-up steps, and the peak GPU memory (GB; NaN on the CPU)."""
    torch.manual_seed(0)
    ensemble = build_backbone(args.backbone, args.channels, 1, args.particles, features=args.features,
                              activation="prelu").to(device)
    engine = SVGD(ensemble, 144, kernel=kernel, particle_chunk=args.chunk or None, log_beta_init=0.0,
                  autocast_dtype=torch.bfloat16 if args.precision == "bf16" else None)
    generator = torch.Generator().manual_seed(1)
    h, w = args.grid
    x = torch.randn(args.batch, args.channels, h, w, generator=generator).to(device)
    y = torch.randn(args.batch, 1, h, w, generator=generator).to(device)
    mask = (torch.rand(1, 1, h, w, generator=generator) > 0.7).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        engine.step(x, y, mask)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        engine.step(x, y, mask)
    sync()
    seconds = (time.perf_counter() - started) / args.steps
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return {"kernel": kernel, "seconds_per_step": seconds, "peak_gb": peak}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="cbam", choices=["cbam", "rrdb"])
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--channels", type=int, default=30, help="input channels (30: the memory preset, 3 lags)")
    parser.add_argument("--grid", type=int, nargs=2, default=[72, 180], metavar=("LAT", "LON"))
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--chunk", type=int, default=2, help="particles at a time (0 = all)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="JSON file of the rows")
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    rows = [time_kernel(kernel, args, device) for kernel in args.kernels]
    base = next((r["seconds_per_step"] for r in rows if r["kernel"] == "rbf"), rows[0]["seconds_per_step"])
    print(f"{args.backbone} nf {args.features}, {args.particles} particles (chunks of {args.chunk or 'all'}), "
          f"batch {args.batch}, {args.grid[0]} x {args.grid[1]}, {args.precision}, {device}")
    print(f"{'kernel':<12}{'s/step':>10}{'vs rbf':>8}{'peak GB':>9}")
    for row in rows:
        row["ratio_to_rbf"] = row["seconds_per_step"] / base
        print(f"{row['kernel']:<12}{row['seconds_per_step']:>10.4f}{row['ratio_to_rbf']:>8.2f}{row['peak_gb']:>9.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
