"""End to end through the real-source code path, offline.

The synthetic world of configs/test.yaml is written out in the exact formats of the real
products (CSR mascons + land mask served over HTTP from 127.0.0.1 as a mirror; ERA5-Land
yearly CDS files read in local mode). The workflow then downloads, verifies, normalises,
regrids and builds the tensors, which must equal the tensors of the same fields fed through
the synthetic layout. A second run takes the GSFC route (served the same way, 2018-11 as two
solutions) with GLDAS monthly files (local mode) as the land model, reusing the first run's
grid and regridded ERA5-Land fields so that only its own steps run. A third takes the JPL
mascons in local mode the same way. The Earthdata retrievals (JPL, GLDAS) are checked by a dry
run, as they need a login.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from tests.real_fixtures import (serve, to_global, write_csr, write_csr_land_mask, write_era5land_years, write_gldas,
                                 write_gsfc, write_jpl, write_link_page)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

SNAKEFILE = f"""
import os
configfile: {str(ROOT / "config.yaml")!r}
include: {str(ROOT / "workflow/rules/common.smk")!r}
include: {str(ROOT / "workflow/rules/data.smk")!r}
include: {str(ROOT / "workflow/rules/features.smk")!r}
include: {str(ROOT / "workflow/rules/retrieve.smk")!r}
rule all:
    input: f"{{RESULTS}}/tensors.nc"
    default_target: True
"""


def snakemake(workdir: Path, config: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    (workdir / "Snakefile").write_text(SNAKEFILE)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("CDSAPI_URL", None)
    env.pop("CDSAPI_KEY", None)
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(workdir / "Snakefile"), "--directory",
                           str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def run_ok(workdir: Path, config: dict) -> None:
    result = snakemake(workdir, config)
    if result.returncode != 0:
        logs = "\n".join(p.read_text()[-2000:] for p in workdir.glob("results/*/logs/*.log"))
        pytest.fail(f"workflow failed:\n{result.stderr[-4000:]}\n{logs}")


GSFC_NAME = "gsfc.glb_.200204_202410_rl06v2.0_obp-ice6gd_halfdegree.nc"
GSFC_LATEST = "gsfc.glb_.200204_latest_rl06v2.0_obp-ice6gd_halfdegree.nc"  # the download's fixed name


def global_grace(raw: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """The synthetic GRACE field on the global grid of its resolution (lon 0..360), its land mask, months."""
    grace = xr.open_dataset(raw / "grace.nc")
    lat, lon = grace["lat"].values, grace["lon"].values
    res = float(lat[1] - lat[0])
    values, glat, glon = to_global(grace["twsa"].values, lat, lon, res)
    land_region, _, _ = to_global(np.isfinite(grace["twsa"].values[:1]).astype(float), lat, lon, res, fill=0.0)
    return values, glat, glon, land_region[0], pd.DatetimeIndex(grace["time"].values)


def write_products(raw: Path, www: Path, local: Path) -> None:
    """The synthetic world's GRACE and ERA5-Land fields in the real products' formats."""
    era5 = xr.open_dataset(raw / "era5land.nc")
    values, glat, glon, land, months = global_grace(raw)
    www.mkdir()
    write_csr(www / "CSR_GRACE_GRACE-FO_RL0603_Mascons_all-corrections.nc", values, glat, glon, months)
    write_csr_land_mask(www / "CSR_GRACE_GRACE-FO_RL06_Mascons_v02_LandMask.nc", land, glat, glon)
    fields = {name: era5[name].values for name in era5.data_vars}
    write_era5land_years(local, fields, era5["lat"].values, era5["lon"].values, pd.DatetimeIndex(era5["time"].values))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = yaml.safe_load((ROOT / "configs/test.yaml").read_text())
    syn_dir = tmp_path_factory.mktemp("synthetic")
    run_ok(syn_dir, {**base, "run": "syn"})
    real_dir = tmp_path_factory.mktemp("real")
    write_products(syn_dir / "resources/raw/synthetic/syn", real_dir / "www", real_dir / "era5")
    # the target grid does not depend on the sources: reuse it (build_grid is the slowest job)
    (real_dir / "results/real").mkdir(parents=True)
    (real_dir / "results/real/grid.nc").write_bytes((syn_dir / "results/syn/grid.nc").read_bytes())
    with serve(real_dir / "www") as server:
        real = {**base, "run": "real"}
        real["sources"] = {**base["sources"], "target": "csr", "predictors": "era5land",
                           "csr": {"mirror": f"{server.url}/mirror/"},
                           "era5land": {"local": str(real_dir / "era5/era5land_*.nc")},
                           "download": {"timeout_s": 5, "retries": 1}}
        run_ok(real_dir, real)
        hits = dict(server.hits)
    return syn_dir, real_dir, real, hits


@pytest.fixture(scope="module")
def gsfc_run(runs, tmp_path_factory):
    """GSFC mascons over HTTP + GLDAS monthly files (local) as the land model, ERA5-Land as before."""
    syn_dir, real_dir, real, _ = runs
    raw = syn_dir / "resources/raw/synthetic/syn"
    work = tmp_path_factory.mktemp("gsfc")
    values, glat, glon, land, months = global_grace(raw)
    (work / "www").mkdir()
    write_gsfc(work / "www" / GSFC_NAME, values, glat, glon, months, land, split=("2018-11",))
    write_link_page(work / "www" / "grace-mascons", [f"/sites/default/files/geo/{name}" for name in
                                                     (GSFC_NAME.replace("202410", "202312"), GSFC_NAME)])
    era5 = xr.open_dataset(raw / "era5land.nc")
    write_gldas(work / "gldas", era5["land_water_storage"].values, era5["lat"].values, era5["lon"].values,
                pd.DatetimeIndex(era5["time"].values))
    reuse_from_real(real_dir, work, "gsfc", ("precipitation", "temperature", "evaporation", "runoff"))
    with serve(work / "www") as server:
        config = {**real, "run": "gsfc"}
        config["sources"] = {**real["sources"], "target": "gsfc", "land_model": "gldas",
                             "gsfc": {"page": f"{server.url}/geo/data/grace-mascons"},  # the newest file on it
                             "gldas": {"local": str(work / "gldas/GLDAS_NOAH10_M.A*.021.nc4")}}
        config["sources"].pop("csr")
        run_ok(work, config)
        hits = dict(server.hits)
    return syn_dir, work, hits


def reuse_from_real(real_dir: Path, work: Path, run: str, regridded: tuple[str, ...], derived: tuple[str, ...] = ()) -> None:
    """Copy the CSR run's outputs that do not depend on the new sources into run ``run`` of
    ``work``, oldest first, so that Snakemake keeps them and runs only the new sources' steps."""
    now = time.time()
    for path in (real_dir / "era5").glob("*.nc"):
        os.utime(path, (now - 300, now - 300))
    reused = {"resources/raw/era5land/{}/era5land.nc": now - 200, "results/{}/grid.nc": now - 200}
    reused.update({f"results/{{}}/regridded/{v}.nc": now - 100 for v in regridded})
    reused.update({f"results/{{}}/{name}": now - 50 for name in derived})
    for pattern, stamp in reused.items():
        target = work / pattern.format(run)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_dir / pattern.format("real"), target)
        os.utime(target, (stamp, stamp))


