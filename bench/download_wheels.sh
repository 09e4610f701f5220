#!/usr/bin/env bash
# Download the wheels that a GPU machine with PyTorch, numpy, pandas, scipy and matplotlib but no
# internet lacks for running the workflow's rules up to the evaluation (Snakemake and its
# dependencies, xarray-regrid, netCDF4, dask ...), at the versions of this checkout's .venv, for
# the machine's Python (default 3.12, x86-64 Linux). The folder is then $WHEELS of the device
# scripts of bench/ (bench/device_site.sh installs it with --no-deps).
#
#   bash bench/download_wheels.sh .whl            # about 55 MB
#   PYTHON_VERSION=3.11 bash bench/download_wheels.sh .whl
#
# A package published as a source archive only (connection-pool) is built into a wheel here.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:?usage: bash bench/download_wheels.sh FOLDER}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
VENV_PYTHON=.venv/bin/python
[ -x "$VENV_PYTHON" ] || { echo "bench/download_wheels.sh: $VENV_PYTHON missing: run 'python3 run.py tests --version' first" >&2; exit 1; }
PACKAGES="snakemake snakemake-interface-common snakemake-interface-executor-plugins
snakemake-interface-logger-plugins snakemake-interface-report-plugins snakemake-interface-scheduler-plugins
snakemake-interface-storage-plugins argparse-dataclass conda-inject configargparse connection-pool docutils
dpath fastjsonschema gitdb gitpython humanfriendly immutables importlib-metadata jsonschema
jsonschema-specifications jupyter-core nbformat platformdirs pulp referencing rpds-py smart-open smmap
tenacity throttler traitlets yte zipp tabulate sqlalchemy sqlmodel greenlet pydantic pydantic-core
annotated-types typing-inspection dask partd locket netcdf4 cftime xarray xarray-regrid flox
numpy-groupies cf-xarray global-land-mask pandas"
# one listing of .venv, names normalised as pip compares them (lower case, - for _ and .)
INSTALLED=$("$VENV_PYTHON" -m pip list --format=freeze 2>/dev/null | awk -F'==' '{n = tolower($1); gsub(/[_.]/, "-", n); print n, $2}')
mkdir -p "$DEST"
for name in $PACKAGES; do
    version=$(awk -v n="$name" '$1 == n {print $2}' <<<"$INSTALLED")
    [ -n "$version" ] || { echo "bench/download_wheels.sh: $name is not installed in .venv" >&2; exit 1; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$DEST" "$name==$version" >/dev/null 2>&1 \
        || "$VENV_PYTHON" -m pip wheel -q --no-deps -w "$DEST" "$name==$version" >/dev/null \
        || { echo "bench/download_wheels.sh: no wheel of $name==$version for Python $PYTHON_VERSION" >&2; exit 1; }
done
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
