"""Rerunning single stages of configs/test.yaml: each test works on a copy of one complete local
run (made once per session, shared with tests/test_cluster.py) and checks both what Snakemake
planned and which files it really rewrote.

    -R train --until train          retrains, nothing else (the rest is then out of date)
    a changed drought parameter     reruns drought and the figures drawn from it, nothing else
    a changed figure setting        plans the figure rules only (dry run)
    a changed spread setting        plans the evaluation, not the baselines' fits (dry run)
    a deleted figure                is rebuilt alone
    SIGINT during a job             the run continues with --rerun-incomplete; nothing that had
                                    finished is lost or redone, and the result equals an
                                    uninterrupted run
"""
from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from gracefill.figures import FIGURES
from tests.conftest import cluster_harness

H = cluster_harness()
RESULTS = f"results/{H.RUN}"
# train's own file besides its outputs: the checkpoint it resumes from, removed when it finishes
CHECKPOINT = f"{RESULTS}/model/checkpoint.pt"
pytestmark = pytest.mark.e2e
RULES = H.list_rules()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return H.reference_run(tmp_path_factory)


@pytest.fixture
def run_dir(reference, tmp_path) -> Path:
    return H.clone(reference, tmp_path / "run")


def is_plot_rule(rule: str) -> bool:
    return rule == "plot"


def check_only(workdir: Path, before: dict, result, rows, allowed_rules, *, must_include=()) -> Counter:
    """The run succeeded, planned only rules in ``allowed_rules`` (a set or a predicate) and
    all of ``must_include``, rewrote the outputs of every planned job, and changed no file that
    belongs to any other rule. Returns the planned jobs."""
    assert result.returncode == 0, H.failure_report(workdir, result)
    planned = H.planned_jobs(result.stdout)
    allowed = allowed_rules if callable(allowed_rules) else allowed_rules.__contains__
    assert planned, f"nothing was run:\n{result.stdout[-3000:]}"
    assert all(allowed(rule) for rule in planned), f"unexpected jobs: {dict(planned)}"
    assert set(must_include) <= set(planned), f"missing jobs: {set(must_include) - set(planned)}"
    files = H.files_by_rule(rows)
    files.setdefault("train", set()).add(CHECKPOINT)
    changed = H.changed_files(before, H.file_times(workdir))
    mine = set().union(*(files[rule] for rule in planned))
    assert changed <= mine, f"files of other rules changed: {sorted(changed - mine)}"
    for rule in planned:
        rebuilt = {output for output, r, _ in rows if r == rule} & changed
        assert rebuilt, f"{rule} was planned but wrote none of its outputs"
    return planned


def test_forcerun_train_until_train_retrains_only(run_dir):
    rows, before = H.summary(run_dir), H.file_times(run_dir)
    result = H.snakemake(run_dir, "--cores", "2", "-R", "train", "--until", "train", name="retrain")
    planned = check_only(run_dir, before, result, rows, {"train"})
    assert planned == Counter({"train": 1})
    # --until stopped there: what depends on the new model is now out of date, nothing upstream
    dry = H.snakemake(run_dir, "-n", name="dry")
    assert dry.returncode == 0, dry.stdout[-3000:]
    todo = H.planned_jobs(dry.stdout)
    assert "predict" in todo and "train" not in todo and "build_tensors" not in todo, dict(todo)


@pytest.mark.skipif("drought" not in RULES, reason="the workflow has no `drought` rule yet")
def test_changed_drought_parameter_reruns_only_drought_and_figures(run_dir, tmp_path):
    config = H.load_yaml(H.TEST_CONFIG)
    drought = config.setdefault("drought", {})
    drought["min_duration"] = int(drought.get("min_duration", 3)) + 1
    changed_config = H.write_yaml(config, tmp_path / "drought.yaml")
    rows, before = H.summary(run_dir, changed_config), H.file_times(run_dir)
    result = H.snakemake(run_dir, "--cores", "2", configfile=changed_config, name="drought")
    check_only(run_dir, before, result, rows, lambda rule: rule == "drought" or is_plot_rule(rule),
               must_include={"drought"})


def test_changed_figure_setting_plans_only_figure_rules(run_dir, tmp_path):
    """The figures-section analogue of the drought case, as a dry run: only plot rules."""
    config = H.load_yaml(H.TEST_CONFIG)
    figures = config.setdefault("figures", {})
    figures["dpi"] = int(figures.get("dpi", 110)) + 1
    changed_config = H.write_yaml(config, tmp_path / "figures.yaml")
    before = H.file_times(run_dir)
    result = H.snakemake(run_dir, "-n", configfile=changed_config, name="figures")
    assert result.returncode == 0, result.stdout[-3000:]
    planned = H.planned_jobs(result.stdout)
    assert dict(planned) == {"plot": len(FIGURES)}  # every figure reads figures.dpi, nothing else reruns
    assert "Params have changed" in result.stdout
    assert H.file_times(run_dir) == before


