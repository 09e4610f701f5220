# gracefill: gap-filling GRACE / GRACE-FO water storage with a Bayesian CNN trained by SVGD.
#
#   snakemake --cores 2                                   the default run (synthetic world)
#   snakemake --cores 2 --configfile configs/test.yaml    the tiny CI run
#
# This file is a table of contents; the rules live in workflow/rules/.
import os

from snakemake.utils import min_version

min_version("8.20")


configfile: os.path.join(workflow.basedir, "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/retrieve.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/plots.smk"


rule all:
    default_target: True
    input:
        FIGURE_FILES,
        f"{RESULTS}/evaluation/scores.csv",
        f"{RESULTS}/evaluation/spread_skill.csv",
        f"{RESULTS}/drought/events.csv",
        f"{RESULTS}/drought/detection.csv",
        f"{RESULTS}/gracefill_twsa.nc",
