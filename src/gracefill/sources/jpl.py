"""JPL RL06.3 v04 CRI mascons (Earthdata login, via earthaccess).

The file (``GRCTellus.JPL.200204_YYYYMM.GLO.RL06.3M.MSCNv04CRI.nc``): ``lwe_thickness`` and
``uncertainty(time, lat, lon)`` float64 cm, ``_FillValue = -99999``, 0.5 degree, latitude
ascending, longitude 0..360, ``time`` days since 2002-01-01 (mid-month stamps) with
``time_bounds(time, bounds)``. The land mask (``land_mask``, 0 = ocean), ``mascon_ID`` and
the gain factors (a data variable literally named ``scale_factor``, not the packing
attribute; not applied here) are in the file. Some months have two solutions (2015-04):
`read` averages them, like `gracefill.sources.csr.read`, whose reader this shares.

Access: `earthdata_strategy` finds the credentials where earthaccess looks
(``EARTHDATA_USERNAME``/``EARTHDATA_PASSWORD`` or ``EARTHDATA_TOKEN``, else ``~/.netrc``
with ``machine urs.earthdata.nasa.gov``); `search_query` is the CMR query;
`retrieve` downloads the newest granule atomically, verified, with a sidecar.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from gracefill.io import UserError
from gracefill.sources import csr
from gracefill.sources import download as dl

NAME = "JPL RL06.3 v04 CRI mascons"
MASK_VARIABLE = "land_mask"
EARTHDATA_HOST = "urs.earthdata.nasa.gov"


def read(path, *, period=None, require=None, bounds=None):
    """Normalised ``twsa`` (mm): ocean (land_mask = 0) set to NaN, months from time_bounds."""
    return csr.read(path, path, period=period, require=require, bounds=bounds, mask_variable=MASK_VARIABLE, name=NAME)


def verify(path) -> None:
    csr.verify(path)
    with csr._open(path, (MASK_VARIABLE,)):
        pass


def earthdata_strategy() -> str:
    """The earthaccess login strategy the user's credentials allow; UserError with the fix if none."""
    if os.environ.get("EARTHDATA_TOKEN") or (os.environ.get("EARTHDATA_USERNAME") and os.environ.get("EARTHDATA_PASSWORD")):
        return "environment"
    netrc = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    try:
        if netrc.is_file() and EARTHDATA_HOST in netrc.read_text():
            return "netrc"
    except OSError:
        pass
    raise UserError(f"Earthdata credentials not found: add 'machine {EARTHDATA_HOST} login <user> password <password>' "
                    f"to {netrc} (chmod 600), or set EARTHDATA_USERNAME and EARTHDATA_PASSWORD (or EARTHDATA_TOKEN)")


def search_query(cfg: dict, period: tuple[str, str] | None = None) -> dict:
    """Keyword arguments of ``earthaccess.search_data`` for the configured collection."""
    query = {"short_name": cfg["short_name"]}
    if cfg.get("version"):
        query["version"] = cfg["version"]
    if period is not None:
        query["temporal"] = (f"{period[0]}-01", f"{period[1]}-28")
    return query


def retrieve(cfg: dict, target, *, period=None, earthaccess=None) -> Path:
    """Download the product's newest granule (the whole record is one file) to ``target``."""
    target = Path(target)
    if dl.is_complete(target):
        return target
    if earthaccess is None:
        strategy = earthdata_strategy()
        try:
            import earthaccess
        except ImportError:
            raise UserError("earthaccess is not installed: pip install earthaccess") from None
    else:
        strategy = earthdata_strategy()
    query = search_query(cfg, period)
    what = f"Earthdata {cfg['short_name']}"
    try:
        auth = earthaccess.login(strategy=strategy)
        if auth is not None and getattr(auth, "authenticated", True) is False:
            raise UserError(f"{what}: Earthdata login failed (strategy {strategy}); check the credentials")
        granules = earthaccess.search_data(**query)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{what}: search failed ({type(exc).__name__})") from None
    if not granules:
        raise UserError(f"{what}: no granule found for {query}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            files = earthaccess.download(granules[-1:], local_path=str(tmpdir))
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{what}: download failed ({type(exc).__name__})") from None
        files = [Path(f) for f in files or [] if str(f).endswith((".nc", ".nc4"))]
        if not files:
            raise UserError(f"{what}: the download returned no NetCDF file")
        try:
            return dl.finalise(files[-1], target, f"{what} {files[-1].name}", verify)
        except UserError as exc:
            raise UserError(f"{what}: downloaded file failed verification: {exc}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
