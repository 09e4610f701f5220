"""Figures: cartopy maps drawn with no network access.

Coastlines are Natural Earth's 1:110m land outlines shipped with the package
(gracefill/data/), never cartopy's Natural Earth downloads.
"""
from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import xarray as xr


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@functools.lru_cache(maxsize=1)
def coastlines():
    """Natural Earth 1:110m land outlines shipped with the package (see gracefill/data/README.md),
    as one shapely MultiLineString in longitude / latitude."""
    from shapely.geometry import MultiLineString

    with resources.files("gracefill").joinpath("data/coastlines_ne110m.npz").open("rb") as f:
        data = np.load(f)
        vertices, offsets = data["vertices"], data["offsets"]
    return MultiLineString([vertices[a:b] for a, b in zip(offsets[:-1], offsets[1:])])


def draw_coastlines(ax, color: str = "0.2", linewidth: float = 0.4) -> None:
    """The coastlines on a cartopy map, projected by cartopy."""
    import cartopy.crs as ccrs

    ax.add_geometries([coastlines()], crs=ccrs.PlateCarree(), facecolor="none", edgecolor=color,
                      linewidth=linewidth)


def _limits(values: list[np.ndarray], symmetric: bool) -> tuple[float, float]:
    """Colour limits over several fields: +-98th percentile of |value| (symmetric) or 2-98th."""
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values])
    if not finite.size:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        vmax = max(float(np.percentile(np.abs(finite), 98)), 1e-9)
        return -vmax, vmax
    low, high = np.percentile(finite, [2, 98])
    return float(low), float(max(high, low + 1e-9))


def units_label(field: xr.DataArray, name: str | None = None) -> str:
    """A colour bar's label: the field's name (``name``, else its long_name) with its units in
    brackets; "dimensionless" for units "1"."""
    units = field.attrs.get("units", "")
    units = "dimensionless" if units in ("1", "") else units
    name = name if name is not None else field.attrs.get("long_name", "")
    return f"{name} ({units})" if name else units


def map_panels(fields: list[xr.DataArray], titles: list[str], *, ncols: int = 2, dpi: int = 110,
               cmap: str | list = "RdBu", symmetric: bool | list = True, suptitle: str | None = None,
               groups: list | None = None, labels: list[str] | None = None):
    """One cartopy map per field, each with a colour bar labelled with ``labels`` (default: the
    field's units, see :func:`units_label`). Fields with the same ``groups`` key share one colour
    range (panels that are compared), and a colour bar shows extend arrows where values lie
    beyond its range. The layout is constrained, so titles, colour bars and the suptitle do not
    overlap."""
    import cartopy.crs as ccrs

    plt = _pyplot()
    first = fields[0]
    lat, lon = first["lat"].values, first["lon"].values
    extent, projection, global_lon = _extent(lat, lon)

    nrows = int(np.ceil(len(fields) / ncols))
    aspect = (extent[3] - extent[2]) / (extent[1] - extent[0])
    width = 5.2 * ncols
    fig = plt.figure(figsize=(width, nrows * (width / ncols) * max(aspect, 0.35) + 0.9 * nrows), dpi=dpi,
                     layout="constrained")
    cmaps = cmap if isinstance(cmap, list) else [cmap] * len(fields)
    symmetric_each = symmetric if isinstance(symmetric, list) else [symmetric] * len(fields)
    groups = groups if groups is not None else list(range(len(fields)))
    limits = {key: _limits([f.values for f, g in zip(fields, groups) if g == key], symmetric_each[groups.index(key)])
              for key in dict.fromkeys(groups)}
    for i, (field, title) in enumerate(zip(fields, titles)):
        ax = fig.add_subplot(nrows, ncols, i + 1, projection=projection)
        values = np.ma.masked_invalid(field.values)
        vmin, vmax = limits[groups[i]]
        below, above = bool((values < vmin).any()), bool((values > vmax).any())
        extend = "both" if below and above else "min" if below else "max" if above else "neither"
        mesh = ax.pcolormesh(lon, lat, values, cmap=cmaps[i], vmin=vmin, vmax=vmax,
                             transform=ccrs.PlateCarree(), shading="nearest")
        draw_coastlines(ax)
        _set_extent(ax, extent, global_lon)
        ax.set_title(title, fontsize=9)
        bar = fig.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.75, pad=0.02, extend=extend)
        bar.set_label(labels[i] if labels is not None else units_label(field, name=""), fontsize=8)
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


