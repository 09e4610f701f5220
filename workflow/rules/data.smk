# The target grid, and the conservative regridding of every raw product's variables.


rule build_grid:
    output:
        f"{RESULTS}/grid.nc",
    log:
        f"{LOGS}/build_grid.log",
    benchmark:
        f"{BENCHMARKS}/build_grid.tsv"
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("grid"),
    message:
        "Building the target grid and land mask"
    shell:
        "gracefill build_grid --config-json {params.cfg:q} --output {output:q} > {log:q} 2>&1"


rule regrid:
    input:
        source=raw_file,
        grid=f"{RESULTS}/grid.nc",
    output:
        f"{RESULTS}/regridded/{{variable}}.nc",
    log:
        f"{LOGS}/regrid_{{variable}}.log",
    benchmark:
        f"{BENCHMARKS}/regrid_{{variable}}.tsv"
    wildcard_constraints:
        variable="|".join(PRODUCT_OF_VARIABLE),
    conda:
        "../../envs/gracefill.yaml"
    threads: 2  # dask's threads
    resources:
        mem_mb=mem_mb("regrid"),
        runtime=runtime_min("regrid"),
    message:
        "Regridding {wildcards.variable} conservatively"
    shell:
        "gracefill regrid --source {input.source:q} --variable {wildcards.variable} "
        "--grid {input.grid:q} --output {output:q} --threads {threads} > {log:q} 2>&1"
