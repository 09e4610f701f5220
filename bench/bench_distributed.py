#!/usr/bin/env python
"""Scaling of one SVGD ensemble over several GPUs of a node (gracefill.distributed).

Run under torchrun, one process per GPU, it times the training step of the sharded engine as
``gracefill.train`` drives it (synthetic tensors of the paper's shapes resident on each GPU:
144 training months of 21 x 144 x 360 inputs, batch 12, RRDB nf 48, S = 30 particles, bf16
autocast, particle chunk 6, torch.compile; the engine is built from the config exactly as
training builds it), extrapolates s/epoch from the timed steps (the slowest rank), times the
prediction of 225 months, and records the peak memory of every GPU. One process (no torchrun)
measures the single-GPU engine. Each call adds its world size's row to the JSON file ``--out``
(rows of other world sizes kept) and prints the table with the scaling efficiency
(1-GPU seconds per particle / (N x N-GPU seconds per particle)). A world size that does not
divide --particles runs the next multiple of it (said in the table: the particles column).

    # one GPU, then 2 and 4 (same --out); TORCHINDUCTOR_CACHE_DIR shared keeps compilations
    python -m bench.bench_distributed --out bench/results/results_distributed.json
    torchrun --standalone --nproc-per-node 2 -m bench.bench_distributed --out bench/results/results_distributed.json
    torchrun --standalone --nproc-per-node 4 -m bench.bench_distributed --out bench/results/results_distributed.json
    # or all in one call (each world size a torchrun of its own)
    python -m bench.bench_distributed --worlds 1,2,4 --out bench/results/results_distributed.json
    # tiny shapes on the CPU (gloo), seconds
    torchrun --standalone --nproc-per-node 2 -m bench.bench_distributed --quick --device cpu --out /tmp/d.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from gracefill import distributed
from gracefill.config import validate
from gracefill.train import build_engine, model_settings

QUICK = dict(backbone="cbam", features=4, particles=4, batch=4, months=8, predict_months=6, grid="16x16",
             in_channels=3, chunk=0, precision="fp32", compile=False, warmup=1, steps=2)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="rrdb")
    ap.add_argument("--features", type=int, default=48)
    ap.add_argument("--particles", type=int, default=30, help="all ranks together")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--months", type=int, default=144, help="training months (steps per epoch = ceil(months / batch))")
    ap.add_argument("--predict-months", type=int, default=225, help="0: no prediction timing")
    ap.add_argument("--predict-batch", type=int, default=8)
    ap.add_argument("--grid", default="144x360")
    ap.add_argument("--in-channels", type=int, default=21)
    ap.add_argument("--chunk", type=int, default=6, help="training particle chunk of each rank (0: all of its particles)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="torch.compile the network")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps (the compilation happens there)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps")
    ap.add_argument("--device", default="auto", help="auto, cuda or cpu (gloo)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worlds", default=None, help="e.g. 1,2,4: run each world size with torchrun, then print the table")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU in seconds)")
    ap.add_argument("--out", required=True, help="JSON file of the rows (other world sizes' rows are kept)")
    args = ap.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def log(*parts) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(*parts, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args) -> dict:
    """This world size's row (every rank measures; rank 0 returns the row, the others None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    particles = math.ceil(args.particles / world) * world
    local = particles // world
    cfg = validate({"model": {"backbone": args.backbone, "features": args.features, "particles": particles},
                    "training": {"device": args.device, "precision": args.precision, "compile": args.compile,
                                 "particle_chunk": min(args.chunk, local) if args.chunk else 0,
                                 "batch_size": args.batch},
                    # as configs/paper.yaml: every particle of a rank at once when predicting
                    "prediction": {"batch_size": args.predict_batch, "particle_chunk": local}}, relations=False)
    ranks = distributed.start(args.device) if world > 1 else None
    device = ranks.device if ranks else torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available()
                                                     else "cpu")
    h, w = (int(v) for v in args.grid.lower().split("x"))
    g = torch.Generator().manual_seed(args.seed)
    n_all = max(args.months, args.predict_months)
    inputs = torch.randn(n_all, args.in_channels, h, w, generator=g).to(device)
    land = torch.nn.functional.avg_pool2d(torch.randn(1, 1, h, w, generator=g), 5, 1, 2) > 0.0
    target = torch.randn(args.months, 1, h, w, generator=g).masked_fill(~land, 0.0).to(device)
    valid = land.expand(args.months, 1, h, w).contiguous().to(device)
    settings = model_settings(cfg, args.in_channels, (h, w))
    torch.manual_seed(args.seed)
    if ranks is None:
        engine = build_engine(settings, cfg, args.months, device, log_beta_init=2.0, compile_network=args.compile)
    else:
        engine = distributed.build_sharded_engine(settings, cfg, args.months, ranks,
                                                  log_beta_init=torch.full((particles,), 2.0, dtype=torch.float64),
                                                  same_init=False, compile_network=args.compile)
    theta_width = int(engine.theta().shape[1])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def steps(n: int, epoch: int) -> None:
        order = torch.randperm(args.months, generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch))
        order = order.to(device)
        done = 0
        while done < n:
            for start in range(0, args.months, args.batch):
                if done == n:
                    break
                idx = order[start:start + args.batch]
                engine.step(inputs[idx], target[idx], valid[idx])
                done += 1

    def timed(fn) -> float:
        sync(device)
        if ranks:
            ranks.barrier()
        t0 = time.perf_counter()
        fn()
        sync(device)
        seconds = torch.tensor(time.perf_counter() - t0, dtype=torch.float64, device=device)
        if ranks:
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the group is as fast as its slowest rank
        return float(seconds)

    log(f"world {world}: {particles} particles ({local} per rank), {args.backbone} nf {args.features}, "
        f"{args.precision}{' compiled' if args.compile else ''}, chunk {cfg['training']['particle_chunk'] or local}, "
        f"device {device.type}")
    warmup_s = timed(lambda: steps(args.warmup, 0))
    step_s = timed(lambda: steps(args.steps, 1)) / args.steps
    steps_per_epoch = math.ceil(args.months / args.batch)
    train_peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")

    predict_s = predict_warmup_s = None
    if args.predict_months:
        def predict(n: int) -> None:
            for start in range(0, n, args.predict_batch):
                out = engine.predict(inputs[start:min(start + args.predict_batch, n)])
                out.float().mean(0)

        predict_warmup_s = timed(lambda: predict(min(args.predict_batch, args.predict_months)))
        predict_s = timed(lambda: predict(args.predict_months))
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    peaks = torch.tensor([train_peak, peak], dtype=torch.float64, device=device)
    if ranks:
        gathered = distributed.gather(peaks[None], world)
        distributed.stop()
    else:
        gathered = peaks[None]
    row = {"world": world, "particles": particles, "particles_per_rank": local, "backbone": args.backbone,
           "features": args.features, "grid": [h, w], "batch": args.batch, "months": args.months,
           "precision": args.precision, "compile": args.compile, "chunk": cfg["training"]["particle_chunk"] or local,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "warmup_s": warmup_s, "warmup_steps": args.warmup, "timed_steps": args.steps, "s_per_step": step_s,
           "steps_per_epoch": steps_per_epoch, "s_per_epoch": step_s * steps_per_epoch,
           "predict_months": args.predict_months, "predict_s": predict_s, "predict_warmup_s": predict_warmup_s,
           "train_peak_gb_per_gpu": none_for_nan(gathered[:, 0].tolist()),
           "peak_gb_per_gpu": none_for_nan(gathered[:, 1].tolist()),
           # theta and G of all particles, fp32, gathered by every rank at every step
           "parameters_per_particle": theta_width, "gathered_mb_per_step": 2 * particles * theta_width * 4 / 1e6}
    return row if (ranks is None or ranks.writer) else None


