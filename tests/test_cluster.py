"""configs/test.yaml end to end through a real Slurm: a single-node cluster on this machine
(tests/cluster/start_slurm.sh: Debian's slurm-wlm and munge, slurmctld + slurmd, a fake GPU),
the workflow run with `--profile profiles/slurm --profile tests/cluster/profile` (executor
slurm; Snakemake started through tests/cluster/snakemake_polling.py, which only keeps its job
status checks 1 s apart), then: every job went through Slurm (job ids in Snakemake's output,
in slurmctld's log and in Slurm's job completion log), the train job asked Slurm for a GPU and
got it, and the outputs equal those of a local run of the same configuration.

Where the cluster cannot be had (not root, no apt-get, no network for the packages, a daemon
that does not come up) the tests SKIP with the reason; GRACEFILL_REQUIRE_SLURM=1 makes that a
failure instead. Every daemon started is stopped by its pid when the module ends.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest


from tests.conftest import cluster_harness

H = cluster_harness()
ROOT = H.ROOT
CLUSTER = ROOT / "tests" / "cluster"
START_TIMEOUT_S = 900  # package installation included
STOP_TIMEOUT_S = 180
SLURM_RUN_TIMEOUT_S = 1500
#: Snakemake with the Slurm executor's status checks kept 1 s apart (no growing backoff)
LAUNCHER = [sys.executable, str(CLUSTER / "snakemake_polling.py")]
# pytest-timeout's limit for a test and its fixtures: the first test starts the cluster and
# runs the workflow through it; the bounded waits inside end long before this
pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.timeout(START_TIMEOUT_S + SLURM_RUN_TIMEOUT_S + 300)]


@dataclass
class Cluster:
    dir: Path
    env: dict
    startup_s: float


def _stop(directory: Path) -> str:
    try:
        return H.run_bounded(["bash", str(CLUSTER / "stop_slurm.sh"), str(directory)],
                             timeout=STOP_TIMEOUT_S).stdout
    except subprocess.TimeoutExpired as exc:
        return f"stop_slurm.sh timed out: {exc.output}"


def _unavailable(reason: str):
    if os.environ.get("GRACEFILL_REQUIRE_SLURM") == "1":
        pytest.fail(f"Slurm test cluster unavailable: {reason}")
    pytest.skip(f"Slurm test cluster unavailable: {reason}")


def _stage_note(request, text: str) -> None:
    """A line in pytest's output (not captured): what the Slurm stage costs."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[slurm stage] {text}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    directory = tmp_path_factory.mktemp("slurm")
    started = time.monotonic()
    try:
        result = H.run_bounded(["bash", str(CLUSTER / "start_slurm.sh"), str(directory)],
                               timeout=START_TIMEOUT_S, log=directory.parent / "start_slurm.out")
    except subprocess.TimeoutExpired:
        _stop(directory)
        _unavailable(f"start_slurm.sh did not finish within {START_TIMEOUT_S} s")
    if result.returncode != 0:
        _stop(directory)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        reasons = [line for line in lines if line.startswith("SKIP:")]
        _unavailable((reasons or lines or ["start_slurm.sh failed"])[-1][:2000])
    values = dict(line.split("=", 1) for line in result.stdout.splitlines()
                  if re.fullmatch(r"(SLURM_CONF|PATH_PREFIX)=\S+", line))
    env = H.base_env(extra_path=values["PATH_PREFIX"], SLURM_CONF=values["SLURM_CONF"])
    startup = time.monotonic() - started
    _stage_note(request, f"cluster installed/started in {startup:.0f} s")
    try:
        yield Cluster(directory, env, startup)
    finally:
        stopped = time.monotonic()
        report = _stop(directory)
        _stage_note(request, f"cluster stopped in {time.monotonic() - stopped:.0f} s: {' '.join(report.split())}")


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory, request):
    workdir = tmp_path_factory.mktemp("slurm-run") / "run"
    workdir.mkdir()
    started = time.monotonic()
    result = H.snakemake(workdir, "--profile", str(ROOT / "profiles" / "slurm"),
                         "--profile", str(CLUSTER / "profile"),
                         env=cluster.env, timeout=SLURM_RUN_TIMEOUT_S, name="slurm", launcher=LAUNCHER)
    elapsed = time.monotonic() - started
    _stage_note(request, f"workflow through Slurm in {elapsed:.0f} s")
    if result.returncode != 0:
        slurm_logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}"
                               for p in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
                               if "Error" in p.read_text())
        pytest.fail("the workflow failed under Slurm: " + H.failure_report(workdir, result) + slurm_logs)
    return workdir, result.stdout


#: the rules that train the network, and so ask Slurm for a GPU (profiles/slurm set-resources)
GPU_RULES = ("train", "train_fold")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def submissions(output: str) -> dict[str, str]:
    """Slurm job id -> rule, from the plugin's 'submitted with SLURM jobid' lines."""
    found = {}
    for _, slurm_id, log in SUBMITTED.findall(output):
        rule = re.search(r"/rule_([A-Za-z0-9_]+?)/", log.replace("\\", "/"))
        found[slurm_id] = rule.group(1) if rule else "?"
    return found


