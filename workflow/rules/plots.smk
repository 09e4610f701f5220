# Figures.


rule plot_inputs:
    message:
        "Mapping GRACE TWSA and the predictors for {config[figures][month]}"
    input:
        grid=f"{RESULTS}/grid.nc",
        predictors=f"{RESULTS}/predictors.nc",
        target=f"{RESULTS}/regridded/twsa.nc",
    output:
        report(f"{RESULTS}/figures/inputs.png", caption="../report/inputs.rst", category="Inputs"),
    params:
        cfg=stage_config("run", "predictors", "figures"),
    log:
        f"{LOGS}/plot_inputs.log",
    benchmark:
        f"{BENCHMARKS}/plot_inputs.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "gracefill plot_inputs --config-json {params.cfg:q} --grid {input.grid:q} "
        "--predictors {input.predictors:q} --target {input.target:q} --output {output:q} > {log:q} 2>&1"
