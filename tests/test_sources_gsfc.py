"""GSFC RL06 v2.0 half-degree mascons: the NETCDF3 structure without fill values, the in-file land
mask, the two 2018-11 solutions, and every bad input as one line."""
from __future__ import annotations

import netCDF4
import numpy as np
import pandas as pd
import pytest

from gracefill import cli
from gracefill import months as mo
from gracefill.sources import download as dl
from gracefill.sources import gsfc
from tests.real_fixtures import (DAMAGE, FAULTS, damage, expect_one_line, fault_then_recover, html_and_cut, serve,
                                 to_global, write_gsfc, write_link_page)

RES = 5.0  # the real grid is 0.5 degree; the structure is what matters here
NAME = "gsfc.glb_.200204_202410_rl06v2.0_obp-ice6gd_halfdegree.nc"


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    """A global 5-degree GSFC-like file, 2017-01..2019-12 with the real missions' gaps."""
    root = tmp_path_factory.mktemp("gsfc")
    months = mo.month_range("2017-01", "2019-12")
    months = months[mo.synthetic_grace_availability(months, ("2017-07", "2018-05"))]
    lat = np.arange(20.0, 50.0, RES) + RES / 2
    lon = np.arange(-130.0, -60.0, RES) + RES / 2
    field = np.random.default_rng(2).normal(0, 80, (len(months), lat.size, lon.size))
    field[:, 0, 0] = np.nan  # an ocean cell inside the region: land_mask 0, a value in the file
    values, glat, glon = to_global(field, lat, lon, RES)
    land = np.isfinite(values[0])
    path = write_gsfc(root / NAME, values, glat, glon, months, land)
    return path, months, lat, lon, field


def test_the_fixture_has_the_real_quirks(product):
    path = product[0]
    with netCDF4.Dataset(path) as nc:
        assert nc.data_model == "NETCDF3_CLASSIC" and "v1.0" in nc.title
        assert "_FillValue" not in nc["lwe_thickness"].ncattrs() and np.isfinite(nc["lwe_thickness"][:]).all()
        assert "latg_name" in nc["lat"].ncattrs() and "long_name" not in nc["lat"].ncattrs()
        assert nc["lon"][:].min() > 0 and nc["lon"][:].max() > 180
        assert nc["lwe_thickness"].dtype == np.float64 and nc["lwe_thickness"].dimensions == ("time", "lat", "lon")


def test_reads_gsfc_into_the_normalised_layout(product):
    path, months, lat, lon, field = product
    ds = gsfc.read(path)
    twsa = ds["twsa"]
    assert twsa.dims == ("time", "lat", "lon") and twsa.dtype == np.float32 and twsa.attrs["units"] == "mm"
    assert np.all(np.diff(ds["lat"].values) > 0) and np.all(np.diff(ds["lon"].values) > 0)
    assert -180 < ds["lon"].min() and ds["lon"].max() < 180
    assert pd.DatetimeIndex(ds["time"].values).equals(months)  # 2018-11 once, the gap months absent
    np.testing.assert_allclose(twsa.sel(lat=lat, lon=lon).values, field, rtol=1e-6, atol=1e-4)  # cm -> mm, mean of 2018-11
    land_cells = lat.size * lon.size - 1
    assert int(np.isfinite(twsa.values).sum()) == len(months) * land_cells  # only land_mask = 1 survives
    assert ds.attrs["months_with_several_solutions"] == "2018-11"
    assert "2017-07" in ds.attrs["months_missing"] and "2018-08" in ds.attrs["months_missing"]


def test_period_crop_and_a_product_that_stops_too_early(product):
    path, months, lat, lon, field = product
    ds = gsfc.read(path, period=("2018-06", "2019-12"), require=("2018-06", "2019-12"),
                   bounds={"lat_min": 20, "lat_max": 50, "lon_min": -130, "lon_max": -60})
    assert pd.Timestamp(ds["time"].values[0]) == pd.Timestamp("2018-06-01")
    assert ds.sizes["lat"] == lat.size + 2 and ds.sizes["lon"] == lon.size + 2
    expect_one_line(lambda: gsfc.read(path, require=("2002-04", "2020-12")), str(path),
                    "covers 2017-01..2019-12, not the configured 2002-04..2020-12")


@pytest.mark.parametrize("case", DAMAGE)
def test_bad_files_give_one_line_naming_the_file(product, tmp_path, case):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(product[0].read_bytes())
    damage(bad, case)
    message = expect_one_line(lambda: gsfc.read(bad), DAMAGE[case])
    assert message.startswith(str(bad))


def test_html_page_and_truncated_file_saved_as_nc(product, tmp_path):
    for path in html_and_cut(tmp_path, product[0]):  # a cut NetCDF-3 file opens: its size gives it away
        expect_one_line(lambda: gsfc.read(path), f"{path}: not a readable NetCDF file")


@pytest.mark.parametrize("fault", FAULTS)
def test_download_faults_are_one_line_and_a_rerun_recovers(product, tmp_path, fault):
    www = tmp_path / "www"
    www.mkdir()
    (www / NAME).write_bytes(product[0].read_bytes())
    with serve(www, stall_s=2.0) as server:
        path = fault_then_recover(server, NAME, tmp_path / "dl" / NAME, fault, verify=gsfc.verify)
    assert gsfc.read(path).sizes["time"] == len(product[1])


def test_download_refuses_a_file_without_land_mask(product, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / NAME).write_bytes(product[0].read_bytes())
    damage(www / NAME, "variable", "land_mask")
    with serve(www) as server:
        expect_one_line(lambda: dl.download(f"{server.url}/{NAME}", tmp_path / "dl" / NAME, verify=gsfc.verify,
                                            progress=False, retries=1),
                        "downloaded file failed verification", "missing variable(s) land_mask")
    assert not (tmp_path / "dl" / NAME).exists()


def test_download_step_finds_the_newest_file_on_the_page_keeps_it_and_records_its_name(product, tmp_path, capsys):
    """`gracefill download --page`: the newest matching link, fetched from the mirror, stored under
    the fixed 'latest' name with the real URL in its sidecar; a rerun keeps it without asking."""
    import json

    www = tmp_path / "www"
    www.mkdir()
    (www / NAME).write_bytes(product[0].read_bytes())
    write_link_page(www / "grace-mascons", [f"/sites/default/files/geo/{NAME.replace('202410', '202312')}",
                                            f"/sites/default/files/geo/{NAME}"])
    target = tmp_path / "dl" / NAME.replace("202410", "latest")
    with serve(www) as server:
        args = ["download", "--page", f"{server.url}/geo/data/grace-mascons", "--file-pattern",
                "gsfc.glb_.200204_*_rl06v2.0_obp-ice6gd_halfdegree.nc", "--mirror", f"{server.url}/mirror/",
                "--output", str(target), "--check", "gsfc", "--no-progress", "--retries", "1"]
        assert cli.main(args) == 0
        assert cli.main(args) == 0
        assert server.hits == {"grace-mascons": 1, NAME: 1}
        assert cli.main(["download", "--page", f"{server.url}/x", "--output", str(tmp_path / "y.nc"), "--check", "gsfc"]) == 1
    assert json.loads(dl.sidecar_path(target).read_text())["source"] == f"{server.url}/mirror/{NAME}"
    assert gsfc.read(target).sizes["time"] == len(product[1])
    assert "download: error: --page needs --file-pattern" in capsys.readouterr().err
