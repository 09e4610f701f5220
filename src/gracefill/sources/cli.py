"""The download and normalisation steps of the real sources, as ``gracefill <step> ...``
subcommands (`add_steps` puts them on the parser of `gracefill.cli`).

Called by workflow/rules/retrieve.smk. Errors caused by inputs print one line
(``gracefill <step>: error: ...``) and exit with status 1.
"""
from __future__ import annotations

import json
import logging
import sys

from gracefill import config as config_mod
from gracefill.io import UserError, write_netcdf
from gracefill.sources.plan import grid_bounds

log = logging.getLogger("gracefill.sources")

#: What each downloadable file must contain: product key -> verify function name.
CHECKS = ("csr", "csr_land_mask", "gsfc")
#: The GRACE mascon products `normalise_grace` reads.
MASCONS = ("csr", "jpl", "gsfc")


def grace_required_span(cfg: dict) -> tuple[str, str]:
    """The months a GRACE product must reach: from the training window's start (or the
    period's, if later) to the period's end."""
    start = max(cfg["split"]["train_start"], cfg["period"]["start"])
    return start, cfg["period"]["end"]


# --------------------------------------------------------------------------- steps


def download(args) -> None:
    """Download one HTTPS file: resumable, atomic, verified, size and sha256 recorded."""
    from gracefill.sources import csr, gsfc
    from gracefill.sources import download as dl

    verify = {"csr": csr.verify, "csr_land_mask": csr.verify_land_mask, "gsfc": gsfc.verify}[args.check]
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


def normalise_grace(args) -> None:
    """A GRACE mascon product in the normalised layout (twsa in mm, monthly, lon -180..180)."""
    from gracefill.sources import csr, gsfc, jpl

    cfg = config_mod.from_json(args.config_json)
    options = {"period": (cfg["period"]["start"], cfg["period"]["end"]), "require": grace_required_span(cfg),
               "bounds": grid_bounds(cfg)}
    if args.product == "csr":
        ds = csr.read(args.input, args.land_mask, **options)
    elif args.land_mask:
        raise UserError(f"--land-mask: {args.product} keeps its land mask in the product file; give none")
    else:
        ds = {"jpl": jpl.read, "gsfc": gsfc.read}[args.product](args.input, **options)
    ds.attrs.update(config_mod.provenance(cfg, [args.input] + ([args.land_mask] if args.land_mask else []), args.stage))
    write_netcdf(ds, args.output)
    log.info("%s: twsa %s, %d months, missing inside the record: %s", args.output, dict(ds["twsa"].sizes),
             ds.sizes["time"], ds.attrs["months_missing"] or "none")


def retrieve_jpl(args) -> None:
    """The JPL RL06.3 v04 CRI mascon granule from Earthdata (earthaccess), atomic and verified."""
    from gracefill.sources import jpl

    cfg = config_mod.from_json(args.config_json)
    path = jpl.retrieve(cfg["sources"]["jpl"], args.output, stall_s=args.timeout, retries=args.retries)
    log.info("%s: %d bytes", path, path.stat().st_size)


def retrieve_gldas(args) -> None:
    """One month of GLDAS Noah from Earthdata (earthaccess), atomic and verified."""
    from gracefill.sources import gldas

    cfg = config_mod.from_json(args.config_json)
    month = args.month if "-" in args.month else f"{args.month[:4]}-{args.month[4:]}"
    path = gldas.retrieve_month(cfg["sources"]["gldas"], month, args.output, stall_s=args.timeout,
                                retries=args.retries)
    log.info("%s: %d bytes", path, path.stat().st_size)


def normalise_gldas(args) -> None:
    """GLDAS Noah monthly files (downloaded, or the user's own) as the land model storage."""
    from dask.diagnostics import ProgressBar

    from gracefill.sources import gldas

    cfg = config_mod.from_json(args.config_json)
    ds = gldas.read(args.inputs, period=(cfg["period"]["start"], cfg["period"]["end"]), bounds=grid_bounds(cfg))
    ds.attrs.update({k: v for k, v in config_mod.provenance(cfg, args.inputs, args.stage).items() if k != "source_files"})  # one file a month: keep read's summary
    with ProgressBar(minimum=5, out=sys.stderr):
        write_netcdf(ds, args.output)
    log.info("%s: land_water_storage on %s", args.output, dict(ds.sizes))


def retrieve_era5land(args) -> None:
    """One year of ERA5-Land monthly means from the CDS (cdsapi), atomic and verified."""
    from gracefill.sources import era5land as e5

    cfg = config_mod.from_json(args.config_json)
    e5cfg = {**cfg["sources"]["era5land"], "variables": e5.needed_variables(cfg["sources"])}
    bounds = grid_bounds(cfg) if e5cfg["area"] == "grid" else None
    path = e5.retrieve_year(e5cfg, args.year, args.output, bounds=bounds, timeout_s=args.timeout, retries=args.retries)
    log.info("%s: %d bytes", path, path.stat().st_size)


