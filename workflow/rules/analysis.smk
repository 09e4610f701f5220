# Analysis: baselines, scores and calibration, the drought analysis of the gap, and the product file.


rule baselines:
    input:
        tensors=f"{RESULTS}/tensors.nc",
        fields=expand(f"{RESULTS}/regridded/{{variable}}.nc", variable=MEMORY_FIELDS),
    output:
        f"{RESULTS}/evaluation/baselines.nc",
    log:
        f"{LOGS}/baselines.log",
    benchmark:
        f"{BENCHMARKS}/baselines.tsv"
    conda:
        "../../envs/gracefill.yaml"
    resources:
        mem_mb=mem_mb("baselines"),
        runtime=runtime_min("baselines"),
    params:
        cfg=stage_config("evaluation.regression_ridge", "evaluation.memory_regression"),
    message:
        "Fitting the baselines (climatology + trend, regressions on lagged inputs and memory features, land model)"
    shell:
        "gracefill baselines --config-json {params.cfg:q} --tensors {input.tensors:q} "
        "--fields {input.fields:q} --output {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        reconstruction=f"{RESULTS}/reconstruction.nc",
        baselines=f"{RESULTS}/evaluation/baselines.nc",
        grid=f"{RESULTS}/grid.nc",
        fold_reconstructions=fold_files("reconstruction.nc"),
        fold_baselines=fold_files("baselines.nc"),
    output:
        maps=f"{RESULTS}/evaluation/score_maps.nc",
        spreads=f"{RESULTS}/evaluation/baseline_spreads.nc",
        table=report(f"{RESULTS}/evaluation/scores.csv", caption="../report/scores.rst", category="Evaluation"),
        calibration=f"{RESULTS}/evaluation/calibration.csv",
        spread_skill=f"{RESULTS}/evaluation/spread_skill.csv",
        by_lead=f"{RESULTS}/evaluation/scores_by_lead.csv",
    log:
        f"{LOGS}/evaluate.log",
    benchmark:
        f"{BENCHMARKS}/evaluate.tsv"
    conda:
        "../../envs/gracefill.yaml"
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime_min("evaluate"),
    params:
        cfg=stage_config("evaluation"),
    message:
        "Scoring the reconstruction and the baselines on the validation folds and every period"
    shell:
        "gracefill evaluate --config-json {params.cfg:q} --reconstruction {input.reconstruction:q} "
        "--baselines {input.baselines:q} --grid {input.grid:q} --maps {output.maps:q} --table {output.table:q} "
        "--calibration {output.calibration:q} --spread-skill {output.spread_skill:q} --spreads {output.spreads:q} "
        "--scores-by-lead {output.by_lead:q} "
        "--fold-reconstructions {input.fold_reconstructions:q} --fold-baselines {input.fold_baselines:q} > {log:q} 2>&1"


rule drought:
    input:
        reconstruction=f"{RESULTS}/reconstruction.nc",
        truth_direct=truth_direct_input,
    output:
        fields=f"{RESULTS}/drought/drought.nc",
        events=report(f"{RESULTS}/drought/events.csv", caption="../report/events.rst", category="Droughts"),
        detection=f"{RESULTS}/drought/detection.csv",
    log:
        f"{LOGS}/drought.log",
    benchmark:
        f"{BENCHMARKS}/drought.tsv"
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("drought"),
        truth_direct=truth_direct_option,
    message:
        "Drought analysis of the gap-filled series"
    shell:
        "gracefill drought --config-json {params.cfg:q} --reconstruction {input.reconstruction:q} {params.truth_direct} "
        "--fields {output.fields:q} --events {output.events:q} --detection {output.detection:q} > {log:q} 2>&1"


rule build_product:
    input:
        reconstruction=f"{RESULTS}/reconstruction.nc",
    output:
        f"{RESULTS}/gracefill_twsa.nc",
    log:
        f"{LOGS}/build_product.log",
    benchmark:
        f"{BENCHMARKS}/build_product.tsv"
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("sources"),
    message:
        "Writing the product file: gap-filled TWSA with its standard deviation, quantiles and month flags"
    shell:
        "gracefill build_product --config-json {params.cfg:q} --reconstruction {input.reconstruction:q} "
        "--output {output:q} > {log:q} 2>&1"
