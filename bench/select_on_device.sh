#!/usr/bin/env bash
# Model options scored on the validation folds of the five benchmark worlds, on a GPU machine with
# many cores: the worlds' grids and regridded fields through the workflow's own rules
# (retrieve_synthetic .. regrid, the five worlds at once), then bench/select_on_folds.py.
#
#   WHEELS=.whl VARIANTS="default kernel_function" bash bench/select_on_device.sh
#   WHEELS=.whl WORLDS=bench/worlds_2deg.yaml VARIANTS="default lr_double" bash bench/select_on_device.sh
#
# WORLDS: the benchmark override whose worlds are scored (default configs/benchmark.yaml, read
# over config.yaml as the benchmark command does).
# WHEELS: a folder of wheels for what the machine lacks (snakemake and its dependencies,
# xarray-regrid, global-land-mask, netCDF4, dask, jsonschema ...), installed with --no-deps into
# /tmp/site. The worlds stay in results/benchmark-<world>/ (a second call reuses them and every
# finished fold); the logs and the tables go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
VARIANTS=${VARIANTS:-default}
JOBS=${JOBS:-5}
THREADS=${THREADS:-3}
WORLDS=${WORLDS:-configs/benchmark.yaml}
. bench/device_site.sh

started=$(date +%s)
worlds=$(python3 bench/write_worlds.py "$WORLDS" "results/benchmark/benchmark/worlds/$(basename "$WORLDS" .yaml)")
for run in $worlds; do
    name=${run#*-}
    targets="results/$run/grid.nc"
    for field in precipitation temperature evaporation runoff land_water_storage twsa; do
        targets="$targets results/$run/regridded/$field.nc"
    done
    python3 -m snakemake $targets --cores "$THREADS" --scheduler greedy --rerun-incomplete \
        --configfile "results/benchmark/benchmark/worlds/$(basename "$WORLDS" .yaml)/$name.yaml" >"$OUT/snakemake_$name.log" 2>&1 &
done
wait
echo "worlds ready after $(( $(date +%s) - started )) s"
SELECT_THREADS=$THREADS python3 bench/select_on_folds.py --worlds $(printf 'results/%s ' $worlds) \
    --config config.yaml "$WORLDS" --variants $VARIANTS --jobs "$JOBS" --out "$OUT/selection" 2>&1 | tee "$OUT/select.log" | grep -v Warning | tail -30
echo "done after $(( $(date +%s) - started )) s"