def wsdi_panels(wsdi: xr.DataArray, land: xr.DataArray, *, thresholds: list[float], ncols: int = 4,
                dpi: int = 110, title: str = "WSDI", category_names: list[str] | None = None):
    """One map per month on the drought categories of ``thresholds`` (mild to exceptional, e.g.
    -0.5, -0.8, -1.3, -1.6, -2.0): one colour per category, the last open-ended; land above the
    first threshold grey (no drought), ocean white, as in the paper's gap panels."""
    import cartopy.crs as ccrs
    import matplotlib.colors as mcolors

    plt = _pyplot()
    bounds = sorted(float(t) for t in thresholds)          # most severe first
    lat, lon = wsdi["lat"].values, wsdi["lon"].values
    extent, projection, global_lon = _extent(lat, lon)
    months = wsdi["time"].values
    nrows = int(np.ceil(len(months) / ncols))
    aspect = (extent[3] - extent[2]) / (extent[1] - extent[0])
    width = 4.0 * ncols
    fig = plt.figure(figsize=(width, nrows * (width / ncols) * max(aspect, 0.35) + 1.4), dpi=dpi,
                     layout="constrained")
    # one colour per category: (-inf, t_n], (t_n, t_n-1], ..., (t_2, t_1]
    colours = plt.get_cmap("YlOrRd_r")(np.linspace(0.0, 0.8, len(bounds)))
    cmap = mcolors.ListedColormap(colours)
    norm = mcolors.BoundaryNorm(bounds, cmap.N, extend="min")     # below the most severe bound: its colour
    grey = np.where(land.values.astype(bool), 1.0, np.nan)
    mesh = None
    for i, month in enumerate(months):
        ax = fig.add_subplot(nrows, ncols, i + 1, projection=projection)
        values = wsdi.sel(time=month).values
        drought = np.ma.masked_where(~(values <= bounds[-1]), values)
        ax.pcolormesh(lon, lat, np.ma.masked_invalid(grey), cmap=mcolors.ListedColormap(["0.85"]),
                      transform=ccrs.PlateCarree(), shading="nearest")
        mesh = ax.pcolormesh(lon, lat, drought, cmap=cmap, norm=norm, transform=ccrs.PlateCarree(), shading="nearest")
        draw_coastlines(ax, color="0.3", linewidth=0.3)
        _set_extent(ax, extent, global_lon)
        ax.set_title(str(np.datetime_as_string(month, unit="M")), fontsize=9)
    if mesh is not None:
        bar = fig.colorbar(mesh, ax=fig.axes, orientation="horizontal", shrink=0.6, pad=0.02, extend="min",
                           ticks=bounds, spacing="uniform")
        names = list(category_names or [])[1:][::-1]   # most severe first, like the colours
        label = f"{title} (dimensionless) on the drought categories; land above {bounds[-1]} grey (no drought)"
        if len(names) == len(bounds):
            label += ": " + ", ".join(f"{name} <= {b:g}" if k == 0 else f"{name} ({bounds[k - 1]:g}, {b:g}]"
                                      for k, (name, b) in enumerate(zip(names, bounds)))
        bar.set_label(label, fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def _extent(lat: np.ndarray, lon: np.ndarray):
    import cartopy.crs as ccrs

    half_lat = abs(lat[1] - lat[0]) / 2 if lat.size > 1 else 0.5
    half_lon = abs(lon[1] - lon[0]) / 2 if lon.size > 1 else 0.5
    extent = (lon.min() - half_lon, lon.max() + half_lon, lat.min() - half_lat, lat.max() + half_lat)
    global_lon = extent[1] - extent[0] > 300
    return extent, (ccrs.Robinson() if global_lon else ccrs.PlateCarree()), global_lon


def _set_extent(ax, extent, global_lon: bool) -> None:
    import cartopy.crs as ccrs

    if global_lon:
        ax.set_global()
    else:
        ax.set_extent(extent, crs=ccrs.PlateCarree())


def training_curves(log, dpi: int = 110):
    """Training and test RMSE, test R^2, test MNLP and mean log beta against the epoch."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=dpi, sharex=True)
    ax = axes[0, 0]
    scored = log[log["test_rmse"].notna()]  # the test months are scored every training.score_every epochs
    ax.plot(log["epoch"], log["train_rmse"], label="training")
    ax.plot(scored["epoch"], scored["test_rmse"], marker="o", label="test")
    ax.set_ylabel("RMSE (target units)")
    ax.legend(fontsize=8)
    for ax, column, label in ((axes[0, 1], "test_r2", "test R$^2$"), (axes[1, 0], "test_mnlp", "test MNLP (per value)"),
                              (axes[1, 1], "mean_log_beta", "mean log $\\beta$")):
        rows = scored if column.startswith("test") else log
        ax.plot(rows["epoch"], rows[column], color="C2", marker="o" if column.startswith("test") else None)
        ax.set_ylabel(label)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle("SVGD training", fontsize=11)
    fig.tight_layout()
    return fig


def calibration_plot(tables: dict, dpi: int = 110):
    """Observed against nominal coverage of central prediction intervals, one line per table
    (each with columns nominal and observed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=dpi)
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", label="perfect calibration")
    for name, table in tables.items():
        ax.plot(table["nominal"], table["observed"], marker="o", label=name)
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("observed coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


#: fewest months before or after the GRACE record that the time series shade as such
MIN_SHADED_MONTHS = 12


def time_series(series: list[dict], gap: tuple, units: str, dpi: int = 110, outside: list[tuple] = ()):
    """One panel per site: observed GRACE, reconstruction with its 95 % band, the gap shaded,
    and each (start, end) span of ``outside`` (months before or after the GRACE record, at least
    :data:`MIN_SHADED_MONTHS`) hatched.

    Each entry of ``series``: name, time, observed, mean, lower, upper (1-D arrays), truth optional.
    """
    plt = _pyplot()
    width = 9 if not outside else 12
    fig, axes = plt.subplots(len(series), 1, figsize=(width, 2.4 * len(series)), dpi=dpi, sharex=True, squeeze=False)
    for ax, s in zip(axes[:, 0], series):
        for k, (start, end) in enumerate(outside):
            ax.axvspan(np.datetime64(start), np.datetime64(end), color="0.96", hatch="//", edgecolor="0.8", lw=0,
                       label="no GRACE record (hindcast / forecast)" if k == 0 else None)
        ax.axvspan(np.datetime64(gap[0]), np.datetime64(gap[1]), color="0.9", label="GRACE / GRACE-FO gap")
        ax.fill_between(s["time"], s["lower"], s["upper"], color="C0", alpha=0.3, label="95 % interval")
        ax.plot(s["time"], s["mean"], color="C0", lw=1.2, label="reconstruction")
        ax.plot(s["time"], s["observed"], color="k", lw=0, marker=".", ms=3, label="GRACE")
        if s.get("truth") is not None:
            ax.plot(s["time"], s["truth"], color="C3", lw=0.8, ls=":", label="truth (synthetic)")
        ax.set_title(s["name"], fontsize=9)
        ax.set_ylabel(f"TWSA ({units})")
    axes[0, 0].legend(fontsize=7, ncol=5, loc="upper left")
    fig.tight_layout()
    return fig


#: the bar chart's scores: column, name, how it is summarised, whether it is in the target's units
SCORE_COLUMNS = (("nse_median", "NSE", "median over land cells", False),
                 ("r_median", "R", "median over land cells", False),
                 ("rmse_median", "RMSE", "median over land cells", True),
                 ("crps", "CRPS", "mean over every value", True))


def bar_comparison(table, units: str = "cm", dpi: int = 110):
    """Area-weighted median NSE, R and RMSE over land cells and mean CRPS over every value of
    every method, one row of panels per period (test months vs GRACE; gap months vs truth where
    known); each axis names its score, how it is summarised and its units."""
    plt = _pyplot()
    periods = list(dict.fromkeys(table["period"]))
    fig, axes = plt.subplots(len(periods), len(SCORE_COLUMNS), figsize=(3.3 * len(SCORE_COLUMNS), 3.1 * len(periods)),
                             dpi=dpi, squeeze=False, layout="constrained")
    for row, period in zip(axes, periods):
        part = table[table["period"] == period]
        for ax, (column, name, summary, dimensional) in zip(row, SCORE_COLUMNS):
            ax.bar(part["method"], part[column], color=[f"C{i}" for i in range(len(part))])
            ax.set_title(f"{name}, {period.replace('_', '-')} months", fontsize=9)
            ax.set_ylabel(f"{name} ({units if dimensional else 'dimensionless'}), {summary}", fontsize=7)
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
            ax.axhline(0, color="0.4", linewidth=0.6)
    fig.suptitle("The BCNN and the baselines, by period (higher NSE and R, lower RMSE and CRPS are better)",
                 fontsize=10)
    return fig


def gap_animation(mean: xr.DataArray, std: xr.DataArray, path, *, dpi: int = 80, fps: int = 2) -> None:
    """A GIF of the reconstruction and its standard deviation, one frame per month."""
    import cartopy.crs as ccrs
    from matplotlib.animation import FuncAnimation, PillowWriter

    from gracefill.io import atomic_path

    plt = _pyplot()
    lat, lon = mean["lat"].values, mean["lon"].values
    extent, projection, global_lon = _extent(lat, lon)
    fig = plt.figure(figsize=(10, 3.6), dpi=dpi)
    axes = [fig.add_subplot(1, 2, i + 1, projection=projection) for i in range(2)]
    vmax = float(np.nanpercentile(np.abs(mean.values), 98)) or 1.0
    smax = float(np.nanpercentile(std.values, 98)) or 1.0
    meshes = []
    for ax, field, cmap, (lo, hi), label in ((axes[0], mean, "RdBu", (-vmax, vmax), "reconstruction"),
                                              (axes[1], std, "viridis", (0, smax), "predictive std")):
        m = ax.pcolormesh(lon, lat, np.ma.masked_invalid(field.isel(time=0).values), cmap=cmap, vmin=lo, vmax=hi,
                          transform=ccrs.PlateCarree(), shading="nearest")
        draw_coastlines(ax, color="0.3", linewidth=0.3)
        _set_extent(ax, extent, global_lon)
        bar = fig.colorbar(m, ax=ax, orientation="horizontal", shrink=0.7, pad=0.04)
        bar.set_label(units_label(field, name=label), fontsize=8)
        meshes.append(m)
    title = fig.suptitle("")

    def draw(i):
        meshes[0].set_array(np.ma.masked_invalid(mean.isel(time=i).values).ravel())
        meshes[1].set_array(np.ma.masked_invalid(std.isel(time=i).values).ravel())
        title.set_text(f"gap-filled TWSA, {np.datetime_as_string(mean['time'].values[i], unit='M')}")
        return meshes

    animation = FuncAnimation(fig, draw, frames=mean.sizes["time"], blit=False)
    with atomic_path(path) as tmp:
        animation.save(tmp, writer=PillowWriter(fps=fps), dpi=dpi)
    plt.close(fig)
