"""GLDAS-2.1 Noah monthly: one file a month in the exact structure, the land water storage sum,
-9999 and the missing Antarctica, the earthaccess query, retrieval through a stand-in, and every
bad input as one line."""
from __future__ import annotations

import netCDF4
import numpy as np
import pandas as pd
import pytest

from gracefill import months as mo
from gracefill.sources import download as dl
from gracefill.sources import gldas
from tests.real_fixtures import (DAMAGE, EARTHDATA_FAULTS, FakeEarthaccess, damage, documented_search_keys,
                                 earthdata_fault_then_recover, expect_one_line, html_and_cut, write_gldas)

CFG = {"short_name": "GLDAS_NOAH10_M", "version": "2.1"}
PERIOD = ("2002-01", "2003-12")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two years of 1-degree GLDAS files (the real grid) with a patch of land over South America."""
    root = tmp_path_factory.mktemp("gldas")
    months = mo.month_range(*PERIOD)
    lat = np.arange(-59.5, -40.0, 1.0)  # from the product's first row
    lon = np.arange(-75.5, -60.0, 1.0)
    storage = np.random.default_rng(3).uniform(100, 900, (len(months), lat.size, lon.size))
    storage[:, :, :3] = np.nan  # water
    paths = write_gldas(root / "10", storage, lat, lon, months, res=1.0)
    return root, paths, months, lat, lon, storage


def test_the_fixture_has_the_real_structure(files):
    path = files[1][0]
    assert path.name == "GLDAS_NOAH10_M.A200201.021.nc4"
    with netCDF4.Dataset(path) as nc:
        assert nc.data_model == "NETCDF4" and nc.dimensions["lat"].size == 150 and nc.dimensions["lon"].size == 360
        assert nc["lat"][0] == -59.5 and nc["lon"][0] == -179.5 and nc["lon"][-1] == 179.5
        v = nc["SWE_inst"]
        assert v.dimensions == ("time", "lat", "lon") and v.units == "kg m-2" and v._FillValue == -9999.0
        v.set_auto_mask(False)
        assert (v[:] == -9999.0).sum() > 0


def test_reads_the_land_water_storage_sum_in_mm(files):
    root, paths, months, lat, lon, storage = files
    ds = gldas.read(paths, period=PERIOD).compute()
    lws = ds["land_water_storage"]
    assert lws.dims == ("time", "lat", "lon") and lws.dtype == np.float32 and lws.attrs["units"] == "mm"
    assert pd.DatetimeIndex(ds["time"].values).equals(months)
    assert ds["lat"].values[0] == -89.5 and ds.sizes["lat"] == 180  # Antarctica added as NaN rows
    assert np.isnan(lws.sel(lat=slice(-90, -60)).values).all()
    np.testing.assert_allclose(lws.sel(lat=lat, lon=lon).values, storage, rtol=1e-6)  # -9999 -> NaN, shares summed
    assert int(np.isfinite(lws.values).sum()) == int(np.isfinite(storage).sum())
    assert set(ds.data_vars) == {"land_water_storage"}  # Tair_f_inst and the rest are left out


def test_bounds_crop_and_a_grid_north_of_60s_gets_no_padding(files):
    _, paths, _, lat, lon, storage = files
    ds = gldas.read(paths[:12], bounds={"lat_min": -56, "lat_max": -44, "lon_min": -72, "lon_max": -64})
    assert ds["lat"].values[0] == -56.5 and ds["lat"].values[-1] == -43.5 and ds.sizes["lon"] == 10
    south = gldas.read(paths[:1], bounds={"lat_min": -66, "lat_max": -44, "lon_min": -72, "lon_max": -64})
    assert south["lat"].values[0] == -65.5 and np.isnan(south["land_water_storage"].sel(lat=-65.5).values).all()


def test_quarter_degree_product_and_a_file_without_fill_value_attribute(tmp_path):
    months = mo.month_range("2010-01", "2010-02")
    lat, lon = np.array([10.125, 10.375]), np.array([20.125, 20.375, 20.625])
    storage = np.full((2, 2, 3), 300.0)
    paths = write_gldas(tmp_path, storage, lat, lon, months, res=0.25, short_name="GLDAS_NOAH025_M",
                        fill_attribute=False)  # -9999 must be no data even without _FillValue
    ds = gldas.read(paths, bounds={"lat_min": 10, "lat_max": 10.5, "lon_min": 20, "lon_max": 20.75}).compute()
    assert paths[0].name == "GLDAS_NOAH025_M.A201001.021.nc4" and ds.sizes["lat"] == 4 and ds.sizes["lon"] == 5
    lws = ds["land_water_storage"]
    np.testing.assert_allclose(lws.sel(lat=lat, lon=lon).values, storage, rtol=1e-6)
    assert int(np.isfinite(lws.values).sum()) == storage.size  # the margin cells (-9999 in the file) are NaN


def test_search_query_uses_documented_keys_and_the_file_name():
    query = gldas.search_query(CFG, "2004-02")
    assert query == {"short_name": "GLDAS_NOAH10_M", "version": "2.1", "temporal": ("2004-02-01", "2004-02-29"),
                     "granule_name": "*GLDAS_NOAH10_M.A200402.021.nc4"}
    assert set(query) <= documented_search_keys()
    assert gldas.file_name({"short_name": "GLDAS_NOAH025_M", "version": "2.1"}, "200412") == "GLDAS_NOAH025_M.A200412.021.nc4"


@pytest.fixture
def fake(files, monkeypatch):
    """A stand-in earthaccess holding the fixture months under GES DISC-like GranuleURs."""
    for name in ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EARTHDATA_USERNAME", "u")
    monkeypatch.setenv("EARTHDATA_PASSWORD", "p")
    return FakeEarthaccess({f"GLDAS_NOAH10_M.2.1:{p.name}": p for p in files[1]})


def test_retrieve_one_month_atomically_and_skip_when_complete(fake, files, tmp_path):
    target = tmp_path / "dl" / "GLDAS_NOAH10_M.A200203.021.nc4"
    gldas.retrieve_month(CFG, "2002-03", target, earthaccess=fake)
    assert fake.calls == [("login", "environment"), ("search", gldas.search_query(CFG, "2002-03")),
                          ("download", ["GLDAS_NOAH10_M.2.1:GLDAS_NOAH10_M.A200203.021.nc4"])]
    assert dl.is_complete(target) and target.read_bytes() == files[1][2].read_bytes()
    gldas.retrieve_month(CFG, "2002-03", target, earthaccess=fake)
    assert len(fake.calls) == 3
    expect_one_line(lambda: gldas.retrieve_month(CFG, "2005-01", tmp_path / "dl/x.nc4", earthaccess=fake),
                    "Earthdata GLDAS_NOAH10_M 2005-01: no granule found")


def test_a_granule_holding_another_month_is_refused(fake, files, tmp_path):
    fake.files = {"GLDAS_NOAH10_M.2.1:GLDAS_NOAH10_M.A200204.021.nc4": files[1][4]}  # May's file under April's name
    target = tmp_path / "dl/GLDAS_NOAH10_M.A200204.021.nc4"
    expect_one_line(lambda: gldas.retrieve_month(CFG, "2002-04", target, earthaccess=fake),
                    "failed verification", "holds 2002-05, expected 2002-04")
    assert not target.exists()


@pytest.mark.parametrize("fault", EARTHDATA_FAULTS)
def test_earthdata_faults_are_one_line_without_secrets_and_a_rerun_recovers(fake, tmp_path, fault):
    target = tmp_path / "dl" / "GLDAS_NOAH10_M.A200206.021.nc4"
    target.parent.mkdir()
    earthdata_fault_then_recover(fake, fault, lambda: gldas.retrieve_month(CFG, "2002-06", target, earthaccess=fake, stall_s=fake.stall_s),
                                 target)


@pytest.mark.parametrize("case", ["units", "variable"])
def test_bad_files_give_one_line_naming_the_file(files, tmp_path, case):
    bad = tmp_path / files[1][0].name
    bad.write_bytes(files[1][0].read_bytes())
    damage(bad, case, "SoilMoi10_40cm_inst")
    assert expect_one_line(lambda: gldas.read([bad]), DAMAGE[case]).startswith(str(bad))


def test_duplicate_months_truncated_html_and_a_short_period(files, tmp_path):
    _, paths, *_ = files
    copy = tmp_path / "again" / paths[1].name
    copy.parent.mkdir()
    copy.write_bytes(paths[1].read_bytes())
    expect_one_line(lambda: gldas.read([paths[0], paths[1], copy]), f"{copy}: month 2002-02 is also in {paths[1]}")
    two = tmp_path / "two.nc4"
    with netCDF4.Dataset(paths[0]) as src, netCDF4.Dataset(two, "w") as nc:  # a time axis with a repeated stamp
        nc.createDimension("time", 2)
        for name in ("lat", "lon"):
            nc.createDimension(name, src.dimensions[name].size)
            nc.createVariable(name, "f4", (name,))[:] = src[name][:]
        t = nc.createVariable("time", "f8", ("time",))
        t.units = src["time"].units
        t[:] = [src["time"][0]] * 2
        for name in gldas.COMPONENTS:
            v = nc.createVariable(name, "f4", ("time", "lat", "lon"))
            v.units = "kg m-2"
            v[:] = np.concatenate([src[name][:]] * 2)
    expect_one_line(lambda: gldas.read([two]), f"{two}: time axis 'time' has duplicate values")
    for path in html_and_cut(tmp_path, paths[0]):
        expect_one_line(lambda: gldas.read([path]), f"{path}: not a readable NetCDF file")
    expect_one_line(lambda: gldas.read(paths[:12], period=("2002-01", "2003-06")), str(paths[0]),
                    "covers 2002-01..2002-12, not the configured 2002-01..2003-06")
    expect_one_line(lambda: gldas.read(paths[:3] + paths[4:12], period=("2002-01", "2002-12")),
                    "lacks 1 month(s) of 2002-01..2002-12, first 2002-04")
    expect_one_line(lambda: gldas.expand_local(str(tmp_path / "none/*.nc4")), "sources.gldas.local: no file matches")


def test_a_file_without_any_value_in_the_box_is_one_line_naming_it(files, tmp_path):
    _, paths, months, lat, lon, storage = files
    empty = write_gldas(tmp_path / "empty", np.full_like(storage[:1], np.nan), lat, lon, months[1:2], res=1.0)[0]
    message = expect_one_line(lambda: gldas.read([paths[0], empty]), "has no value")
    assert message.startswith(f"{empty}: land water storage has no value (all NaN or fill) in the grid's box")


def test_a_failed_download_is_tried_again_within_the_retry_budget(fake, files, tmp_path, monkeypatch):
    from gracefill.sources import earthdata as ed

    monkeypatch.setattr(ed.time, "sleep", lambda s: None)
    download = fake.download
    failures = {"left": 2}

    def flaky(granules, local_path, threads=8):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(f"503 Service Unavailable ?token={FakeEarthaccess.SECRET}")
        return download(granules, local_path, threads)

    fake.download = flaky
    target = tmp_path / "dl" / "GLDAS_NOAH10_M.A200207.021.nc4"
    gldas.retrieve_month(CFG, "2002-07", target, earthaccess=fake, retries=3)   # fails twice, then lands
    assert dl.is_complete(target) and target.read_bytes() == files[1][6].read_bytes()
    failures["left"] = 5
    other = tmp_path / "dl" / "GLDAS_NOAH10_M.A200208.021.nc4"
    message = expect_one_line(lambda: gldas.retrieve_month(CFG, "2002-08", other, earthaccess=fake, retries=3),
                              "failed (OSError) after 3 attempts; rerun to retry")
    assert FakeEarthaccess.SECRET not in message and not other.exists() and failures["left"] == 2
