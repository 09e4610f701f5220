"""Conventions of the package: --version, a help text for every option, the license and the
citation file, and the conda environment of `snakemake --sdm conda`."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import gracefill
from gracefill.cli import make_parser

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def test_version_prints_the_package_version():
    result = subprocess.run([sys.executable, "-m", "gracefill.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"gracefill {gracefill.__version__}"
    assert gracefill.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_every_option_of_every_subcommand_has_a_help_text():
    parser = make_parser()
    missing = [f"gracefill {' '.join(a.option_strings)}" for a in parser._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not (a.help or "").strip()]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers) == 1
    for name, sub in subparsers[0].choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"gracefill {name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "options without help: " + ", ".join(missing)
    assert len(subparsers[0].choices) >= 20   # the stages and the real sources' steps


def test_license_is_mit_as_pyproject_says():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the gracefill developers" in text


def test_citation_file_has_the_package_version_and_both_papers():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert str(cff["version"]) == gracefill.__version__
    assert cff["license"] == "MIT"
    dois = {str(ref["doi"]) for ref in cff["references"]}
    assert {"10.1016/j.jhydrol.2021.127244", "10.1029/2022WR031997"} <= dois
    for ref in cff["references"]:
        assert ref["type"] == "article" and ref["year"] == 2022
        assert [a["family-names"] for a in ref["authors"]][:3] == ["Mo", "Zhong", "Forootan"]


#: pyproject (PyPI) names that conda-forge spells otherwise
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base", "cf-xarray": "cf_xarray"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_conda_environment_has_no_relative_path_and_covers_pyproject():
    env = yaml.safe_load((ROOT / "envs/gracefill.yaml").read_text())
    conda, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
        else:
            conda.append(dep)
    for entry in pip:
        assert not re.match(r"^(-e|--editable)\b", entry.strip()), f"editable install in envs/gracefill.yaml: {entry}"
        assert not re.match(r"^\.{1,2}(/|$)", entry.strip()), f"relative path in envs/gracefill.yaml: {entry}"
    names = {_name(d) for d in conda + pip}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = [_name(r) for r in project["dependencies"]] + [_name(r) for r in project["optional-dependencies"]["cluster"]]
    missing = [r for r in required if CONDA_NAMES.get(r, r) not in names and r.replace("-", "_") not in names]
    assert not missing, f"envs/gracefill.yaml lacks {missing}"


def _rule_commands() -> dict[str, str]:
    """Rule name -> the `gracefill` command its shell runs, for every rule of workflow/rules."""
    found = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule )", path.read_text(), flags=re.M)[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            command = re.search(r"(?:\bgracefill|\{GRACEFILL\}) (\w+)", block)
            if command:
                found[name] = command.group(1)
    return found


def test_every_rule_runs_the_command_of_its_name_and_every_command_has_a_rule():
    from gracefill.commands import COMMANDS

    rules = _rule_commands()
    assert len(rules) >= 15, rules
    assert {rule: cmd for rule, cmd in rules.items() if rule != cmd} == {}
    # every command has its rule, except those run by hand
    assert set(COMMANDS) - set(rules) == {"benchmark", "check_config"}


def test_a_command_registered_twice_or_with_an_unknown_config_kind_is_refused():
    from gracefill.commands import COMMANDS, command

    def build_grid(args):
        """A second build_grid."""

    with pytest.raises(ValueError, match="command 'build_grid' is registered twice"):
        command()(build_grid)
    assert COMMANDS["build_grid"].run is not build_grid
    with pytest.raises(ValueError, match="config: expected file_or_json, json or none, got 'yaml'"):
        command(config="yaml")
