"""Helpers every real source uses to reach the normalised layout.

The layout (the same as `gracefill.sources.synthetic` writes): dims ``(time, lat, lon)``,
``time`` = month-start datetime64, one step per month, latitude ascending, longitude in
-180..180 ascending, float32 variables with ``units`` and ``long_name``, NaN where there is
no data (ocean).
"""
from __future__ import annotations

import glob as globlib
import os
import re

import numpy as np
import pandas as pd
import xarray as xr

from gracefill.io import UserError

COORD_ATTRS = {
    "time": {"standard_name": "time", "long_name": "month", "axis": "T"},
    "lat": {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude", "axis": "Y"},
    "lon": {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude", "axis": "X"},
}
_TIME_UNITS = re.compile(r"^\s*(days|hours|seconds|minutes)\s+since\s+(.+?)\s*$", re.IGNORECASE)
_SECONDS = {"days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}


def check_not_truncated(path) -> None:
    """A NetCDF-3 file must hold at least the bytes its variables need: netCDF-C reads a cut
    classic file without complaint (the missing tail comes back as zeros). NetCDF-4 (HDF5) files
    fail to open when cut, so only NETCDF3 data models are checked."""
    import netCDF4

    try:
        with netCDF4.Dataset(path) as nc:
            if not nc.data_model.startswith("NETCDF3"):
                return
            need = sum(v.size * v.dtype.itemsize for v in nc.variables.values())
    except OSError:
        return  # missing or unreadable: open_dataset gives the one-line error
    have = os.path.getsize(path)
    if have < need:
        raise UserError(f"{path}: not a readable NetCDF file (truncated: {have} bytes, its variables need {need})")


def time_units(var: xr.DataArray, where: str) -> str:
    """The CF time unit string of ``var`` from ``units`` or the CSR spelling ``Units``."""
    units = var.attrs.get("units", var.attrs.get("Units", var.encoding.get("units")))
    if not units or not _TIME_UNITS.match(str(units)):
        raise UserError(f"{where}: time variable '{var.name}' has no usable units attribute "
                        f"(got {units!r}; expected e.g. 'days since 2002-01-01')")
    return str(units)


def decode_times(values, units: str) -> pd.DatetimeIndex:
    """Numeric CF times (``<unit> since <epoch>``, gregorian) -> timestamps."""
    match = _TIME_UNITS.match(units)
    unit, epoch = match.group(1).lower(), match.group(2)
    epoch = pd.Timestamp(epoch.replace("Z", "").replace("UTC", "").strip())
    if epoch.tzinfo is not None:
        epoch = epoch.tz_convert(None)
    seconds = np.asarray(values, dtype=np.float64) * _SECONDS[unit]
    return epoch + pd.to_timedelta(np.round(seconds), unit="s")


def months_from_bounds(start: pd.DatetimeIndex, end: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The month (start) that most of each [start, end] span falls in."""
    out = []
    for a, b in zip(start, end):
        if b < a:
            a, b = b, a
        first = a.to_period("M").to_timestamp()
        best, best_len = first, -1.0
        month = first
        while month <= b:
            nxt = month + pd.offsets.MonthBegin(1)
            overlap = (min(b, nxt) - max(a, month)).total_seconds()
            if overlap > best_len:
                best, best_len = month, overlap
            month = nxt
        out.append(best)
    return pd.DatetimeIndex(out)


def to_months(times, where: str) -> pd.DatetimeIndex:
    """Month starts of monthly time stamps; error if two stamps fall in one month."""
    months = pd.DatetimeIndex(pd.to_datetime(np.asarray(times))).to_period("M").to_timestamp()
    if months.has_duplicates:
        first = months[months.duplicated()][0]
        raise UserError(f"{where}: two time steps fall in {first:%Y-%m}; expected one per month")
    return months


def check_unique(times, where: str, name: str = "time") -> None:
    """Refuse a time axis with repeated values."""
    values = pd.Index(np.asarray(times))
    if values.has_duplicates:
        first = values[values.duplicated()][0]
        raise UserError(f"{where}: time axis '{name}' has duplicate values (first {first})")


def combine_months(da: xr.DataArray, months: pd.DatetimeIndex) -> tuple[xr.DataArray, list[str]]:
    """Label solutions by month; average solutions that fall in the same month.

    Returns the field on a sorted, unique month axis and the months that had more than one
    solution (e.g. JPL 2015-04, GSFC 2018-11)."""
    da = da.assign_coords(time=months.values)
    counts = pd.Index(months).value_counts()
    doubled = sorted(f"{m:%Y-%m}" for m in counts.index[counts > 1])
    if doubled:
        da = da.groupby("time").mean(keep_attrs=True)
    return da.sortby("time"), doubled


def standard_lat_lon(ds: xr.Dataset, lat: str, lon: str) -> xr.Dataset:
    """Rename to lat/lon, latitude ascending, longitude -180..180 ascending.

    A longitude repeated after wrapping (a grid of points with both -180 and 180, as ERA5-Land
    gives for a -180..180 area) keeps its first column."""
    ds = ds.rename({k: v for k, v in ((lat, "lat"), (lon, "lon")) if k != v})
    lon_values = ds["lon"].values.astype(np.float64)
    wrapped = ((lon_values + 180.0) % 360.0) - 180.0
    # a point exactly at 180 is -180 in the -180..180 convention
    ds = ds.assign_coords(lon=wrapped)
    _, first = np.unique(np.round(wrapped, 9), return_index=True)
    if first.size < wrapped.size:
        ds = ds.isel(lon=np.sort(first))
    ds = ds.sortby("lon").sortby("lat")
    for name in ("lat", "lon"):
        if pd.Index(ds[name].values).has_duplicates:
            raise UserError(f"{name}: repeated coordinate values after normalisation")
        ds[name] = ds[name].astype(np.float64)
        ds[name].attrs = dict(COORD_ATTRS[name])
    return ds


def crop(ds: xr.Dataset, bounds: dict | None, margin_cells: int = 1) -> xr.Dataset:
    """Keep the cells that overlap the box ``bounds`` (lat_min..lon_max), plus a margin."""
    if not bounds:
        return ds
    out = ds
    for name, lo, hi in (("lat", bounds["lat_min"], bounds["lat_max"]), ("lon", bounds["lon_min"], bounds["lon_max"])):
        values = out[name].values
        step = float(np.median(np.diff(values))) if values.size > 1 else 0.0
        pad = step * (0.5 + margin_cells) - 1e-6 * max(step, 1e-9)  # cells touching only the edge stay out
        keep = (values > lo - pad) & (values < hi + pad)
        out = out.isel({name: np.flatnonzero(keep)})
    return out


def pad_south(ds: xr.Dataset, lat_min: float) -> xr.Dataset:
    """Extend an ascending, regular latitude axis southwards with NaN rows down to ``lat_min``.

    For products without Antarctica (GLDAS starts at 60S): the missing rows become explicit
    NaN (no data) instead of a grid that silently stops short of the configured bounds."""
    lat = ds["lat"].values
    if lat.size < 2:
        return ds
    step = float(np.median(np.diff(lat)))
    rows = int(np.floor((lat[0] - step / 2 - lat_min) / step + 1e-6))
    if rows <= 0:
        return ds
    south = lat[0] - step * np.arange(rows, 0, -1)
    return ds.reindex(lat=np.concatenate([south, lat]), method=None, fill_value=np.nan)


def expand_local(pattern: str | list, key: str) -> list[str]:
    """The files a local path or glob (or a list of them) names, sorted; error naming ``key`` if none."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    files = sorted({f for p in patterns for f in globlib.glob(os.path.expanduser(p))})
    if not files:
        raise UserError(f"{key}: no file matches {', '.join(patterns)}")
    return files


def finish(da: xr.DataArray, name: str, units: str, long_name: str, **attrs) -> xr.DataArray:
    """float32, standard name and attrs, month-start time coordinate with CF attrs."""
    da = da.astype(np.float32)
    da.name = name
    da.attrs = {"units": units, "long_name": long_name, **attrs}
    da.encoding = {}
    if "time" in da.coords:
        da["time"] = pd.DatetimeIndex(da["time"].values).values.astype("datetime64[ns]")
        da["time"].attrs = dict(COORD_ATTRS["time"])
    return da


def check_units(var: xr.DataArray, allowed: tuple[str, ...], where: str) -> str:
    """The variable's units if they are one of ``allowed`` (case and spaces ignored)."""
    units = var.attrs.get("units", var.attrs.get("Units"))
    norm = lambda s: re.sub(r"\s+", " ", str(s)).strip().lower()  # noqa: E731
    if units is None or norm(units) not in {norm(a) for a in allowed}:
        raise UserError(f"{where}: variable '{var.name}' has units {units!r}; expected {' or '.join(map(repr, allowed))}")
    return str(units)


def check_coverage(months: pd.DatetimeIndex, start: str, end: str, where: str, what: str) -> None:
    """The product's months must reach from ``start`` to ``end`` ("YYYY-MM")."""
    if len(months) == 0:
        raise UserError(f"{where}: {what} has no time steps")
    first, last = months.min(), months.max()
    if first > pd.Timestamp(start) or last < pd.Timestamp(end):
        raise UserError(f"{where}: {what} covers {first:%Y-%m}..{last:%Y-%m}, "
                        f"not the configured {start}..{end}")


def check_complete(months: pd.DatetimeIndex, start: str, end: str, where: str, what: str) -> None:
    """Every month from ``start`` to ``end`` must be present (meteorological products)."""
    check_coverage(months, start, end, where, what)
    wanted = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="MS")
    absent = wanted.difference(months)
    if len(absent):
        raise UserError(f"{where}: {what} lacks {len(absent)} month(s) of {start}..{end}, first {absent[0]:%Y-%m}")


def missing_months(months: pd.DatetimeIndex) -> str:
    """Comma-separated "YYYY-MM" of the months absent between the first and the last."""
    if len(months) == 0:
        return ""
    full = pd.date_range(months.min(), months.max(), freq="MS")
    return ",".join(f"{m:%Y-%m}" for m in full.difference(months))
