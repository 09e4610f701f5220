"""The table of mascon products (`gracefill.mascons`): every row has its reader, and a
product added as one row and one reader module reaches the config check, the plan of the rules
and the commands, with nothing else edited."""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from gracefill import config
from gracefill.io import UserError
from gracefill.sources import cli as sources_cli
from gracefill import mascons
from gracefill.sources import csr, plan
from tests.real_fixtures import expect_one_line, to_global, write_jpl

ROOT = Path(__file__).resolve().parents[1]

TOY_URL = "https://example.org/toy/toy.glb.200204_202012.nc"


@pytest.fixture
def toy(monkeypatch):
    """A new HTTPS mascon product ``toy``: a reader module and a row of the table, nothing else."""
    module = types.ModuleType("gracefill.sources.toy")
    module.NAME = "Toy mascons"
    module.verify = csr.verify_with_own_mask
    module.read = lambda path, **options: csr.read_with_own_mask(path, module.NAME, **options)
    monkeypatch.setitem(sys.modules, "gracefill.sources.toy", module)
    monkeypatch.setitem(mascons.MASCONS, "toy", mascons.Mascon("Toy mascons over HTTPS", "https", {"url": TOY_URL}))
    return module


def base_config(**sources) -> dict:
    cfg = yaml.safe_load((ROOT / "configs/test.yaml").read_text())
    cfg["sources"] = {**cfg.get("sources", {}), **sources}
    return cfg


@pytest.mark.parametrize("name", sorted(mascons.MASCONS))
def test_every_row_has_its_reader_and_valid_default_settings(name):
    row, module = mascons.MASCONS[name], mascons.reader(name)
    assert row.fetch in mascons.SETTINGS and isinstance(module.NAME, str) and callable(module.read)
    assert all(callable(mascons.verifier(name, file)) for file in row.files)
    cfg = config.validate(base_config(target=name), relations=False)
    assert set(cfg["sources"][name]) == set(mascons.settings_schema(name)["properties"])
    assert mascons.missing_setting(name, cfg["sources"][name]) is None
    assert set(plan.grace_inputs(cfg, name)) == set(row.files)


def test_the_schema_offers_exactly_the_table():
    schema = config.load_schema()["properties"]["sources"]["properties"]
    assert schema["target"]["enum"] == ["synthetic", "csr", "jpl", "gsfc"]
    assert all(schema[name]["description"] == row.description for name, row in mascons.MASCONS.items())
    assert mascons.checks() == {"csr": ("csr", "product"), "csr_land_mask": ("csr", "land_mask"),
                                "gsfc": ("gsfc", "product")}


def test_a_new_row_is_a_config_choice_with_its_settings(toy):
    cfg = config.validate(base_config(target="toy"))
    assert cfg["sources"]["toy"] == {"url": TOY_URL, "page": None, "file_pattern": None, "mirror": None, "local": None}
    expect_one_line(lambda: config.validate(base_config(target="toy", toy={"url": None})),
                    "config key 'sources.toy.url': null is invalid: expected a url, or a page and a file_pattern")
    expect_one_line(lambda: config.validate(base_config(target="toy", toy={"token": "x"})), "sources.toy")
    expect_one_line(lambda: config.validate(base_config(target="toys")), "expected one of synthetic, csr, jpl, gsfc, toy")


def test_a_new_row_is_downloaded_from_its_url_its_mirror_or_its_page(toy):
    cfg = config.validate(base_config(target="toy"))
    name = "toy.glb.200204_202012.nc"
    assert plan.download_table(cfg) == {("toy", name): (f"--url {TOY_URL}", "toy")}
    assert plan.grace_inputs(cfg, "toy") == {"product": f"resources/download/toy/{name}"}
    assert mascons.checks()["toy"] == ("toy", "product") and mascons.verifier("toy") is toy.verify
    mirrored = config.validate(base_config(target="toy", toy={"mirror": "https://mirror.example.org/m"}))
    assert plan.download_table(mirrored)[("toy", name)][0] == f"--url https://mirror.example.org/m/{name}"
    paged = config.validate(base_config(target="toy", toy={"url": None, "page": "https://example.org/toy",
                                                           "file_pattern": "toy.glb.200204_*.nc"}))
    assert plan.download_table(paged) == {("toy", "toy.glb.200204_latest.nc"): (
        "--page https://example.org/toy --file-pattern 'toy.glb.200204_*.nc'", "toy")}
    local = config.validate(base_config(target="toy", toy={"local": "/data/toy.nc"}))
    assert plan.grace_inputs(local, "toy") == {"product": "/data/toy.nc"}


def test_a_new_row_is_normalised_by_its_reader(toy, tmp_path):
    months = pd.DatetimeIndex(["2015-03-01", "2015-04-01", "2015-05-01"])
    lat, lon = np.array([0.0, 20.0]), np.array([-170.0, -150.0, 170.0])
    field = np.random.default_rng(1).normal(0, 30, (3, 2, 3))
    values, glat, glon = to_global(field, lat, lon, 20.0)
    land = np.isfinite(values[0]).astype(float)
    path = write_jpl(tmp_path / "toy.nc", values, glat, glon, months, land)
    cfg = {"grid": {"resolution": 10, "lat_min": -80, "lat_max": 80, "lon_min": -180, "lon_max": 180},
           "period": {"start": "2015-03", "end": "2015-05"},
           "split": {"train_start": "2015-03", "train_end": "2015-03", "gap_start": "2015-04", "gap_end": "2015-04"}}
    out = tmp_path / "raw/grace.nc"
    args = argparse.Namespace(product="toy", input=str(path), land_mask=None, output=str(out),
                              config_json=json.dumps(cfg), command="normalise_grace")
    sources_cli.normalise_grace(args)
    with xr.open_dataset(out) as ds:
        assert ds.attrs["source"] == "Toy mascons" and ds.sizes["time"] == 3 and ds["twsa"].attrs["units"] == "mm"
        np.testing.assert_allclose(ds["twsa"].sel(lat=lat, lon=lon).values, field, rtol=1e-6, atol=1e-4)
    with pytest.raises(UserError, match="--land-mask: toy keeps its land mask in the product file"):
        sources_cli.normalise_grace(argparse.Namespace(**{**vars(args), "land_mask": str(path)}))
