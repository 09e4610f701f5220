"""CSR RL06.3 mascons: reading the exact file structure, and every bad input as one line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gracefill import months as mo
from gracefill.io import UserError
from gracefill.sources import csr
from gracefill.sources import download as dl
from tests.real_fixtures import html_and_cut, serve, to_global, write_csr, write_csr_land_mask

RES = 4.0
PERIOD = ("2002-01", "2020-12")


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    """A global 4-degree CSR-like file with the real mission's availability."""
    root = tmp_path_factory.mktemp("csr")
    months = mo.month_range(*PERIOD)
    observed = mo.synthetic_grace_availability(months, ("2017-07", "2018-05"))
    months = months[observed]
    lat = np.arange(18, 50, RES) + RES / 2  # on the global 4-degree grid
    lon = np.arange(-128, -64, RES) + RES / 2
    rng = np.random.default_rng(1)
    field = rng.normal(0, 50, (len(months), lat.size, lon.size))
    field[:, 0, 0] = np.nan  # an ocean cell inside the region
    values, glat, glon = to_global(field, lat, lon, RES)
    land = np.isfinite(values[0])
    write_csr(root / "csr.nc", values, glat, glon, months)
    write_csr_land_mask(root / "mask.nc", land, glat, glon)
    return root, months, lat, lon, field


def test_reads_the_csr_structure_into_the_normalised_layout(product):
    root, months, lat, lon, field = product
    ds = csr.read(root / "csr.nc", root / "mask.nc")
    twsa = ds["twsa"]
    assert twsa.dims == ("time", "lat", "lon") and twsa.dtype == np.float32
    assert twsa.attrs["units"] == "mm"
    assert np.all(np.diff(ds["lat"].values) > 0) and np.all(np.diff(ds["lon"].values) > 0)
    assert ds["lon"].min() > -180 and ds["lon"].max() < 180
    assert pd.DatetimeIndex(ds["time"].values).equals(months)  # availability from the time axis
    region = twsa.sel(lat=lat, lon=lon).values
    np.testing.assert_allclose(region, field, rtol=1e-6, atol=1e-4)  # cm -> mm, ocean NaN kept
    assert np.isnan(twsa.values).sum() == len(months) * (twsa.shape[1] * twsa.shape[2] - lat.size * lon.size + 1)
    assert "2017-07" in ds.attrs["months_missing"] and "2002-06" in ds.attrs["months_missing"]
    assert ds.attrs["time_mean_removed"] == "2004.000 to 2009.999"


def test_crop_period_and_required_span(product):
    root, months, lat, lon, field = product
    ds = csr.read(root / "csr.nc", root / "mask.nc", period=("2003-01", "2010-12"), require=("2003-01", "2010-12"),
                  bounds={"lat_min": 18, "lat_max": 50, "lon_min": -128, "lon_max": -64})
    assert ds.sizes["lat"] == lat.size + 2 and ds.sizes["lon"] == lon.size + 2
    assert pd.Timestamp(ds["time"].values[0]) == pd.Timestamp("2003-01-01")
    with pytest.raises(UserError, match=r"csr\.nc: lwe_thickness .*covers 2002-04\.\.2020-12, not the configured 2002-01\.\.2020-12"):
        csr.read(root / "csr.nc", require=("2002-01", "2020-12"))


def test_two_solutions_in_one_month_are_averaged_and_bounds_decide_the_month(tmp_path):
    glat = np.array([-60.0, 60.0])
    glon = np.array([90.0, 270.0])
    months = pd.DatetimeIndex(["2015-03-01", "2015-04-01", "2015-04-01", "2015-05-01"])
    values = np.arange(4 * 4, dtype=float).reshape(4, 2, 2)
    write_csr(tmp_path / "c.nc", values, glat, glon, months)
    ds = csr.read(tmp_path / "c.nc")
    assert list(pd.DatetimeIndex(ds["time"].values).strftime("%Y-%m")) == ["2015-03", "2015-04", "2015-05"]
    np.testing.assert_allclose(ds["twsa"].values[1], (values[1] + values[2])[:, ::-1] / 2, rtol=1e-6)
    assert ds.attrs["months_with_several_solutions"] == "2015-04"
    assert list(ds["lon"].values) == [-90.0, 90.0]


BAD = {
    "wrong units": (dict(units="m"), "variable 'lwe_thickness' has units 'm'; expected 'cm'"),
    "missing variable": (dict(drop_variable=True), "missing variable(s) lwe_thickness"),
    "duplicate times": (dict(time_values=np.array([100.0, 100.0, 160.0])), "duplicate values"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_files_give_one_line_naming_the_file(tmp_path, case):
    kwargs, expected = BAD[case]
    months = pd.DatetimeIndex(["2002-04-01", "2002-05-01", "2002-06-01"])
    path = write_csr(tmp_path / "bad.nc", np.zeros((3, 2, 2)), np.array([-45.0, 45.0]), np.array([90.0, 270.0]),
                     months, **kwargs)
    with pytest.raises(UserError) as info:
        csr.read(path)
    assert str(info.value).startswith(str(path)) and expected in str(info.value) and "\n" not in str(info.value)


def test_html_page_and_truncated_file_saved_as_nc(tmp_path, product):
    source = product[0] / "csr.nc"
    for path in html_and_cut(tmp_path, source, source.stat().st_size // 2):
        with pytest.raises(UserError, match=rf"^{path}: not a readable NetCDF file"):
            csr.read(path)


def test_download_verifies_the_product_and_keeps_no_bad_file(tmp_path, product):
    root = product[0]
    www = tmp_path / "www"
    www.mkdir()
    months = pd.DatetimeIndex(["2002-04-01", "2002-05-01"])
    write_csr(www / "CSR.nc", np.zeros((2, 2, 2)), np.array([-45.0, 45.0]), np.array([90.0, 270.0]), months,
              drop_variable=True)
    (www / "mask.nc").write_bytes((root / "mask.nc").read_bytes())
    with serve(www) as server:
        with pytest.raises(UserError, match=r"/CSR\.nc: downloaded file failed verification: .*lwe_thickness"):
            dl.download(f"{server.url}/CSR.nc", tmp_path / "out/CSR.nc", verify=csr.verify, progress=False, retries=1)
        assert not (tmp_path / "out/CSR.nc").exists()
        write_csr(www / "CSR.nc", np.zeros((2, 2, 2)), np.array([-45.0, 45.0]), np.array([90.0, 270.0]), months)
        path = dl.download(f"{server.url}/CSR.nc", tmp_path / "out/CSR.nc", verify=csr.verify, progress=False)
        assert csr.read(path).sizes["time"] == 2
        dl.download(f"{server.url}/mask.nc", tmp_path / "out/mask.nc", verify=csr.verify_land_mask, progress=False)
