# Shared set-up: config validation (the same code as the CLI), paths, and input functions.
import json
import os
import shlex
import sys

from snakemake.exceptions import WorkflowError

from gracefill.config import apply_overrides, fold_config, fold_ends, rule_memory_mb, rule_runtime_min, subset, validate
from gracefill.io import UserError
from gracefill.figures import FIGURES, caption
from gracefill.predictors import MEMORY_FIELDS, REQUIRED_FIELDS
from gracefill.sources import plan

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

# Raw products, their sources and the variable each provides (gracefill.sources.plan).
PRODUCT_OF_VARIABLE = plan.product_of_variable(config)
PREDICTOR_FIELDS = list(REQUIRED_FIELDS)


def stage_config(*sections):
    """The config sections a stage uses (or single keys of one, "section.key"), as JSON; rules
    pass it as a param so that a change of those (and only those) reruns the stage.
    training.devices is left out: the rules' commands carry it (GRACEFILL), and a stage finds
    the number of processes from torchrun."""
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


def lr_schedule_logs(wildcards):
    """The folds' training logs whose learning rates the final model follows."""
    return fold_files("model/training_log.csv") if config["training"]["scheduler"]["metric"] == "validation" else []


def calibration_folds(wildcards):
    """The folds' reconstructions that the spread of the main reconstruction is calibrated on."""
    return fold_files("reconstruction.nc") if config["prediction"]["calibration"] == "folds" else []


def raw_dir(source):
    """Folder of the normalised raw files of one source for this run."""
    return plan.raw_dir(config, source)


def raw_file(wildcards):
    """The normalised raw file that holds one variable."""
    return plan.raw_file(config, wildcards.variable)


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


# The figures (gracefill.figures.FIGURES): one `plot` job each, results/<run>/figures/<name>.<format>.
FIGURE_FILES = [f"{RESULTS}/figures/{name}.{figure.format}" for name, figure in FIGURES.items()]


def figure_inputs(wildcards):
    figure = FIGURES[wildcards.figure]
    if figure.format != wildcards.format:
        raise WorkflowError(
            f"figures/{wildcards.figure}.{wildcards.format}: figure {wildcards.figure} is drawn as {figure.format}"
        )
    return {name: f"{RESULTS}/{path}" for name, path in figure.inputs.items()}


def figure_input_options(wildcards, input):
    return " ".join(f"--input {shlex.quote(f'{name}={path}')}" for name, path in input.items())


def figure_config(wildcards):
    """The config sections the figure reads: a change elsewhere does not redraw it."""
    return stage_config(*FIGURES[wildcards.figure].sections)


def figure_caption(wildcards):
    return caption(wildcards.figure, config)


def figure_category(wildcards):
    return FIGURES[wildcards.figure].category
