# Figures: one `plot` job per entry of gracefill.figures.FIGURES, which says what each reads,
# the config sections it depends on, and its caption in the report.


rule plot:
    input:
        unpack(figure_inputs),
    output:
        report(
            f"{RESULTS}/figures/{{figure}}.{{format}}",
            caption="../report/figures.rst",
            category=figure_category,
            subcategory="{figure}",
        ),
    log:
        f"{LOGS}/plot_{{figure}}.{{format}}.log",
    benchmark:
        f"{BENCHMARKS}/plot_{{figure}}.{{format}}.tsv"
    wildcard_constraints:
        figure="|".join(FIGURES),
        format="png|gif",
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=figure_config,
        inputs=figure_input_options,
        caption=figure_caption,
    message:
        "Drawing {wildcards.figure}"
    shell:
        "gracefill plot --figure {wildcards.figure} --config-json {params.cfg:q} {params.inputs} "
        "--output {output:q} > {log:q} 2>&1"
