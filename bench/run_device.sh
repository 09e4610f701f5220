#!/usr/bin/env bash
# The GPU measurements of bench/results/RESULTS.md, one stage per device call (each fits 600 s).
# Logs and JSON go to $OUT (default bench/out). The inductor cache stays in
# $TORCHINDUCTOR_CACHE_DIR (default /tmp/inductor) so that a later stage on the same machine
# reuses the RRDB compilation (3-5 minutes cold).
#
#   bash bench/run_device.sh table            # both backbones, one process, default layer forms (~8 min cold)
#   bash bench/run_device.sh rrdb             # RRDB same-run table, with a profile (~8 min cold)
#   bash bench/run_device.sh layers cbam      # layer table (chunk 6), CBAM same-run table
#   bash bench/run_device.sh layers30         # layer table at chunk 30 (no compiled rows)
#   bash bench/run_device.sh layers-eager forms   # layer table without compiled rows; layer forms, eager
#   bash bench/run_device.sh triton-conv      # Triton grouped 3x3 convolution prototype vs cuDNN
#   bash bench/run_device.sh cudnn-grouped    # grouped 3x3 convolutions: layouts x cuDNN algorithm choice
#   bash bench/run_device.sh shared-cbam shared-rrdb-eager   # the shared-weight bound against the engine (~7 min)
#   bash bench/run_device.sh shared-rrdb-compiled            # the compiled RRDB bound, channels-last (~6 min cold)
#   bash bench/run_device.sh compile-scope    # RRDB: its blocks compiled one by one, eager, the whole network (cold caches)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor}
RRDB_VARIANTS=${RRDB_VARIANTS:-bf16+compile@6,bf16@6,bf16+plain@6}
CBAM_VARIANTS=${CBAM_VARIANTS:-bf16+compile@all,bf16+compile+plain@all,bf16@all,bf16+plain@all}

run() {  # run NAME SECONDS CMD...: time-limited, output to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date -u +%H:%M:%S), limit ${limit} s): $*"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "== $name exit $? ($(date -u +%H:%M:%S))"
    tail -n 30 "$OUT/$name.log"
}

gpu_state() {
    nvidia-smi --query-gpu=name,temperature.gpu,clocks.sm,clocks.max.sm,power.draw --format=csv,noheader >>"$OUT/gpu_state.csv" 2>&1
}

for stage in "$@"; do
    gpu_state
    case $stage in
    layers)
        run layers6 200 python3 -u -m bench.bench_layers --chunk 6 --out "$OUT/layers6.json" ;;
    layers-eager)
        run layers6_eager 60 python3 -u -m bench.bench_layers --chunk 6 --no-compile --out "$OUT/layers6_eager.json" ;;
    forms)  # eager only: the three layer forms against the two reference loops (about 4 min)
        run forms_rrdb 200 python3 -u -m bench.bench_train --backbone rrdb --no-check \
            --rrdb-ref-variants fp32,fp32+plain --rrdb-variants bf16@6,bf16+subpixel@6,bf16+plain@6 \
            --predict-batch 25 --out "$OUT/forms_rrdb.json"
        run forms_cbam 80 python3 -u -m bench.bench_train --backbone cbam --no-check \
            --cbam-ref-variants fp32,fp32+plain --cbam-variants bf16@all,bf16+subpixel@all,bf16+plain@all \
            --predict-batch 25 --out "$OUT/forms_cbam.json" ;;
    triton-conv)  # the Triton grouped-convolution prototype against cuDNN, chunks 6 and 30
        run triton_conv6 300 python3 -u -m bench.bench_triton_conv --chunk 6 --out "$OUT/triton_conv6.json"
        run triton_conv30 200 python3 -u -m bench.bench_triton_conv --chunk 30 --out "$OUT/triton_conv30.json" ;;
    cudnn-grouped)
        run cudnn_grouped 200 python3 -u -m bench.bench_cudnn_grouped --out "$OUT/cudnn_grouped.json" ;;
    layers30)
        run layers30 90 python3 -u -m bench.bench_layers --chunk 30 --no-compile --out "$OUT/layers30.json" ;;
    cbam)
        run cbam 330 python3 -u -m bench.bench_train --backbone cbam --check-compile cbam --profile \
            --cbam-ref-variants fp32,fp32+plain --cbam-variants "$CBAM_VARIANTS" --full-predict "$CBAM_VARIANTS" \
            --predict-batch 25,8 --out "$OUT/cbam.json" ;;
    table)  # the issue's table: both backbones in one process, references timed over 2 steps
        run table 590 python3 -u -m bench.bench_train --backbone rrdb,cbam --ref-steps 2 \
            --ref-variants fp32,fp32+plain --rrdb-variants bf16+compile@6,bf16@6 \
            --cbam-variants bf16+compile@all,bf16@all --full-predict bf16+compile@6,bf16@6,bf16+compile@all,bf16@all \
            --predict-batch 25 --out "$OUT/table.json" ;;
    shared-cbam)  # the shared-weight bound (dense convolutions, same FLOP) against the engine in one process;
        # compiled channels-last in a process of its own (a device-side assert would end the others)
        run shared_cbam 330 python3 -u -m bench.bench_train --backbone cbam --no-check --cbam-ref-variants fp32+plain \
            --cbam-variants bf16+compile@all,bf16@all,bf16+shared@all,bf16+cl+shared@all,bf16+compile+shared@all \
            --predict-batch 25 --out "$OUT/shared_cbam.json"
        run shared_cbam_cl 150 python3 -u -m bench.bench_train --backbone cbam --no-check --skip-reference \
            --cbam-variants bf16+compile+cl+shared@all --predict-batch 25 --out "$OUT/shared_cbam_cl.json" ;;
    shared-rrdb-eager)
        run shared_rrdb_eager 300 python3 -u -m bench.bench_train --backbone rrdb --no-check --rrdb-ref-variants fp32+plain \
            --rrdb-variants bf16@6,bf16+shared@6,bf16+cl+shared@6 --predict-batch 25 --out "$OUT/shared_rrdb_eager.json" ;;
    shared-rrdb-compiled)
        run shared_rrdb_compiled 590 python3 -u -m bench.bench_train --backbone rrdb --no-check \
            --rrdb-ref-variants fp32+plain --rrdb-variants bf16+compile+cl+shared@6 --predict-batch 25 \
            --out "$OUT/shared_rrdb_compiled.json" ;;
    compile-scope)  # regional against whole-network compilation, each from an empty inductor cache: the
        # warm-up steps (training graphs) and the prediction warm-up (eval graphs) carry the compilation
        TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) run compile_scope 590 python3 -u -m bench.bench_train --backbone rrdb \
            --no-check --skip-reference --rrdb-variants bf16+blocks@6,bf16@6,bf16+compile@6 --predict-batch 25 \
            --out "$OUT/compile_scope.json" ;;
    rrdb)
        run rrdb 590 python3 -u -m bench.bench_train --backbone rrdb --profile --rrdb-ref-variants fp32 \
            --rrdb-variants "$RRDB_VARIANTS" --full-predict "$RRDB_VARIANTS" --predict-batch 25 \
            --out "$OUT/rrdb.json" ;;
    *)
        echo "unknown stage $stage (layers, layers-eager, forms, triton-conv, cudnn-grouped, layers30, table, cbam, rrdb, shared-cbam, shared-rrdb-eager, shared-rrdb-compiled, compile-scope)" >&2
        exit 2 ;;
    esac
done
gpu_state
