"""``gracefill <command> ...``: the entry points the Snakemake rules call, one per rule.

Each command parses its arguments (declared beside it with :func:`gracefill.commands.command`),
reads its inputs, calls the library and writes its outputs atomically. Errors caused by inputs
print one line (``gracefill <command>: error: ...``) and exit with status 1. The real sources'
download and normalisation commands live in :mod:`gracefill.sources.cli`.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from gracefill import __version__, commands
from gracefill import config as config_mod
from gracefill import months as mo
from gracefill.commands import NONE, arg, command, load_config
from gracefill.figures import FIGURES
from gracefill.io import UserError, blame, open_dataset, read_csv, stop_with_launcher, write_csv, write_netcdf
from gracefill.sources import cli as sources_cli  # registers the real sources' commands first (the data flow's order)

log = logging.getLogger("gracefill")


def _period(cfg: dict) -> pd.DatetimeIndex:
    return mo.month_range(cfg["period"]["start"], cfg["period"]["end"])


def _read_fields(files, names, months: pd.DatetimeIndex, what: str, **open_kwargs):
    """The regridded ``<variable>.nc`` files of ``names`` among ``files`` (--fields), each on
    ``months``; one line naming the file when a variable or a month of ``what`` is missing.
    Returns ({stem: path} of every file, {name: DataArray})."""
    paths = {Path(p).stem: Path(p) for p in files}
    missing = [name for name in names if name not in paths]
    if missing:
        raise UserError(f"--fields: no file for {', '.join(missing)} (expected files named <variable>.nc)")
    fields = {}
    for name in names:
        path = paths[name]
        ds = open_dataset(path, required=(name,), **open_kwargs)
        da = ds[name].assign_coords(time=mo.to_month_start(ds["time"].values))
        absent = months.difference(pd.DatetimeIndex(da["time"].values))
        if len(absent):
            raise UserError(f"{path}: {name} lacks {len(absent)} month(s) of {what}, first {absent[0]:%Y-%m}")
        fields[name] = da.sel(time=months)
    return paths, fields


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _configure_torch_cpu(threads: int | None) -> None:
    """torch on the CPU: its intra-op threads follow the rule's ``threads`` (Snakemake caps them at --cores).

    Denormal floats are flushed to zero on the CPU: an epoch of the default run is 7-10 % faster
    on a 2-core CPU with the same training error to the printed digits (2026-12-05), since
    values below 1.2e-38 would otherwise take the processor's slow path.
    """
    import torch

    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)
        log.info("torch uses %d CPU threads", threads)


def _log_gpu_peak() -> None:
    """The peak GPU memory the command allocated (torch's allocator), when it ran on a GPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        log.info("peak GPU memory allocated: %.2f GB (reserved %.2f GB)", torch.cuda.max_memory_allocated() / 1e9,
                 torch.cuda.max_memory_reserved() / 1e9)


TORCH_THREADS = arg("--threads", type=_positive_int,
                    help="CPU threads of torch (the rule's threads; default: torch's)")

TRAIN_TENSORS = ("inputs", "target", "land_mask", "split", "observed", "target_trend_offset",
                 "target_trend_slope", "month_index")