@pytest.fixture(scope="module")
def jpl_run(runs, tmp_path_factory):
    """JPL mascons in local mode (the Earthdata download needs a login), ERA5-Land as before."""
    syn_dir, real_dir, real, _ = runs
    work = tmp_path_factory.mktemp("jpl")
    values, glat, glon, land, months = global_grace(syn_dir / "resources/raw/synthetic/syn")
    product = write_jpl(work / "GRCTellus.JPL.200204_202012.GLO.RL06.3M.MSCNv04CRI.nc", values, glat, glon,
                        months, land)
    reuse_from_real(real_dir, work, "jpl", ("precipitation", "temperature", "evaporation", "runoff",
                                            "land_water_storage"), derived=("predictors.nc",))
    config = {**real, "run": "jpl"}
    config["sources"] = {**real["sources"], "target": "jpl", "jpl": {"local": str(product)}}
    config["sources"].pop("csr")
    run_ok(work, config)
    return syn_dir, work


def assert_same_tensors(synthetic: Path, real: Path) -> None:
    """Every variable both tensors files hold is equal (floats to 1e-4 relative)."""
    syn = xr.open_dataset(synthetic)
    real = xr.open_dataset(real)
    assert "truth" not in real  # only the synthetic world has a truth
    shared = [name for name in syn.variables if name in real.variables]
    assert {"inputs", "target", "split", "observed", "land_mask"} <= set(shared)
    for name in shared:
        a, b = syn[name].values, real[name].values
        assert a.shape == b.shape, name
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.nanmax(np.abs(a)))), err_msg=name)
        else:
            np.testing.assert_array_equal(b, a, err_msg=name)


def test_real_path_gives_the_same_tensors_as_the_synthetic_layout(runs):
    syn_dir, real_dir, _, hits = runs
    assert not (real_dir / "results/real/benchmarks/build_grid.tsv").exists()
    assert hits == {"CSR_GRACE_GRACE-FO_RL0603_Mascons_all-corrections.nc": 1,
                    "CSR_GRACE_GRACE-FO_RL06_Mascons_v02_LandMask.nc": 1}
    assert_same_tensors(syn_dir / "results/syn/tensors.nc", real_dir / "results/real/tensors.nc")


