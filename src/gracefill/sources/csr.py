"""CSR RL06.3 GRACE/GRACE-FO mascons (plain HTTPS, no login) and their land mask.

The file (``CSR_GRACE_GRACE-FO_RL0603_Mascons_all-corrections.nc``, netCDF-4):
``lwe_thickness(time, lat, lon)`` float32 in cm on a 0.25-degree grid, latitude ascending,
longitude 0..360; ``time`` float32 days since 2002-01-01 at the middle of each solution's
span, its unit in an attribute spelled ``Units`` (so xarray does not decode it), and
``time_bounds(time, timebound)``; missing months are absent from the axis. The ocean carries
values: the land mask file (``LO_val(lat, lon)``, land = 1) sets it to NaN.

`read` gives the normalised layout: ``twsa`` in mm, one month per solution (the month its
time bounds mostly fall in; two solutions in one month are averaged), longitude -180..180.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gracefill.io import UserError, open_dataset
from gracefill.sources import normalise as nz

VARIABLE = "lwe_thickness"
MASK_VARIABLE = "LO_val"
OWN_MASK_VARIABLE = "land_mask"  # JPL and GSFC keep their land mask (0 = ocean) in the product file
UNITS = ("cm", "centimeters", "centimetres")
CM_TO_MM = 10.0
NAME = "CSR RL06.3 mascons"


def _open(path: str | os.PathLike, required: tuple[str, ...]) -> xr.Dataset:
    nz.check_not_truncated(path)  # the GSFC file is NetCDF-3
    return open_dataset(path, required=required, decode_times=False)


def solution_months(ds: xr.Dataset, where: str) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """(stamps, months) of a mascon file: its time stamps decoded, and the month of each
    solution (from ``time_bounds`` when present, else from the stamp)."""
    units = nz.time_units(ds["time"], where)
    nz.check_unique(ds["time"].values, where)
    stamps = nz.decode_times(ds["time"].values, units)
    bounds_name = ds["time"].attrs.get("bounds", "time_bounds")
    if bounds_name in ds.variables:
        b = ds[bounds_name]
        b_units = b.attrs.get("units", b.attrs.get("Units", units))
        values = np.asarray(b.values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != 2:
            raise UserError(f"{where}: {bounds_name} has shape {values.shape}; expected (time, 2)")
        months = nz.months_from_bounds(nz.decode_times(values[:, 0], b_units), nz.decode_times(values[:, 1], b_units))
    else:
        months = pd.DatetimeIndex(stamps).to_period("M").to_timestamp()
    return stamps, months


def verify(path: str | os.PathLike, extra: tuple[str, ...] = ()) -> None:
    """A downloaded mascon file opens, has lwe_thickness, lat, lon (and ``extra``) and a readable time axis."""
    with _open(path, (VARIABLE, "time", "lat", "lon", *extra)) as ds:
        _, months = solution_months(ds, str(path))
        if len(months) == 0:
            raise UserError(f"{path}: time axis is empty")


def verify_with_own_mask(path: str | os.PathLike) -> None:
    """A mascon file that carries its land mask (JPL, GSFC) opens, has lwe_thickness, lat, lon,
    land_mask and a readable time axis."""
    verify(path, extra=(OWN_MASK_VARIABLE,))


def verify_land_mask(path: str | os.PathLike) -> None:
    with _open(path, (MASK_VARIABLE, "lat", "lon")):
        pass


def land_mask(path: str | os.PathLike, variable: str = MASK_VARIABLE) -> xr.DataArray:
    """A mascon land mask (True = land) in the normalised lat/lon order."""
    with _open(path, (variable, "lat", "lon")) as ds:
        mask = nz.standard_lat_lon(ds[[variable]].load(), "lat", "lon")[variable]
    return mask.fillna(0) > 0.5


def read(
    path: str | os.PathLike,
    land_mask_path: str | os.PathLike | None = None,
    *,
    period: tuple[str, str] | None = None,
    require: tuple[str, str] | None = None,
    bounds: dict | None = None,
    mask_variable: str = MASK_VARIABLE,
    name: str = NAME,
) -> xr.Dataset:
    """Normalised ``twsa`` (mm) from a CSR mascon file (or another mascon file of the same kind:
    JPL passes the file itself as its land mask, ``mask_variable="land_mask"``).

    ``period`` keeps the months inside it; ``require`` ("YYYY-MM", "YYYY-MM") is the span
    the product must reach (error otherwise); ``bounds`` crops to a lat/lon box (+1 cell).
    """
    where = str(path)
    with _open(path, (VARIABLE, "time", "lat", "lon")) as ds:
        stamps, months = solution_months(ds, where)
        nz.check_units(ds[VARIABLE], UNITS, where)
        attrs = dict(ds.attrs)
        da = nz.standard_lat_lon(ds[[VARIABLE]], "lat", "lon")[VARIABLE]
        da = da.transpose("time", "lat", "lon")
        if land_mask_path is not None:
            mask = land_mask(land_mask_path, mask_variable)
            if mask.shape != da.shape[1:] or not (np.allclose(mask["lat"], da["lat"]) and np.allclose(mask["lon"], da["lon"])):
                raise UserError(f"{land_mask_path}: land mask grid {mask.shape} does not match {where} {da.shape[1:]}")
        da = nz.crop(da.to_dataset(), bounds)[VARIABLE]
        if period is not None:
            keep = (months >= pd.Timestamp(period[0])) & (months <= pd.Timestamp(period[1]))
            da, months = da.isel(time=np.flatnonzero(keep)), months[keep]
        da = da.load()
    if require is not None:
        nz.check_coverage(months, *require, where, f"{VARIABLE} ({name})")
    values = da * CM_TO_MM
    if land_mask_path is not None:
        values = values.where(nz.crop(mask.to_dataset(name="m"), bounds)["m"].reindex_like(values, method="nearest"))
    twsa, doubled = nz.combine_months(values, months)
    twsa = nz.finish(twsa, "twsa", "mm", f"terrestrial water storage anomaly ({name})",
                     source_variable=f"{VARIABLE} (cm) x {CM_TO_MM:g}")
    out = twsa.to_dataset()
    out.attrs = {
        "title": f"GRACE/GRACE-FO TWSA from {name}, normalised by gracefill",
        "source": name,
        "source_files": ", ".join(str(Path(p).name) for p in (path, land_mask_path) if p is not None),
        "months_missing": nz.missing_months(pd.DatetimeIndex(out["time"].values)),
        "months_missing_in_product": str(attrs.get("months_missing", "")),
        "time_mean_removed": str(attrs.get("time_mean_removed", "")),
        "months_with_several_solutions": ",".join(doubled),
        "month_rule": "the month that most of each solution's time_bounds span falls in",
    }
    return out


def read_with_own_mask(path: str | os.PathLike, name: str, **options) -> xr.Dataset:
    """`read` for a mascon file that carries its land mask (JPL, GSFC: ``land_mask``, 0 = ocean)."""
    return read(path, path, mask_variable=OWN_MASK_VARIABLE, name=name, **options)
