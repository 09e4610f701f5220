# The raw products in resources/raw/<source>/<run>/, in one normalised layout that `regrid`
# reads whatever the source: the synthetic world (offline, the default), or real data from
# HTTPS downloads (CSR and GSFC mascons), CDS requests (ERA5-Land, one per year), Earthdata
# granules through earthaccess (JPL mascons, GLDAS Noah one per month) or the user's own files
# (`local`), each normalised. URLs, dataset names and variables come from config["sources"]
# (gracefill.sources.plan); the mascon products and how each is fetched from the table
# gracefill.mascons.MASCONS. Each rule runs the `gracefill` command of its name.
import re

from gracefill.io import UserError
from gracefill.sources import plan
from gracefill.mascons import MASCONS

DOWNLOAD_URLS = plan.download_table(config)
ERA5_FOLDER = plan.era5land_folder(config)
try:
    ERA5_INPUTS = plan.era5land_inputs(config)
    GLDAS_INPUTS = plan.gldas_inputs(config)
except UserError as error:
    sys.exit(f"gracefill: invalid configuration: {error}")


rule retrieve_synthetic:
    output:
        expand(f"{raw_dir('synthetic')}/{{product}}.nc", product=plan.SYNTHETIC_PRODUCTS),
    log:
        f"{LOGS}/retrieve_synthetic.log",
    benchmark:
        f"{BENCHMARKS}/retrieve_synthetic.tsv"
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("seed", "grid", "period", "split", "sources"),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    message:
        "Generating the synthetic world (seed {config[seed]})"
    shell:
        "gracefill retrieve_synthetic --config-json {params.cfg:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule download:
    output:
        f"{plan.DOWNLOADS}/{{source}}/{{file}}",
    log:
        f"{LOGS}/download_{{source}}_{{file}}.log",
    benchmark:
        f"{BENCHMARKS}/download_{{source}}_{{file}}.tsv"
    wildcard_constraints:
        source="|".join(name for name, row in MASCONS.items() if row.fetch == "https"),
        file="|".join(re.escape(name) for _, name in DOWNLOAD_URLS) or "no-download",
    conda:
        "../../envs/gracefill.yaml"
    params:
        where=lambda wildcards: DOWNLOAD_URLS[(wildcards.source, wildcards.file)][0],
        check=lambda wildcards: DOWNLOAD_URLS[(wildcards.source, wildcards.file)][1],
        timeout=config["sources"]["download"]["timeout_s"],
        retries=config["sources"]["download"]["retries"],
    message:
        "Downloading {wildcards.file} ({wildcards.source})"
    shell:
        "gracefill download {params.where} --output {output:q} --check {params.check} "
        "--timeout {params.timeout} --retries {params.retries} > {log:q} 2>&1"


rule normalise_grace:
    input:
        unpack(lambda wildcards: plan.grace_inputs(config, wildcards.product)),
    output:
        f"{raw_dir('{product}')}/grace.nc",
    log:
        f"{LOGS}/normalise_{{product}}.log",
    benchmark:
        f"{BENCHMARKS}/normalise_{{product}}.tsv"
    wildcard_constraints:
        product="|".join(MASCONS),
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("grid", "period", "split", "sources"),
        land_mask=lambda wildcards, input: (
            f"--land-mask {shlex.quote(input.land_mask)}" if "land_mask" in input.keys() else ""
        ),
    message:
        "Normalising the {wildcards.product} mascons"
    shell:
        "gracefill normalise_grace --product {wildcards.product} --config-json {params.cfg:q} "
        "--input {input.product:q} {params.land_mask} --output {output:q} > {log:q} 2>&1"


