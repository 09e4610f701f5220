"""Configuration: load YAML, fill the schema's defaults, validate, and explain errors in one line.

The Snakefile and the CLI both call :func:`validate`, so a bad config stops before any job runs
with the same message: the key path, the bad value and what is allowed.
"""
from __future__ import annotations

import copy
import hashlib
import json
import urllib.parse
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from gracefill.io import UserError
from gracefill.months import months_between
from gracefill.predictors import PREDICTOR_PRESETS
from gracefill import mascons


def load_schema() -> dict:
    """The JSON schema shipped with the package (workflow/schemas/config.schema.yaml), with the
    choices of ``sources.target`` and a ``sources.<name>`` section for each mascon product from
    their table (`gracefill.mascons`)."""
    text = resources.files("gracefill").joinpath("schemas/config.schema.yaml").read_text()
    schema = yaml.safe_load(text)
    sources = schema["properties"]["sources"]["properties"]
    sources["target"]["enum"] = ["synthetic", *mascons.MASCONS]
    sources.update({name: mascons.settings_schema(name) for name in mascons.MASCONS})
    return schema


def _with_defaults(validator_class):
    """A validator class that fills ``default`` values into the instance while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _with_defaults(jsonschema.Draft7Validator)


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line: key path, bad value, what is allowed."""
    key = _key_path(error.absolute_path)
    value = json.dumps(error.instance, default=str)
    if len(value) > 80:
        value = value[:77] + "..."
    schema = error.schema
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(schema.get("properties", {})))
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        return f"config key '{key}': unknown key(s) {', '.join(map(repr, extra))}; allowed: {allowed}"
    if error.validator == "enum":
        allowed = ", ".join(json.dumps(v) if isinstance(v, bool) or v is None else str(v) for v in schema["enum"])
        return f"config key '{key}': {value} is not allowed; expected one of {allowed}"
    if error.validator == "type":
        return f"config key '{key}': {value} is not of type {error.validator_value}"
    if error.validator == "pattern" and "x-expected" in schema:
        return f"config key '{key}': {value} is not allowed; expected {schema['x-expected']}"
    if error.validator == "pattern":
        hint = "a month 'YYYY-MM'" if "(0[1-9]|1[0-2])" in schema["pattern"] else f"a string matching {schema['pattern']}"
        return f"config key '{key}': {value} is not {hint}"
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<",
              "minItems": "at least this many items:", "maxItems": "at most this many items:"}
    if error.validator in bounds:
        return f"config key '{key}': {value} is out of range; expected {bounds[error.validator]} {error.validator_value}"
    if error.validator == "uniqueItems":
        return f"config key '{key}': {value} has repeated items; expected each at most once"
    if error.validator == "required":
        return f"config key '{key}': {error.message}"
    return f"config key '{key}': {value} is invalid: {error.message.split(' is ', 1)[-1] if error.message.startswith(value) else error.message}"


def _month(cfg: dict, *path: str) -> pd.Timestamp:
    node = cfg
    for key in path:
        node = node[key]
    return pd.Timestamp(node)


