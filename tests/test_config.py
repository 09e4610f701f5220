"""Configuration: defaults, presets, and one-line errors for bad configs (CLI and Snakefile)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gracefill import predictors as pr
from gracefill.config import load, validate
from gracefill.io import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_fill_every_section():
    cfg = validate({})
    assert cfg["grid"]["resolution"] == 2.0
    assert cfg["predictors"]["names"] == ["sTWSA", "P", "T", "CWB", "P_ew6", "P_ew24", "CWB_ew6", "CWB_ew24",
                                         "WSC_ew12", "WSC_ew48"]
    assert validate({"predictors": {"names": "paper"}})["predictors"]["names"] == list(pr.PREDICTOR_NAMES)
    assert cfg["split"] == {"train_start": "2002-04", "train_end": "2014-03", "gap_start": "2017-07", "gap_end": "2018-05",
                            "pseudo_gap_start": None, "pseudo_gap_end": None}
    assert cfg["evaluation"]["folds"] == {"count": 3, "min_fit_months": 60, "min_validation_months": 36}
    assert cfg["sources"]["synthetic"]["drought"]["enabled"] is True


@pytest.mark.parametrize("path", ["config.yaml", "configs/test.yaml", "configs/paper.yaml"])
def test_shipped_configs_are_valid(path):
    cfg = load(ROOT / path)
    assert cfg["run"] in {"default", "test", "paper"}


def test_default_grid_shows_continents_and_test_grid_is_minimal():
    default, test = load(ROOT / "config.yaml"), load(ROOT / "configs/test.yaml")
    assert default["grid"]["resolution"] <= 2.0
    from gracefill.grid import GridSpec
    assert min(GridSpec.from_config(test["grid"]).shape) == 8


# (override, key path named in the message, a fragment of what is allowed)
BAD_CONFIGS = [
    ({"grid": {"resolution": -1}}, "grid.resolution", "> 0"),
    ({"grid": {"resolution": "fine"}}, "grid.resolution", "type number"),
    ({"grid": {"resolution": 7}}, "grid.resolution", "divides"),
    ({"grid": {"lat_min": 20, "lat_max": 40, "resolution": 4}}, "grid.resolution", "at least 8 cells"),
    ({"grid": {"spacing": 1}}, "grid", "unknown key(s) 'spacing'"),
    ({"period": {"start": "2002-13"}}, "period.start", "a month 'YYYY-MM'"),
    ({"period": {"start": "2020-01", "end": "2010-01"}}, "period.end", "after period.start"),
    ({"split": {"train_end": "2018-01"}}, "split.train_end", "before the gap"),
    ({"split": {"gap_end": "2030-01"}}, "split.gap_end", "within the period"),
    ({"model": {"backbone": "resnet"}}, "model.backbone", "one of cbam, rrdb"),
    ({"predictors": {"lags": 0}}, "predictors.lags", ">= 1"),
    ({"predictors": {"names": ["P", "Q"]}}, "predictors.names.1", "one of sTWSA"),
    ({"predictors": {"names": ["P", "P"]}}, "predictors.names", "repeated"),
    ({"sources": {"target": "grace_magic"}}, "sources.target", "one of synthetic"),
    ({"sources": {"synthetic": {"native_resolution": 0.7}}}, "sources.synthetic.native_resolution", "divides grid.resolution"),
    ({"sources": {"synthetic": {"drought": {"lat_min": -80}}}}, "sources.synthetic.drought.lat_min", "inside the grid"),
    ({"training": {"device": "tpu"}}, "training.device", "matching"),
    ({"drought": {"thresholds": [-2.0, -0.5]}}, "drought.thresholds", "decreasing"),
    ({"run": "my run/1"}, "run", "matching"),
    ({"sources": {"jpl": {"short_name": "../../../../tmp/x"}}}, "sources.jpl.short_name", "matching"),
    ({"sources": {"gsfc": {"file_pattern": "..*"}}}, "sources.gsfc.file_pattern", "matching"),
    ({"split": {"pseudo_gap_start": "2019-01"}}, "split.pseudo_gap_end", "both split.pseudo_gap_start"),
    ({"split": {"pseudo_gap_start": "2017-08", "pseudo_gap_end": "2018-02"}}, "split.pseudo_gap_start", "outside the gap"),
    ({"split": {"pseudo_gap_start": "2019-05", "pseudo_gap_end": "2019-01"}}, "split.pseudo_gap_end", "not before"),
    ({"evaluation": {"folds": {"min_fit_months": 130}}}, "evaluation.folds", "fit the training window"),
    ({"period": {"start": "1995-01"}, "split": {"train_start": "1995-01", "train_end": "2001-12"}},
     "split.train_start", "a training window with GRACE months"),
    ({"evaluation": {"folds": {"count": 0}}}, "evaluation.folds.count", ">= 1"),
    ({"figures": {"points": [{"name": "Pole", "lat": 89.0, "lon": 0.0}]}}, "figures.points.0", "inside the grid"),
]


@pytest.mark.parametrize("override,key,allowed", BAD_CONFIGS)
def test_bad_config_gives_one_line_naming_key(override, key, allowed):
    with pytest.raises(UserError) as info:
        validate(override)
    message = str(info.value)
    assert "\n" not in message
    assert f"config key '{key}'" in message
    assert allowed in message


def test_cli_rejects_bad_config_file_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"grid": {"resolution": 0}}))
    result = subprocess.run([sys.executable, "-m", "gracefill.cli", "check_config", "--config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"gracefill check_config: error: {bad}: config key 'grid.resolution': 0 is out of range; expected > 0"]


def test_a_grid_without_land_is_one_line_at_check_config_and_at_the_first_stage(tmp_path):
    ocean = {"grid": {"resolution": 4.0, "lat_min": -40, "lat_max": -8, "lon_min": -140, "lon_max": -108},
             "figures": {"points": [{"name": "Pacific", "lat": -20, "lon": -120}]},
             "sources": {"synthetic": {"drought": {"lat_min": -30, "lat_max": -20, "lon_min": -130, "lon_max": -120}}}}
    bad = tmp_path / "ocean.yaml"
    bad.write_text(yaml.safe_dump(ocean))
    expected = ("config key 'grid': lat -40..-8, lon -140..-108 holds no land cell (land fraction >= "
                "grid.min_land_fraction = 0.5); choose bounds over land or lower grid.min_land_fraction")
    result = subprocess.run([sys.executable, "-m", "gracefill.cli", "check_config", "--config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"gracefill check_config: error: {bad}: {expected}"]
    for stage, extra in (("build_grid", ["--output", str(tmp_path / "grid.nc")]),
                         ("retrieve_synthetic", ["--out-dir", str(tmp_path / "raw")])):
        result = subprocess.run([sys.executable, "-m", "gracefill.cli", stage, "--config", str(bad), *extra],
                                capture_output=True, text=True)
        assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].endswith(expected), result.stderr
        assert not (tmp_path / "grid.nc").exists() and not (tmp_path / "raw").exists()


def test_cli_reports_unreadable_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    result = subprocess.run([sys.executable, "-m", "gracefill.cli", "check_config", "--config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_compile_takes_false_true_or_blocks():
    from gracefill.config import validate

    assert validate({"training": {"compile": "blocks"}}, relations=False)["training"]["compile"] == "blocks"
    assert validate({"prediction": {"compile": True}}, relations=False)["prediction"]["compile"] is True
    with pytest.raises(UserError, match=r"^config key 'training\.compile': \"yes\" is not allowed; "
                                        r"expected one of false, true, blocks$"):
        validate({"training": {"compile": "yes"}}, relations=False)


def test_config_json_of_a_rule_is_validated_without_relations_and_bad_json_is_one_line():
    from gracefill.config import from_json

    cfg = from_json('{"training": {"epochs": 3}}')
    assert cfg["training"]["epochs"] == 3 and cfg["training"]["compile"] is False
    with pytest.raises(UserError, match=r"^--config-json: not valid JSON \(Expecting value at character 0\)$"):
        from_json("not json")


def test_a_rule_gets_whole_sections_or_single_keys_of_one():
    """subset hands a rule only the keys it reads: "evaluation.regression_ridge" is that key
    alone, and the rule's command fills the rest of the section with its defaults."""
    from gracefill.config import from_json, subset

    cfg = validate({"evaluation": {"regression_ridge": 2.0, "spread_pooling_km": 250}})
    part = subset(cfg, "seed", "evaluation.regression_ridge", "evaluation.memory_regression")
    assert part == {"seed": cfg["seed"], "evaluation": {"regression_ridge": 2.0,
                                                        "memory_regression": cfg["evaluation"]["memory_regression"]}}
    whole = subset(cfg, "evaluation")
    assert whole == {"evaluation": cfg["evaluation"]} and whole["evaluation"] is not cfg["evaluation"]
    rebuilt = from_json(json.dumps(part))
    assert rebuilt["evaluation"]["regression_ridge"] == 2.0 and rebuilt["evaluation"]["spread_pooling_km"] == 500


