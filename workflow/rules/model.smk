# The Bayesian CNN: SVGD training (GPU when available) and prediction of every month; with
# training.devices N > 1 both run as N torchrun processes on one node, N GPUs.


rule train:
    input:
        tensors=f"{RESULTS}/tensors.nc",
        fold_logs=epoch_selection_logs,
        lr_logs=lr_schedule_logs,
    output:
        model=f"{RESULTS}/model/model.pt",
        log_csv=f"{RESULTS}/model/training_log.csv",
    log:
        f"{LOGS}/train.log",
    benchmark:
        f"{BENCHMARKS}/train.tsv"
    conda:
        "../../envs/gracefill.yaml"
    threads: 4  # CPU threads of torch (on a GPU: the data loading); capped by --cores
    resources:
        gpu=DEVICES,
        mem_mb=mem_mb("train"),
    params:
        cfg=stage_config("seed", "model", "training"),
        role="",
    message:
        "Training the {config[model][backbone]} ensemble of {config[model][particles]} particles by SVGD"
    shell:
        f"{GRACEFILL} train --config-json "
        "{params.cfg:q} --tensors {input.tensors:q} "
        "--model {output.model:q} --log-csv {output.log_csv:q} --epochs-from-folds {input.fold_logs:q} "
        "--lr-from-folds {input.lr_logs:q} {params.role} --threads {threads} --stop-with-launcher > {log:q} 2>&1"


rule predict:
    input:
        tensors=f"{RESULTS}/tensors.nc",
        model=f"{RESULTS}/model/model.pt",
        calibration_folds=calibration_folds,
    output:
        f"{RESULTS}/reconstruction.nc",
    log:
        f"{LOGS}/predict.log",
    benchmark:
        f"{BENCHMARKS}/predict.tsv"
    conda:
        "../../envs/gracefill.yaml"
    threads: 4
    resources:
        gpu=DEVICES if DEVICES > 1 else 0,
        mem_mb=mem_mb("predict"),
    params:
        cfg=stage_config("model", "training", "prediction"),
    message:
        "Reconstructing every month with its uncertainty"
    shell:
        f"{GRACEFILL} predict --config-json "
        "{params.cfg:q} --tensors {input.tensors:q} --model {input.model:q} --output {output:q} "
        "--calibration-folds {input.calibration_folds:q} --threads {threads} > {log:q} 2>&1"
