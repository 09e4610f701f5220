#!/usr/bin/env python3
"""Does bf16 autocast cost accuracy? fp32 and bf16 SVGD runs on the synthetic world, several seeds.

Two steps, so that the GPU machine needs nothing but torch:

    python -m bench.bench_precision export --tensors results/default/tensors.nc --out results/precision_data.pt
    python -m bench.bench_precision run --data results/precision_data.pt --out precision.json

``export`` crops the tensors file to a window (inputs as float16 to keep the file small) and keeps the
split labels; ``run`` trains the CBAM ensemble with each precision and seed exactly as gracefill.train
does (same engine settings, land-masked likelihood, data-informed log-beta start) and scores the test
months in fp32 eval mode: median per-cell NSE (detrended space) and per-value MNLP of the mixture.
It prints one table and writes JSON. The spread over seeds of the fp32 runs is the yardstick.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

TRAIN, TEST = 1, 2


def export(args) -> None:
    import xarray as xr

    ds = xr.open_dataset(args.tensors)
    lat0, lon0 = args.window[0], args.window[1]
    ds = ds.isel(lat=slice(lat0, lat0 + args.size[0]), lon=slice(lon0, lon0 + args.size[1]))
    payload = {
        "inputs": torch.as_tensor(ds["inputs"].transpose("time", "channel", "lat", "lon").values).half(),
        "target": torch.as_tensor(ds["target"].values),
        "land": torch.as_tensor(ds["land_mask"].values.astype(bool)),
        "split": torch.as_tensor(ds["split"].values.astype("int64")),
    }
    torch.save(payload, args.out)
    print(f"wrote {args.out}: inputs {tuple(payload['inputs'].shape)}, land cells {int(payload['land'].sum())}")


def scores(engine, x, y, valid, batch: int):
    """Median per-cell NSE and mean per-value NLP of the particle mixture on (x, y)."""
    outs = torch.cat([engine.predict(x[i:i + batch]).float() for i in range(0, x.shape[0], batch)], 1)
    mean = outs.mean(0)
    lb = engine.log_beta.detach().float().view(-1, 1, 1, 1, 1)
    log_dens = 0.5 * lb - 0.5 * math.log(2 * math.pi) - 0.5 * lb.exp() * (y - outs).square()
    nlp = -(torch.logsumexp(log_dens, 0) - math.log(outs.shape[0]))
    mnlp = float(nlp[valid].mean())
    yv = torch.where(valid, y, torch.nan)
    sse = ((mean - y).square() * valid).sum(0)
    climatology = torch.nanmean(yv, 0, keepdim=True)
    sst = ((y - climatology).square() * valid).sum(0)
    cells = valid.any(0) & (sst > 0)
    nse = 1 - sse[cells] / sst[cells]
    return float(nse.median()), mnlp


def run(args) -> None:
    from gracefill.nn import build_backbone
    from gracefill.svgd import SVGD, StudentTPrior

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    data = torch.load(args.data, weights_only=True)
    x = data["inputs"].float().to(device)
    target = data["target"][:, None].to(device)
    valid = torch.isfinite(target) & data["land"][None, None].to(device)
    y = torch.nan_to_num(target, nan=0.0)
    split = data["split"].to(device)
    train_idx, test_idx = torch.nonzero(split == TRAIN).ravel(), torch.nonzero(split == TEST).ravel()
    rows = []
    for precision in args.precisions:
        for seed in args.seeds:
            torch.manual_seed(seed)
            ensemble = build_backbone("cbam", x.shape[1], 1, args.particles, features=args.features).to(device)
            yt = y[train_idx][valid[train_idx]].double()
            log_beta0 = -math.log(float(yt.var())) + 0.1 * torch.randn(args.particles, dtype=torch.float64)
            engine = SVGD(ensemble, int(train_idx.numel()), weight_prior=StudentTPrior(1.0, 0.05),
                          autocast_dtype=torch.bfloat16 if precision == "bf16" else None,
                          log_beta_init=log_beta0)
            started = time.perf_counter()
            for epoch in range(1, args.epochs + 1):
                gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
                order = train_idx[torch.randperm(train_idx.numel(), generator=gen).to(device)]
                sse = torch.zeros((), device=device, dtype=torch.float64)
                n = torch.zeros_like(sse)
                for i in range(0, order.numel(), args.batch):
                    idx = order[i:i + args.batch]
                    stats = engine.step(x[idx], y[idx], valid[idx])
                    sse += stats["sse_mean"].double()
                    n += stats["n_y"].double()
                engine.scheduler_step(math.sqrt(float(sse / n)))
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            engine.autocast_dtype = None  # score every run in fp32
            nse, mnlp = scores(engine, x[test_idx], y[test_idx], valid[test_idx], args.batch)
            rows.append({"precision": precision, "seed": seed, "test_nse_median": nse, "test_mnlp": mnlp,
                         "train_seconds": seconds, "epochs": args.epochs})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for precision in args.precisions:
        part = [r for r in rows if r["precision"] == precision]
        for key in ("test_nse_median", "test_mnlp"):
            values = torch.tensor([r[key] for r in part], dtype=torch.float64)
            summary[f"{precision}_{key}"] = {"mean": float(values.mean()), "min": float(values.min()),
                                             "max": float(values.max())}
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = {"device": device_name, "torch": torch.__version__, "rows": rows, "summary": summary,
              "grid": list(x.shape[2:]), "particles": args.particles, "features": args.features}
    print(f"\n{'precision':>9} {'seed':>5} {'test NSE (median)':>18} {'test MNLP':>10} {'train s':>8}   device {device_name}")
    for r in rows:
        print(f"{r['precision']:>9} {r['seed']:>5} {r['test_nse_median']:>18.4f} {r['test_mnlp']:>10.4f} {r['train_seconds']:>8.1f}")
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export")
    p.add_argument("--tensors", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--window", type=int, nargs=2, default=[32, 0], help="first lat and lon index")
    p.add_argument("--size", type=int, nargs=2, default=[40, 96], help="cells in lat and lon")
    p = sub.add_parser("run")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--features", type=int, default=16)
    args = parser.parse_args()
    export(args) if args.command == "export" else run(args)


if __name__ == "__main__":
    main()
