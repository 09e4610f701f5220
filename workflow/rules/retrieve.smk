# Real data: HTTPS downloads (CSR mascons), CDS requests (ERA5-Land, one per year), or the
# user's own files (`local`), each normalised into resources/raw/<source>/<run>/ in the same
# layout as the synthetic world, so that regrid_variable reads them unchanged.
# URLs, dataset names and variables come from config["sources"] (gracefill.sources.plan).
import re

from gracefill.io import UserError
from gracefill.sources import plan

DOWNLOAD_URLS = plan.download_table(config)
CSR_INPUTS = plan.csr_inputs(config)
ERA5_FOLDER = plan.era5land_folder(config)
try:
    ERA5_INPUTS = plan.era5land_inputs(config)
except UserError as error:
    sys.exit(f"gracefill: invalid configuration: {error}")


rule download_file:
    message:
        "Downloading {wildcards.file} ({wildcards.source})"
    output:
        f"{plan.DOWNLOADS}/{{source}}/{{file}}",
    wildcard_constraints:
        source="csr",
        file="|".join(re.escape(name) for _, name in DOWNLOAD_URLS) or "no-download",
    params:
        url=lambda wildcards: DOWNLOAD_URLS[(wildcards.source, wildcards.file)][0],
        check=lambda wildcards: DOWNLOAD_URLS[(wildcards.source, wildcards.file)][1],
        timeout=config["sources"]["download"]["timeout_s"],
        retries=config["sources"]["download"]["retries"],
    log:
        f"{LOGS}/download_{{source}}_{{file}}.log",
    benchmark:
        f"{BENCHMARKS}/download_{{source}}_{{file}}.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "python -m gracefill.sources download --url {params.url:q} --output {output:q} --check {params.check} "
        "--timeout {params.timeout} --retries {params.retries} > {log:q} 2>&1"


rule normalise_csr:
    message:
        "Normalising the CSR RL06.3 mascons"
    input:
        product=CSR_INPUTS["product"],
        land_mask=CSR_INPUTS["land_mask"],
    output:
        f"{raw_dir('csr')}/grace.nc",
    params:
        cfg=stage_config("grid", "period", "split", "sources"),
    log:
        f"{LOGS}/normalise_csr.log",
    benchmark:
        f"{BENCHMARKS}/normalise_csr.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "python -m gracefill.sources normalise_grace --product csr --config-json {params.cfg:q} "
        "--input {input.product:q} --land-mask {input.land_mask:q} --output {output:q} > {log:q} 2>&1"


rule retrieve_era5land_year:
    message:
        "Requesting ERA5-Land monthly means for {wildcards.year} from the CDS"
    output:
        f"{ERA5_FOLDER}/era5land_{{year}}.nc",
    wildcard_constraints:
        year=r"\d{4}",
    params:
        cfg=plan.era5land_request_config(config),
    resources:
        cds=1,  # `--resources cds=N` caps the requests queued at the CDS at once
    log:
        f"{LOGS}/retrieve_era5land_{{year}}.log",
    benchmark:
        f"{BENCHMARKS}/retrieve_era5land_{{year}}.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "python -m gracefill.sources retrieve_era5land --config-json {params.cfg:q} --year {wildcards.year} "
        "--output {output:q} > {log:q} 2>&1"


rule normalise_era5land:
    message:
        "Normalising ERA5-Land: monthly totals, evaporation sign, soil layers to water depth"
    input:
        ERA5_INPUTS,
    output:
        f"{raw_dir('era5land')}/era5land.nc",
    params:
        cfg=stage_config("grid", "period", "sources"),
    log:
        f"{LOGS}/normalise_era5land.log",
    benchmark:
        f"{BENCHMARKS}/normalise_era5land.tsv"
    conda:
        "../../envs/gracefill.yaml"
    shell:
        "python -m gracefill.sources normalise_era5land --config-json {params.cfg:q} --inputs {input:q} "
        "--output {output:q} > {log:q} 2>&1"