def test_changed_spread_setting_plans_the_evaluation_but_not_the_baselines(run_dir, tmp_path):
    """The baselines' fits read two keys of the evaluation section; how their spreads are fitted
    on the folds (evaluation.spread_pooling_km) is the evaluation's business: a dry run plans
    evaluate, none of the baselines' jobs."""
    config = H.load_yaml(H.TEST_CONFIG)
    config.setdefault("evaluation", {})["spread_pooling_km"] = 250
    changed_config = H.write_yaml(config, tmp_path / "spread.yaml")
    before = H.file_times(run_dir)
    result = H.snakemake(run_dir, "-n", configfile=changed_config, name="spread")
    assert result.returncode == 0, result.stdout[-3000:]
    planned = H.planned_jobs(result.stdout)
    assert planned["evaluate"] == 1 and not {"baselines", "baselines_fold"} & set(planned), dict(planned)
    assert H.file_times(run_dir) == before


def test_deleted_figure_is_rebuilt_alone(run_dir):
    rows, before = H.summary(run_dir), H.file_times(run_dir)
    figures = [(output, rule, logs) for output, rule, logs in rows
               if output.startswith(f"{RESULTS}/figures/") and output.endswith(".png") and logs]

    def seconds(row):  # the cheapest figure to redraw, from the reference run's benchmark
        bench = run_dir / H.benchmark_of(row[2][0])
        return float(bench.read_text().splitlines()[1].split("\t")[0]) if bench.exists() else 1e9

    output, rule, logs = min(figures, key=seconds)
    (run_dir / output).unlink()
    result = H.snakemake(run_dir, "--cores", "2", name="figure")
    assert result.returncode == 0, H.failure_report(run_dir, result)
    assert H.planned_jobs(result.stdout) == Counter({rule: 1}), result.stdout[-3000:]
    changed = H.changed_files(before, H.file_times(run_dir))
    assert changed == {output, *logs, *map(H.benchmark_of, logs)}


def test_interrupted_run_continues_with_rerun_incomplete(run_dir, reference):
    """Ctrl-C (SIGINT to Snakemake and its jobs) while train runs, after build_tensors finished
    in the same run; then the same command with --rerun-incomplete."""
    rows, before = H.summary(run_dir), H.file_times(run_dir)
    target = f"{RESULTS}/reconstruction.nc"
    tensors, model_dir = f"{RESULTS}/tensors.nc", run_dir / RESULTS / "model"
    log = run_dir.parent / "interrupted.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(H.snakemake_cmd(run_dir, "--cores", "2", target, "-R", "build_tensors"),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=H.base_env(), start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            # train writes a checkpoint every 10 epochs: then it is surely mid-training
            while not (model_dir / "checkpoint.pt").exists() and proc.poll() is None:
                if time.monotonic() > deadline:
                    pytest.fail("train did not write a checkpoint within 600 s")
                time.sleep(0.1)
            assert proc.poll() is None, f"the run ended before it could be interrupted:\n{log.read_text()[-3000:]}"
            H.interrupt(proc)
            proc.wait(timeout=120)
        finally:
            H.stop(proc)
    interrupted = log.read_text()
    assert proc.returncode != 0, interrupted[-3000:]
    assert "Training the" in interrupted
    middle = H.file_times(run_dir)
    assert middle[tensors] != before[tensors], "build_tensors had not finished before the interrupt"
    assert not (model_dir / "model.pt").exists()
    assert CHECKPOINT in middle, "train left no checkpoint to resume from"

    result = H.snakemake(run_dir, "--cores", "2", "--rerun-incomplete", target, name="continued")
    planned = check_only(run_dir, middle, result, rows, {"train", "predict"}, must_include={"train", "predict"})
    assert planned == Counter({"train": 1, "predict": 1})
    after = H.file_times(run_dir)
    assert after[tensors] == middle[tensors], "the finished tensors were rebuilt"
    assert CHECKPOINT not in after, "train did not finish (its checkpoint is still there)"
    lost = set(before) - set(after)
    assert not lost, f"outputs lost: {sorted(lost)}"
    # train resumed from its checkpoint and repeated the uninterrupted run exactly
    same = [tensors, f"{RESULTS}/model/model.pt", f"{RESULTS}/model/training_log.csv", target]
    assert H.compare_outputs(reference, run_dir, same) == []
