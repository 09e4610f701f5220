# Features: the seven predictors and the lagged training tensors.


rule build_predictors:
    input:
        expand(f"{RESULTS}/regridded/{{variable}}.nc", variable=PREDICTOR_FIELDS),
    output:
        f"{RESULTS}/predictors.nc",
    log:
        f"{LOGS}/build_predictors.log",
    benchmark:
        f"{BENCHMARKS}/build_predictors.tsv"
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("period", "split", "predictors"),
    message:
        "Building the predictors"
    shell:
        "gracefill build_predictors --config-json {params.cfg:q} --fields {input:q} "
        "--output {output:q} > {log:q} 2>&1"


rule build_tensors:
    input:
        grid=f"{RESULTS}/grid.nc",
        predictors=f"{RESULTS}/predictors.nc",
        target=f"{RESULTS}/regridded/twsa.nc",
        truth=truth_input,
    output:
        f"{RESULTS}/tensors.nc",
    log:
        f"{LOGS}/build_tensors.log",
    benchmark:
        f"{BENCHMARKS}/build_tensors.tsv"
    conda:
        "../../envs/gracefill.yaml"
    resources:
        mem_mb=mem_mb("build_tensors"),
        runtime=runtime_min("build_tensors"),
    params:
        cfg=stage_config("period", "split", "predictors"),
        truth=truth_option,
    message:
        "Building the training tensors"
    shell:
        "gracefill build_tensors --config-json {params.cfg:q} --grid {input.grid:q} "
        "--predictors {input.predictors:q} --target {input.target:q} {params.truth} "
        "--output {output:q} > {log:q} 2>&1"