def test_launcher_caps_the_wait_between_status_checks():
    """The launcher's one change to Snakemake: a wait the executor grows to 15 s reads back as
    MAX_POLL_S (in a child process, so that this one's executor class stays as installed)."""
    code = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("launcher", {str(CLUSTER / "snakemake_polling.py")!r})
launcher = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launcher)
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
class Probe(RemoteExecutor):
    run_job = check_active_jobs = cancel_jobs = None
probe = object.__new__(Probe)
probe.next_seconds_between_status_checks = 15
print(probe.next_seconds_between_status_checks, launcher.MAX_POLL_S)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "1"]


def test_every_job_went_through_slurm(cluster, slurm_run):
    workdir, output = slurm_run
    planned = H.planned_jobs(output)
    jobs = submissions(output)
    assert jobs, output[-3000:]
    assert Counter(jobs.values()) == planned, (dict(planned), jobs)
    ctld = (cluster.dir / "log" / "slurmctld.log").read_text()
    completions = (cluster.dir / "log" / "jobcomp.txt").read_text()
    for slurm_id, rule in jobs.items():
        assert f"_slurm_rpc_submit_batch_job: JobId={slurm_id} " in ctld, (rule, slurm_id)
        assert re.search(rf"sched: Allocate JobId={slurm_id} NodeList=\S+", ctld), (rule, slurm_id)
        assert f"_job_complete: JobId={slurm_id} done" in ctld, (rule, slurm_id)
        assert re.search(rf"^JobId={slurm_id} .*JobState=COMPLETED", completions, re.M), (rule, slurm_id)
    assert (workdir / ".snakemake" / "slurm_logs" / "rule_train").is_dir()


def test_train_job_asked_slurm_for_a_gpu(cluster, slurm_run):
    _, output = slurm_run
    jobs = submissions(output)
    train = [slurm_id for slurm_id, rule in jobs.items() if rule in GPU_RULES]
    assert sorted(jobs[i] for i in train) == ["train"] + ["train_fold"] * 3, jobs   # the run and its 3 folds
    ctld = (cluster.dir / "log" / "slurmctld.log").read_text()

    def gres_request(slurm_id: str) -> str | None:
        """The lines slurmctld logs (DebugFlags=Gres) about a job's GPU request, if any."""
        match = re.search(rf"gres_job_state gres:gpu\S* type:\S+ job:{slurm_id}\b.*?\n((?:\S+\s+ .*\n)+)", ctld)
        return match.group(0) if match else None

    for slurm_id in train:
        request = gres_request(slurm_id)
        assert request and "gres_per_job:1" in request, ctld[-3000:]
        assert "cpus_per_gres:4" in request  # cpus_per_gpu of profiles/slurm
        assert re.search(rf"sched: Allocate JobId={slurm_id} NodeList=\S+ #CPUs=4\b", ctld)
    others = [slurm_id for slurm_id, rule in jobs.items() if rule not in GPU_RULES]
    assert not [slurm_id for slurm_id in others if gres_request(slurm_id)], "a CPU job asked for a GPU"


def test_slurm_outputs_equal_a_local_run(slurm_run, tmp_path_factory):
    workdir, _ = slurm_run
    reference = H.reference_run(tmp_path_factory)
    expected = H.result_files(reference)
    assert H.result_files(workdir) == expected
    assert H.compare_outputs(reference, workdir, expected) == []


def test_ctrl_c_cancels_the_slurm_jobs(cluster, slurm_run, tmp_path):
    """SIGINT to Snakemake (a Ctrl-C, or the SIGINT our timeouts send) cancels its Slurm jobs.

    The node is drained first, so the submitted jobs wait in the queue whatever the speed of
    this machine: a first job quick enough to finish before the interrupt would prove nothing.
    """
    workdir = tmp_path / "run"
    workdir.mkdir()
    log = tmp_path / "interrupted.out"
    cmd = H.snakemake_cmd(workdir, "--profile", str(ROOT / "profiles" / "slurm"), "--profile", str(CLUSTER / "profile"),
                          launcher=LAUNCHER)

    def scontrol(*args: str) -> subprocess.CompletedProcess:
        return H.run_bounded(["scontrol", *args], timeout=30, env=cluster.env)

    node = H.run_bounded(["sinfo", "-h", "-o", "%N"], timeout=30, env=cluster.env).stdout.strip()
    drained = scontrol("update", f"NodeName={node}", "State=DRAIN", "Reason=ctrl-c-test")
    assert drained.returncode == 0, drained.stdout
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=cluster.env, start_new_session=True)
            try:
                deadline = time.monotonic() + 300
                while not submissions(log.read_text()) and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                jobs = submissions(log.read_text())
                assert jobs, f"nothing was submitted:\n{log.read_text()[-3000:]}"
                H.interrupt(proc)
                proc.wait(timeout=120)
            finally:
                H.stop(proc)
        assert proc.returncode != 0
        deadline = time.monotonic() + 60
        while True:
            states = H.run_bounded(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(jobs)],
                                   timeout=30, env=cluster.env).stdout
            states = dict(line.split() for line in states.splitlines() if line.strip())
            if all(states.get(slurm_id, "CANCELLED") == "CANCELLED" for slurm_id in jobs):
                break
            assert time.monotonic() < deadline, f"jobs not cancelled after Ctrl-C: {states}"
            time.sleep(1)
    finally:
        scontrol("update", f"NodeName={node}", "State=RESUME")