def _require(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise UserError(f"config key '{key}': {json.dumps(value, default=str)} is invalid: expected {expected}")


def _check_semantics(cfg: dict, points_given: bool = True) -> None:
    """Relations between keys that a JSON schema cannot express."""
    grid = cfg["grid"]
    res = grid["resolution"]
    _require(grid["lat_min"] < grid["lat_max"], "grid.lat_max", grid["lat_max"], f"a value above grid.lat_min ({grid['lat_min']})")
    _require(grid["lon_min"] < grid["lon_max"], "grid.lon_max", grid["lon_max"], f"a value above grid.lon_min ({grid['lon_min']})")
    for lo, hi in (("lat_min", "lat_max"), ("lon_min", "lon_max")):
        cells = (grid[hi] - grid[lo]) / res
        _require(abs(cells - round(cells)) < 1e-6, "grid.resolution", res,
                 f"a resolution that divides grid.{hi} - grid.{lo} ({grid[hi] - grid[lo]})")
        _require(round(cells) >= 8, "grid.resolution", res,
                 f"at least 8 cells between grid.{lo} and grid.{hi} (the network halves the grid 3 times); got {round(cells)}")

    period_start, period_end = _month(cfg, "period", "start"), _month(cfg, "period", "end")
    _require(period_start < period_end, "period.end", cfg["period"]["end"], f"a month after period.start ({cfg['period']['start']})")

    def inside_period(*path: str) -> None:
        month = _month(cfg, *path)
        _require(period_start <= month <= period_end, ".".join(path), month.strftime("%Y-%m"),
                 f"a month within the period {cfg['period']['start']}..{cfg['period']['end']}")

    split = cfg["split"]
    for key in ("train_start", "train_end", "gap_start", "gap_end"):
        inside_period("split", key)
    _require(split["train_start"] <= split["train_end"], "split.train_end", split["train_end"], "a month not before split.train_start")
    _require(split["gap_start"] <= split["gap_end"], "split.gap_end", split["gap_end"], "a month not before split.gap_start")
    _require(split["train_end"] < split["gap_start"], "split.train_end", split["train_end"],
             f"a month before the gap (split.gap_start = {split['gap_start']}); the gap is never trained on")

    pseudo = (split["pseudo_gap_start"], split["pseudo_gap_end"])
    if any(pseudo):
        _require(all(pseudo), "split.pseudo_gap_start" if not pseudo[0] else "split.pseudo_gap_end", None,
                 "both split.pseudo_gap_start and split.pseudo_gap_end, or neither")
        inside_period("split", "pseudo_gap_start")
        inside_period("split", "pseudo_gap_end")
        _require(pseudo[0] <= pseudo[1], "split.pseudo_gap_end", pseudo[1], "a month not before split.pseudo_gap_start")
        _require(pseudo[1] < split["gap_start"] or pseudo[0] > split["gap_end"], "split.pseudo_gap_start", pseudo[0],
                 f"a pseudo-gap outside the gap {split['gap_start']}..{split['gap_end']}")
    target = cfg["sources"]["target"]
    if target in mascons.MASCONS:
        lacking = mascons.missing_setting(target, cfg["sources"][target])
        _require(lacking is None, f"sources.{target}.url", None, lacking)
    if target == "synthetic":  # the synthetic GRACE follows the real mission's calendar
        from gracefill import months as mo

        months = mo.month_range(split["train_start"], split["train_end"])
        observed = mo.synthetic_grace_availability(months, (split["gap_start"], split["gap_end"]))
        _require(bool(observed.any()), "split.train_start", split["train_start"],
                 f"a training window with GRACE months (the first is {mo.GRACE_FIRST_MONTH}); "
                 f"{split['train_start']}..{split['train_end']} has none")
    folds = cfg["evaluation"]["folds"]
    try:
        fold_ends(cfg)
    except ValueError:
        raise UserError(f"config key 'evaluation.folds': {json.dumps(folds)} is invalid: expected folds that fit the "
                        f"training window {split['train_start']}..{split['train_end']} (fewer or shorter folds)") from None

    synthetic = cfg["sources"]["synthetic"]
    native = synthetic["native_resolution"]
    ratio = res / native
    _require(native <= res and abs(ratio - round(ratio)) < 1e-6, "sources.synthetic.native_resolution", native,
             f"a resolution that divides grid.resolution ({res}), e.g. {res / 2:g}")
    drought = synthetic["drought"]
    if drought["enabled"]:
        for lo, hi in (("lat_min", "lat_max"), ("lon_min", "lon_max")):
            _require(drought[lo] < drought[hi], f"sources.synthetic.drought.{hi}", drought[hi], f"a value above drought.{lo}")
            _require(grid[lo] <= drought[lo] and drought[hi] <= grid[hi], f"sources.synthetic.drought.{lo}", drought[lo],
                     f"a drought box inside the grid ({grid[lo]}..{grid[hi]})")
        inside_period("sources", "synthetic", "drought", "start")
        inside_period("sources", "synthetic", "drought", "end")
        _require(drought["start"] <= drought["end"], "sources.synthetic.drought.end", drought["end"], "a month not before drought.start")

    devices, particles = cfg["training"]["devices"], cfg["model"]["particles"]
    _require(particles % devices == 0, "training.devices", devices, f"a divisor of model.particles ({particles})")

    d = cfg["drought"]
    inside_period("drought", "baseline_start")
    inside_period("drought", "baseline_end")
    _require(d["baseline_start"] < d["baseline_end"], "drought.baseline_end", d["baseline_end"], "a month after drought.baseline_start")
    _require(d["thresholds"] == sorted(d["thresholds"], reverse=True), "drought.thresholds", d["thresholds"],
             "thresholds ordered from mild to exceptional (decreasing)")
    inside_period("figures", "month")
    for i, month in enumerate(cfg["figures"]["panel_months"]):
        _require(period_start <= pd.Timestamp(month) <= period_end, f"figures.panel_months.{i}", month,
                 f"a month within the period {cfg['period']['start']}..{cfg['period']['end']}")
    if points_given:  # the default sites are global: a regional grid simply shows those inside it
        for i, point in enumerate(cfg["figures"]["points"]):
            _require(inside_grid(point, grid), f"figures.points.{i}", point["name"], "a point inside the grid")


def inside_grid(point: dict, grid: dict) -> bool:
    """Whether a figures.points entry lies within the grid's bounds."""
    return grid["lat_min"] <= point["lat"] <= grid["lat_max"] and grid["lon_min"] <= point["lon"] <= grid["lon_max"]


#: query parameters that carry secrets (compared case-insensitively)
SECRET_QUERY_KEYS = ("token", "access_token", "api_key", "apikey", "key", "password", "passwd", "pwd", "secret",
                     "signature", "sig", "auth", "authorization", "credentials")


def _urls(node, path: str):
    """(key path, value) of every http(s) URL string below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _urls(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _urls(value, f"{path}.{i}")
    elif isinstance(node, str) and node.lower().startswith(("http://", "https://")):
        yield path, node


def _check_no_credentials(cfg: dict) -> None:
    """Refuse URLs that carry a user, a password or a token: they would reach the printed shell
    commands, Snakemake's logs and metadata. The message never repeats the URL."""
    for key, url in _urls(cfg.get("sources", {}), "sources"):
        parts = urllib.parse.urlsplit(url)
        query = {name.lower() for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
        if "@" in parts.netloc or query & set(SECRET_QUERY_KEYS):
            raise UserError(f"config key '{key}': a URL with credentials (user, password or token) is refused; "
                            "put them in ~/.netrc (HTTPS, Earthdata) or ~/.cdsapirc (CDS) instead")


def fold_ends(cfg: dict) -> list[str]:
    """Last fit month of each validation fold ("YYYY-MM"), from ``evaluation.folds``."""
    from gracefill.months import fold_ends as ends

    folds, split = cfg["evaluation"]["folds"], cfg["split"]
    return ends(split["train_start"], split["train_end"], folds["count"], folds["min_fit_months"],
                folds["min_validation_months"])


def fold_config(cfg: dict, fold_end: str) -> dict:
    """The config of one validation fold: fit on ``split.train_start..fold_end``, validate on the
    training-window months after it, and end the period at ``split.train_end`` so that no later
    month (test, gap, pseudo-gap after it) can reach the fold. A pseudo-gap outside the fold's
    period is dropped."""
    fold = copy.deepcopy(cfg)
    split = fold["split"]
    if fold_end not in fold_ends(cfg):
        raise UserError(f"validation fold {fold_end!r}: expected one of {', '.join(fold_ends(cfg))}")
    fold["period"]["end"] = split["train_end"]
    if split["pseudo_gap_start"] and split["pseudo_gap_start"] > split["train_end"]:
        split["pseudo_gap_start"] = split["pseudo_gap_end"] = None
    split["train_end"] = fold_end
    return fold


def validate(config: dict | None, *, relations: bool = True) -> dict:
    """Return a validated copy of ``config`` with every default filled in; raise UserError otherwise.

    ``relations=False`` skips the checks between sections: for the partial configs that the
    Snakefile hands each command after validating the whole config.
    """
    cfg = copy.deepcopy(config) if config else {}
    if not isinstance(cfg, dict):
        raise UserError(f"config: expected a mapping of keys, got {type(cfg).__name__}")
    validator = _DefaultFillingValidator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(cfg))
    if error is not None:
        raise UserError(_describe(error))
    _check_no_credentials(cfg)
    predictors = cfg.get("predictors")
    if isinstance(predictors, dict) and isinstance(predictors.get("names"), str):
        predictors["names"] = list(PREDICTOR_PRESETS[predictors["names"]])
    if relations:
        _check_semantics(cfg, points_given="points" in ((config or {}).get("figures") or {}))
    return cfg


def _scalar(value):
    """A ``--config`` leaf as YAML would read it: Snakemake parses a nested value such as
    ``grid='{resolution: 3}'`` with YAML's base loader, which leaves every leaf a string."""
    if isinstance(value, dict):
        return {key: _scalar(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scalar(item) for item in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            return value
        if parsed is None or isinstance(parsed, (bool, int, float)):
            return parsed
    return value


def _merge(base: dict, over: dict) -> dict:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def apply_overrides(config: dict, overrides: dict) -> dict:
    """``config`` with the command line's ``--config`` entries merged in (a new dict).

    A dotted key (``grid.resolution: 7``) sets that one nested key, a mapping
    (``grid: {resolution: 3}``) is merged into its section key by key instead of replacing it,
    and leaves that read as numbers, booleans or null in YAML become those.
    """
    nested: dict = {}
    for key, value in (overrides or {}).items():
        path = str(key).split(".")
        if not all(path):
            raise UserError(f"--config {key}=...: empty key in the dotted path; "
                            "write nested keys as section.key=value or put them in a --configfile")
        if len(path) > 1 or isinstance(value, (dict, list)):  # Snakemake typed the other top-level values
            value = _scalar(value)
        for part in reversed(path[1:]):
            value = {part: value}
        _merge(nested, {path[0]: value})
    return _merge(copy.deepcopy(config), nested)


#: what the default run's heavier rules used (results/default/benchmarks/<rule>.tsv, 2026-11-29:
#: 72 x 180 cells, 228 months, the CBAM of 8 particles on 2 CPU cores): peak memory (max_rss, MB)
#: and wall time (s)
MEASURED_RESOURCES = {"train": (1320, 174), "predict": (1133, 22), "baselines": (1467, 6), "evaluate": (2063, 17),
                      "build_tensors": (2013, 7), "regrid": (216, 2)}
_DEFAULT_VOLUME = 72 * 180 * 228
_PYTHON_MB = 400  # the interpreter with numpy, xarray and torch, before any data


def data_volume_ratio(cfg: dict) -> float:
    """Grid cells x months of a validated config over the default run's."""
    grid = cfg["grid"]
    cells = (grid["lat_max"] - grid["lat_min"]) * (grid["lon_max"] - grid["lon_min"]) / grid["resolution"] ** 2
    months = months_between(cfg["period"]["start"], cfg["period"]["end"]) + 1
    return cells * months / _DEFAULT_VOLUME


def rule_memory_mb(cfg: dict, rule: str, attempt: int = 1) -> int:
    """Memory (MB) to ask for ``rule``: the default run's peak above the interpreter's, scaled by
    :func:`data_volume_ratio`, with 50 % headroom, times the attempt (a retry asks for more)."""
    measured = MEASURED_RESOURCES[rule][0]
    return int((_PYTHON_MB + (measured - _PYTHON_MB) * data_volume_ratio(cfg)) * 1.5 * attempt)


def rule_runtime_min(cfg: dict, rule: str, attempt: int = 1) -> int:
    """Wall time (minutes) to ask for ``rule``: ten times the default run's, scaled by
    :func:`data_volume_ratio`, at least 10 minutes, times the attempt."""
    seconds = MEASURED_RESOURCES[rule][1]
    return max(10, int(seconds * data_volume_ratio(cfg) * 10 / 60) + 1) * attempt


def read(path: str | Path) -> dict:
    """A YAML config file as written (no defaults filled, not validated)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} not valid YAML") from None
    return raw if raw is not None else {}


def load(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    raw = read(path)
    try:
        return validate(raw)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def from_json(text: str) -> dict:
    """The (partial) config a rule passes as ``--config-json``, validated without the checks
    between sections (the Snakefile validated the whole config already)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--config-json: not valid JSON ({exc.msg} at character {exc.pos})") from None
    return validate(raw, relations=False)


def subset(cfg: dict, *sections: str) -> dict:
    """The named top-level sections of a config, or single keys of one as "section.key", e.g. to
    hand one command only what it uses (so that a change elsewhere reruns nothing)."""
    out: dict = {}
    for name in sections:
        section, _, key = name.partition(".")
        if key:
            out.setdefault(section, {})[key] = cfg[section][key]
        else:
            out[section] = dict(cfg[section]) if isinstance(cfg[section], dict) else cfg[section]
    return out


def config_hash(cfg: dict) -> str:
    """A short stable hash of a (partial) config for provenance attributes."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def provenance(cfg: dict, sources, step: str) -> dict:
    """Global attributes every command writes: the config hash, the input files by name (not by
    path, so results moved between machines stay alike) and a CF ``history`` line naming the
    ``gracefill`` subcommand."""
    return {"config_hash": config_hash(cfg), "source_files": ", ".join(Path(s).name for s in sources),
            "history": history_line(step)}


def history_line(step: str) -> str:
    """A CF ``history`` line: the time (UTC) and the ``gracefill`` subcommand that wrote the file."""
    return f"{pd.Timestamp.now('UTC'):%Y-%m-%dT%H:%M:%SZ} gracefill {step}"
