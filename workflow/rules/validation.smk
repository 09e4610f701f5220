# Forward-chaining validation: every stage from the predictors to the baselines again, once per
# fold, fitted on split.train_start..<fold> only and ending at split.train_end, so that no test,
# gap or later pseudo-gap month can reach it. The folds' scores are the "validation" rows of the
# evaluation, and the baselines' predictive spreads are fitted on them.


wildcard_constraints:
    fold=r"\d{4}-\d{2}",


use rule build_predictors as build_predictors_fold with:
    output:
        f"{FOLD_RESULTS}/predictors.nc",
    log:
        f"{LOGS}/validation/build_predictors_{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/validation/build_predictors_{{fold}}.tsv"
    params:
        cfg=fold_stage_config("period", "split", "predictors"),


use rule build_tensors as build_tensors_fold with:
    input:
        grid=f"{RESULTS}/grid.nc",
        predictors=f"{FOLD_RESULTS}/predictors.nc",
        target=f"{RESULTS}/regridded/twsa.nc",
        truth=truth_input,
    output:
        f"{FOLD_RESULTS}/tensors.nc",
    log:
        f"{LOGS}/validation/build_tensors_{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/validation/build_tensors_{{fold}}.tsv"
    params:
        cfg=fold_stage_config("period", "split", "predictors"),
        truth=truth_option,


use rule train as train_fold with:
    input:
        tensors=f"{FOLD_RESULTS}/tensors.nc",
        fold_logs=[],  # a fold trains for training.epochs: the choice is made on its log
        lr_logs=[],
    output:
        model=f"{FOLD_RESULTS}/model/model.pt",
        log_csv=f"{FOLD_RESULTS}/model/training_log.csv",
    log:
        f"{LOGS}/validation/train_{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/validation/train_{{fold}}.tsv"
    params:
        cfg=stage_config("seed", "model", "training"),
        role="--validation-fold",  # its test months are the fold's held-out months


use rule predict as predict_fold with:
    input:
        tensors=f"{FOLD_RESULTS}/tensors.nc",
        model=f"{FOLD_RESULTS}/model/model.pt",
        calibration_folds=[],  # a fold's own spread stays uncalibrated: the calibration is fitted on it
    output:
        f"{FOLD_RESULTS}/reconstruction.nc",
    log:
        f"{LOGS}/validation/predict_{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/validation/predict_{{fold}}.tsv"


use rule baselines as baselines_fold with:
    input:
        tensors=f"{FOLD_RESULTS}/tensors.nc",
        fields=expand(f"{RESULTS}/regridded/{{variable}}.nc", variable=MEMORY_FIELDS),
    output:
        f"{FOLD_RESULTS}/baselines.nc",
    log:
        f"{LOGS}/validation/baselines_{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/validation/baselines_{{fold}}.tsv"
