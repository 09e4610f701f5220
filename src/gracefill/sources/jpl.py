"""JPL RL06.3 v04 CRI mascons (Earthdata login, via earthaccess).

The file (``GRCTellus.JPL.200204_YYYYMM.GLO.RL06.3M.MSCNv04CRI.nc``, one granule holding the
whole record, its name ending in the last month): ``lwe_thickness`` and
``uncertainty(time, lat, lon)`` float64 cm, ``_FillValue = -99999``, 0.5 degree, latitude
ascending, longitude 0..360, ``time`` days since 2002-01-01 (mid-span stamps) with
``time_bounds(time, bounds)``. The land mask (``land_mask``, 0 = ocean), ``mascon_ID`` and
the gain factors (a data variable literally named ``scale_factor``, not the packing
attribute; not applied: the target is the mascon TWSA itself) are in the file. Some months
have two solutions (2015-04): `read` averages them, like `gracefill.sources.csr.read`, whose
reader this shares.

Access: `search_query` is the CMR query (collection short name, optional version, the granule
name pattern); `retrieve` downloads the granule with the latest end month through
`gracefill.sources.earthdata.fetch` (credentials, atomic, verified, sidecar).
"""
from __future__ import annotations

from pathlib import Path

from gracefill.sources import csr
from gracefill.sources import earthdata as ed

NAME = "JPL RL06.3 v04 CRI mascons"
verify = csr.verify_with_own_mask


def read(path, *, period=None, require=None, bounds=None):
    """Normalised ``twsa`` (mm): ocean (land_mask = 0) set to NaN, months from time_bounds."""
    return csr.read_with_own_mask(path, NAME, period=period, require=require, bounds=bounds)


def search_query(cfg: dict) -> dict:
    """Keyword arguments of ``earthaccess.search_data`` for ``sources.jpl``.

    No ``temporal``: the collection's granule is the whole record (2002-04 to its last month),
    so a period-dependent query would change nothing but make a new period refetch the same
    file; the period is checked when the file is normalised."""
    query = {"short_name": cfg["short_name"]}
    if cfg.get("version"):
        query["version"] = cfg["version"]
    if cfg.get("granule_name"):
        query["granule_name"] = cfg["granule_name"]
    return query


def latest(granules):
    """The granule with the latest record (the names end in ``200204_YYYYMM``: they sort by it)."""
    return max(granules, key=ed.granule_name)


def retrieve(cfg: dict, target, *, earthaccess=None, stall_s: float = ed.STALL_S,
             retries: int = 1) -> Path:
    """Download the newest granule of ``sources.jpl`` to ``target`` (skipped if complete)."""
    return ed.fetch(search_query(cfg), target, pick=latest, verify=verify,
                    what=f"Earthdata {cfg['short_name']}", earthaccess=earthaccess, stall_s=stall_s,
                    retries=retries)
