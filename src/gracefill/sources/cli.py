"""The source commands, ``gracefill <command> ...``: the synthetic world, and the download
and normalisation of the real sources, each with its arguments declared beside it
(:func:`gracefill.commands.command`; `gracefill.cli` builds the parser).

Called by workflow/rules/retrieve.smk. Errors caused by inputs print one line
(``gracefill <command>: error: ...``) and exit with status 1.
"""
from __future__ import annotations

import json
import logging
import sys

from gracefill import config as config_mod
from gracefill import months as mo
from gracefill.commands import JSON, NONE, arg, command, exclusive, load_config
from gracefill.io import UserError, write_netcdf
from gracefill import mascons
from gracefill.sources.plan import grid_bounds

log = logging.getLogger("gracefill.sources")

def grace_required_span(cfg: dict) -> tuple[str, str]:
    """The months a GRACE product must reach: from the training window's start (or the
    period's, if later) to the period's end."""
    start = max(cfg["split"]["train_start"], cfg["period"]["start"])
    return start, cfg["period"]["end"]


TIMEOUT_HELP = "seconds without data before giving up"
GRANULE_ARGUMENTS = (
    arg("--output", required=True, help="the granule file to write"),
    arg("--timeout", type=float, default=120.0, help=TIMEOUT_HELP),
    arg("--retries", type=int, default=3, help="attempts of a failed, stalled or empty download (sources.download.retries)"),
)


# --------------------------------------------------------------------------- commands


@command(arg("--out-dir", required=True, help="folder to write the raw files grace.nc, era5land.nc and truth.nc to"))
def retrieve_synthetic(args) -> None:
    """Generate the synthetic world's raw files (the offline stand-in for the downloads)."""
    from gracefill.grid import GridSpec, require_land
    from gracefill.sources import synthetic

    cfg = load_config(args)
    require_land(GridSpec.from_config(cfg["grid"]), cfg["grid"]["min_land_fraction"])
    syn = cfg["sources"]["synthetic"]
    native = GridSpec.from_config(cfg["grid"], resolution=syn["native_resolution"])
    months = mo.month_range(cfg["period"]["start"], cfg["period"]["end"])
    observed = mo.synthetic_grace_availability(months, (cfg["split"]["gap_start"], cfg["split"]["gap_end"]))
    drought = {k: v for k, v in syn["drought"].items() if k != "enabled"} if syn["drought"]["enabled"] else None
    train = mo.in_window(months, cfg["split"]["train_start"], cfg["split"]["train_end"])
    world = synthetic.generate_world(lat=native.lat, lon=native.lon, months=months, observed=observed,
                                     seed=cfg["seed"], drought=drought, train_months=train,
                                     groundwater_tau_months=tuple(syn["groundwater_tau_months"]),
                                     storage_trends=syn["storage_trends"],
                                     grace_noise_std_mm=syn["grace_noise"]["std_mm"],
                                     heteroscedastic_noise=syn["grace_noise"]["heteroscedastic"])
    for ds in world.values():
        ds.attrs.update(config_mod.provenance(cfg, [], args.command))
    paths = synthetic.write_world(world, args.out_dir)
    log.info("wrote %s", ", ".join(map(str, paths)))




@command(exclusive(arg("--url", help="the file"),
                   arg("--page", help="an HTML page linking to the file (with --file-pattern)"), required=True),
         arg("--file-pattern", help="glob of the file's name on --page; the greatest match is taken"),
         arg("--mirror", help="with --page: base URL of a mirror holding the file found"),
         arg("--output", required=True, help="file to write (atomically, once verified)"),
         arg("--check", required=True, choices=sorted(mascons.checks()),
             help="what the file must contain: the product's file, or <product>_land_mask"),
         arg("--timeout", type=float, default=120.0, help=TIMEOUT_HELP),
         arg("--retries", type=int, default=3,
             help="attempts of a failed, stalled or incomplete download (sources.download.retries)"),
         arg("--no-progress", action="store_true", help="no progress bar"),
         config=NONE)
def download(args) -> None:
    """Download one HTTPS file: resumable, atomic, verified, size and sha256 recorded."""
    from gracefill.sources import download as dl

    verify = mascons.verifier(*mascons.checks()[args.check])
    timeout = (min(30.0, args.timeout), args.timeout)
    url = args.url
    if url is None:  # the page names the current file
        if not args.file_pattern:
            raise UserError("--page needs --file-pattern (the glob of the file's name)")
        if dl.is_complete(args.output):
            log.info("%s: complete, kept (delete it to fetch the newest file)", args.output)
            return
        url = dl.join_mirror(args.mirror, dl.newest_link(args.page, args.file_pattern, timeout=timeout,
                                                         retries=args.retries))
        log.info("newest file on %s: %s", dl.redact(args.page), dl.redact(url))
    path = dl.download(url, args.output, verify=verify, timeout=timeout, retries=args.retries,
                       progress=not args.no_progress)
    record = json.loads(dl.sidecar_path(path).read_text())
    log.info("%s: %d bytes, sha256 %s", path, record["size"], record["sha256"])


@command(arg("--product", required=True, choices=sorted(mascons.MASCONS), help="the mascon product of --input"),
         arg("--input", required=True, help="the downloaded (or the user's own) mascon file"),
         arg("--land-mask", help="the product's land mask file, where it is a file of its own (csr)"),
         arg("--output", required=True, help="normalised GRACE file to write (grace.nc)"),
         config=JSON)
