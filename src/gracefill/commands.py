"""The registry of ``gracefill`` commands: each command function declares its own arguments
where it is defined, and :func:`make_parser` builds the command line from the registry.

A command is named after its function, and the Snakemake rule that runs it carries the same
name (a validation fold's copy of a rule adds ``_fold``).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

#: ``config=`` of :func:`command`: ``--config FILE`` or ``--config-json TEXT``, optional
#: (the defaults apply without either); ``--config-json`` required; no config at all.
FILE_OR_JSON, JSON, NONE = "file_or_json", "json", "none"


@dataclass(frozen=True)
class Command:
    run: Callable[[argparse.Namespace], None]
    arguments: tuple[tuple[tuple, dict], ...]
    config: str


#: name -> Command, in the order of registration
COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **options) -> tuple[tuple, dict]:
    """One argument of a command: what ``ArgumentParser.add_argument`` takes. Arguments given
    in a tuple form a mutually exclusive group (``required`` when its first one says so)."""
    return flags, options


def command(*arguments, config: str = FILE_OR_JSON):
    """Register the decorated function as the command of its name with ``arguments``."""
    if config not in (FILE_OR_JSON, JSON, NONE):
        raise ValueError(f"config: expected {FILE_OR_JSON}, {JSON} or {NONE}, got {config!r}")

    def register(function):
        if function.__name__ in COMMANDS:
            raise ValueError(f"command {function.__name__!r} is registered twice")
        COMMANDS[function.__name__] = Command(function, arguments, config)
        return function

    return register


def exclusive(*arguments, required: bool = False) -> tuple:
    """Arguments of which at most one (exactly one if ``required``) may be given."""
    return ("exclusive", required, arguments)


def _add(parser, item) -> None:
    if item and item[0] == "exclusive":
        _, required, arguments = item
        group = parser.add_mutually_exclusive_group(required=required)
        for flags, options in arguments:
            group.add_argument(*flags, **options)
    else:
        flags, options = item
        parser.add_argument(*flags, **options)


CONFIG_ARGUMENTS = {
    FILE_OR_JSON: (exclusive(arg("--config", help="YAML config file"),
                             arg("--config-json", help="config (or the sections a command needs) as JSON")),),
    JSON: (arg("--config-json", required=True, help="config sections of the command as JSON (the rule passes them)"),),
    NONE: (),
}


def load_config(args: argparse.Namespace) -> dict:
    """The validated config of a command: ``--config-json``, else ``--config``, else the defaults."""
    from gracefill import config

    if getattr(args, "config_json", None):
        return config.from_json(args.config_json)
    if getattr(args, "config", None):
        return config.load(args.config)
    return config.validate({})


def make_parser(prog: str, description: str, version: str) -> argparse.ArgumentParser:
    """The ``gracefill`` parser: one subcommand per registered command."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}",
                        help="print the version of gracefill and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="the command to run; gracefill COMMAND -h lists its options")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.run.__doc__.splitlines()[0])
        for item in CONFIG_ARGUMENTS[cmd.config] + cmd.arguments:
            _add(p, item)
        p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser
