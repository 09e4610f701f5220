"""The GRACE mascon products that can give the target (``sources.target``): one row each.

A product is a reader module of the same name in ``gracefill/sources/`` and a row in `MASCONS`. The module
holds ``NAME`` (its title), ``read(path[, land_mask_path], *, period, require, bounds)`` (the
normalised layout of `gracefill.sources.normalise`) and ``verify(path)`` (the check of a
download; also ``verify_land_mask`` where the land mask is a file of its own). The row says how
the files are fetched and gives the defaults of its settings ``sources.<name>``, whose keys are
those of its fetch kind (`SETTINGS`):

* ``https``: ``url`` (or, when null, the newest file named like ``file_pattern`` that ``page``
  links to), ``mirror``, ``local``; with a separate land mask also ``land_mask_url`` and
  ``local_land_mask``. Fetched by the ``download`` rule.
* ``earthdata``: ``short_name``, ``version``, ``granule_name``, ``local``; one granule holds the
  whole record, and of several matches the one whose name sorts last is taken. Fetched by the
  ``retrieve_granule`` rule through earthaccess.

The config schema (its ``sources.target`` choices and the ``sources.<name>`` sections), the
rules of workflow/rules/retrieve.smk (through `gracefill.sources.plan`) and the ``download``,
``retrieve_granule`` and ``normalise_grace`` commands all read this table; nothing else names a
mascon product. This module imports nothing of gracefill: the config check reads it, and the
readers are imported by name when used.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

HTTPS_URL = "^https?://"
#: The settings of each fetch kind under ``sources.<name>`` (JSON schema, defaults from the row).
SETTINGS = {
    "https": {
        "url": {"description": "the product file; null = the newest file named like file_pattern that page links to "
                               "(for products renamed with every update). Found once: delete the download to fetch a newer one",
                "type": ["string", "null"], "pattern": HTTPS_URL},
        "page": {"description": "a page linking to the current file (used when url is null)",
                 "type": ["string", "null"], "pattern": HTTPS_URL},
        "file_pattern": {"description": "glob of the file's name on page (case-insensitive; * stands for the last month, YYYYMM)",
                         "type": ["string", "null"], "pattern": "^[A-Za-z0-9*][A-Za-z0-9._*-]*$"},
        "mirror": {"description": "base URL of a mirror holding the same file names (replaces the folder of the URLs, "
                                  "or of the link found on page)", "type": ["string", "null"], "pattern": HTTPS_URL},
        "local": {"description": "path of a product file you already have (then nothing is downloaded)",
                  "type": ["string", "null"]},
    },
    "earthdata": {
        "short_name": {"description": "the CMR collection short name (also the download's file name, so a plain name)",
                       "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "version": {"description": "the CMR collection version (null = any; the short name already names the release)",
                    "type": ["string", "null"]},
        "granule_name": {"description": "the granule (file) name pattern searched for (* = anything); of several "
                                        "matches the one with the latest end month is taken", "type": ["string", "null"]},
        "local": {"description": "path of a product file you already have (then nothing is downloaded)",
                  "type": ["string", "null"]},
    },
}
#: The extra settings of a product whose land mask is a file of its own.
LAND_MASK_SETTINGS = {
    "land_mask_url": {"description": "the land mask file", "type": "string", "pattern": HTTPS_URL},
    "local_land_mask": {"description": "path of the land mask file you already have (with local)",
                        "type": ["string", "null"]},
}


@dataclass(frozen=True)
class Mascon:
    """One mascon product: what it is (shown in the config's documentation), how it is fetched
    (``https`` or ``earthdata``), the defaults of its settings, and whether its land mask is a
    file of its own (CSR) rather than a variable of the product file (JPL, GSFC)."""

    description: str
    fetch: str
    defaults: dict = field(default_factory=dict)
    separate_land_mask: bool = False

    @property
    def files(self) -> tuple[str, ...]:
        """The files the product is read from: ``product``, and ``land_mask`` if separate."""
        return ("product", "land_mask") if self.separate_land_mask else ("product",)


CSR_FOLDER = "https://download.csr.utexas.edu/outgoing/grace/RL0603_mascons"
MASCONS = {
    "csr": Mascon(
        "CSR RL06.3 mascons, 0.25 degree, plain HTTPS (no login); land mask in a file of its own", "https",
        {"url": f"{CSR_FOLDER}/CSR_GRACE_GRACE-FO_RL0603_Mascons_all-corrections.nc",
         "land_mask_url": f"{CSR_FOLDER}/CSR_GRACE_GRACE-FO_RL06_Mascons_v02_LandMask.nc"},
        separate_land_mask=True),
    "jpl": Mascon(
        "JPL RL06.3 v04 CRI mascons, 0.5 degree, through earthaccess (Earthdata login: EARTHDATA_TOKEN, "
        "EARTHDATA_USERNAME + EARTHDATA_PASSWORD, or ~/.netrc); land mask from the file", "earthdata",
        {"short_name": "TELLUS_GRAC-GRFO_MASCON_CRI_GRID_RL06.3_V4",
         "granule_name": "GRCTellus.JPL.200204_*.GLO.RL06.3M.MSCNv04CRI*"}),
    "gsfc": Mascon(
        "GSFC RL06 v2.0 global mascons on the 0.5-degree grid, plain HTTPS (no login); land mask from the file; "
        "the file is renamed with every update, so by default the newest one the page links to", "https",
        {"page": "https://earth.gsfc.nasa.gov/geo/data/grace-mascons",
         "file_pattern": "gsfc.glb_.200204_*_rl06v2.0_obp-ice6gd_halfdegree.nc"}),
}


def settings_schema(name: str) -> dict:
    """The JSON schema of ``sources.<name>``: its fetch kind's keys with the row's defaults."""
    row = MASCONS[name]
    keys = {**SETTINGS[row.fetch], **(LAND_MASK_SETTINGS if row.separate_land_mask else {})}
    return {"description": row.description, "type": "object", "additionalProperties": False, "default": {},
            "properties": {key: {**spec, "default": row.defaults.get(key)} for key, spec in keys.items()}}


def missing_setting(name: str, settings: dict) -> str | None:
    """What an HTTPS product's settings lack to find its file (url, or page and file_pattern), or None."""
    if MASCONS[name].fetch == "https" and not settings["url"] and not (settings["page"] and settings["file_pattern"]):
        return "a url, or a page and a file_pattern to find the newest file on"
    return None


def reader(name: str) -> ModuleType:
    """The reader module of a mascon product, ``gracefill.sources.<name>`` (imported on use, so
    that the config check, which reads the table, imports no reader)."""
    return importlib.import_module(f"gracefill.sources.{name}")


def verifier(name: str, file: str = "product"):
    """The check of one downloaded file of a product: ``verify``, or ``verify_land_mask``."""
    module = reader(name)
    return module.verify if file == "product" else getattr(module, f"verify_{file}")


def settings_key(file: str, key: str) -> str:
    """The ``sources.<name>`` key of one file: ``url``/``local`` for the product,
    ``land_mask_url``/``local_land_mask`` for the separate land mask."""
    if file == "product":
        return key
    return f"{file}_{key}" if key == "url" else f"{key}_{file}"


def check_name(name: str, file: str) -> str:
    """The ``gracefill download --check`` value of one file: the product's name, ``<name>_land_mask``."""
    return name if file == "product" else f"{name}_{file}"


def checks() -> dict[str, tuple[str, str]]:
    """Every ``--check`` value of the HTTPS products -> (product, file)."""
    return {check_name(name, file): (name, file) for name, row in MASCONS.items() if row.fetch == "https"
            for file in row.files}
