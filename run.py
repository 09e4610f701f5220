#!/usr/bin/env python3
"""Bootstrap and run gracefill with nothing but python3.

    python3 run.py workflow [snakemake args...]   run the default workflow (snakemake --cores 2);
                                                  --config also takes dotted keys: grid.resolution=1
    python3 run.py tests [pytest args...]         run the test suite

On first use (and whenever pyproject.toml or constraints.txt change) it builds .venv/ and
installs the package with its test extra; torch is installed first from constraints.txt so
that pip takes the CPU wheel and no CUDA packages.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".gracefill-installed"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    digest.update(os.environ.get("GRACEFILL_TORCH", "").encode())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create .venv and install gracefill[test] unless it is already up to date."""
    fingerprint = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    torch_req = os.environ.get("GRACEFILL_TORCH")
    constraints = ["-c", str(ROOT / "constraints.txt")]
    if torch_req:
        subprocess.run(pip + [torch_req], check=True)
        constraints = []
    else:
        subprocess.run(pip + constraints + ["torch"], check=True)
    subprocess.run(pip + constraints + ["-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(fingerprint)


def nest_config_args(args: list[str]) -> list[str]:
    """Snakemake's ``--config`` entries with dotted keys written as nested YAML, which Snakemake
    accepts (it refuses dots in a key): ``grid.resolution=7`` becomes ``grid={resolution: 7}``,
    merged into the ``grid`` section by the workflow. Other arguments are kept as they are."""
    def nest(entry: str) -> str:
        key, _, value = entry.partition("=")
        if "=" not in entry or "." not in key:
            return entry
        section, *path = key.split(".")
        for part in reversed(path):
            value = f"{{{part}: {value}}}"
        return f"{section}={value}"

    out, in_config = [], False
    for arg in args:
        if arg.startswith("--config="):
            arg, in_config = "--config=" + nest(arg[len("--config="):]), True
        elif arg.startswith("-"):
            in_config = arg == "--config"
        elif in_config:
            arg = nest(arg)
        out.append(arg)
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"workflow", "tests"}:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ensure_venv()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if argv[0] == "workflow":
        rest = nest_config_args(argv[1:])
        if not any(a.startswith(("--cores", "-c")) for a in rest):
            rest = ["--cores", "2", *rest]
        cmd = [str(BIN / "snakemake"), *rest]
    else:
        cmd = [str(BIN / "python"), "-m", "pytest", *argv[1:]]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
