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
