"""GLDAS-2.1 Noah monthly land surface model (Earthdata login, via earthaccess): the land model storage.

An alternative source of the simulated TWSA predictor (sTWSA), ``sources.land_model: gldas``.
Products ``GLDAS_NOAH10_M`` (1 degree) and ``GLDAS_NOAH025_M`` (0.25 degree), version 2.1,
one file a month, ``<short_name>.AYYYYMM.021.nc4`` (netCDF-4): ``SoilMoi0_10cm_inst``,
``SoilMoi10_40cm_inst``, ``SoilMoi40_100cm_inst``, ``SoilMoi100_200cm_inst``, ``SWE_inst``
and ``CanopInt_inst`` in kg m-2 on ``(time = 1, lat, lon)``, latitude ascending from 59.5S (no
Antarctica), longitude -179.5..179.5, ``_FillValue = -9999`` over water and ice sheets.

`read` gives the layout the predictors stage reads for the land model (the same variable the
synthetic world and ERA5-Land write): ``land_water_storage`` in mm = the sum of the four soil
layers + snow water equivalent + canopy interception storage (kg m-2 of water = mm), absolute
storage (the predictors stage takes the anomaly). -9999 and NaN are no data; the latitudes
south of the product (Antarctica) are added as NaN rows down to the configured grid. The
month of a file comes from its ``time_bnds`` (or its time stamp) and must agree with the
``AYYYYMM`` of its name.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from gracefill.io import UserError, open_dataset
from gracefill.sources import earthdata as ed
from gracefill.sources import normalise as nz

NAME = "GLDAS-2.1 Noah monthly"
COMPONENTS = ("SoilMoi0_10cm_inst", "SoilMoi10_40cm_inst", "SoilMoi40_100cm_inst", "SoilMoi100_200cm_inst",
              "SWE_inst", "CanopInt_inst")
UNITS = ("kg m-2", "kg/m2", "kg m**-2", "kg m^-2", "kg/m^2", "mm")
FILL_VALUE = -9999.0
SOUTH_EDGE = -60.0  # the products start at 60S (first cell centre 59.5S at 1 degree)
_MONTH_IN_NAME = re.compile(r"\.A(\d{4})(\d{2})\.")


# --------------------------------------------------------------------------- access


def version_code(version: str) -> str:
    """The version as it appears in the file names: "2.1" -> "021"."""
    major, _, minor = str(version).partition(".")
    return f"{major}{minor or 0}".zfill(3)


def file_name(cfg: dict, month: str) -> str:
    """The granule file name of one month ("YYYY-MM" or "YYYYMM") of ``sources.gldas``."""
    yyyymm = month.replace("-", "")
    return f"{cfg['short_name']}.A{yyyymm}.{version_code(cfg['version'])}.nc4"


def search_query(cfg: dict, month: str) -> dict:
    """Keyword arguments of ``earthaccess.search_data`` for one month ("YYYY-MM")."""
    start = pd.Timestamp(month)
    end = start + pd.offsets.MonthEnd(0)
    return {
        "short_name": cfg["short_name"],
        "version": str(cfg["version"]),
        "temporal": (f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"),
        # CMR matches the readable granule name (the file name at GES DISC); the wildcards also
        # accept a GranuleUR of the form "<short_name>.<version>:<file name>"
        "granule_name": f"*{file_name(cfg, month)}",
    }


def retrieve_month(cfg: dict, month: str, target, *, earthaccess=None, stall_s: float = ed.STALL_S,
                   retries: int = 1) -> Path:
    """Download one month of ``sources.gldas`` to ``target`` (atomic, verified, sidecar; skipped if complete)."""
    wanted = file_name(cfg, month)

    def pick(granules):
        for granule in granules:
            if wanted in ed.granule_name(granule):
                return granule
        raise UserError(f"Earthdata {cfg['short_name']}: no granule named {wanted} among the "
                        f"{len(granules)} found for {month}")

    return ed.fetch(search_query(cfg, month), target, pick=pick, verify=lambda p: verify(p, month),
                    what=f"Earthdata {cfg['short_name']} {month}", earthaccess=earthaccess, stall_s=stall_s,
                    retries=retries)


def verify(path, month: str | None = None) -> None:
    """A GLDAS file opens, has the storage variables and lat/lon, and holds ``month`` ("YYYY-MM")."""
    with open_dataset(path, required=(*COMPONENTS, "time", "lat", "lon"), decode_times=False) as ds:
        got = file_month(ds, str(path))
    if month is not None and got != pd.Timestamp(month):
        raise UserError(f"{path}: holds {got:%Y-%m}, expected {month}")


# --------------------------------------------------------------------------- reading


def file_month(ds: xr.Dataset, where: str) -> pd.Timestamp:
    """The one month a GLDAS file holds: from ``time_bnds`` (or the stamp), checked against the name."""
    nz.check_unique(ds["time"].values, where)
    if ds.sizes.get("time", 0) != 1:
        raise UserError(f"{where}: time axis has {ds.sizes.get('time', 0)} steps; expected 1 (one file a month)")
    units = nz.time_units(ds["time"], where)
    bounds_name = ds["time"].attrs.get("bounds", "time_bnds")
    if bounds_name in ds.variables and np.asarray(ds[bounds_name].values).shape == (1, 2):
        b = np.asarray(ds[bounds_name].values, dtype=np.float64)
        b_units = ds[bounds_name].attrs.get("units", units)
        month = nz.months_from_bounds(nz.decode_times(b[:, 0], b_units), nz.decode_times(b[:, 1], b_units))[0]
    else:
        month = pd.DatetimeIndex(nz.decode_times(ds["time"].values, units)).to_period("M").to_timestamp()[0]
    named = _MONTH_IN_NAME.search(Path(where).name)
    if named and pd.Timestamp(f"{named.group(1)}-{named.group(2)}-01") != month:
        raise UserError(f"{where}: its time axis says {month:%Y-%m} but its name says {named.group(1)}-{named.group(2)}")
    return month


def expand_local(pattern) -> list[str]:
    """The files ``sources.gldas.local`` names (a path, a glob or a list), sorted; error if none."""
    return nz.expand_local(pattern, "sources.gldas.local")


def _storage_of(path: str, bounds: dict | None) -> xr.DataArray:
    """Land water storage (mm) of one monthly file, cropped, on a month-start time axis."""
    ds = open_dataset(path, required=(*COMPONENTS, "time", "lat", "lon"), decode_times=False, chunks={})
    month = file_month(ds, path)
    for name in COMPONENTS:
        nz.check_units(ds[name], UNITS, path)
    ds = nz.crop(nz.standard_lat_lon(ds[list(COMPONENTS)], "lat", "lon"), bounds)
    parts = [ds[name].where(ds[name] > FILL_VALUE + 0.5) for name in COMPONENTS]  # -9999 even without _FillValue
    total = sum(parts[1:], parts[0])
    return total.transpose("time", "lat", "lon").assign_coords(time=[month])


def read(paths, *, period: tuple[str, str] | None = None, bounds: dict | None = None) -> xr.Dataset:
    """Normalised ``land_water_storage`` (mm) from GLDAS monthly files (lazy, one month per chunk).

    ``period`` ("YYYY-MM", "YYYY-MM") is kept and must be complete; ``bounds`` crops to a box
    (+1 cell) and sets the rows south of the product's 60S edge to NaN."""
    paths = [str(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise UserError(f"{NAME}: no input files")
    parts = [_storage_of(p, bounds) for p in paths]
    where = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"
    for path, part in zip(paths[1:], parts[1:]):
        if part.sizes != parts[0].sizes or not (np.allclose(part["lat"], parts[0]["lat"])
                                                 and np.allclose(part["lon"], parts[0]["lon"])):
            raise UserError(f"{path}: grid differs from {paths[0]}'s")
    has_values = dask.compute(*[part.notnull().any() for part in parts])
    empty = [path for path, ok in zip(paths, has_values) if not bool(ok)]
    if empty:
        raise UserError(f"{empty[0]}: land water storage has no value (all NaN or fill) in the grid's box"
                        f"{f' (and {len(empty) - 1} more files)' if len(empty) > 1 else ''}; expected data over land")
    months = pd.DatetimeIndex([p["time"].values[0] for p in parts])
    if months.has_duplicates:
        first = months[months.duplicated()][0]
        twice = [p for p, m in zip(paths, months) if m == first]
        raise UserError(f"{twice[-1]}: month {first:%Y-%m} is also in {twice[0]}; expected one file a month")
    total = xr.concat(parts, dim="time", join="override").sortby("time")
    months = pd.DatetimeIndex(total["time"].values)
    if period is not None:
        nz.check_complete(months, *period, where, f"land_water_storage ({NAME})")
        total = total.isel(time=np.flatnonzero((months >= pd.Timestamp(period[0])) & (months <= pd.Timestamp(period[1]))))
    south = bounds["lat_min"] if bounds else -90.0
    if south < SOUTH_EDGE:
        total = nz.pad_south(total.to_dataset(name="s"), south)["s"]
    total = total.chunk({"time": 1, "lat": -1, "lon": -1})
    out = nz.finish(total, "land_water_storage", "mm",
                    "land model water storage: soil water of all layers + snow water equivalent + canopy water",
                    note="absolute storage: SoilMoi0_10cm + SoilMoi10_40cm + SoilMoi40_100cm + SoilMoi100_200cm "
                         "+ SWE + CanopInt (kg m-2 = mm); NaN over water, ice sheets and south of 60S",
                    source_variable=" + ".join(COMPONENTS)).to_dataset()
    out.attrs = {
        "title": f"Land model storage from {NAME}, normalised by gracefill",
        "source": NAME,
        "source_files": ", ".join(Path(p).name for p in paths) if len(paths) <= 3
        else f"{Path(paths[0]).name} .. {Path(paths[-1]).name} ({len(paths)} files)",
    }
    return out
