"""ERA5-Land: CDS requests per year, the exact file structure, unit and sign conversions."""
from __future__ import annotations

import os
import zipfile

import netCDF4
import numpy as np
import pandas as pd
import pytest

from gracefill import months as mo
from gracefill.io import UserError
from gracefill.sources import download as dl
from gracefill.sources import era5land as e5
from tests.real_fixtures import write_era5land, write_era5land_years

CFG = {
    "dataset": "reanalysis-era5-land-monthly-means",
    "product_type": "monthly_averaged_reanalysis",
    "variables": list(e5.SHORT_NAMES),
}
NAMES = ("precipitation", "evaporation", "runoff", "temperature", "land_water_storage")


def fields_for(months, lat, lon, seed=0):
    rng = np.random.default_rng(seed)
    shape = (len(months), lat.size, lon.size)
    f = {
        "precipitation": rng.gamma(2, 40, shape),
        "evaporation": rng.normal(40, 20, shape),  # negative now and then: dew / condensation
        "runoff": rng.gamma(2, 10, shape),
        "temperature": rng.normal(285, 10, shape),
        "land_water_storage": rng.uniform(200, 900, shape),
    }
    for v in f.values():
        v[:, 0, :2] = np.nan  # sea
    return f


@pytest.fixture(scope="module")
def years(tmp_path_factory):
    root = tmp_path_factory.mktemp("era5")
    months = mo.month_range("2002-01", "2004-12")
    lat = np.arange(20.0, 24.01, 0.5)
    lon = np.arange(-128.0, -124.01, 0.5)
    fields = fields_for(months, lat, lon)
    paths = write_era5land_years(root / "area", fields, lat, lon, months)
    return root, paths, months, lat, lon, fields


def test_reads_cds_files_into_monthly_totals_with_signs_and_layers(years):
    root, paths, months, lat, lon, fields = years
    ds = e5.read(paths, period=("2002-01", "2004-12")).compute()
    assert set(ds.data_vars) == set(NAMES)
    assert pd.DatetimeIndex(ds["time"].values).equals(months)
    assert np.all(np.diff(ds["lat"].values) > 0) and np.allclose(ds["lon"].values, lon)
    for name in NAMES:
        assert ds[name].dtype == np.float32 and ds[name].dims == ("time", "lat", "lon")
        np.testing.assert_allclose(ds[name].values, fields[name], rtol=2e-6, atol=1e-5, err_msg=name)
    assert ds["precipitation"].attrs["units"] == "mm month-1" and ds["land_water_storage"].attrs["units"] == "mm"
    assert ds["temperature"].attrs["units"] == "K"


def test_global_request_layout_0_360_gives_the_same_fields(tmp_path, years):
    _, _, months, lat, lon, fields = years
    lon_g = np.arange(-180.0, 180.0, 30.0)
    lat_g = np.array([-30.0, 0.0, 30.0])
    fg = fields_for(months[:12], lat_g, lon_g, seed=3)
    path = write_era5land(tmp_path / "g.nc", fg, lat_g, lon_g, months[:12], lon360=True)
    with netCDF4.Dataset(path) as nc:
        assert nc["longitude"][:].min() >= 0 and nc["latitude"][0] > nc["latitude"][-1]
    ds = e5.read([path]).compute()
    np.testing.assert_allclose(ds["lon"].values, lon_g)
    np.testing.assert_allclose(ds["evaporation"].values, fg["evaporation"], rtol=2e-6, atol=1e-5)


def test_both_minus_180_and_180_columns_are_not_doubled(tmp_path, years):
    months = years[2][:12]
    lon = np.array([-180.0, -90.0, 0.0, 90.0, 180.0])
    lat = np.array([0.0, 10.0])
    path = write_era5land(tmp_path / "a.nc", fields_for(months, lat, lon), lat, lon, months)
    assert list(e5.read([path])["lon"].values) == [-180.0, -90.0, 0.0, 90.0]


