#!/usr/bin/env python3
"""Bootstrap and run gracefill with nothing but python3.

    python3 run.py workflow [snakemake args...]   run the default workflow (snakemake --cores 2)
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


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"workflow", "tests"}:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ensure_venv()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if argv[0] == "workflow":
        rest = argv[1:]
        if not any(a.startswith(("--cores", "-c")) for a in rest):
            rest = ["--cores", "2", *rest]
        cmd = [str(BIN / "snakemake"), *rest]
    else:
        cmd = [str(BIN / "python"), "-m", "pytest", *argv[1:]]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
