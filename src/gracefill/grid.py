"""The target grid: cell centres and bounds, cell areas, and the land mask."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import xarray as xr
from scipy import ndimage

from gracefill.io import UserError

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
LAND_SAMPLES_PER_CELL = 8  # land fraction = share of 8 x 8 sample points per cell on land


@dataclass(frozen=True)
class GridSpec:
    """A regular latitude-longitude grid given by its resolution (degrees) and outer bounds."""

    resolution: float
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    @classmethod
    def from_config(cls, grid: dict, resolution: float | None = None) -> "GridSpec":
        """Build from the config's ``grid`` section, optionally at another resolution."""
        return cls(
            float(resolution if resolution is not None else grid["resolution"]),
            float(grid["lat_min"]), float(grid["lat_max"]),
            float(grid["lon_min"]), float(grid["lon_max"]),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (
            int(round((self.lat_max - self.lat_min) / self.resolution)),
            int(round((self.lon_max - self.lon_min) / self.resolution)),
        )

    @property
    def lat(self) -> np.ndarray:
        """Cell-centre latitudes, ascending."""
        return self.lat_min + self.resolution * (np.arange(self.shape[0]) + 0.5)

    @property
    def lon(self) -> np.ndarray:
        """Cell-centre longitudes, ascending, within -180..180."""
        return self.lon_min + self.resolution * (np.arange(self.shape[1]) + 0.5)

    @property
    def is_global_in_lon(self) -> bool:
        return np.isclose(self.lon_max - self.lon_min, 360.0)

    def coords(self) -> dict[str, xr.DataArray]:
        """CF latitude and longitude coordinates."""
        return {
            "lat": xr.DataArray(self.lat, dims="lat", attrs={
                "units": "degrees_north", "standard_name": "latitude", "long_name": "latitude",
                "axis": "Y", "bounds": "lat_bnds"}),
            "lon": xr.DataArray(self.lon, dims="lon", attrs={
                "units": "degrees_east", "standard_name": "longitude", "long_name": "longitude",
                "axis": "X", "bounds": "lon_bnds"}),
        }


def cell_area(lat: np.ndarray, lon: np.ndarray, resolution: float) -> np.ndarray:
    """Exact spherical area (m2) of each cell, shape (lat, lon)."""
    half = np.radians(resolution) / 2
    phi = np.radians(lat)
    band = np.sin(phi + half) - np.sin(phi - half)
    return EARTH_RADIUS_M**2 * np.radians(resolution) * np.broadcast_to(band[:, None], (lat.size, lon.size))


def land_fraction(spec: GridSpec, samples: int = LAND_SAMPLES_PER_CELL) -> np.ndarray:
    """Share of each cell on land, from global-land-mask (a 1 km mask shipped with the package)."""
    from global_land_mask import globe

    offsets = (np.arange(samples) + 0.5) / samples - 0.5
    sub_lat = (spec.lat[:, None] + offsets[None, :] * spec.resolution).ravel()
    sub_lon = (spec.lon[:, None] + offsets[None, :] * spec.resolution).ravel()
    sub_lon = (sub_lon + 180.0) % 360.0 - 180.0
    lat2d, lon2d = np.meshgrid(np.clip(sub_lat, -89.999, 89.999), sub_lon, indexing="ij")
    land = globe.is_land(lat2d, lon2d).astype(np.float32)
    n_lat, n_lon = spec.shape
    return land.reshape(n_lat, samples, n_lon, samples).mean(axis=(1, 3))


def require_land(spec: GridSpec, min_land_fraction: float = 0.5, frac: np.ndarray | None = None) -> None:
    """UserError naming the grid keys when no cell of ``spec`` is land (a land fraction of at
    least ``min_land_fraction``): there would be nothing to reconstruct."""
    frac = land_fraction(spec) if frac is None else frac
    if not (frac >= min_land_fraction).any():
        raise UserError(f"config key 'grid': lat {spec.lat_min:g}..{spec.lat_max:g}, lon {spec.lon_min:g}.."
                         f"{spec.lon_max:g} holds no land cell (land fraction >= grid.min_land_fraction = "
                         f"{min_land_fraction:g}); choose bounds over land or lower grid.min_land_fraction")


def build_grid(spec: GridSpec, min_land_fraction: float = 0.5) -> xr.Dataset:
    """Target grid dataset: land mask and fraction, cell areas and cell bounds."""
    coords = spec.coords()
    frac = land_fraction(spec)
    require_land(spec, min_land_fraction, frac)
    half = spec.resolution / 2
    ds = xr.Dataset(
        {
            "land_mask": (("lat", "lon"), (frac >= min_land_fraction).astype(np.int8), {
                "long_name": "land mask", "flag_values": np.array([0, 1], dtype=np.int8),
                "flag_meanings": "ocean land", "units": "1",
                "comment": f"land where the land fraction is at least {min_land_fraction}"}),
            "land_fraction": (("lat", "lon"), frac.astype(np.float32), {
                "long_name": "fraction of the cell on land", "units": "1",
                "standard_name": "land_area_fraction"}),
            "cell_area": (("lat", "lon"), cell_area(spec.lat, spec.lon, spec.resolution), {
                "long_name": "cell area", "units": "m2", "standard_name": "cell_area"}),
            "lat_bnds": (("lat", "nv"), np.stack([spec.lat - half, spec.lat + half], 1)),
            "lon_bnds": (("lon", "nv"), np.stack([spec.lon - half, spec.lon + half], 1)),
        },
        coords=coords,
        attrs={"title": "gracefill target grid", "resolution_degrees": spec.resolution},
    )
    return ds


#: great-circle km per degree on a sphere of radius 6371 km
KM_PER_DEGREE = 111.195
#: Gaussian kernels cut at this many sigmas (non-wrapping direction)
KERNEL_TRUNCATE = 3.0
#: keeps the longitude width finite at the poles
COS_LAT_FLOOR = 0.01


def regular_spacing(values: np.ndarray, name: str) -> float:
    """Spacing of a 1-D ascending regular coordinate (cell centres in degrees); ValueError naming
    it otherwise."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"{name}: expected a 1-D array of at least 2 cell centres")
    step = np.diff(values)
    if not np.all(step > 0) or not np.allclose(step, step[0], rtol=1e-6, atol=1e-9):
        raise ValueError(f"{name}: expected ascending, regularly spaced cell centres")
    return float(step[0])


def wraps_globe(n_lon: int, dlon: float) -> bool:
    """Whether ``n_lon`` longitudes ``dlon`` degrees apart close the circle (a global grid)."""
    return bool(np.isclose(n_lon * dlon, 360.0, atol=1e-6))


def gaussian_kernel(sigma: float, truncate: float = KERNEL_TRUNCATE) -> np.ndarray:
    """Normalised sampled Gaussian of width ``sigma`` cells, cut at ``truncate`` sigmas."""
    radius = int(np.ceil(truncate * sigma))
    if radius < 1:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def smooth_on_sphere(field: np.ndarray, lat: np.ndarray, dlat: float, dlon: float, wrap: bool, sigma_km: float,
                     *, squared: bool = False) -> np.ndarray:
    """Gaussian smoothing of ``field[..., lat, lon]`` with width ``sigma_km`` on the sphere, on a
    regular grid of cell centres ``lat`` (degrees) and spacings ``dlat``, ``dlon``.

    Separable: latitude pass with a constant width in cells, longitude pass with a width of
    ``sigma_km / (dx cos(lat))`` cells per row (circular, in Fourier space, when the grid
    wraps; otherwise cut at the region edge). ``squared=True`` uses the squared weights,
    which applied to ones gives the variance of smoothed unit white noise.
    """
    field = np.asarray(field)
    nlon = field.shape[-1]
    coslat = np.maximum(np.cos(np.deg2rad(lat)), COS_LAT_FLOOR)
    sig_lon = sigma_km / (KM_PER_DEGREE * dlon * coslat)
    if wrap:
        freq = scipy.fft.rfftfreq(nlon)
        spec = np.exp(-2.0 * np.pi**2 * sig_lon[:, None] ** 2 * freq[None, :] ** 2)
        if squared:
            kern = scipy.fft.irfft(spec, n=nlon, axis=-1)
            spec = scipy.fft.rfft(kern**2, axis=-1).real
        spec = spec.astype(field.dtype if field.dtype == np.float32 else np.float64)
        out = scipy.fft.irfft(scipy.fft.rfft(field, axis=-1) * spec, n=nlon, axis=-1)
    else:
        out = np.empty(field.shape, dtype=np.result_type(field.dtype, np.float32))
        for j in range(lat.size):
            w = gaussian_kernel(sig_lon[j])
            out[..., j, :] = ndimage.correlate1d(
                field[..., j, :], w**2 if squared else w, axis=-1, mode="constant"
            )
    w = gaussian_kernel(sigma_km / (KM_PER_DEGREE * dlat))
    return ndimage.correlate1d(out, w**2 if squared else w, axis=-2, mode="constant")
