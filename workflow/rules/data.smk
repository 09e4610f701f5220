# Raw data: the synthetic world (offline), the target grid, and conservative regridding.


rule retrieve_synthetic:
    message:
        "Generating the synthetic world (seed {config[seed]})"
    output:
        expand(f"{RAW_SYNTHETIC}/{{product}}.nc", product=RAW_PRODUCTS),
    params:
        cfg=stage_config("seed", "grid", "period", "split", "sources"),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/retrieve_synthetic.log",
    benchmark:
        f"{BENCHMARKS}/retrieve_synthetic.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "gracefill retrieve_synthetic --config-json {params.cfg:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule build_grid:
    message:
        "Building the target grid and land mask"
    output:
        f"{RESULTS}/grid.nc",
    params:
        cfg=stage_config("grid"),
    log:
        f"{LOGS}/build_grid.log",
    benchmark:
        f"{BENCHMARKS}/build_grid.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "gracefill build_grid --config-json {params.cfg:q} --output {output:q} > {log:q} 2>&1"


rule regrid_variable:
    message:
        "Regridding {wildcards.variable} conservatively"
    input:
        source=raw_file,
        grid=f"{RESULTS}/grid.nc",
    output:
        f"{RESULTS}/regridded/{{variable}}.nc",
    wildcard_constraints:
        variable="|".join(PRODUCT_OF_VARIABLE),
    log:
        f"{LOGS}/regrid_{{variable}}.log",
    benchmark:
        f"{BENCHMARKS}/regrid_{{variable}}.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "gracefill regrid --source {input.source:q} --variable {wildcards.variable} "
        "--grid {input.grid:q} --output {output:q} > {log:q} 2>&1"
