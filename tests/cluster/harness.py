"""Helpers shared by tests/test_rerun.py and tests/test_cluster.py: running Snakemake on
configs/test.yaml in a temporary directory with a bounded wait, one local reference run per
test session, what a run planned and what it changed on disk, and comparing two runs' outputs.

Imported by file path (see ``load()`` in the test modules) so that both modules share one
reference run per session.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "test.yaml"
RUN = "test"  # the `run` key of configs/test.yaml
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
FULL_RUN_TIMEOUT_S = 900


def base_env(extra_path: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for Snakemake: this interpreter's bin first on PATH (for `gracefill`)."""
    path = os.environ.get("PATH", "")
    path = f"{Path(sys.executable).parent}{os.pathsep}{path}"
    if extra_path:
        path = f"{extra_path}{os.pathsep}{path}"
    return dict(os.environ, PATH=path, **extra)


def run_bounded(cmd: list[str], *, timeout: float, env: dict | None = None, cwd: Path | None = None,
                log: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; past ``timeout`` send SIGINT to its process group (as a
    Ctrl-C would: Snakemake then cancels its jobs, Slurm ones included), then SIGKILL 60 s later
    and raise TimeoutExpired. Output (stdout and stderr together) goes to ``log``, or to a
    temporary file when none is given, and comes back as ``stdout``."""
    keep = log is not None
    if not keep:
        fd, name = tempfile.mkstemp(prefix="gracefill-test-", suffix=".out")
        os.close(fd)
        log = Path(name)
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=cwd, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                interrupt(proc)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                raise subprocess.TimeoutExpired(cmd, timeout, output=log.read_text()) from None
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout=log.read_text(), stderr="")
    finally:
        if not keep:
            log.unlink(missing_ok=True)


def interrupt(proc: subprocess.Popen) -> None:
    """SIGINT to the process group of ``proc`` (started with start_new_session=True)."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass


def stop(proc: subprocess.Popen, grace: float = 120) -> None:
    """End a process started with start_new_session=True, if it still runs: SIGINT to its
    group, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        interrupt(proc)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def snakemake_cmd(workdir: Path, *args: str, configfile: Path = TEST_CONFIG,
                  launcher: list[str] = SNAKEMAKE) -> list[str]:
    """``launcher`` starts Snakemake: `python -m snakemake` unless told otherwise."""
    return [*launcher, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(configfile), *args]


def snakemake(workdir: Path, *args: str, configfile: Path = TEST_CONFIG, timeout: float = FULL_RUN_TIMEOUT_S,
              env: dict | None = None, name: str = "snakemake",
              launcher: list[str] = SNAKEMAKE) -> subprocess.CompletedProcess:
    """Snakemake on ``workdir``; its output is kept in ``workdir/../<workdir>.<name>.out``."""
    log = workdir.parent / f"{workdir.name}.{name}.out"
    return run_bounded(snakemake_cmd(workdir, *args, configfile=configfile, launcher=launcher), timeout=timeout,
                       env=env or base_env(), log=log)


def failure_report(workdir: Path, result: subprocess.CompletedProcess) -> str:
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}"
                     for p in sorted((workdir / "results" / RUN / "logs").glob("*.log"))
                     if "Error" in p.read_text() or "Traceback" in p.read_text())
    return f"snakemake exited {result.returncode}:\n{result.stdout[-6000:]}\n{logs}"


# ------------------------------------------------------------------------------------------
# the local reference run, once per session
# ------------------------------------------------------------------------------------------
_reference: dict[str, Path] = {}


def reference_run(tmp_path_factory) -> Path:
    """A complete local run of configs/test.yaml (`--cores 2`), made once per test session.
    Callers must not change it: copy it with ``clone()`` first."""
    if "dir" not in _reference:
        workdir = tmp_path_factory.mktemp("reference") / "run"
        workdir.mkdir()
        result = snakemake(workdir, "--cores", "2", name="full")
        if result.returncode != 0:
            raise AssertionError("the local reference run failed: " + failure_report(workdir, result))
        _reference["dir"] = workdir
    return _reference["dir"]


def clone(src: Path, dst: Path) -> Path:
    """Copy a run directory with its Snakemake metadata, keeping every modification time."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    return dst


# ------------------------------------------------------------------------------------------
# what a run planned, what it changed
# ------------------------------------------------------------------------------------------
def planned_jobs(output: str) -> Counter:
    """The rules of the 'Job stats' table Snakemake prints before it runs (without `all`)."""
    counts: Counter = Counter()
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[i + 3:]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                if parts[0] not in {"total", "all"}:
                    counts[parts[0]] += int(parts[1])
            break
    return counts


def file_times(workdir: Path) -> dict[str, int]:
    """Modification time (ns) of every file under results/ and resources/."""
    times = {}
    for top in ("results", "resources"):
        for path in (workdir / top).rglob("*"):
            if path.is_file():
                times[str(path.relative_to(workdir))] = path.stat().st_mtime_ns
    return times


def changed_files(before: dict[str, int], after: dict[str, int]) -> set[str]:
    """Files written, created or removed between two ``file_times`` snapshots."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def summary(workdir: Path, configfile: Path = TEST_CONFIG) -> list[tuple[str, str, list[str]]]:
    """(output, rule, logs) of every output of the workflow, from `snakemake --summary`."""
    result = run_bounded(snakemake_cmd(workdir, "--summary", configfile=configfile), timeout=300,
                         env=base_env(), log=workdir.parent / f"{workdir.name}.summary.out")
    assert result.returncode == 0, result.stdout[-3000:]
    rows = []
    for line in result.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) < 6 or cols[0] == "output_file":
            continue
        logs = [log.strip() for log in cols[3].split(",") if log.strip() not in {"", "-"}]
        rows.append((cols[0], cols[2], logs))
    return rows


def benchmark_of(log: str) -> str:
    """Every rule of this workflow writes results/<run>/logs/X.log and results/<run>/benchmarks/X.tsv."""
    return re.sub(r"/logs/(.*)\.log$", r"/benchmarks/\1.tsv", log)


def files_by_rule(rows: list[tuple[str, str, list[str]]]) -> dict[str, set[str]]:
    """Each rule's outputs, logs and benchmarks (all its jobs together)."""
    files: dict[str, set[str]] = {}
    for output, rule, logs in rows:
        files.setdefault(rule, set()).update([output, *logs, *map(benchmark_of, logs)])
    return files


# ------------------------------------------------------------------------------------------
# comparing two runs
# ------------------------------------------------------------------------------------------
TIMING_COLUMN = re.compile(r"second|elapsed|duration|wall|time_s$", re.I)


def compare_outputs(a: Path, b: Path, relpaths: list[str]) -> list[str]:
    """Differences between the files ``relpaths`` of two run directories, by content: NetCDF
    data and coordinates (attributes that carry a time stamp ignored), CSV values (timing
    columns ignored), images pixel by pixel, checkpoints tensor by tensor, anything else byte
    by byte. Returns one line per difference."""
    problems = []
    for rel in relpaths:
        fa, fb = a / rel, b / rel
        if not fb.exists():
            problems.append(f"{rel}: missing from {b}")
            continue
        try:
            problem = _compare_file(fa, fb)
        except Exception as exc:  # an unreadable file is a difference, not a crash
            problem = f"could not compare: {type(exc).__name__}: {exc}"
        if problem:
            problems.append(f"{rel}: {problem}")
    return problems


def _compare_file(fa: Path, fb: Path) -> str | None:
    import numpy as np

    suffix = fa.suffix.lower()
    if suffix == ".nc":
        import xarray as xr

        with xr.open_dataset(fa) as da, xr.open_dataset(fb) as db:
            if set(da.variables) != set(db.variables):
                return f"variables differ: {sorted(set(da.variables) ^ set(db.variables))}"
            for name in da.variables:
                x, y = da[name].values, db[name].values
                if x.shape != y.shape:
                    return f"{name}: shape {x.shape} != {y.shape}"
                same = (np.array_equal(x, y, equal_nan=True) if x.dtype.kind in "fc"
                        else np.array_equal(x, y))
                if not same:
                    return f"{name}: values differ"
        return None
    if suffix == ".csv":
        import pandas as pd

        ta, tb = pd.read_csv(fa), pd.read_csv(fb)
        keep = [c for c in ta.columns if not TIMING_COLUMN.search(str(c))]
        if list(ta.columns) != list(tb.columns):
            return "columns differ"
        try:
            pd.testing.assert_frame_equal(ta[keep], tb[keep], check_exact=True)
        except AssertionError as exc:
            return f"values differ: {str(exc).splitlines()[0]}"
        return None
    if suffix in {".png", ".gif"}:
        from PIL import Image, ImageSequence

        with Image.open(fa) as ia, Image.open(fb) as ib:
            fa_frames = [np.asarray(f.convert("RGBA")) for f in ImageSequence.Iterator(ia)]
            fb_frames = [np.asarray(f.convert("RGBA")) for f in ImageSequence.Iterator(ib)]
        if len(fa_frames) != len(fb_frames):
            return f"{len(fa_frames)} != {len(fb_frames)} frames"
        for x, y in zip(fa_frames, fb_frames):
            if x.shape != y.shape or not np.array_equal(x, y):
                return "pixels differ"
        return None
    if suffix == ".pt":
        import torch

        pa = torch.load(fa, map_location="cpu", weights_only=True)
        pb = torch.load(fb, map_location="cpu", weights_only=True)
        return _compare_tree(pa, pb, "")
    if fa.read_bytes() != fb.read_bytes():
        return "bytes differ"
    return None


def _compare_tree(x, y, where: str) -> str | None:
    """Compare nested checkpoint payloads: tensors exactly, numbers and strings equal, timing
    entries (keys that name seconds or time) ignored."""
    import torch

    if isinstance(x, dict):
        if not isinstance(y, dict) or set(x) != set(y):
            return f"{where or 'payload'}: keys differ"
        for key in x:
            if TIMING_COLUMN.search(str(key)):
                continue
            problem = _compare_tree(x[key], y[key], f"{where}.{key}")
            if problem:
                return problem
        return None
    if isinstance(x, (list, tuple)):
        if not isinstance(y, (list, tuple)) or len(x) != len(y):
            return f"{where}: lengths differ"
        for i, (u, v) in enumerate(zip(x, y)):
            problem = _compare_tree(u, v, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(x, torch.Tensor):
        if not isinstance(y, torch.Tensor) or x.shape != y.shape or not torch.equal(x, y):
            return f"{where}: tensors differ"
        return None
    if x != y and not (isinstance(x, float) and isinstance(y, float) and x != x and y != y):
        return f"{where}: {x!r} != {y!r}"
    return None


def result_files(workdir: Path) -> list[str]:
    """The workflow's outputs in a run directory: every file under results/ and resources/
    except logs and benchmarks (timings) and the training checkpoint (removed after training)."""
    return sorted(p for p in file_times(workdir)
                  if "/logs/" not in p and "/benchmarks/" not in p and not p.endswith("checkpoint.pt"))


def list_rules() -> set[str]:
    """The workflow's rules (`snakemake --list-rules`; no run directory needed)."""
    result = run_bounded([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--configfile", str(TEST_CONFIG),
                          "--list-rules"], timeout=120, env=base_env(), cwd=ROOT)
    if result.returncode != 0:
        return set()
    return {line.strip() for line in result.stdout.splitlines()
            if re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*", line)}


def load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def write_yaml(data: dict, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