rule retrieve_granule:
    output:
        f"{plan.DOWNLOADS}/{{product}}/{{file}}",
    log:
        f"{LOGS}/retrieve_granule_{{product}}_{{file}}.log",
    benchmark:
        f"{BENCHMARKS}/retrieve_granule_{{product}}_{{file}}.tsv"
    wildcard_constraints:
        product="|".join(name for name, row in MASCONS.items() if row.fetch == "earthdata"),
        file="|".join(re.escape(name) for name in plan.earthdata_downloads(config)),
    conda:
        "../../envs/gracefill.yaml"
    resources:
        earthdata=1,  # `--resources earthdata=N` caps the Earthdata downloads running at once
    params:
        cfg=lambda wildcards: plan.earthdata_request_config(config, wildcards.product),
        timeout=config["sources"]["download"]["timeout_s"],
        retries=config["sources"]["download"]["retries"],
    message:
        "Downloading the {wildcards.product} mascons from Earthdata"
    shell:
        "gracefill retrieve_granule --product {wildcards.product} --config-json {params.cfg:q} "
        "--timeout {params.timeout} --retries {params.retries} --output {output:q} > {log:q} 2>&1"


rule retrieve_gldas:
    output:
        plan.gldas_pattern(config),
    log:
        f"{LOGS}/retrieve_gldas_{{yyyymm}}.log",
    benchmark:
        f"{BENCHMARKS}/retrieve_gldas_{{yyyymm}}.tsv"
    wildcard_constraints:
        yyyymm=r"\d{6}",
    conda:
        "../../envs/gracefill.yaml"
    resources:
        earthdata=1,
    params:
        cfg=plan.earthdata_request_config(config, "gldas"),
        timeout=config["sources"]["download"]["timeout_s"],
        retries=config["sources"]["download"]["retries"],
    message:
        "Downloading GLDAS Noah for {wildcards.yyyymm} from Earthdata"
    shell:
        "gracefill retrieve_gldas --config-json {params.cfg:q} --month {wildcards.yyyymm} "
        "--timeout {params.timeout} --retries {params.retries} --output {output:q} > {log:q} 2>&1"


rule normalise_gldas:
    input:
        GLDAS_INPUTS,
    output:
        f"{raw_dir('gldas')}/land_model.nc",
    log:
        f"{LOGS}/normalise_gldas.log",
    benchmark:
        f"{BENCHMARKS}/normalise_gldas.tsv"
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("grid", "period", "sources"),
    message:
        "Normalising GLDAS Noah: soil layers + snow + canopy water as the land model storage"
    shell:
        "gracefill normalise_gldas --config-json {params.cfg:q} --inputs {input:q} "
        "--output {output:q} > {log:q} 2>&1"


rule retrieve_era5land:
    output:
        f"{ERA5_FOLDER}/era5land_{{year}}.nc",
    log:
        f"{LOGS}/retrieve_era5land_{{year}}.log",
    benchmark:
        f"{BENCHMARKS}/retrieve_era5land_{{year}}.tsv"
    wildcard_constraints:
        year=r"\d{4}",
    conda:
        "../../envs/gracefill.yaml"
    resources:
        cds=1,  # `--resources cds=N` caps the requests queued at the CDS at once
    params:
        cfg=plan.era5land_request_config(config),
        timeout=config["sources"]["download"]["timeout_s"],
        retries=config["sources"]["download"]["retries"],
    message:
        "Requesting ERA5-Land monthly means for {wildcards.year} from the CDS"
    shell:
        "gracefill retrieve_era5land --config-json {params.cfg:q} --year {wildcards.year} "
        "--timeout {params.timeout} --retries {params.retries} --output {output:q} > {log:q} 2>&1"


rule normalise_era5land:
    input:
        ERA5_INPUTS,
    output:
        f"{raw_dir('era5land')}/era5land.nc",
    log:
        f"{LOGS}/normalise_era5land.log",
    benchmark:
        f"{BENCHMARKS}/normalise_era5land.tsv"
    conda:
        "../../envs/gracefill.yaml"
    params:
        cfg=stage_config("grid", "period", "sources"),
    message:
        "Normalising ERA5-Land: monthly totals, evaporation sign, soil layers to water depth"
    shell:
        "gracefill normalise_era5land --config-json {params.cfg:q} --inputs {input:q} "
        "--output {output:q} > {log:q} 2>&1"
