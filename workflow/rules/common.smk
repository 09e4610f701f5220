# Shared set-up: config validation (the same code as the CLI), paths, and input functions.
import json
import os
import shlex
import sys

from gracefill.config import apply_overrides, fold_config, fold_ends, rule_memory_mb, rule_runtime_min, subset, validate
from gracefill.io import UserError
from gracefill.predictors import MEMORY_FIELDS, REQUIRED_FIELDS

# --config entries (not the --configfile files) once more, over the merged config: Snakemake
# reads a nested value such as grid='{resolution: 3}' with every leaf a string; here its numbers
# become numbers. (Snakemake refuses dotted keys itself; `python3 run.py workflow` rewrites
# grid.resolution=7 into grid={resolution: 7} before Snakemake reads it.)
try:
    config = validate(apply_overrides(config, dict(workflow.config_settings.config)))
except UserError as error:
    sys.exit(f"gracefill: invalid configuration: {error}")

# With `--sdm conda` every rule runs in envs/gracefill.yaml, which holds gracefill's dependencies
# but not gracefill: there `gracefill` is this checkout's src/ run by the environment's python.
# PYTHONPATH is set in the command because Snakemake drops it from the environment of conda jobs.
SRC = os.path.join(workflow.basedir, "src")
if any(getattr(m, "name", str(m)).upper() == "CONDA" for m in workflow.deployment_settings.deployment_method):
    shell.prefix(
        "set -euo pipefail; "
        + f"export PYTHONPATH={shlex.quote(SRC)}; ".replace("{", "{{").replace("}", "}}")
        + 'gracefill() {{ python -m gracefill.cli "$@"; }}; '
    )

# training.devices > 1: train and predict run as that many torchrun processes on one node,
# sharing the particles (gracefill.distributed); each asks for that many GPUs.
DEVICES = config["training"]["devices"]
GRACEFILL = "gracefill" if DEVICES == 1 else f"torchrun --standalone --nproc-per-node {DEVICES} -m gracefill.cli"

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
RAW_SYNTHETIC = f"resources/raw/synthetic/{RUN}"

# Raw product files of the synthetic world and the variables each provides (the predictors'
# fields are those gracefill.predictors requires, whatever the source).
RAW_PRODUCTS = {
    "grace": ["twsa"],
    "era5land": list(REQUIRED_FIELDS),
    "truth": ["twsa_true", "twsa_direct_deficit"],
}
PRODUCT_OF_VARIABLE = {v: product for product, variables in RAW_PRODUCTS.items() for v in variables}
PREDICTOR_FIELDS = RAW_PRODUCTS["era5land"]


def stage_config(*sections):
    """The config sections a stage uses, as JSON; rules pass it as a param so that a change of
    those sections (and only those) reruns the stage. training.devices is left out: the rules'
    commands carry it (GRACEFILL), and a stage finds the number of processes from torchrun."""
    sections = subset(config, *sections)
    if "training" in sections:
        sections["training"] = {key: value for key, value in sections["training"].items() if key != "devices"}
    return json.dumps(sections, sort_keys=True, separators=(",", ":"))


# Memory and run time of the heavier rules, scaled from the default run's to this run's grid and
# period (gracefill.config.rule_memory_mb / rule_runtime_min); a retried job asks for more.
# Training and prediction times depend on the device: the Slurm profile sets them (set-resources).
def mem_mb(rule):
    return lambda wildcards, attempt: rule_memory_mb(config, rule, attempt)


def runtime_min(rule):
    return lambda wildcards, attempt: rule_runtime_min(config, rule, attempt)


# Forward-chaining validation folds, named by the last month of their fit window.
FOLDS = fold_ends(config)
FOLD_RESULTS = f"{RESULTS}/validation/fold_{{fold}}"


def fold_stage_config(*sections):
    """stage_config of one validation fold's config (see gracefill.config.fold_config)."""

    def fold_sections(wildcards):
        fold = fold_config(config, wildcards.fold)
        return json.dumps(subset(fold, *sections), sort_keys=True, separators=(",", ":"))

    return fold_sections


