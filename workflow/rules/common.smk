# Shared set-up: config validation (the same code as the CLI), paths, and input functions.
import json
import shlex
import sys

from gracefill.config import validate, subset
from gracefill.io import UserError

try:
    config = validate(config)
except UserError as error:
    sys.exit(f"gracefill: invalid configuration: {error}")

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
RAW_SYNTHETIC = f"resources/raw/synthetic/{RUN}"

# Raw product files of the synthetic world and the variables each provides.
RAW_PRODUCTS = {
    "grace": ["twsa"],
    "era5land": ["precipitation", "temperature", "evaporation", "runoff", "land_water_storage"],
    "truth": ["twsa_true"],
}
PRODUCT_OF_VARIABLE = {v: product for product, variables in RAW_PRODUCTS.items() for v in variables}
PREDICTOR_FIELDS = RAW_PRODUCTS["era5land"]


def stage_config(*sections):
    """The config sections a stage uses, as JSON; rules pass it as a param so that a change of
    those sections (and only those) reruns the stage."""
    return json.dumps(subset(config, *sections), sort_keys=True, separators=(",", ":"))


def raw_file(wildcards):
    """The normalised raw file that holds one variable."""
    return f"{RAW_SYNTHETIC}/{PRODUCT_OF_VARIABLE[wildcards.variable]}.nc"


def truth_input(wildcards):
    """The synthetic world's truth, regridded (only the synthetic world has one)."""
    if config["sources"]["target"] == "synthetic":
        return f"{RESULTS}/regridded/twsa_true.nc"
    return []


def truth_option(wildcards, input):
    return f"--truth {shlex.quote(input.truth)}" if input.get("truth") else ""
