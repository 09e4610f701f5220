"""The science benchmark's worlds and its table: world configs, the long table, bootstrap
intervals across worlds, paired differences, and the Markdown rendering."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gracefill import benchmark as bm
from gracefill import config as config_mod


def _scores(nse_bcnn: float, nse_reg: float, crps_bcnn: float, crps_reg: float) -> pd.DataFrame:
    rows = []
    for period in ("validation", "test"):
        rows.append({"method": "bcnn", "period": period, "months": 10, "nse_median": nse_bcnn, "rmse_median": 5.0,
                     "r_median": 0.5, "crps": crps_bcnn, "mnlp": 3.0, "coverage_50": 0.4, "coverage_90": 0.8})
        rows.append({"method": "regression", "period": period, "months": 10, "nse_median": nse_reg,
                     "rmse_median": 6.0, "r_median": 0.4, "crps": crps_reg, "mnlp": 3.2, "coverage_50": 0.5,
                     "coverage_90": 0.9})
    return pd.DataFrame(rows)


DETECTION = pd.DataFrame([{"period": "gap", "threshold": -0.5, "hit_rate": 0.6, "false_alarm_ratio": 0.3}])


def test_world_configs_set_run_seed_and_synthetic_settings_and_validate():
    raw = {"run": "bench", "grid": {"resolution": 4.0}, "sources": {"synthetic": {"native_resolution": 2.0}},
           "benchmark": {"worlds": []}}
    worlds = [{"name": "a", "seed": 1}, {"seed": 2, "synthetic": {"native_resolution": 4.0}}]
    out = bm.world_configs(raw, worlds)
    assert list(out) == ["a", "world2"]
    assert out["a"]["run"] == "bench-a" and out["a"]["seed"] == 1 and "benchmark" not in out["a"]
    assert out["a"]["sources"]["synthetic"]["native_resolution"] == 2.0
    assert out["world2"]["sources"]["synthetic"]["native_resolution"] == 4.0
    assert raw["sources"]["synthetic"]["native_resolution"] == 2.0          # the user's config is not changed
    for cfg in out.values():
        assert config_mod.validate(cfg)["grid"]["resolution"] == 4.0
    with pytest.raises(ValueError, match="'a' is used twice"):
        bm.world_configs(raw, [{"name": "a", "seed": 1}, {"name": "a", "seed": 2}])


def test_the_benchmark_config_validates_and_names_five_worlds():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    raw = bm.merge(config_mod.read(root / "config.yaml"), config_mod.read(root / "configs" / "benchmark.yaml"))
    cfg = config_mod.validate(raw)
    assert cfg["grid"]["resolution"] == 4.0 and cfg["model"] == config_mod.read(root / "config.yaml")["model"]
    worlds = bm.world_configs(raw, cfg["benchmark"]["worlds"])
    assert len(worlds) >= 5 and len({w["seed"] for w in worlds.values()}) == len(worlds)
    for world in worlds.values():
        config_mod.validate(world)


def test_collect_summarise_and_differences():
    results = {"w1": (_scores(0.6, 0.5, 2.0, 2.5), DETECTION),
               "w2": (_scores(0.4, 0.5, 2.2, 2.4), DETECTION),
               "w3": (_scores(0.7, 0.3, 1.8, 2.6), None)}
    long = bm.collect(results)
    assert set(long.columns) == {"world", "method", "period", "metric", "value"}
    assert len(long[(long.metric == "drought_hit_rate")]) == 2
    table = bm.summarise(long, samples=500, interval=0.9, seed=1)
    row = table[(table.method == "bcnn") & (table.period == "test") & (table.metric == "nse_median")].iloc[0]
    assert row["worlds"] == 3 and row["mean"] == pytest.approx((0.6 + 0.4 + 0.7) / 3)
    assert 0.4 <= row["lower"] <= row["mean"] <= row["upper"] <= 0.7
    constant = table[(table.method == "bcnn") & (table.metric == "rmse_median")]
    assert (constant["lower"] == 5.0).all() and (constant["upper"] == 5.0).all()
    assert list(dict.fromkeys(table["period"])) == ["validation", "test", "gap"]
    diff = bm.differences(long, samples=500, interval=0.9, seed=1)
    nse = diff[(diff.period == "test") & (diff.metric == "nse_median")].iloc[0]
    assert nse["baseline"] == "regression" and nse["bcnn_better_in"] == 2 and nse["worlds"] == 3
    assert nse["mean_difference"] == pytest.approx((0.1 - 0.1 + 0.4) / 3)
    crps = diff[(diff.period == "test") & (diff.metric == "crps")].iloc[0]
    assert crps["bcnn_better_in"] == 3 and crps["upper"] < 0               # lower CRPS is better, in every world
    assert "coverage_90" not in set(diff["metric"])                           # no better side


def test_markdown_table_has_a_row_per_period_and_method():
    long = bm.collect({"w1": (_scores(0.6, 0.5, 2.0, 2.5), None), "w2": (_scores(0.5, 0.5, 2.0, 2.5), None)})
    text = bm.markdown(bm.summarise(long, samples=200))
    lines = text.splitlines()
    assert lines[0].startswith("| period | method | nse_median | rmse_median | crps")
    assert len(lines) == 2 + 4 and "| test | bcnn | 0.55 [0.50, 0.60] |" in text
    with_drought = bm.markdown(bm.summarise(bm.collect({"w1": (_scores(0.6, 0.5, 2.0, 2.5), DETECTION)}), samples=50))
    assert with_drought.splitlines()[-1] == "| gap | 0.60 [0.60, 0.60] | 0.30 [0.30, 0.30] |"


def test_collect_refuses_empty_results():
    with pytest.raises(ValueError, match="no scores"):
        bm.collect({"w1": (pd.DataFrame(columns=["method", "period"]), None)})
    assert np.isnan(bm._bootstrap_mean(np.array([np.nan]), 10, 0.9, np.random.default_rng(0))[0])


@pytest.mark.e2e
def test_benchmark_command_runs_one_small_world_end_to_end(tmp_path):
    """`gracefill benchmark` on one CI-sized world: the workflow runs under the world's run name
    and the tables have every method and period, finite values and sane ranges (not a winner)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "configs" / "test.yaml").read_text())
    config["run"] = "ci"
    config["training"]["epochs"] = 6
    config["benchmark"] = {"worlds": [{"name": "small", "seed": 3, "synthetic": {"groundwater_tau_months": [0, 12]}}],
                           "bootstrap_samples": 200}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "gracefill.cli", "benchmark", "--config", "bench.yaml", "--snakefile",
               str(root / "Snakefile"), "--base-config", str(root / "config.yaml"), "--cores", "2"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "results" / "ci" / "benchmark"
    assert (tmp_path / "results" / "ci-small" / "evaluation" / "scores.csv").exists()
    table = pd.read_csv(out / "table.csv")
    # the test months again by distance to the training window (2014-04..2019-03, 2019-04..2020-12)
    assert set(table["period"]) == {"validation", "test", "pseudo_gap", "gap", "gap_without_direct_part", "missing",
                                    "after_0-5y", "after_5-10y"}
    assert set(table["method"]) == {"bcnn", "climatology_trend", "regression", "memory_regression", "land_model"}
    assert (table["worlds"] == 1).all() and np.isfinite(table["mean"]).all()
    coverage = table[table["metric"].str.startswith("coverage")]
    assert ((coverage["mean"] >= 0) & (coverage["mean"] <= 1)).all()
    assert (table.loc[table["metric"] == "rmse_median", "mean"] > 0).all()
    hit = table[table["metric"] == "drought_hit_rate"]
    assert sorted(hit["period"]) == ["gap", "gap_without_direct_part", "pseudo_gap"]
    assert ((hit["mean"] >= 0) & (hit["mean"] <= 1)).all()
    diff = pd.read_csv(out / "differences.csv")
    assert set(diff["baseline"]) == {"climatology_trend", "regression", "memory_regression", "land_model"}
    assert (out / "table.md").read_text().count("\n| ") >= 25 and "| test | bcnn |" in result.stdout
    world = yaml.safe_load((out / "worlds" / "small.yaml").read_text())
    assert world["run"] == "ci-small" and world["seed"] == 3 and "benchmark" not in world
