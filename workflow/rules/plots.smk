# Figures.


rule plot_inputs:
    input:
        grid=f"{RESULTS}/grid.nc",
        predictors=f"{RESULTS}/predictors.nc",
        target=f"{RESULTS}/regridded/twsa.nc",
    output:
        report(f"{RESULTS}/figures/inputs.png", caption="../report/inputs.rst", category="Inputs"),
    log:
        f"{LOGS}/plot_inputs.log",
    benchmark:
        f"{BENCHMARKS}/plot_inputs.tsv"
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("run", "predictors", "figures"),
    message:
        "Mapping GRACE TWSA and the predictors for {config[figures][month]}"
    shell:
        "gracefill plot_inputs --config-json {params.cfg:q} --grid {input.grid:q} "
        "--predictors {input.predictors:q} --target {input.target:q} --output {output:q} > {log:q} 2>&1"


# Result figures: one rule for the figures through `gracefill plot --figure NAME`
# (FIGURE_INPUTS in common.smk lists them), one for the gap animation.


rule plot_figure:
    input:
        unpack(figure_inputs),
    output:
        report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{figure}",
        ),
    log:
        f"{LOGS}/plot_{{figure}}.log",
    benchmark:
        f"{BENCHMARKS}/plot_{{figure}}.tsv"
    wildcard_constraints:
        figure="|".join(FIGURE_INPUTS),
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=figure_config,
        inputs=figure_input_options,
    message:
        "Drawing {wildcards.figure}"
    shell:
        "gracefill plot --figure {wildcards.figure} --config-json {params.cfg:q} {params.inputs} "
        "--output {output:q} > {log:q} 2>&1"


rule plot_gap_animation:
    input:
        reconstruction=f"{RESULTS}/reconstruction.nc",
    output:
        report(f"{RESULTS}/figures/gap_animation.gif", caption="../report/animation.rst", category="Figures"),
    log:
        f"{LOGS}/plot_gap_animation.log",
    benchmark:
        f"{BENCHMARKS}/plot_gap_animation.tsv"
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("figures"),
    message:
        "Animating the reconstruction through the gap"
    shell:
        "gracefill plot --figure gap_animation --config-json {params.cfg:q} "
        "--input reconstruction={input.reconstruction:q} --output {output:q} > {log:q} 2>&1"