def normalise_grace(args) -> None:
    """A GRACE mascon product in the normalised layout (twsa in mm, monthly, lon -180..180)."""
    cfg = config_mod.from_json(args.config_json)
    options = {"period": (cfg["period"]["start"], cfg["period"]["end"]), "require": grace_required_span(cfg),
               "bounds": grid_bounds(cfg)}
    inputs = [args.input]
    if mascons.MASCONS[args.product].separate_land_mask:
        inputs.append(args.land_mask)
    elif args.land_mask:
        raise UserError(f"--land-mask: {args.product} keeps its land mask in the product file; give none")
    ds = mascons.reader(args.product).read(*inputs, **options)
    ds.attrs.update(config_mod.provenance(cfg, [p for p in inputs if p], args.command))
    write_netcdf(ds, args.output)
    log.info("%s: twsa %s, %d months, missing inside the record: %s", args.output, dict(ds["twsa"].sizes),
             ds.sizes["time"], ds.attrs["months_missing"] or "none")


@command(*GRANULE_ARGUMENTS,
         arg("--product", required=True,
             choices=sorted(name for name, row in mascons.MASCONS.items() if row.fetch == "earthdata"),
             help="the mascon product fetched from Earthdata (its sources.<product> settings)"),
         config=JSON)
def retrieve_granule(args) -> None:
    """The newest whole-record granule of a mascon product from Earthdata (earthaccess), atomic and verified."""
    from gracefill.sources import earthdata

    cfg = config_mod.from_json(args.config_json)
    path = earthdata.retrieve_record(cfg["sources"][args.product], args.output, verify=mascons.verifier(args.product),
                                     stall_s=args.timeout, retries=args.retries)
    log.info("%s: %d bytes", path, path.stat().st_size)


@command(*GRANULE_ARGUMENTS, arg("--month", required=True, help="YYYY-MM or YYYYMM"), config=JSON)
def retrieve_gldas(args) -> None:
    """One month of GLDAS Noah from Earthdata (earthaccess), atomic and verified."""
    from gracefill.sources import gldas

    cfg = config_mod.from_json(args.config_json)
    month = args.month if "-" in args.month else f"{args.month[:4]}-{args.month[4:]}"
    path = gldas.retrieve_month(cfg["sources"]["gldas"], month, args.output, stall_s=args.timeout,
                                retries=args.retries)
    log.info("%s: %d bytes", path, path.stat().st_size)


@command(arg("--inputs", nargs="+", required=True, help="the monthly GLDAS files (downloaded, or the user's own)"),
         arg("--output", required=True, help="normalised land model storage file to write (land_model.nc)"),
         config=JSON)
def normalise_gldas(args) -> None:
    """GLDAS Noah monthly files (downloaded, or the user's own) as the land model storage."""
    from dask.diagnostics import ProgressBar

    from gracefill.sources import gldas

    cfg = config_mod.from_json(args.config_json)
    ds = gldas.read(args.inputs, period=(cfg["period"]["start"], cfg["period"]["end"]), bounds=grid_bounds(cfg))
    ds.attrs.update({k: v for k, v in config_mod.provenance(cfg, args.inputs, args.command).items() if k != "source_files"})  # one file a month: keep read's summary
    with ProgressBar(minimum=5, out=sys.stderr):
        write_netcdf(ds, args.output)
    log.info("%s: land_water_storage on %s", args.output, dict(ds.sizes))


@command(arg("--year", type=int, required=True, help="the year of monthly means to request"),
         arg("--output", required=True, help="NetCDF file of that year to write"),
         arg("--timeout", type=float, default=120.0, help="seconds per CDS request (sources.download.timeout_s)"),
         arg("--retries", type=int, default=3, help="attempts after a CDS server error (sources.download.retries)"),
         config=JSON)
def retrieve_era5land(args) -> None:
    """One year of ERA5-Land monthly means from the CDS (cdsapi), atomic and verified."""
    from gracefill.sources import era5land as e5

    cfg = config_mod.from_json(args.config_json)
    e5cfg = {**cfg["sources"]["era5land"], "variables": e5.needed_variables(cfg["sources"])}
    bounds = grid_bounds(cfg) if e5cfg["area"] == "grid" else None
    path = e5.retrieve_year(e5cfg, args.year, args.output, bounds=bounds, timeout_s=args.timeout, retries=args.retries)
    log.info("%s: %d bytes", path, path.stat().st_size)


@command(arg("--inputs", nargs="+", required=True, help="the yearly ERA5-Land files (downloaded, or the user's own)"),
         arg("--output", required=True, help="normalised predictors file to write (era5land.nc)"),
         config=JSON)
def normalise_era5land(args) -> None:
    """ERA5-Land files (downloaded per year, or the user's own) in the normalised layout."""
    from dask.diagnostics import ProgressBar

    from gracefill.sources import era5land as e5

    cfg = config_mod.from_json(args.config_json)
    period = (cfg["period"]["start"], cfg["period"]["end"])
    ds = e5.read(args.inputs, e5.needed_variables(cfg["sources"]), period=period, bounds=grid_bounds(cfg))
    ds.attrs.update(config_mod.provenance(cfg, args.inputs, args.command))
    with ProgressBar(minimum=5, out=sys.stderr):
        write_netcdf(ds, args.output)
    log.info("%s: %s on %s", args.output, ", ".join(ds.data_vars), dict(ds.sizes))


#: Third-party loggers kept at WARNING: at INFO or DEBUG they may echo request details.
QUIET_LOGGERS = ("urllib3", "requests", "cdsapi", "datapi", "ecmwf", "earthaccess", "botocore", "aiobotocore",
                 "s3fs", "fsspec")