def test_cds_request_per_year_has_the_documented_keys():
    bounds = {"lat_min": -60, "lat_max": 84, "lon_min": -180, "lon_max": 180}
    request = e5.cds_request(CFG, 2003, bounds)
    assert set(request) <= set(e5.REQUEST_KEYS) and set(e5.REQUEST_KEYS) - set(request) == set()
    assert request["product_type"] == ["monthly_averaged_reanalysis"]
    assert request["variable"] == [
        "total_precipitation", "2m_temperature", "total_evaporation", "runoff",
        "volumetric_soil_water_layer_1", "volumetric_soil_water_layer_2", "volumetric_soil_water_layer_3",
        "volumetric_soil_water_layer_4", "snow_depth_water_equivalent", "skin_reservoir_content"]
    assert request["year"] == ["2003"] and request["month"] == [f"{m:02d}" for m in range(1, 13)]
    assert request["time"] == ["00:00"] and request["data_format"] == "netcdf"
    assert request["download_format"] == "unarchived"
    assert request["area"] == [84.0, -180.0, -60.0, 180.0]  # north, west, south, east
    assert "area" not in e5.cds_request(CFG, 2003, None)
    with pytest.raises(UserError, match="sources.era5land.variables: unknown variable"):
        e5.cds_request({**CFG, "variables": ["rain"]}, 2003)


class FakeClient:
    """Stands in for cdsapi.Client: writes the fixture year (or fails) where asked."""

    def __init__(self, years, fail=(), zipped=False):
        self.years, self.fail, self.zipped, self.calls = years, set(fail), zipped, []

    def retrieve(self, dataset, request, target):
        self.calls.append((dataset, request, target))
        year = int(request["year"][0])
        if year in self.fail:
            raise Exception(f"400 Client Error: Bad Request for url: https://cds.example/api/retrieve "
                            f"key=SECRETKEY123 year {year}\ntraceback line")
        _, paths, months, lat, lon, fields = self.years
        src = [p for p in paths if p.name.endswith(f"{year}.nc")][0]
        if not self.zipped:
            with open(src, "rb") as f, open(target, "wb") as g:
                g.write(f.read())
            return
        sel = np.flatnonzero(months.year == year)
        sub = {k: v[sel] for k, v in fields.items()}
        a = write_era5land(f"{target}.a.nc", sub, lat, lon, months[sel], variables=["tp", "e", "ro"])
        b = write_era5land(f"{target}.b.nc", sub, lat, lon, months[sel],
                           variables=["t2m", "swvl1", "swvl2", "swvl3", "swvl4", "sd", "src"])
        with zipfile.ZipFile(target, "w") as z:
            z.write(a, "data_stream-moda_stepType-avgad.nc")
            z.write(b, "data_stream-moda_stepType-avgua.nc")
        os.unlink(a)
        os.unlink(b)


def test_land_model_from_gldas_drops_the_storage_variables_from_request_and_files(tmp_path, years):
    _, _, months, lat, lon, fields = years
    assert e5.needed_variables({"era5land": CFG, "land_model": "predictors"}) == list(e5.SHORT_NAMES)
    needed = e5.needed_variables({"era5land": CFG, "land_model": "gldas"})
    assert needed == ["total_precipitation", "2m_temperature", "total_evaporation", "runoff"]
    assert e5.cds_request({**CFG, "variables": needed}, 2003)["variable"] == needed
    # the CDS then answers without swvl1..4, sd and src: that file normalises to the four fluxes
    paths = write_era5land_years(tmp_path, fields, lat, lon, months, variables=["tp", "t2m", "e", "ro"])
    e5.verify(paths[0], needed, 2002)
    ds = e5.read(paths, needed, period=("2002-01", "2004-12")).compute()
    assert set(ds.data_vars) == {"precipitation", "evaporation", "runoff", "temperature"}
    np.testing.assert_allclose(ds["runoff"].values, fields["runoff"], rtol=2e-6, atol=1e-5)


