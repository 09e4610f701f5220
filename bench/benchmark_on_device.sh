#!/usr/bin/env bash
# The science benchmark for one or more benchmark overrides side by side, on a machine with many
# cores (and a GPU for the trainings, training.device auto): every world of every override is one
# Snakemake run to its scores and drought detection, all started at once with $THREADS cores each,
# then `gracefill benchmark --summarise-only` writes each override's tables. A second call
# resumes every unfinished world (finished rules are kept).
#
#   WHEELS=.whl CONFIGS="configs/benchmark.yaml my_variant.yaml" bash bench/benchmark_on_device.sh
#
# Each override is read over config.yaml, as by the benchmark command, and needs its own `run`.
# The worlds stay in results/<run>-<world>/; the tables, the worlds' training logs and Snakemake
# logs go to $OUT/<override's file name>/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
CONFIGS=${CONFIGS:-configs/benchmark.yaml}
THREADS=${THREADS:-3}
LIMIT=${LIMIT:-540}
. bench/device_site.sh

started=$(date +%s)
for config in $CONFIGS; do
    stem=$(basename "$config" .yaml)
    mkdir -p "$OUT/$stem"
    for run in $(python3 bench/write_worlds.py "$config" "results/benchmark/benchmark/worlds/$stem"); do
        name=${run#*-}
        timeout "$LIMIT" python3 -m snakemake "results/$run/evaluation/scores.csv" "results/$run/drought/detection.csv" \
            --cores "$THREADS" --rerun-incomplete --configfile "results/benchmark/benchmark/worlds/$stem/$name.yaml" \
            >"$OUT/$stem/snakemake_$name.log" 2>&1 &
    done
done
wait
echo "worlds done or stopped after $(( $(date +%s) - started )) s"
for config in $CONFIGS; do
    stem=$(basename "$config" .yaml)
    for run in $(python3 bench/write_worlds.py "$config" "results/benchmark/benchmark/worlds/$stem"); do
        tail -n 2 "$OUT/$stem/snakemake_${run#*-}.log"
        find "results/$run" -name training_log.csv | while read -r log; do
            mkdir -p "$OUT/$stem/logs/$(dirname "${log#results/}")" && cp "$log" "$OUT/$stem/logs/${log#results/}"
        done
    done
    gracefill benchmark --config "$config" --summarise-only --out "$OUT/$stem" >"$OUT/$stem/summary.log" 2>&1 \
        && head -n 40 "$OUT/$stem/table.md" || tail -n 3 "$OUT/$stem/summary.log"
done
