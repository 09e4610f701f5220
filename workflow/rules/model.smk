# The Bayesian CNN: SVGD training (GPU when available) and prediction of every month; with
# training.devices N > 1 both run as N torchrun processes on one node, N GPUs.


rule train:
    message:
        "Training the {config[model][backbone]} ensemble of {config[model][particles]} particles by SVGD"
    input:
        tensors=f"{RESULTS}/tensors.nc",
        fold_logs=epoch_selection_logs,
    output:
        model=f"{RESULTS}/model/model.pt",
        log_csv=f"{RESULTS}/model/training_log.csv",
    params:
        cfg=stage_config("seed", "model", "training"),
    resources:
        gpu=DEVICES,
    log:
        f"{LOGS}/train.log",
    benchmark:
        f"{BENCHMARKS}/train.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        f"{GRACEFILL} train --config-json "
        "{params.cfg:q} --tensors {input.tensors:q} "
        "--model {output.model:q} --log-csv {output.log_csv:q} --epochs-from-folds {input.fold_logs:q} "
        "--stop-with-launcher > {log:q} 2>&1"


rule predict:
    message:
        "Reconstructing every month with its uncertainty"
    input:
        tensors=f"{RESULTS}/tensors.nc",
        model=f"{RESULTS}/model/model.pt",
        calibration_folds=calibration_folds,
    output:
        f"{RESULTS}/reconstruction.nc",
    params:
        cfg=stage_config("model", "training", "prediction"),
    resources:
        gpu=DEVICES if DEVICES > 1 else 0,
    log:
        f"{LOGS}/predict.log",
    benchmark:
        f"{BENCHMARKS}/predict.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        f"{GRACEFILL} predict --config-json "
        "{params.cfg:q} --tensors {input.tensors:q} --model {input.model:q} --output {output:q} "
        "--calibration-folds {input.calibration_folds:q} > {log:q} 2>&1"
