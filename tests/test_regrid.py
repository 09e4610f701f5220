"""Conservative regridding keeps area-weighted means and constants, and skips NaN cells."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gracefill.grid import GridSpec, build_grid, cell_area, regular_spacing, wraps_globe
from gracefill.regrid import regrid_conservative
from tests.conftest import make_field


@pytest.fixture(scope="module")
def target():
    return build_grid(GridSpec(4.0, -60, 84, -180, 180))


def source_field(values, spec):
    months = pd.date_range("2002-01-01", periods=values.shape[0], freq="MS")
    return make_field(values, months, spec.lat, spec.lon, "field", "mm")


def test_global_area_weighted_mean_is_kept(target):
    spec = GridSpec(1.0, -60, 84, -180, 180)
    rng = np.random.default_rng(1)
    values = rng.normal(10, 50, size=(2, *spec.shape))
    out = regrid_conservative(source_field(values, spec), target)
    a_src, a_tgt = cell_area(spec.lat, spec.lon, 1.0), target["cell_area"].values
    mean_src = (values * a_src).sum((1, 2)) / a_src.sum()
    mean_tgt = (out.values * a_tgt).sum((1, 2)) / a_tgt.sum()
    assert np.allclose(mean_tgt, mean_src, rtol=1e-6)
    assert out.attrs["units"] == "mm" and out.sizes == {"time": 2, "lat": 36, "lon": 90}


def test_constant_maps_to_the_same_constant(target):
    spec = GridSpec(0.5, -60, 84, -180, 180)
    out = regrid_conservative(source_field(np.full((1, *spec.shape), 3.25), spec), target)
    assert np.allclose(out.values, 3.25, rtol=1e-12)


def test_nan_cells_are_left_out_and_empty_cells_stay_nan():
    tgt = build_grid(GridSpec(2.0, 0, 16, 0, 16))
    spec = GridSpec(1.0, 0, 16, 0, 16)
    values = np.full((1, *spec.shape), np.nan)
    values[0, 0, 0], values[0, 0, 1], values[0, 1, 0] = 1.0, 2.0, 3.0  # 3 of 4 cells in target cell (0, 0)
    out = regrid_conservative(source_field(values, spec), tgt)
    a = cell_area(spec.lat[:2], spec.lon[:2], 1.0)
    expected = (1.0 * a[0, 0] + 2.0 * a[0, 1] + 3.0 * a[1, 0]) / (a[0, 0] + a[0, 1] + a[1, 0])
    assert out.values[0, 0, 0] == pytest.approx(expected, rel=1e-9)
    assert np.isnan(out.values[0, 1:, :]).all() and np.isnan(out.values[0, 0, 1:]).all()


def test_dask_input_stays_lazy_and_matches(target):
    spec = GridSpec(2.0, -60, 84, -180, 180)
    values = np.random.default_rng(2).normal(size=(4, *spec.shape)).astype(np.float32)
    da = source_field(values, spec)
    lazy = regrid_conservative(da.chunk({"time": 1}), target)
    assert lazy.chunks is not None
    assert np.allclose(lazy.compute().values, regrid_conservative(da, target).values, atol=1e-6)


def test_descending_latitude_is_refused(target):
    spec = GridSpec(2.0, -60, 84, -180, 180)
    da = source_field(np.zeros((1, *spec.shape)), spec).isel(lat=slice(None, None, -1))
    with pytest.raises(ValueError, match="latitude must be ascending"):
        regrid_conservative(da, target)


def test_regular_spacing_and_global_wrap_of_the_target_grid(target):
    """The smoothing on the sphere reads the grid's spacing and whether its longitudes close the
    circle; a regional or uneven grid is named in the error."""
    assert regular_spacing(target["lat"].values, "lat") == pytest.approx(4.0)
    assert wraps_globe(target.sizes["lon"], regular_spacing(target["lon"].values, "lon"))
    assert not wraps_globe(30, 4.0)
    with pytest.raises(ValueError, match="^lat: expected ascending, regularly spaced cell centres$"):
        regular_spacing(target["lat"].values[::-1], "lat")
    with pytest.raises(ValueError, match="^lon: expected ascending, regularly spaced cell centres$"):
        regular_spacing(np.array([0.0, 4.0, 9.0]), "lon")
    with pytest.raises(ValueError, match="^lon: expected a 1-D array of at least 2 cell centres$"):
        regular_spacing(np.array([2.0]), "lon")
