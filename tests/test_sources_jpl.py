"""JPL RL06.3 v04 CRI mascons: the in-file land mask, doubled months, and the earthaccess query."""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from gracefill.io import UserError
from gracefill.sources import download as dl
from gracefill.sources import jpl
from tests.real_fixtures import to_global, write_jpl

CFG = {"short_name": "TELLUS_GRAC-GRFO_MASCON_CRI_GRID_RL06.3_V4", "version": None}


@pytest.fixture
def jpl_file(tmp_path):
    months = pd.DatetimeIndex(["2015-03-01", "2015-04-01", "2015-04-01", "2015-05-01"])
    lat, lon = np.array([0.0, 20.0]), np.array([-170.0, -150.0, 170.0])
    field = np.random.default_rng(0).normal(0, 30, (4, 2, 3))
    values, glat, glon = to_global(field, lat, lon, 20.0)
    land = np.zeros(values.shape[1:])
    land[np.isfinite(values[0])] = 1
    land[np.searchsorted(glat, 0.0), np.searchsorted(glon, 190.0)] = 0  # one ocean cell in the region
    path = write_jpl(tmp_path / "GRCTellus.JPL.200204_201505.GLO.RL06.3M.MSCNv04CRI.nc", values, glat, glon, months, land)
    return path, field, lat, lon


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


def test_search_query_and_login_strategy(monkeypatch, tmp_path):
    assert jpl.search_query(CFG, ("2002-01", "2020-12")) == {
        "short_name": "TELLUS_GRAC-GRFO_MASCON_CRI_GRID_RL06.3_V4", "temporal": ("2002-01-01", "2020-12-28")}
    for name in ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    with pytest.raises(UserError, match=r"Earthdata credentials not found: add 'machine urs\.earthdata\.nasa\.gov"):
        jpl.earthdata_strategy()
    (tmp_path / ".netrc").write_text("machine urs.earthdata.nasa.gov login u password p\n")
    assert jpl.earthdata_strategy() == "netrc"
    monkeypatch.setenv("EARTHDATA_USERNAME", "u")
    monkeypatch.setenv("EARTHDATA_PASSWORD", "p")
    assert jpl.earthdata_strategy() == "environment"


def test_retrieve_through_a_stand_in_earthaccess(jpl_file, tmp_path, monkeypatch):
    path, *_ = jpl_file
    monkeypatch.setenv("EARTHDATA_TOKEN", "tok")
    calls = []

    def download(granules, local_path):
        calls.append(("download", granules))
        out = f"{local_path}/{path.name}"
        with open(path, "rb") as f, open(out, "wb") as g:
            g.write(f.read())
        return [out]

    fake = types.SimpleNamespace(
        login=lambda strategy: calls.append(("login", strategy)) or types.SimpleNamespace(authenticated=True),
        search_data=lambda **query: calls.append(("search", query)) or ["g1", "g2"],
        download=download,
    )
    target = tmp_path / "dl/jpl.nc"
    jpl.retrieve(CFG, target, period=("2002-01", "2020-12"), earthaccess=fake)
    assert calls[0] == ("login", "environment") and calls[1][1]["short_name"] == CFG["short_name"]
    assert calls[2] == ("download", ["g2"]) and dl.is_complete(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["jpl.nc", "jpl.nc.sha256.json"]
    fake.search_data = lambda **query: []
    with pytest.raises(UserError, match="no granule found"):
        jpl.retrieve(CFG, tmp_path / "dl/other.nc", earthaccess=fake)
