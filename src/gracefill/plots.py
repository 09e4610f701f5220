"""Figures: cartopy maps drawn with no network access.

Coastlines come from the land mask shipped with global-land-mask (contoured at 0.25 degree),
never from cartopy's Natural Earth downloads.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

COASTLINE_RESOLUTION = 0.25  # degrees


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def coastline_mask(lat_range: tuple[float, float], lon_range: tuple[float, float]):
    """A fine land mask (lat, lon, mask) for contouring coastlines offline."""
    from global_land_mask import globe

    step = COASTLINE_RESOLUTION
    lat = np.arange(lat_range[0] + step / 2, lat_range[1], step)
    lon = np.arange(lon_range[0] + step / 2, lon_range[1], step)
    lat2d, lon2d = np.meshgrid(np.clip(lat, -89.99, 89.99), lon, indexing="ij")
    return lat, lon, globe.is_land(lat2d, lon2d).astype(np.float32)


def map_panels(fields: list[xr.DataArray], titles: list[str], *, ncols: int = 2, dpi: int = 110,
               cmap: str = "RdBu", symmetric: bool = True, suptitle: str | None = None):
    """One cartopy map per field (each with its own colour bar labelled with the field's units)."""
    import cartopy.crs as ccrs

    plt = _pyplot()
    first = fields[0]
    lat, lon = first["lat"].values, first["lon"].values
    half_lat = abs(lat[1] - lat[0]) / 2 if lat.size > 1 else 0.5
    half_lon = abs(lon[1] - lon[0]) / 2 if lon.size > 1 else 0.5
    extent = (lon.min() - half_lon, lon.max() + half_lon, lat.min() - half_lat, lat.max() + half_lat)
    global_lon = extent[1] - extent[0] > 300
    projection = ccrs.Robinson() if global_lon else ccrs.PlateCarree()
    c_lat, c_lon, c_mask = coastline_mask(extent[2:], extent[:2])

    nrows = int(np.ceil(len(fields) / ncols))
    aspect = (extent[3] - extent[2]) / (extent[1] - extent[0])
    width = 5.2 * ncols
    fig = plt.figure(figsize=(width, nrows * (width / ncols) * max(aspect, 0.35) + 0.9 * nrows), dpi=dpi)
    for i, (field, title) in enumerate(zip(fields, titles)):
        ax = fig.add_subplot(nrows, ncols, i + 1, projection=projection)
        values = np.ma.masked_invalid(field.values)
        if symmetric:
            vmax = float(np.nanpercentile(np.abs(field.values), 98)) if np.isfinite(field.values).any() else 1.0
            vmin, vmax = -max(vmax, 1e-9), max(vmax, 1e-9)
        else:
            vmin, vmax = (np.nanpercentile(field.values, [2, 98]) if np.isfinite(field.values).any() else (0, 1))
        mesh = ax.pcolormesh(lon, lat, values, cmap=cmap, vmin=vmin, vmax=vmax,
                             transform=ccrs.PlateCarree(), shading="nearest")
        ax.contour(c_lon, c_lat, c_mask, levels=[0.5], colors="0.2", linewidths=0.4, transform=ccrs.PlateCarree())
        if global_lon:
            ax.set_global()
        else:
            ax.set_extent(extent, crs=ccrs.PlateCarree())
        ax.set_title(title, fontsize=9)
        bar = fig.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.75, pad=0.04)
        bar.set_label(field.attrs.get("units", ""), fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def save_figure(fig, path) -> None:
    """Save a figure as PNG atomically and close it."""
    from gracefill.io import atomic_path

    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