def test_retrieve_year_is_atomic_verified_and_one_failure_loses_one_year(tmp_path, years, monkeypatch):
    monkeypatch.setenv("CDSAPI_KEY", "SECRETKEY123")
    client = FakeClient(years, fail={2003})
    out = tmp_path / "dl"
    e5.retrieve_year(CFG, 2002, out / "era5land_2002.nc", client=client)
    with pytest.raises(UserError) as info:
        e5.retrieve_year(CFG, 2003, out / "era5land_2003.nc", client=client)
    message = str(info.value)
    assert message.startswith("CDS reanalysis-era5-land-monthly-means 2003: request failed")
    assert "SECRETKEY123" not in message and "\n" not in message
    e5.retrieve_year(CFG, 2004, out / "era5land_2004.nc", client=client)
    assert sorted(p.name for p in out.glob("*.nc")) == ["era5land_2002.nc", "era5land_2004.nc"]
    assert dl.is_complete(out / "era5land_2002.nc")
    client.fail.clear()
    e5.retrieve_year(CFG, 2003, out / "era5land_2003.nc", client=client)  # the rerun recovers
    e5.retrieve_year(CFG, 2002, out / "era5land_2002.nc", client=client)  # complete: skipped
    assert [int(c[1]["year"][0]) for c in client.calls] == [2002, 2003, 2004, 2003]
    assert all(c[0] == "reanalysis-era5-land-monthly-means" for c in client.calls)
    ds = e5.read(sorted(out.glob("*.nc")), period=("2002-01", "2004-12")).compute()
    np.testing.assert_allclose(ds["runoff"].values, years[5]["runoff"], rtol=2e-6, atol=1e-5)


def test_a_zipped_answer_is_merged_into_one_file(tmp_path, years):
    path = e5.retrieve_year(CFG, 2002, tmp_path / "era5land_2002.nc", client=FakeClient(years, zipped=True))
    ds = e5.read([path]).compute()
    np.testing.assert_allclose(ds["land_water_storage"].values, years[5]["land_water_storage"][:12], rtol=2e-6)
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob("*.unzipped"))


def test_missing_credentials_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CDSAPI_URL", raising=False)
    monkeypatch.delenv("CDSAPI_KEY", raising=False)
    monkeypatch.setenv("CDSAPI_RC", str(tmp_path / "nothing/.cdsapirc"))
    with pytest.raises(UserError, match=r"CDS API credentials not found: create .*\.cdsapirc .*CDSAPI_URL and CDSAPI_KEY"):
        e5.retrieve_year(CFG, 2002, tmp_path / "x.nc")
    assert not (tmp_path / "x.nc").exists()


def test_bad_files(tmp_path, years):
    _, paths, months, lat, lon, fields = years
    sub = {k: v[:12] for k, v in fields.items()}
    m = months[:12]
    cases = {
        "units": (write_era5land(tmp_path / "u.nc", sub, lat, lon, m, units={"tp": "mm"}), "'tp' has units 'mm'"),
        "variable": (write_era5land(tmp_path / "v.nc", sub, lat, lon, m, variables=["tp", "t2m"]), "missing variable(s) e,"),
        "duplicates": (write_era5land(tmp_path / "d.nc", sub, lat, lon, m,
                                      time_values=np.full(12, 1_012_521_600, dtype=np.int64)), "duplicate values"),
    }
    for case, (path, expected) in cases.items():
        with pytest.raises(UserError) as info:
            e5.read([path])
        assert str(info.value).startswith(str(path)) and expected in str(info.value), (case, str(info.value))
    with pytest.raises(UserError, match=r"covers 2002-01\.\.2004-12, not the configured 2002-01\.\.2005-06"):
        e5.read(paths, period=("2002-01", "2005-06"))
    with pytest.raises(UserError) as info:   # the duplicate month names the files that hold it
        e5.read([paths[0], paths[1], paths[0]])
    assert str(info.value) == (f"{paths[0]} and {paths[0]}: more than one field for 2002-01 across files "
                               "(time axis 'valid_time'); expected each month in one file")
    overlap = write_era5land(tmp_path / "overlap.nc", {k: v[12:13] for k, v in fields.items()}, lat, lon, months[12:13])
    with pytest.raises(UserError, match=rf"^{paths[1]} and {overlap}: more than one field for 2003-01"):
        e5.read([paths[0], paths[1], overlap])
    empty = write_era5land(tmp_path / "nan.nc", {k: np.full_like(v, np.nan) if k == "runoff" else v
                                                 for k, v in sub.items()}, lat, lon, m)
    with pytest.raises(UserError, match=rf"^{empty}: variable 'ro' has no value \(all NaN\) in the grid's box"):
        e5.read([empty])
    with pytest.raises(UserError, match="sources.era5land.local: no file matches"):
        e5.expand_local(str(tmp_path / "none_*.nc"))