GRID_HELP = "target grid (grid.nc of build_grid)"
TENSORS_HELP = "tensors.nc of build_tensors"
RECONSTRUCTION_HELP = "reconstruction.nc of predict"
NO_PROGRESS = arg("--no-progress", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------- commands


@command(arg("--output", required=True, help="grid file to write (NetCDF: lat, lon, land_mask, cell_area)"))
def build_grid(args) -> None:
    """Target grid with land mask and cell areas."""
    from gracefill.grid import GridSpec, build_grid as make_grid

    cfg = load_config(args)
    ds = make_grid(GridSpec.from_config(cfg["grid"]), cfg["grid"]["min_land_fraction"])
    ds.attrs.update(config_mod.provenance(cfg, [], args.command))
    write_netcdf(ds, args.output)
    log.info("grid %s: %d land cells", ds["land_mask"].shape, int(ds["land_mask"].sum()))


@command(arg("--source", required=True, help="normalised raw NetCDF file that holds --variable"),
         arg("--variable", required=True, help="name of the variable to regrid, e.g. precipitation"),
         arg("--grid", required=True, help=GRID_HELP),
         arg("--output", required=True, help="regridded file to write (<variable>.nc)"),
         arg("--threads", type=_positive_int, help="dask threads (the rule's threads; default: every core)"),
         config=NONE)
def regrid(args) -> None:
    """Conservatively regrid one variable of a normalised source file, streaming with dask."""
    from dask.diagnostics import ProgressBar

    from gracefill.regrid import open_chunked, regrid_conservative

    grid = open_dataset(args.grid, required=("lat", "lon", "land_mask"))
    open_dataset(args.source, required=(args.variable,)).close()
    da = open_chunked(args.source, args.variable)
    with blame(args.source):
        out = regrid_conservative(da, grid)
    ds = out.to_dataset()
    ds.attrs.update({"title": f"{args.variable} regridded conservatively to the target grid",
                     "source_files": Path(args.source).name, "history": config_mod.history_line(args.command)})
    import dask

    with ProgressBar(minimum=5, out=sys.stderr), dask.config.set(scheduler="threads", num_workers=args.threads):
        write_netcdf(ds, args.output)
    log.info("regridded %s %s -> %s", args.variable, dict(da.sizes), dict(out.sizes))


@command(arg("--fields", nargs="+", required=True, help="regridded <variable>.nc files"),
         arg("--output", required=True, help="predictors file to write (predictors.nc)"))
def build_predictors(args) -> None:
    """The seven predictors, anomalies and trends fitted on the training months only."""
    from gracefill import predictors as pr

    cfg = load_config(args)
    months = _period(cfg)
    paths, fields = _read_fields(args.fields, pr.REQUIRED_FIELDS, months, "the period", chunks={"lat": 64, "lon": 256})
    baseline = mo.in_window(months, cfg["split"]["train_start"], cfg["split"]["train_end"])
    with blame(', '.join(map(str, paths.values()))):
        ds = pr.build_predictors(fields, baseline, cfg["predictors"]["names"]).compute()
    if cfg["predictors"]["detrend"]:
        ds = pr.detrend_predictors(ds, cfg["predictors"]["names"], baseline)
    ds["time"] = mo.time_coord(months)
    ds.attrs.update({"title": "gracefill predictors", "baseline": f"{cfg['split']['train_start']}..{cfg['split']['train_end']}",
                     "detrended": int(cfg["predictors"]["detrend"]), **config_mod.provenance(cfg, list(paths.values()), args.command)})
    write_netcdf(ds, args.output)
    log.info("predictors %s on %s", ", ".join(cfg["predictors"]["names"]), dict(ds.sizes))


@command(arg("--grid", required=True, help=GRID_HELP),
         arg("--predictors", required=True, help="predictors.nc of build_predictors"),
         arg("--target", required=True, help="regridded GRACE TWSA (twsa.nc)"),
         arg("--truth", help="regridded true TWSA of the synthetic world (twsa_true.nc), kept to score the gap"),
         arg("--output", required=True, help="tensors file to write (tensors.nc)"))
def build_tensors(args) -> None:
    """Lagged inputs, detrended target, masks and split labels in one NetCDF file."""
    from gracefill.dataset import build_tensors as make_tensors

    cfg = load_config(args)
    grid = open_dataset(args.grid, required=("land_mask", "cell_area"))
    predictors = open_dataset(args.predictors, required=tuple(cfg["predictors"]["names"]))
    target = open_dataset(args.target, required=("twsa",))["twsa"]
    truth = open_dataset(args.truth, required=("twsa_true",))["twsa_true"] if args.truth else None
    with blame(args.target):
        ds = make_tensors(predictors.load(), target.load(), grid["land_mask"], grid["cell_area"], cfg,
                          truth=truth.load() if truth is not None else None)
    if ds.attrs["empty_target_months"] != "none":
        log.warning("%s: month(s) %s have no value on land; they count as missing (not trained on, not scored)",
                    args.target, ds.attrs["empty_target_months"])
    inputs = [args.grid, args.predictors, args.target] + ([args.truth] if args.truth else [])
    ds.attrs.update(config_mod.provenance(cfg, inputs, args.command))
    # on disk channel first (CF 2.4: a dim that is not T, Z, Y or X left of them); readers go by dim name
    write_netcdf(ds.assign(inputs=ds["inputs"].transpose("channel", "time", "lat", "lon")), args.output)
    log.info("tensors: inputs %s; months train %d, test %d, gap %d, missing %d", dict(ds["inputs"].sizes),
             ds.attrs["train_months"], ds.attrs["test_months"], ds.attrs["gap_months"], ds.attrs["missing_months"])


@command(arg("--tensors", required=True, help=TENSORS_HELP),
         arg("--model", required=True, help="final checkpoint (model.pt)"),
         arg("--log-csv", required=True, help="per-epoch training log"),
         arg("--epochs-from-folds", nargs="*", default=[], metavar="LOG",
             help="the validation folds' training_log.csv: train for the epoch count whose validation "
                  "RMSE they prefer, at most training.epochs (training.select_epochs: folds)"),
         arg("--lr-from-folds", nargs="*", default=[], metavar="LOG",
             help="the validation folds' training_log.csv: follow their learning rates epoch by epoch "
                  "(their median; training.scheduler.metric: validation)"),
         arg("--validation-fold", action="store_true",
             help="the tensors' test months are a validation fold's held-out months: with "
                  "training.scheduler.metric validation they drive the learning-rate scheduler"),
         NO_PROGRESS, TORCH_THREADS,
         arg("--stop-with-launcher", action="store_true",
             help="stop when the process that started this one (e.g. Snakemake) is gone"))
def train(args) -> None:
    """Train the Bayesian CNN with SVGD; resumes from the run's last checkpoint."""
    from gracefill import distributed
    from gracefill import train as tr

    cfg = load_config(args)
    _configure_torch_cpu(args.threads)
    if args.epochs_from_folds:
        logs = [read_csv(path, required=("epoch", "test_rmse")) for path in args.epochs_from_folds]
        with blame(", ".join(args.epochs_from_folds)):
            epochs, table = tr.select_epochs(logs, cfg["training"]["epochs"])
        log.info("epochs chosen on %d validation folds: %d of at most %d (mean validation RMSE over each "
                 "fold's best, by scored epoch: %s)", len(logs), epochs, cfg["training"]["epochs"],
                 ", ".join(f"{e}: {v:.3f}" for e, v in zip(table["epoch"], table["relative_validation_rmse"])))
        cfg["training"]["epochs"] = epochs
    lr_factors = None
    if args.lr_from_folds:
        logs = [read_csv(path, required=("epoch", "lr")) for path in args.lr_from_folds]
        with blame(", ".join(args.lr_from_folds)):
            lr_factors = tr.fold_lr_factors(logs, cfg["training"]["epochs"], cfg["training"]["lr"])
        log.info("learning rate after each epoch, from %d validation folds: training.lr times %s", len(logs),
                 ", ".join(f"{f:.3g}" for f in lr_factors))
    ds = open_dataset(args.tensors, required=TRAIN_TENSORS)
    out = Path(args.model)
    checkpoint = out.parent / "checkpoint.pt"
    run_cfg = config_mod.subset(cfg, "seed", "model", "training")
    # how many processes share the particles changes no result: a checkpoint resumes on any of them
    run_cfg["training"] = {key: value for key, value in run_cfg["training"].items() if key != "devices"}
    run_identity = {"cfg": run_cfg, "tensors": [ds.attrs.get("config_hash"), Path(args.tensors).stat().st_size]}
    if lr_factors is not None:  # a schedule learned on other folds' runs is not the same run
        run_identity["lr_factors"] = lr_factors
    run_hash = config_mod.config_hash(run_identity)
    # started by torchrun with several processes: the particles are sharded over them, rank 0 writes
    with distributed.process_group(cfg["training"]["device"]) as ranks, blame(args.tensors), \
            stop_with_launcher(args.stop_with_launcher):
        run = tr.train if ranks is None else functools.partial(distributed.train_sharded, ranks=ranks)
        payload, history = run(ds.load(), cfg, checkpoint_path=checkpoint, config_hash=run_hash,
                               progress=not args.no_progress and (ranks is None or ranks.writer),
                               log_path=Path(args.log_csv), validation_fold=args.validation_fold,
                               lr_factors=lr_factors)
    _log_gpu_peak()
    if ranks is not None and not ranks.writer:
        return
    tr.save_checkpoint(out, payload)
    tr.write_log(history, Path(args.log_csv))
    for done in (checkpoint, tr.previous_checkpoint(checkpoint)):
        done.unlink(missing_ok=True)
    last = history[-1]
    log.info("trained %d epochs: train RMSE %.4g, test RMSE %.4g, test R2 %.3f", last["epoch"],
             last["train_rmse"], last["test_rmse"], last["test_r2"])


@command(arg("--tensors", required=True, help=TENSORS_HELP),
         arg("--model", required=True, help="trained ensemble (model.pt of train)"),
         arg("--output", required=True, help="reconstruction to write (reconstruction.nc)"),
         arg("--calibration-folds", nargs="*", default=[],
             help="reconstruction.nc of each validation fold: calibrate the spread on them "
                  "(prediction.calibration: folds)"),
         NO_PROGRESS, TORCH_THREADS)
def predict(args) -> None:
    """Predictive mean and standard deviations for every month, trend added back."""
    from gracefill import calibration as ca
    from gracefill import distributed
    from gracefill import predict as pr
    from gracefill.train import load_checkpoint

    cfg = load_config(args)
    _configure_torch_cpu(args.threads)
    ds = open_dataset(args.tensors, required=TRAIN_TENSORS)
    checkpoint = load_checkpoint(Path(args.model))
    with distributed.process_group(cfg["training"]["device"]) as ranks, blame(args.model):
        out = pr.reconstruct(ds.load(), checkpoint, cfg, save_samples=cfg["prediction"]["save_samples"],
                             progress=not args.no_progress and (ranks is None or ranks.writer), ranks=ranks)
    _log_gpu_peak()
    if ranks is not None and not ranks.writer:
        return
    folds = args.calibration_folds if cfg["prediction"]["calibration"] == "folds" else []
    if folds:
        fold_recs = [open_dataset(f, required=("twsa", "twsa_std", "observed_twsa", "split")).load() for f in folds]
        with blame(", ".join(folds)):
            calibration = ca.fit_calibration(fold_recs, cfg["prediction"]["calibration_lead_bin_months"],
                                             model=cfg["prediction"]["calibration_model"],
                                             tail_level=cfg["prediction"]["calibration_tail_level"],
                                             family=cfg["prediction"]["calibration_family"],
                                             pooling_km=cfg["prediction"]["calibration_pooling_km"])
        out = ca.apply_calibration(out, calibration)
        log.info("spread calibrated on %d folds (%s errors): lead factors %s; degrees of freedom %g", len(folds),
                 calibration.attrs["model"], ", ".join(f"{v:.2f}" for v in calibration["lead_factor"].values),
                 calibration.attrs["dof"])
    out.attrs.update(config_mod.provenance(cfg, [args.tensors, args.model, *folds], args.command))
    write_netcdf(out, args.output)


@command(arg("--tensors", required=True, help=TENSORS_HELP),
         arg("--fields", nargs="+", required=True,
             help="regridded precipitation.nc, evaporation.nc, runoff.nc and land_water_storage.nc"),
         arg("--output", required=True, help="baseline predictions to write (baselines.nc)"))
def baselines(args) -> None:
    """Climatology + trend, per-cell regressions (lagged inputs, memory features) and the land model."""
    from gracefill.analysis import baseline_predictions
    from gracefill.predictors import MEMORY_FIELDS

    cfg = load_config(args)
    tensors = open_dataset(args.tensors, required=TRAIN_TENSORS).load()
    months = pd.DatetimeIndex(tensors["time"].values)
    _, fields = _read_fields(args.fields, MEMORY_FIELDS, months, "the tensors")
    fields = {name: da.load() for name, da in fields.items()}
    ev = cfg["evaluation"]
    with blame(args.tensors):
        out = baseline_predictions(tensors, fields, ev["regression_ridge"], ev["memory_regression"])
    out.attrs.update(config_mod.provenance(cfg, [args.tensors, *args.fields], args.command))
    write_netcdf(out, args.output)


@command(arg("--reconstruction", required=True, help=RECONSTRUCTION_HELP),
         arg("--baselines", required=True, help="baselines.nc of baselines"),
         arg("--grid", required=True, help="target grid with cell areas (grid.nc of build_grid)"),
         arg("--maps", required=True, help="score maps to write (NetCDF)"),
         arg("--table", required=True, help="scores table to write (CSV)"),
         arg("--calibration", required=True, help="interval coverage table to write (CSV)"),
         arg("--spread-skill", required=True, help="spread-skill table to write (CSV)"),
         arg("--scores-by-lead", help="scores by side of the training window and distance to it (0-5, 5-10, "
                                      "10-20, 20+ years) to write (CSV)"),
         arg("--spreads", required=True, help="the baselines' spreads fitted on the validation folds (NetCDF)"),
         arg("--fold-reconstructions", nargs="+", required=True, help="reconstruction.nc of each validation fold"),
         arg("--fold-baselines", nargs="+", required=True, help="baselines.nc of each validation fold, same order"))
def evaluate(args) -> None:
    """Scores of the BCNN and the baselines on every period: maps, a tidy table, calibration,
    spread-skill and the baselines' spreads fitted on the validation folds."""
    from gracefill.analysis import evaluate as run_evaluation

    cfg = load_config(args)
    required = ("twsa", "twsa_std", "observed_twsa", "split", "log_beta")
    rec = open_dataset(args.reconstruction, required=required).load()
    base = open_dataset(args.baselines).load()
    area = open_dataset(args.grid, required=("cell_area", "land_mask"))["cell_area"].load()
    if len(args.fold_reconstructions) != len(args.fold_baselines):
        raise UserError(f"--fold-reconstructions ({len(args.fold_reconstructions)} files) and --fold-baselines "
                        f"({len(args.fold_baselines)} files): expected one of each per validation fold")
    folds = [(open_dataset(r, required=required).load(), open_dataset(b).load())
             for r, b in zip(args.fold_reconstructions, args.fold_baselines)]
    ev = cfg["evaluation"]
    with blame(args.reconstruction):
        table, maps, calibration, spread, spreads, by_lead = run_evaluation(
            rec, base, area, ev["interval_levels"], ev["spread_skill_bins"], folds, ev["spread_lead_bin_months"],
            ev["spread_family"], ev["spread_pooling_km"])
    inputs = [args.reconstruction, args.baselines, *args.fold_reconstructions, *args.fold_baselines]
    maps.attrs.update({"title": "gracefill score maps (validation folds and test months vs GRACE; gap and missing "
                                "months vs truth where known)", **config_mod.provenance(cfg, inputs, args.command)})
    write_netcdf(maps, args.maps)
    spreads.attrs.update(config_mod.provenance(cfg, args.fold_reconstructions + args.fold_baselines, args.command))
    write_netcdf(spreads, args.spreads)
    for frame, path in ((table, args.table), (calibration, args.calibration), (spread, args.spread_skill)):
        write_csv(frame, path)
    if args.scores_by_lead:
        columns = ["side", "lead_years", "first_month", "last_month", "reference", "method", "period", "months"]
        write_csv(by_lead if len(by_lead) else pd.DataFrame(columns=columns), args.scores_by_lead)
    log.info("scores:\n%s", table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@command(arg("--reconstruction", required=True, help=RECONSTRUCTION_HELP),
         arg("--fields", required=True, help="drought fields to write (deficit, WSDI, categories, probability; NetCDF)"),
         arg("--events", required=True, help="drought events to write (CSV)"),
         arg("--detection", required=True, help="hit rate and false-alarm ratio to write (CSV)"),
         arg("--truth-direct", help="the synthetic drought's direct part (twsa_direct_deficit.nc), scored apart"))
def drought(args) -> None:
    """WSDI, drought categories, probabilities and events of the gap-filled series."""
    from gracefill.analysis import analyse_droughts

    cfg = load_config(args)
    rec = open_dataset(args.reconstruction, required=("twsa", "twsa_std", "observed_twsa", "month_flag", "split")).load()
    direct = None
    if args.truth_direct:
        direct = open_dataset(args.truth_direct, required=("twsa_direct_deficit",))["twsa_direct_deficit"].load()
    with blame(args.reconstruction):
        fields, events, detection = analyse_droughts(rec, cfg, direct)
    fields.attrs.update({"title": "gracefill drought analysis", **config_mod.provenance(cfg, [args.reconstruction], args.command)})
    write_netcdf(fields, args.fields)
    write_csv(events, args.events)
    write_csv(detection if detection is not None else
              pd.DataFrame(columns=["period", "threshold", "hit_rate", "false_alarm_ratio"]), args.detection)
    log.info("%d drought events; detection in the gap: %s", len(events),
             "n/a (no truth)" if detection is None else detection.to_dict("records"))


@command(arg("--reconstruction", required=True, help=RECONSTRUCTION_HELP),
         arg("--output", required=True, help="product file to write (gracefill_twsa.nc)"),
         arg("--quantiles", nargs="+", type=float, default=[0.05, 0.5, 0.95], metavar="P",
             help="probability levels of the quantiles of reconstructed values (default 0.05 0.5 0.95)"),
         arg("--chunk-months", type=int, default=12, help="months per chunk on disk along time (default 12)"))
def build_product(args) -> None:
    """The product file: gap-filled TWSA with its standard deviation, quantiles and month flags."""
    from gracefill import product

    cfg = load_config(args)
    levels = sorted(args.quantiles)
    if any(not 0 < q < 1 for q in levels) or len(set(levels)) < len(levels):
        raise UserError(f"--quantiles: expected distinct levels strictly between 0 and 1, got {args.quantiles}")
    if args.chunk_months < 1:
        raise UserError(f"--chunk-months: expected a whole number of months >= 1, got {args.chunk_months}")
    rec = open_dataset(args.reconstruction, required=product.REQUIRED)
    with blame(args.reconstruction):
        out = product.build_product(rec, levels)
    sources = cfg["sources"]
    out.attrs.update({"source": f"GRACE / GRACE-FO: {sources['target']}; predictors: {sources['predictors']}; "
                                f"reconstruction: Bayesian CNN trained by SVGD (gracefill)",
                      **config_mod.provenance(cfg, [args.reconstruction], args.command)})
    write_netcdf(out, args.output, chunks={"time": args.chunk_months})
    flags = out["month_flag"].values
    log.info("wrote %s: %s", args.output, ", ".join(f"{int((flags == v).sum())} {k} months"
                                                   for k, v in product.PRODUCT_FLAGS.items()))


@command(arg("--figure", required=True, choices=tuple(FIGURES), help="the figure to draw (gracefill.figures)"),
         arg("--input", action="append", default=[], metavar="NAME=PATH", help="an input file of the figure"),
         arg("--output", required=True, help="figure to write (PNG; GIF for gap_animation)"))
def plot(args) -> None:
    """One figure of the run (see --figure and gracefill.figures)."""
    from gracefill.figures import draw

    inputs = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--input: expected NAME=PATH, got {item!r}")
        inputs[name] = path
    draw(args.figure, inputs, load_config(args), Path(args.output))


@command(arg("--cores", type=int, default=2, help="cores for each world's Snakemake run"),
         arg("--snakefile", default="Snakefile", help="the workflow (run from the repository root)"),
         arg("--base-config", default="config.yaml",
             help="the config the Snakefile reads first; --config is applied over it"),
         arg("--out", help="folder of the tables (default results/<run>/benchmark)"),
         arg("--summarise-only", action="store_true", help="summarise the worlds' finished runs, run nothing"))
def benchmark(args) -> None:
    """Run this config on every world of benchmark.worlds (Snakemake) and summarise the scores."""
    import os
    import subprocess

    import yaml

    from gracefill import benchmark as bm
    from gracefill.io import atomic_path

    if not args.config:
        raise UserError("--config: the benchmark needs a config file (e.g. configs/benchmark.yaml)")
    raw = bm.merge(config_mod.read(args.base_config), config_mod.read(args.config))
    try:
        cfg = config_mod.validate(raw)
    except UserError as exc:
        raise UserError(f"{args.config}: {exc}") from None
    bench = cfg["benchmark"]
    worlds = bm.world_configs(raw, bench["worlds"])
    out = Path(args.out or f"results/{cfg['run']}/benchmark")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    results = {}
    for name, world in worlds.items():
        try:
            run = config_mod.validate(world)["run"]
        except UserError as exc:
            raise UserError(f"{args.config}: benchmark world {name!r}: {exc}") from None
        world_file = out / "worlds" / f"{name}.yaml"
        with atomic_path(world_file) as tmp:
            tmp.write_text(yaml.safe_dump(world, sort_keys=False))
        scores, detection = Path(f"results/{run}/evaluation/scores.csv"), Path(f"results/{run}/drought/detection.csv")
        if not args.summarise_only:
            log.info("world %s: snakemake run %s", name, run)
            command = [sys.executable, "-m", "snakemake", "--snakefile", args.snakefile, "--cores", str(args.cores),
                       "--configfile", str(world_file), "--rerun-incomplete", str(scores), str(detection)]
            if subprocess.run(command, env=env).returncode != 0:
                raise UserError(f"benchmark world {name!r}: the workflow failed; see results/{run}/logs/")
        for path in (scores, detection):
            if not path.exists():
                raise UserError(f"{path}: missing; run the benchmark without --summarise-only first")
        frame = pd.read_csv(detection) if detection.stat().st_size > 1 else None
        by_lead = scores.with_name("scores_by_lead.csv")  # by distance to the training window, where written
        table = pd.read_csv(scores)
        if by_lead.exists() and by_lead.stat().st_size > 1:
            table = bm.with_lead_scores(table, pd.read_csv(by_lead))
        results[name] = (table, frame if frame is not None and len(frame) else None)
    long = bm.collect(results)
    samples, interval = bench["bootstrap_samples"], bench["interval"]
    table = bm.summarise(long, samples, interval, seed=cfg["seed"])
    write_csv(long, out / "worlds.csv")
    write_csv(table, out / "table.csv")
    write_csv(bm.differences(long, samples, interval, seed=cfg["seed"]), out / "differences.csv")
    text = (f"Mean over {len(worlds)} worlds [{interval:.0%} bootstrap interval across worlds]\n\n"
            f"{bm.markdown(table)}\n")
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(text)
    print(text)


@command(arg("--show", action="store_true", help="print the effective config"))
def check_config(args) -> None:
    """Validate a config file (keys, relations, land on the grid) and print its effective form."""
    from gracefill.grid import GridSpec, require_land

    cfg = load_config(args)
    try:
        require_land(GridSpec.from_config(cfg["grid"]), cfg["grid"]["min_land_fraction"])
    except UserError as exc:
        raise UserError(f"{args.config}: {exc}" if args.config else str(exc)) from None
    print(json.dumps(cfg, indent=1) if args.show else f"config ok: run '{cfg['run']}'")


def make_parser():
    """The ``gracefill`` command line: every registered command (gracefill.commands)."""
    return commands.make_parser("gracefill", __doc__.splitlines()[0], __version__)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    for name in sources_cli.QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    start = time.perf_counter()
    try:
        commands.COMMANDS[args.command].run(args)
    except UserError as exc:
        print(f"gracefill {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gracefill {args.command}: interrupted; finished outputs and checkpoints are kept", file=sys.stderr)
        return 130
    log.info("%s done in %.1f s", args.command, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