def none_for_nan(values: list[float]) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values]


def table(rows: list[dict]) -> str:
    """s/epoch, prediction, peak memory and the scaling efficiency against the 1-GPU row."""
    rows = sorted(rows, key=lambda r: r["world"])
    one = next((r for r in rows if r["world"] == 1), None)
    lines = ["| GPUs | particles | s/epoch | speed-up | efficiency | predict s | peak GB per GPU (max) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        per_particle = r["s_per_epoch"] / r["particles"]
        if one:
            speedup = (one["s_per_epoch"] / one["particles"]) / per_particle
            eff = f"{speedup / r['world']:.0%}"
            speed = f"{speedup:.2f}x"
        else:
            eff = speed = "n/a"
        pred = "n/a" if r.get("predict_s") is None else f"{r['predict_s']:.2f}"
        peaks = [p for p in r["peak_gb_per_gpu"] if p is not None]
        lines.append(f"| {r['world']} | {r['particles']} | {r['s_per_epoch']:.2f} | {speed} | {eff} | {pred} | "
                     f"{f'{max(peaks):.1f}' if peaks else 'n/a'} |")
    lines.append("speed-up and efficiency per particle-epoch against 1 GPU: (t1 / S1) / (tN / SN), divided by N")
    return "\n".join(lines)


def save(row: dict, path: Path) -> list[dict]:
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if r["world"] != row["world"]] + [row]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, path)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.worlds:
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        i = rest.index("--worlds")
        rest = rest[:i] + rest[i + 2:]
        for world in (int(w) for w in args.worlds.split(",")):
            cmd = ([sys.executable, __file__] if world == 1 else
                   [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world),
                    __file__])
            code = subprocess.call([*cmd, *rest])
            if code:
                print(f"world {world} failed (exit {code})", file=sys.stderr)
                return code
        print(table(json.loads(out.read_text())))
        return 0
    row = measure(args)
    if row is not None:
        rows = save(row, out)
        log(json.dumps(row))
        log(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