def fold_files(name):
    """One file of every validation fold."""
    return expand(f"{FOLD_RESULTS}/{name}", fold=FOLDS)


def epoch_selection_logs(wildcards):
    """The folds' training logs that the final model's epoch count is chosen on."""
    return fold_files("model/training_log.csv") if config["training"]["select_epochs"] == "folds" else []


def calibration_folds(wildcards):
    """The folds' reconstructions that the spread of the main reconstruction is calibrated on."""
    return fold_files("reconstruction.nc") if config["prediction"]["calibration"] == "folds" else []


# The source of each raw product: the GRACE target and the predictors come from the configured
# sources (synthetic, or a real product normalised by retrieve.smk); the truth only exists in
# the synthetic world.
SOURCE_OF_PRODUCT = {
    "grace": config["sources"]["target"],
    "era5land": config["sources"]["predictors"],
    "truth": "synthetic",
}
# sources.land_model: gldas -- the land model storage (sTWSA) comes from GLDAS's own raw file
# (resources/raw/gldas/<run>/land_model.nc), not from the predictors' product.
if config["sources"]["land_model"] == "gldas":
    PRODUCT_OF_VARIABLE["land_water_storage"] = "land_model"
    SOURCE_OF_PRODUCT["land_model"] = "gldas"


def raw_dir(source):
    """Folder of the normalised raw files of one source for this run."""
    return f"resources/raw/{source}/{RUN}"


def raw_file(wildcards):
    """The normalised raw file that holds one variable."""
    product = PRODUCT_OF_VARIABLE[wildcards.variable]
    return f"{raw_dir(SOURCE_OF_PRODUCT[product])}/{product}.nc"


def truth_input(wildcards):
    """The synthetic world's truth, regridded (only the synthetic world has one)."""
    if config["sources"]["target"] == "synthetic":
        return f"{RESULTS}/regridded/twsa_true.nc"
    return []


def truth_direct_input(wildcards):
    """The synthetic drought's direct part, regridded (scored apart: no predictor sees it)."""
    if config["sources"]["target"] == "synthetic":
        return f"{RESULTS}/regridded/twsa_direct_deficit.nc"
    return []


def truth_direct_option(wildcards, input):
    return f"--truth-direct {shlex.quote(input.truth_direct)}" if input.get("truth_direct") else ""


def truth_option(wildcards, input):
    return f"--truth {shlex.quote(input.truth)}" if input.get("truth") else ""


# Result figures drawn by `gracefill plot --figure NAME` and the files each reads.
FIGURE_INPUTS = {
    "training_curves": {"log": f"{RESULTS}/model/training_log.csv"},
    "score_maps": {"maps": f"{RESULTS}/evaluation/score_maps.nc"},
    "baselines": {"table": f"{RESULTS}/evaluation/scores.csv"},
    "calibration": {"calibration": f"{RESULTS}/evaluation/calibration.csv"},
    "monthly_panels": {"reconstruction": f"{RESULTS}/reconstruction.nc"},
    "gap_wsdi": {"drought": f"{RESULTS}/drought/drought.nc", "grid": f"{RESULTS}/grid.nc"},
    "gap_drought_probability": {"drought": f"{RESULTS}/drought/drought.nc", "grid": f"{RESULTS}/grid.nc"},
    "timeseries": {"reconstruction": f"{RESULTS}/reconstruction.nc", "grid": f"{RESULTS}/grid.nc"},
}
# The config sections each figure reads; a change elsewhere does not redraw it.
FIGURE_SECTIONS = {
    "baselines": ("figures", "predictors"),
    "gap_wsdi": ("figures", "drought"),
    "gap_drought_probability": ("figures", "drought"),
    "timeseries": ("figures", "split", "grid"),
}


def figure_inputs(wildcards):
    return FIGURE_INPUTS[wildcards.figure]


def figure_input_options(wildcards, input):
    return " ".join(f"--input {shlex.quote(f'{name}={path}')}" for name, path in input.items())


def figure_config(wildcards):
    return stage_config(*FIGURE_SECTIONS.get(wildcards.figure, ("figures",)))
