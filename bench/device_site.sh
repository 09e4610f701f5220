# Sourced by the device scripts of bench/: installs the wheels of $WHEELS (what a GPU machine
# lacks: snakemake and its dependencies, xarray-regrid, netCDF4 ...) with --no-deps into /tmp/site
# once per machine, and puts that folder, src/ and a `gracefill` command on the paths.
# bench/download_wheels.sh fills such a folder from this checkout's .venv.
mkdir -p "$OUT" /tmp/site/bin
if [ -n "${WHEELS:-}" ] && [ ! -e /tmp/site/.installed ]; then
    python3 -m pip install -q --no-deps --no-index --target /tmp/site $(ls "$WHEELS"/*.whl | sort -u) >"$OUT/pip.log" 2>&1 \
        || { tail -5 "$OUT/pip.log"; exit 1; }
    touch /tmp/site/.installed
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
printf '#!/bin/sh\nexec python3 -m gracefill.cli "$@"\n' >/tmp/site/bin/gracefill
chmod +x /tmp/site/bin/gracefill
export PATH=/tmp/site/bin:$PATH
