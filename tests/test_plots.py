"""Figures that compare fields share one colour range, and colour bars say when values go beyond it."""
from __future__ import annotations

import numpy as np
import xarray as xr

from gracefill import plots


def field(values):
    lat, lon = np.arange(20.0, 52.0, 4.0) + 2, np.arange(-128.0, -64.0, 4.0) + 2
    return xr.DataArray(values, dims=("lat", "lon"), coords={"lat": lat, "lon": lon}, attrs={"units": "cm"})


def test_grouped_panels_share_one_symmetric_range_and_extend_beyond_it():
    rng = np.random.default_rng(0)
    truth, recon = field(rng.normal(0, 80, (8, 16))), field(rng.normal(0, 115, (8, 16)))
    std = field(rng.uniform(1, 5, (8, 16)))
    fig = plots.map_panels([truth, recon, std], ["truth", "reconstruction", "std"], ncols=3,
                           cmap=["RdBu", "RdBu", "viridis"], symmetric=[True, True, False], groups=[0, 0, "std"])
    from matplotlib.collections import QuadMesh

    maps = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    meshes = [c for ax in maps for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 3
    (lo1, hi1), (lo2, hi2), (lo3, hi3) = (m.get_clim() for m in meshes)
    assert (lo1, hi1) == (lo2, hi2) and lo1 == -hi1                     # one shared, symmetric scale
    assert np.isclose(hi1, np.percentile(np.abs(np.r_[truth.values.ravel(), recon.values.ravel()]), 98))
    assert lo3 > 0 and (lo3, hi3) != (lo1, hi1)
    # arrows only where values lie beyond the range: the truth fits the shared range, the rest do not
    assert [mesh.colorbar.extend for mesh in meshes] == ["neither", "both", "both"]


def test_dimensionless_fields_say_so_and_explicit_labels_win():
    score = field(np.linspace(-1, 1, 128).reshape(8, 16)).assign_attrs(units="1", long_name="NSE")
    assert plots.units_label(score) == "NSE (dimensionless)"
    assert plots.units_label(field(np.zeros((8, 16))), name="TWSA") == "TWSA (cm)"
    fig = plots.map_panels([score, field(np.ones((8, 16)))], ["a", "b"], labels=["NSE (dimensionless)", "x (cm)"])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [bar.get_xlabel() for bar in bars] == ["NSE (dimensionless)", "x (cm)"]


def test_wsdi_panels_use_the_configured_drought_categories():
    import pandas as pd
    from matplotlib.collections import QuadMesh

    thresholds = [-0.5, -0.8, -1.3, -1.6, -2.0]
    values = np.linspace(-3, 1, 8 * 16).reshape(1, 8, 16)
    wsdi = field(values[0]).expand_dims(time=pd.to_datetime(["2017-08-01"])).assign_attrs(units="1")
    land = field(np.ones((8, 16)))
    names = ["none", "mild", "moderate", "severe", "extreme", "exceptional"]
    fig = plots.wsdi_panels(wsdi, land, thresholds=thresholds, category_names=names)
    mesh = [c for ax in fig.axes if ax.get_label() != "<colorbar>" for c in ax.collections
            if isinstance(c, QuadMesh) and c.norm is not None and hasattr(c.norm, "boundaries")][0]
    np.testing.assert_allclose(mesh.norm.boundaries, sorted(thresholds))   # one colour per category
    assert mesh.norm.Ncmap == len(thresholds) and mesh.colorbar.extend == "min"
    shown = np.ma.getmaskarray(mesh.get_array())
    assert shown.sum() == (values[0] > -0.5).sum()                      # above the mildest bound: no colour
    label = mesh.colorbar.ax.get_xlabel()
    assert "exceptional <= -2" in label and "mild (-0.8, -0.5]" in label and "(dimensionless)" in label


def test_bar_comparison_labels_every_axis_with_its_summary_and_units():
    import pandas as pd

    table = pd.DataFrame({"method": ["bcnn", "regression"] * 2, "period": ["test"] * 2 + ["gap"] * 2,
                          "nse_median": [0.6, 0.5, 0.4, 0.3], "r_median": [0.9, 0.8, 0.9, 0.8],
                          "rmse_median": [4.0, 5.0, 3.0, 4.0], "crps": [3.0, 3.5, 2.0, 2.5]})
    fig = plots.bar_comparison(table, units="cm")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[:4] == ["NSE (dimensionless), median over land cells", "R (dimensionless), median over land cells",
                          "RMSE (cm), median over land cells", "CRPS (cm), mean over every value"]
    assert len(fig.axes) == 8 and all(labels)


def test_coastlines_come_from_the_shipped_natural_earth_outlines():
    from cartopy.mpl.feature_artist import FeatureArtist

    lines = plots.coastlines()
    assert len(lines.geoms) == 132
    lon, lat = np.concatenate([np.asarray(g.coords) for g in lines.geoms]).T
    assert -180 <= lon.min() < -170 and 170 < lon.max() <= 180 and -90 < lat.min() < -80 and 80 < lat.max() < 84
    # Africa's west coast crosses the equator near 9 E, its east coast near 42 E
    equator = lon[(np.abs(lat) < 1.5) & (lon > 0) & (lon < 50)]
    assert ((equator > 8.5) & (equator < 9.6)).any() and ((equator > 41.5) & (equator < 42.5)).any()
    fig = plots.map_panels([field(np.zeros((8, 16)))], ["x"])
    artists = [a for ax in fig.axes for a in ax.get_children() if isinstance(a, FeatureArtist)]
    assert len(artists) == 1


def test_line_figures_label_their_axes_with_units():
    import pandas as pd

    log = pd.DataFrame({"epoch": [1, 2, 3], "train_rmse": [3.0, 2.0, 1.5], "test_rmse": [np.nan, 2.5, 2.2],
                        "test_r2": [np.nan, 0.5, 0.6], "test_mnlp": [np.nan, 3.0, 2.9], "mean_log_beta": [-3, -2.5, -2]})
    fig = plots.training_curves(log)
    assert [ax.get_ylabel() for ax in fig.axes] == ["RMSE (target units)", "test R$^2$", "test MNLP (per value)",
                                                    "mean log $\\beta$"]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes[2:])
    table = pd.DataFrame({"nominal": [0.5, 0.9], "observed": [0.45, 0.85]})
    ax = plots.calibration_plot({"bcnn, test months": table}).axes[0]
    assert ax.get_xlabel() == "nominal coverage of the central interval" and ax.get_ylabel() == "observed coverage"
    time = np.arange("2016-01", "2019-01", dtype="datetime64[M]").astype("datetime64[ns]")
    series = [{"name": "site", "time": time, "observed": np.zeros(time.size), "mean": np.zeros(time.size),
               "lower": -np.ones(time.size), "upper": np.ones(time.size)}]
    fig = plots.time_series(series, ("2017-07-01", "2018-05-01"), "cm")
    assert fig.axes[0].get_ylabel() == "TWSA (cm)"
