# Features: the seven predictors and the lagged training tensors.


rule build_predictors:
    message:
        "Building the predictors"
    input:
        expand(f"{RESULTS}/regridded/{{variable}}.nc", variable=PREDICTOR_FIELDS),
    output:
        f"{RESULTS}/predictors.nc",
    params:
        cfg=stage_config("period", "split", "predictors"),
    log:
        f"{LOGS}/build_predictors.log",
    benchmark:
        f"{BENCHMARKS}/build_predictors.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "gracefill build_predictors --config-json {params.cfg:q} --fields {input:q} "
        "--output {output:q} > {log:q} 2>&1"


rule build_tensors:
    message:
        "Building the training tensors"
    input:
        grid=f"{RESULTS}/grid.nc",
        predictors=f"{RESULTS}/predictors.nc",
        target=f"{RESULTS}/regridded/twsa.nc",
        truth=truth_input,
    output:
        f"{RESULTS}/tensors.nc",
    params:
        cfg=stage_config("period", "split", "predictors"),
        truth=truth_option,
    log:
        f"{LOGS}/build_tensors.log",
    benchmark:
        f"{BENCHMARKS}/build_tensors.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "gracefill build_tensors --config-json {params.cfg:q} --grid {input.grid:q} "
        "--predictors {input.predictors:q} --target {input.target:q} {params.truth} "
        "--output {output:q} > {log:q} 2>&1"
