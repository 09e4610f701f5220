"""Conservative regridding onto the target grid (xarray-regrid), lazily with dask."""
from __future__ import annotations

import numpy as np
import xarray as xr
import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

#: Months per dask chunk: a 0.1-degree global month is 26 MB in float32, 12 of them ~300 MB.
TIME_CHUNK = 12


def target_coords(grid: xr.Dataset) -> xr.Dataset:
    """The coordinates-only dataset xarray-regrid regrids onto."""
    return xr.Dataset(coords={"lat": grid["lat"], "lon": grid["lon"]})


def regrid_conservative(da: xr.DataArray, grid: xr.Dataset) -> xr.DataArray:
    """Area-conservative regridding of a (time, lat, lon) field onto ``grid``.

    Cells of the source that are NaN (ocean, missing) are left out of the weighted means, so a
    target cell is the area-weighted mean of its valid source cells; target cells without any
    valid source cell are NaN. Attributes (units!) are kept. Lazy if ``da`` is dask-backed.
    """
    if "lat" not in da.dims or "lon" not in da.dims:
        raise ValueError(f"{da.name}: expected dimensions lat and lon, got {da.dims}")
    if not np.all(np.diff(da["lat"].values) > 0):
        raise ValueError(f"{da.name}: latitude must be ascending (normalise the source first)")
    out = da.regrid.conservative(target_coords(grid), latitude_coord="lat", skipna=True, nan_threshold=1.0)
    out = out.astype(da.dtype)
    out.attrs = dict(da.attrs)
    out.name = da.name
    for name in ("lat", "lon"):
        out[name].attrs = dict(grid[name].attrs)
    return out


def open_chunked(path, variable: str) -> xr.DataArray:
    """Open one variable of a normalised source file as a dask array chunked along time."""
    ds = xr.open_dataset(path, engine="netcdf4", chunks={"time": TIME_CHUNK, "lat": -1, "lon": -1})
    return ds[variable]