def test_the_installed_cdsapi_takes_dataset_request_and_target():
    import inspect

    cdsapi = pytest.importorskip("cdsapi")
    params = list(inspect.signature(cdsapi.Client.retrieve).parameters)
    assert params[:4] == ["self", "name", "request", "target"]


def test_a_cds_answering_500_fails_in_one_line_within_the_retry_budget(tmp_path, monkeypatch):
    """The configured retries and timeout reach cdsapi (its defaults retry 500 times, 120 s apart)."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = []

    class ServerError(BaseHTTPRequestHandler):
        def answer(self):
            hits.append(self.path)
            body = b'{"detail": "internal error"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), ServerError)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("CDSAPI_URL", f"http://127.0.0.1:{server.server_address[1]}/api")
        monkeypatch.setenv("CDSAPI_KEY", "sec-ret-key")
        monkeypatch.setattr(e5, "CDS_RETRY_SLEEP_S", 0.1)
        started = time.monotonic()
        with pytest.raises(UserError) as info:
            e5.retrieve_year(CFG, 2002, tmp_path / "era5land_2002.nc", timeout_s=5, retries=2)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
    message = str(info.value)
    assert message.startswith(f"CDS {CFG['dataset']} 2002: request failed (HTTPError: 500 Server Error")
    assert "\n" not in message and "sec-ret-key" not in message
    assert 1 <= len(hits) <= 4 and elapsed < 30, (len(hits), elapsed)
    assert not list(tmp_path.iterdir())   # nothing partial


def test_local_files_from_1980_are_read_for_a_period_before_grace(tmp_path):
    """A period from 1980-01 (ERA5-Land starts in 1950): the yearly files of the user's archive
    (`local` mode) are read from their first month, before any GRACE month, and a period that
    starts before the files names the first month they lack."""
    months = mo.month_range("1980-01", "1982-12")
    lat, lon = np.arange(20.0, 22.01, 0.5), np.arange(-128.0, -126.01, 0.5)
    fields = fields_for(months, lat, lon, seed=3)
    paths = write_era5land_years(tmp_path / "archive", fields, lat, lon, months)
    assert [p.name for p in paths] == ["era5land_1980.nc", "era5land_1981.nc", "era5land_1982.nc"]
    local = e5.expand_local(str(tmp_path / "archive" / "era5land_*.nc"))
    ds = e5.read(local, period=("1980-01", "1982-12")).compute()
    assert pd.DatetimeIndex(ds["time"].values).equals(months)
    for name in NAMES:
        np.testing.assert_allclose(ds[name].values, fields[name], rtol=2e-6, atol=1e-5, err_msg=name)
    with pytest.raises(UserError, match=r"covers 1980-01\.\.1982-12, not the configured 1979-01\.\.1982-12"):
        e5.read(local, period=("1979-01", "1982-12"))
