"""The synthetic world, step 1: the grid, the real land mask and Gaussian smoothing on the sphere."""
from __future__ import annotations

import importlib.util
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gracefill.grid import regular_spacing, smooth_on_sphere, wraps_globe

LAND_MASK_FILE = "globe_combined_mask_compressed.npz"  # shipped by global-land-mask
LAND_MASK_BLOCK_ROWS = 256  # rows of the 1 km mask decompressed at a time
HALFWIDTH_TO_SIGMA = 1.0 / np.sqrt(2.0 * np.log(2.0))  # Gaussian half-width -> sigma


@dataclass(frozen=True)
class Grid:
    """Regular lat/lon grid: spacing, wrap flag and land mask."""

    lat: np.ndarray
    lon: np.ndarray
    dlat: float
    dlon: float
    wrap: bool
    land: np.ndarray  # bool (nlat, nlon)

    @property
    def shape(self) -> tuple[int, int]:
        return self.lat.size, self.lon.size

    def lat2d(self) -> np.ndarray:
        return np.broadcast_to(self.lat[:, None], self.shape)

    def lon2d(self) -> np.ndarray:
        return np.broadcast_to(self.lon[None, :], self.shape)


def land_mask(lat2d: np.ndarray, lon2d: np.ndarray) -> np.ndarray:
    """``global_land_mask.globe.is_land`` at the given points, without holding its 1 GB mask.

    Importing ``globe`` inflates a 21600 x 43200 mask (about 6 s, 0.9 GB); this streams the
    same file row block by row block and keeps only the rows it needs (same index rule, so
    the same answer). If ``globe`` is already imported, it is simply called.
    """
    lat2d = np.asarray(lat2d, dtype=np.float64)
    lon2d = np.asarray(lon2d, dtype=np.float64)
    globe = sys.modules.get("global_land_mask.globe")
    if globe is not None:
        return np.asarray(globe.is_land(lat2d, lon2d), dtype=bool)
    spec = importlib.util.find_spec("global_land_mask")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("global_land_mask: package not installed (pip install global-land-mask)")
    path = Path(list(spec.submodule_search_locations)[0]) / LAND_MASK_FILE
    if not path.is_file():  # a future release stores it differently: use the package itself
        from global_land_mask import globe as globe_module

        return np.asarray(globe_module.is_land(lat2d, lon2d), dtype=bool)
    with zipfile.ZipFile(path) as archive:
        with archive.open("lat.npy") as f:
            mask_lat = np.load(f)
        with archive.open("lon.npy") as f:
            mask_lon = np.load(f)
        # the package's lat_to_index / lon_to_index
        lat_c = np.clip(lat2d, mask_lat.min(), mask_lat.max())
        lon_c = np.clip(lon2d, mask_lon.min(), mask_lon.max())
        lat_i = ((lat_c - mask_lat[0]) / (mask_lat[1] - mask_lat[0])).astype(int)
        lon_i = ((lon_c - mask_lon[0]) / (mask_lon[1] - mask_lon[0])).astype(int)
        rows, row_of = np.unique(lat_i, return_inverse=True)
        with archive.open("mask.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if fortran or dtype != np.bool_ or len(shape) != 2:
                raise ValueError(f"{LAND_MASK_FILE}: unexpected mask layout {shape}, {dtype}")
            ncol = shape[1]
            kept = np.empty((rows.size, ncol), dtype=bool)
            first = 0
            for start in range(0, int(rows[-1]) + 1, LAND_MASK_BLOCK_ROWS):
                n = min(LAND_MASK_BLOCK_ROWS, shape[0] - start)
                block = np.frombuffer(f.read(n * ncol), dtype=bool).reshape(n, ncol)
                last = np.searchsorted(rows, start + n)
                kept[first:last] = block[rows[first:last] - start]
                first = last
    is_ocean = kept[row_of.reshape(lat_i.shape), lon_i]
    return ~is_ocean


def make_grid(lat: np.ndarray, lon: np.ndarray) -> Grid:
    """Validate the native grid and attach the real land mask (land where the centre is land)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    dlat = regular_spacing(lat, "lat")
    dlon = regular_spacing(lon, "lon")
    if lat[0] < -90 or lat[-1] > 90:
        raise ValueError("lat: cell centres must lie within -90..90")
    if lon[0] < -180 or lon[-1] > 180:
        raise ValueError("lon: cell centres must lie within -180..180")
    wrap = wraps_globe(lon.size, dlon)
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    return Grid(lat=lat, lon=lon, dlat=dlat, dlon=dlon, wrap=wrap, land=land_mask(lat2d, lon2d))


def smooth(field: np.ndarray, grid: Grid, sigma_km: float, *, squared: bool = False) -> np.ndarray:
    """Gaussian smoothing of ``field[..., lat, lon]`` with width ``sigma_km`` on the sphere
    (:func:`gracefill.grid.smooth_on_sphere` on the grid's spacing and wrap)."""
    return smooth_on_sphere(field, grid.lat, grid.dlat, grid.dlon, grid.wrap, sigma_km, squared=squared)


def correlated_noise(rng: np.random.Generator, grid: Grid, sigma_km: float, n: int | None = None) -> np.ndarray:
    """Unit-variance Gaussian noise on the grid, smoothed over ``sigma_km``; shape (n, lat, lon) or (lat, lon)."""
    shape = grid.shape if n is None else (n, *grid.shape)
    white = rng.standard_normal(shape, dtype=np.float32)
    var = smooth(np.ones(grid.shape), grid, sigma_km, squared=True)
    field = smooth(white, grid, sigma_km)
    field /= np.sqrt(var).astype(np.float32)
    return field


def _ar1_in_place(noise: np.ndarray, phi: float) -> np.ndarray:
    """Turn independent unit-variance months (axis 0) into a stationary AR(1) with the same variance."""
    scale = np.float32(np.sqrt(1.0 - phi**2))
    for t in range(1, noise.shape[0]):
        noise[t] *= scale
        noise[t] += np.float32(phi) * noise[t - 1]
    return noise


def _box_mask(grid: Grid, lat_min: float, lat_max: float, lon_min: float, lon_max: float) -> np.ndarray:
    """Cells whose centre lies in the box; lon_min > lon_max means the box crosses the dateline."""
    lat_ok = (grid.lat >= lat_min) & (grid.lat <= lat_max)
    if lon_min <= lon_max:
        lon_ok = (grid.lon >= lon_min) & (grid.lon <= lon_max)
    else:
        lon_ok = (grid.lon >= lon_min) | (grid.lon <= lon_max)
    return lat_ok[:, None] & lon_ok[None, :]


def _lon_distance(lon: np.ndarray, centre: float) -> np.ndarray:
    """Signed longitude difference in -180..180 degrees."""
    return (lon - centre + 180.0) % 360.0 - 180.0

