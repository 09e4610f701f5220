"""JPL RL06.3 v04 CRI mascons: the in-file land mask, doubled months, the earthaccess query and
retrieval through a stand-in for earthaccess (offline), and every bad input as one line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gracefill.io import UserError
from gracefill import cli
from gracefill.sources import download as dl
from gracefill.sources import earthdata as ed
from gracefill.sources import jpl
from tests.real_fixtures import (DAMAGE, EARTHDATA_FAULTS, FakeEarthaccess, damage, documented_search_keys,
                                 earthdata_fault_then_recover, expect_one_line, to_global, write_jpl)

CFG = {"short_name": "TELLUS_GRAC-GRFO_MASCON_CRI_GRID_RL06.3_V4", "version": None,
       "granule_name": "GRCTellus.JPL.200204_*.GLO.RL06.3M.MSCNv04CRI*"}
NAME = "GRCTellus.JPL.200204_{}.GLO.RL06.3M.MSCNv04CRI.nc"
CREDENTIALS = ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD")


def retrieve(cfg, target, **options):
    """What the retrieve_granule command does for sources.jpl."""
    return ed.retrieve_record(cfg, target, verify=jpl.verify, **options)


@pytest.fixture
def jpl_file(tmp_path):
    months = pd.DatetimeIndex(["2015-03-01", "2015-04-01", "2015-04-01", "2015-05-01"])
    lat, lon = np.array([0.0, 20.0]), np.array([-170.0, -150.0, 170.0])
    field = np.random.default_rng(0).normal(0, 30, (4, 2, 3))
    values, glat, glon = to_global(field, lat, lon, 20.0)
    land = np.zeros(values.shape[1:])
    land[np.isfinite(values[0])] = 1
    land[np.searchsorted(glat, 0.0), np.searchsorted(glon, 190.0)] = 0  # one ocean cell in the region
    path = write_jpl(tmp_path / NAME.format("201505"), values, glat, glon, months, land)
    return path, field, lat, lon


@pytest.fixture
def fake(jpl_file, tmp_path, monkeypatch):
    """A stand-in earthaccess holding two releases of the granule (the newer is the fixture)."""
    path = jpl_file[0]
    older = tmp_path / "older" / NAME.format("201504")
    older.parent.mkdir()
    older.write_bytes(path.read_bytes())
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EARTHDATA_TOKEN", "tok")
    return FakeEarthaccess({older.name: older, path.name: path, "JPL_MSCNv04_PLACEMENT.nc": older})


def test_reads_jpl_with_its_in_file_land_mask_and_averages_doubled_months(jpl_file):
    path, field, lat, lon = jpl_file
    ds = jpl.read(path)
    assert list(pd.DatetimeIndex(ds["time"].values).strftime("%Y-%m")) == ["2015-03", "2015-04", "2015-05"]
    got = ds["twsa"].sel(lat=lat, lon=lon).values
    expected = np.stack([field[0], (field[1] + field[2]) / 2, field[3]])
    expected[:, 0, 0] = np.nan  # land_mask = 0
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)
    assert ds.attrs["months_with_several_solutions"] == "2015-04" and ds["twsa"].attrs["units"] == "mm"
    assert np.isnan(ds["twsa"].values).sum() == 3 * (ds.sizes["lat"] * ds.sizes["lon"] - 5)
    expect_one_line(lambda: jpl.read(path, require=("2015-01", "2015-05")), str(path),
                    "covers 2015-03..2015-05, not the configured 2015-01..2015-05")


def test_search_query_uses_documented_keys():
    query = ed.record_query(CFG)
    assert query == {"short_name": "TELLUS_GRAC-GRFO_MASCON_CRI_GRID_RL06.3_V4",
                     "granule_name": "GRCTellus.JPL.200204_*.GLO.RL06.3M.MSCNv04CRI*"}
    assert ed.record_query({**CFG, "version": "RL06.3Mv04"})["version"] == "RL06.3Mv04"
    assert set(query) | {"version"} <= documented_search_keys()


def test_login_strategy_follows_earthaccess_places(monkeypatch, tmp_path):
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    expect_one_line(ed.login_strategy, "Earthdata credentials not found: add 'machine urs.earthdata.nasa.gov",
                    str(tmp_path / ".netrc"), "EARTHDATA_USERNAME and EARTHDATA_PASSWORD (or EARTHDATA_TOKEN)")
    (tmp_path / ".netrc").write_text("machine urs.earthdata.nasa.gov login u password p\n")
    assert ed.login_strategy() == "netrc"
    monkeypatch.setenv("EARTHDATA_USERNAME", "u")
    assert ed.login_strategy() == "netrc"  # a user name alone is not enough
    monkeypatch.setenv("EARTHDATA_PASSWORD", "p")
    assert ed.login_strategy() == "environment"


def test_retrieve_takes_the_latest_granule_and_skips_when_complete(fake, jpl_file, tmp_path):
    target = tmp_path / "dl/jpl.nc"
    retrieve(CFG, target, earthaccess=fake)
    assert fake.calls[0] == ("login", "environment") and fake.calls[1] == ("search", ed.record_query(CFG))
    assert fake.calls[2] == ("download", [NAME.format("201505")])  # not the older release, not the placement file
    assert dl.is_complete(target) and target.read_bytes() == jpl_file[0].read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["jpl.nc", "jpl.nc.sha256.json"]
    assert NAME.format("201505") in dl.sidecar_path(target).read_text()
    retrieve(CFG, target, earthaccess=fake)
    assert len(fake.calls) == 3  # complete: nothing asked again
    assert jpl.read(target).sizes["time"] == 3


@pytest.mark.parametrize("fault", EARTHDATA_FAULTS)
def test_earthdata_faults_are_one_line_without_secrets_and_a_rerun_recovers(fake, tmp_path, fault):
    target = tmp_path / "dl/jpl.nc"
    target.parent.mkdir()
    earthdata_fault_then_recover(fake, fault, lambda: retrieve(CFG, target, earthaccess=fake, stall_s=fake.stall_s),
                                 target)


def test_no_granule_and_a_downloaded_file_missing_its_land_mask(fake, jpl_file, tmp_path):
    expect_one_line(lambda: retrieve({**CFG, "granule_name": "nothing*"}, tmp_path / "x.nc", earthaccess=fake),
                    "Earthdata TELLUS_GRAC-GRFO_MASCON_CRI_GRID_RL06.3_V4: no granule found")
    damage(jpl_file[0], "variable", "land_mask")
    expect_one_line(lambda: retrieve(CFG, tmp_path / "dl/jpl.nc", earthaccess=fake),
                    "failed verification", "missing variable(s) land_mask")
    assert not (tmp_path / "dl/jpl.nc").exists()


@pytest.mark.parametrize("case", DAMAGE)
def test_bad_files_give_one_line_naming_the_file(jpl_file, case):
    path = damage(jpl_file[0], case)
    assert expect_one_line(lambda: jpl.read(path), DAMAGE[case]).startswith(str(path))


def test_missing_credentials_stop_the_step_with_one_line(monkeypatch, tmp_path, capsys):
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none/.netrc"))
    target = tmp_path / "dl/jpl.nc"
    args = ["retrieve_granule", "--product", "jpl", "--config-json", '{"sources": {"target": "jpl"}}', "--output", str(target)]
    assert cli.main(args) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "retrieve_granule: error: Earthdata credentials not found" in lines[0]
    assert not target.exists()
    with pytest.raises(UserError):
        ed.fetch({"short_name": "X"}, target, pick=lambda g: g[0])


def test_the_installed_earthaccess_takes_what_fetch_passes():
    import inspect

    earthaccess = pytest.importorskip("earthaccess")
    assert "strategy" in inspect.signature(earthaccess.login).parameters
    download = inspect.signature(earthaccess.download).parameters
    assert list(download)[:2] == ["granules", "local_path"] and "threads" in download
    assert any(p.kind is p.VAR_KEYWORD for p in inspect.signature(earthaccess.search_data).parameters.values())


def test_the_normalise_step_reads_a_local_jpl_file(jpl_file, tmp_path, capsys):
    import json

    import xarray as xr

    cfg = json.dumps({"grid": {"resolution": 10, "lat_min": -80, "lat_max": 80, "lon_min": -180, "lon_max": 180},
                      "period": {"start": "2015-03", "end": "2015-05"},
                      "split": {"train_start": "2015-03", "train_end": "2015-03", "gap_start": "2015-04",
                                "gap_end": "2015-04"}})
    out = tmp_path / "raw/grace.nc"
    args = ["normalise_grace", "--product", "jpl", "--config-json", cfg, "--input", str(jpl_file[0]), "--output", str(out)]
    assert cli.main(args) == 0
    with xr.open_dataset(out) as ds:
        assert ds["twsa"].attrs["units"] == "mm" and ds.attrs["source"] == jpl.NAME and ds.sizes["time"] == 3
    assert cli.main([*args[:-2], "--land-mask", str(jpl_file[0]), "--output", str(tmp_path / "x.nc")]) == 1
    assert "error: --land-mask: jpl keeps its land mask in the product file" in capsys.readouterr().err
    assert not (tmp_path / "x.nc").exists()