@pytest.mark.parametrize("key,url", [
    ("url", "https://user:secret@download.example.org/x.nc"),
    ("mirror", "https://user@mirror.example.org/grace/"),
    ("url", "https://download.example.org/x.nc?token=secret"),
    ("land_mask_url", "https://download.example.org/mask.nc?a=1&API_KEY=secret"),
])
def test_urls_with_credentials_are_refused_without_repeating_them(key, url):
    with pytest.raises(UserError) as info:
        validate({"sources": {"csr": {key: url}}})
    message = str(info.value)
    assert message.startswith(f"config key 'sources.csr.{key}': a URL with credentials")
    assert "secret" not in message and "example.org" not in message   # the URL is never repeated
    assert "~/.netrc" in message
    validate({"sources": {"csr": {key: "https://download.example.org/x.nc?version=2"}}})   # a plain query is fine


def test_command_line_overrides_merge_into_sections_with_numbers_as_numbers():
    from gracefill.config import apply_overrides

    base = {"grid": {"resolution": 4.0, "lat_min": 20}, "run": "test"}
    # Snakemake hands a nested --config value over with every leaf a string
    merged = apply_overrides(base, {"grid": {"resolution": "2"}, "split": {"pseudo_gap_start": "null"},
                                    "predictors": {"names": ["P", "T"], "detrend": "false"}})
    assert merged["grid"] == {"resolution": 2, "lat_min": 20}
    assert merged["split"] == {"pseudo_gap_start": None}
    assert merged["predictors"] == {"names": ["P", "T"], "detrend": False}
    assert apply_overrides(base, {"grid.resolution": "8", "run": "yes"}) == {"grid": {"resolution": 8, "lat_min": 20},
                                                                            "run": "yes"}
    assert base["grid"]["resolution"] == 4.0   # not changed in place
    with pytest.raises(UserError, match=r"^--config grid\.\.resolution=\.\.\.: empty key .* --configfile$"):
        apply_overrides(base, {"grid..resolution": 2})