def normalise_era5land(args) -> None:
    """ERA5-Land files (downloaded per year, or the user's own) in the normalised layout."""
    from dask.diagnostics import ProgressBar

    from gracefill.sources import era5land as e5

    cfg = config_mod.from_json(args.config_json)
    period = (cfg["period"]["start"], cfg["period"]["end"])
    ds = e5.read(args.inputs, e5.needed_variables(cfg["sources"]), period=period, bounds=grid_bounds(cfg))
    ds.attrs.update(config_mod.provenance(cfg, args.inputs, args.stage))
    with ProgressBar(minimum=5, out=sys.stderr):
        write_netcdf(ds, args.output)
    log.info("%s: %s on %s", args.output, ", ".join(ds.data_vars), dict(ds.sizes))


STEPS = {
    "download": download,
    "normalise_grace": normalise_grace,
    "retrieve_era5land": retrieve_era5land,
    "normalise_era5land": normalise_era5land,
    "retrieve_jpl": retrieve_jpl,
    "retrieve_gldas": retrieve_gldas,
    "normalise_gldas": normalise_gldas,
}


#: Third-party loggers kept at WARNING: at INFO or DEBUG they may echo request details.
QUIET_LOGGERS = ("urllib3", "requests", "cdsapi", "datapi", "ecmwf", "earthaccess", "botocore", "aiobotocore",
                 "s3fs", "fsspec")


def add_steps(sub) -> None:
    """Add the steps to the ``gracefill`` parser's subcommands (``sub``, from add_subparsers)."""

    def step(name):
        p = sub.add_parser(name, help=STEPS[name].__doc__.splitlines()[0])
        p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
        return p

    p = step("download")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="the file")
    where.add_argument("--page", help="an HTML page linking to the file (with --file-pattern)")
    p.add_argument("--file-pattern", help="glob of the file's name on --page; the greatest match is taken")
    p.add_argument("--mirror", help="with --page: base URL of a mirror holding the file found")
    p.add_argument("--output", required=True, help="file to write (atomically, once verified)")
    p.add_argument("--check", required=True, choices=CHECKS, help="what the file must contain")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds without data before giving up")
    p.add_argument("--retries", type=int, default=3,
                   help="attempts of a failed, stalled or incomplete download (sources.download.retries)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = step("normalise_grace")
    p.add_argument("--config-json", required=True, help="config sections of the step as JSON (the rule passes them)")
    p.add_argument("--product", required=True, choices=MASCONS, help="the mascon product of --input")
    p.add_argument("--input", required=True, help="the downloaded (or the user's own) mascon file")
    p.add_argument("--land-mask", help="the CSR land mask file (csr only; JPL and GSFC carry theirs)")
    p.add_argument("--output", required=True, help="normalised GRACE file to write (grace.nc)")
    p = step("retrieve_era5land")
    p.add_argument("--config-json", required=True, help="config sections of the step as JSON (the rule passes them)")
    p.add_argument("--year", type=int, required=True, help="the year of monthly means to request")
    p.add_argument("--output", required=True, help="NetCDF file of that year to write")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per CDS request (sources.download.timeout_s)")
    p.add_argument("--retries", type=int, default=3, help="attempts after a CDS server error (sources.download.retries)")
    p = step("normalise_era5land")
    p.add_argument("--config-json", required=True, help="config sections of the step as JSON (the rule passes them)")
    p.add_argument("--inputs", nargs="+", required=True,
                   help="the yearly ERA5-Land files (downloaded, or the user's own)")
    p.add_argument("--output", required=True, help="normalised predictors file to write (era5land.nc)")
    for name in ("retrieve_jpl", "retrieve_gldas"):
        p = step(name)
        p.add_argument("--config-json", required=True,
                       help="config sections of the step as JSON (the rule passes them)")
        p.add_argument("--output", required=True, help="the granule file to write")
        p.add_argument("--timeout", type=float, default=120.0, help="seconds without data before giving up")
        p.add_argument("--retries", type=int, default=3,
                       help="attempts of a failed, stalled or empty download (sources.download.retries)")
    p.add_argument("--month", required=True, help="YYYY-MM or YYYYMM")
    p = step("normalise_gldas")
    p.add_argument("--config-json", required=True, help="config sections of the step as JSON (the rule passes them)")
    p.add_argument("--inputs", nargs="+", required=True, help="the monthly GLDAS files (downloaded, or the user's own)")
    p.add_argument("--output", required=True, help="normalised land model storage file to write (land_model.nc)")