def test_gsfc_and_gldas_give_the_same_tensors_as_the_synthetic_layout(gsfc_run):
    syn_dir, work, hits = gsfc_run
    assert hits == {"grace-mascons": 1, GSFC_NAME: 1}
    ran = sorted(p.stem for p in (work / "results/gsfc/benchmarks").glob("*.tsv"))
    assert ran == sorted([f"download_gsfc_{GSFC_LATEST}", "normalise_gsfc", "normalise_gldas", "regrid_twsa",
                          "regrid_land_water_storage", "build_predictors", "build_tensors"])
    assert_same_tensors(syn_dir / "results/syn/tensors.nc", work / "results/gsfc/tensors.nc")
    grace = xr.open_dataset(work / "resources/raw/gsfc/gsfc/grace.nc")
    assert grace.attrs["months_with_several_solutions"] == "2018-11" and grace["twsa"].attrs["units"] == "mm"
    storage = xr.open_dataset(work / "resources/raw/gldas/gsfc/land_model.nc")["land_water_storage"]
    assert storage.attrs["units"] == "mm" and storage.sizes["time"] == 228
    record = json.loads((work / f"resources/download/gsfc/{GSFC_LATEST}.sha256.json").read_text())
    assert record["source"].endswith(f"/sites/default/files/geo/{GSFC_NAME}")  # the file found, by its name


def test_jpl_local_gives_the_same_tensors_as_the_synthetic_layout(jpl_run):
    syn_dir, work = jpl_run
    ran = sorted(p.stem for p in (work / "results/jpl/benchmarks").glob("*.tsv"))
    assert ran == ["build_tensors", "normalise_jpl", "regrid_twsa"]
    assert_same_tensors(syn_dir / "results/syn/tensors.nc", work / "results/jpl/tensors.nc")
    assert not (work / "resources/download").exists()  # local mode downloads nothing


def test_earthdata_products_are_planned_one_granule_per_month(tmp_path):
    base = yaml.safe_load((ROOT / "configs/test.yaml").read_text())
    config = {**base, "run": "plan", "sources": {**base["sources"], "target": "jpl", "land_model": "gldas"}}
    result = snakemake(tmp_path, config, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = dict(line.split() for line in result.stdout.splitlines() if len(line.split()) == 2
                  and line.split()[1].isdigit())
    assert counts["retrieve_granule"] == "1" and counts["retrieve_gldas"] == "228"
    assert counts["normalise_grace"] == "1" and counts["normalise_gldas"] == "1"
    assert "retrieve_synthetic" in counts and "download" not in counts


def test_downloads_are_recorded_and_normalised_files_follow_the_layout(runs):
    _, real_dir, _, _ = runs
    downloads = real_dir / "resources/download/csr"
    names = sorted(p.name for p in downloads.iterdir())
    assert names == sorted([
        "CSR_GRACE_GRACE-FO_RL0603_Mascons_all-corrections.nc", "CSR_GRACE_GRACE-FO_RL0603_Mascons_all-corrections.nc.sha256.json",
        "CSR_GRACE_GRACE-FO_RL06_Mascons_v02_LandMask.nc", "CSR_GRACE_GRACE-FO_RL06_Mascons_v02_LandMask.nc.sha256.json"])
    grace = xr.open_dataset(real_dir / "resources/raw/csr/real/grace.nc")
    era5 = xr.open_dataset(real_dir / "resources/raw/era5land/real/era5land.nc")
    assert grace["twsa"].attrs["units"] == "mm" and grace.attrs["months_missing"].count("2017-") >= 6
    assert set(era5.data_vars) == {"precipitation", "temperature", "evaporation", "runoff", "land_water_storage"}


def test_rerun_has_nothing_to_do_and_a_bad_mirror_is_one_line(runs, tmp_path):
    _, real_dir, config, _ = runs
    result = snakemake(real_dir, config, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr
    # a fresh working directory whose mirror answers 404: the download job fails with one line
    (tmp_path / "empty_www").mkdir()
    with serve(tmp_path / "empty_www") as server:
        bad = {**config, "sources": {**config["sources"], "csr": {"mirror": f"{server.url}/gone/"}}}
        result = snakemake(tmp_path, bad, "--until", "normalise_grace")
    assert result.returncode != 0
    log = tmp_path / "results/real/logs/download_csr_CSR_GRACE_GRACE-FO_RL06_Mascons_v02_LandMask.nc.log"
    lines = [line for line in log.read_text().splitlines() if "error:" in line]
    assert len(lines) == 1 and "/gone/CSR_GRACE_GRACE-FO_RL06_Mascons_v02_LandMask.nc: HTTP 404" in lines[0]
    assert not list((tmp_path / "resources/download/csr").glob("*.nc"))