def _dry_run(tmp_path, *config_args):
    import os

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                           "-n", "--configfile", str(ROOT / "configs/test.yaml"), "--config", *config_args],
                          capture_output=True, text=True, env=env, timeout=300)


def _grid_of_build_grid(result) -> dict:
    import json
    import re

    command = re.search(r"gracefill build_grid --config-json '([^']*)'", result.stdout + result.stderr)
    assert command, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(command.group(1))["grid"]


def test_snakemake_config_nested_value_is_merged_and_typed(tmp_path):
    """`--config grid='{resolution: 2}'`: the grid section keeps its other keys, 2 is a number."""
    result = _dry_run(tmp_path, "grid={resolution: 2}")
    assert result.returncode == 0, result.stderr[-3000:]
    grid = _grid_of_build_grid(result)
    assert grid["resolution"] == 2 and grid["lat_min"] == 20 and grid["lon_max"] == -64   # configs/test.yaml's bounds

    bad = _dry_run(tmp_path, "grid={resolution: 3}")
    assert bad.returncode != 0
    lines = [line for line in bad.stderr.splitlines() if "invalid configuration" in line]
    assert lines == ["gracefill: invalid configuration: config key 'grid.resolution': 3 is invalid: expected a "
                     "resolution that divides grid.lat_max - grid.lat_min (32)"], bad.stderr
    assert not (tmp_path / "results").exists()


def test_dotted_config_keys_through_run_py(tmp_path):
    """`python3 run.py workflow --config grid.resolution=2` passes the key on as grid={resolution: 2}."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gracefill_run", ROOT / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    args = run.nest_config_args(["-n", "--config", "grid.resolution=2", "seed=3", "--cores", "1",
                                 "--config=sources.synthetic.grace_noise.std_mm=10", "results/test/grid.nc"])
    assert args == ["-n", "--config", "grid={resolution: 2}", "seed=3", "--cores", "1",
                    "--config=sources={synthetic: {grace_noise: {std_mm: 10}}}", "results/test/grid.nc"]
    entries = run.nest_config_args(["--config", "grid.resolution=2", "sources.synthetic.grace_noise.std_mm=10"])[1:]
    result = _dry_run(tmp_path, *entries)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _grid_of_build_grid(result)["resolution"] == 2
    assert '"grace_noise":{"heteroscedastic":true,"std_mm":10}' in result.stdout + result.stderr


def test_rule_resources_scale_with_the_grid_and_grow_on_a_retry():
    from gracefill.config import data_volume_ratio, rule_memory_mb, rule_runtime_min

    default = validate(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert data_volume_ratio(default) == pytest.approx(1.0)
    assert rule_memory_mb(default, "build_tensors") == int(2013 * 1.5)      # the default run's peak, +50 %
    assert rule_memory_mb(default, "train", attempt=2) == 2 * rule_memory_mb(default, "train")
    one_degree = validate({**default, "grid": {**default["grid"], "resolution": 1.0}})
    assert data_volume_ratio(one_degree) == pytest.approx(4.0)
    assert rule_memory_mb(one_degree, "evaluate") == int((400 + (2063 - 400) * 4) * 1.5)
    assert rule_runtime_min(default, "regrid") == 10 and rule_runtime_min(one_degree, "evaluate") == 12
