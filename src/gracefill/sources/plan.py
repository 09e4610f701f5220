"""What the source rules (workflow/rules/retrieve.smk) and the regridding need from the config:
the raw products and the source of each, which files to download from where, the inputs of the
normalisation commands, and the config a CDS request depends on. Plain functions of the
validated config, so that the rule files hold no logic."""
from __future__ import annotations

import json
import shlex

from gracefill import months as mo
from gracefill.fields import PRODUCT_VARIABLES
from gracefill.sources import gldas
from gracefill.sources.download import file_name_of, join_mirror
from gracefill.sources.era5land import area_tag, expand_local
from gracefill.mascons import MASCONS, check_name, settings_key

DOWNLOADS = "resources/download"

#: The products the synthetic world writes (retrieve_synthetic).
SYNTHETIC_PRODUCTS = ("grace", "era5land", "truth")


def raw_dir(config: dict, source: str) -> str:
    """Folder of the normalised raw files of one source for the configured run."""
    return f"resources/raw/{source}/{config['run']}"


def source_of_product(config: dict) -> dict[str, str]:
    """Raw product -> its source: the GRACE target and the predictors from the configured
    sources (synthetic, or a real product), the truth only from the synthetic world, and with
    ``sources.land_model: gldas`` the land model storage from GLDAS."""
    sources = config["sources"]
    table = {"grace": sources["target"], "era5land": sources["predictors"], "truth": "synthetic"}
    if sources["land_model"] == "gldas":
        table["land_model"] = "gldas"
    return table


def product_of_variable(config: dict) -> dict[str, str]:
    """Regridded variable -> the raw product that holds it."""
    products = [*SYNTHETIC_PRODUCTS] + (["land_model"] if config["sources"]["land_model"] == "gldas" else [])
    return {v: product for product in products for v in PRODUCT_VARIABLES[product]}


def raw_file(config: dict, variable: str) -> str:
    """The normalised raw file that holds one variable."""
    product = product_of_variable(config)[variable]
    return f"{raw_dir(config, source_of_product(config)[product])}/{product}.nc"


def grid_bounds(config: dict) -> dict:
    """The target grid's box (lat_min, lat_max, lon_min, lon_max) from the config: the region to read or fetch."""
    return {k: config["grid"][k] for k in ("lat_min", "lat_max", "lon_min", "lon_max")}


def download_table(config: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """(source, file name) -> (where from, as `gracefill download` options, already quoted for
    the shell; what the file must contain) for the files of an HTTPS mascon target."""
    name = config["sources"]["target"]
    row = MASCONS.get(name)
    if row is None or row.fetch != "https":
        return {}
    cfg = config["sources"][name]
    table = {}
    for file in row.files:
        url = cfg[settings_key(file, "url")]
        if url:
            where = f"--url {shlex.quote(join_mirror(cfg['mirror'], url))}"
        else:  # the newest file the page links to
            where = f"--page {shlex.quote(cfg['page'])} --file-pattern {shlex.quote(cfg['file_pattern'])}"
            where += f" --mirror {shlex.quote(cfg['mirror'])}" if cfg["mirror"] else ""
        table[(name, download_name(config, name, file))] = (where, check_name(name, file))
    return table


def download_name(config: dict, name: str, file: str = "product") -> str:
    """The name a mascon file is downloaded under: an Earthdata granule after its collection
    (the granule's own name changes with every update and is kept in the sidecar); an HTTPS file
    after its URL, or the page's file pattern with 'latest' for the month (the real name is kept
    in the sidecar)."""
    cfg = config["sources"][name]
    if MASCONS[name].fetch == "earthdata":
        return f"{cfg['short_name']}.nc"
    url = cfg[settings_key(file, "url")]
    return file_name_of(url) if url else cfg["file_pattern"].replace("*", "latest")


def era5land_folder(config: dict, downloads: str = DOWNLOADS) -> str:
    """Folder of the yearly CDS downloads: one per requested area."""
    e5 = config["sources"]["era5land"]
    return f"{downloads}/era5land/{area_tag(grid_bounds(config) if e5['area'] == 'grid' else None)}"


def era5land_years(config: dict) -> list[int]:
    return list(range(int(config["period"]["start"][:4]), int(config["period"]["end"][:4]) + 1))


def era5land_inputs(config: dict, downloads: str = DOWNLOADS) -> list[str]:
    """The user's ERA5-Land files (`local`, UserError if none match), or one download per year."""
    e5 = config["sources"]["era5land"]
    if config["sources"]["predictors"] != "era5land":
        return []
    if e5["local"]:
        return expand_local(e5["local"])
    folder = era5land_folder(config, downloads)
    return [f"{folder}/era5land_{year}.nc" for year in era5land_years(config)]


def era5land_request_config(config: dict) -> str:
    """Only what shapes a CDS request (so other config changes refetch nothing), as JSON;
    land_model decides whether the storage variables are requested."""
    e5 = config["sources"]["era5land"]
    request = {k: e5[k] for k in ("dataset", "product_type", "variables", "area")}
    sources = {"era5land": request, "land_model": config["sources"]["land_model"]}
    return json.dumps({"grid": config["grid"], "sources": sources}, sort_keys=True, separators=(",", ":"))


def grace_inputs(config: dict, name: str, downloads: str = DOWNLOADS) -> dict[str, str]:
    """The files `normalise_grace` reads for a mascon product: ``product``, and ``land_mask``
    where it is a file of its own; each the user's own (``local``) or the download."""
    cfg = config["sources"][name]
    return {file: cfg[settings_key(file, "local")] or f"{downloads}/{name}/{download_name(config, name, file)}"
            for file in MASCONS[name].files}


def earthdata_downloads(config: dict) -> list[str]:
    """Names of the Earthdata mascon granules the `retrieve_granule` rule can make."""
    return [download_name(config, name) for name, row in MASCONS.items() if row.fetch == "earthdata"]


def earthdata_request_config(config: dict, product: str) -> str:
    """Only what shapes an Earthdata query of ``sources.<product>`` (not `local`), as JSON."""
    request = {k: v for k, v in config["sources"][product].items() if k != "local"}
    return json.dumps({"sources": {product: request}}, sort_keys=True, separators=(",", ":"))


def gldas_folder(config: dict, downloads: str = DOWNLOADS) -> str:
    g = config["sources"]["gldas"]
    return f"{downloads}/gldas/{g['short_name']}.{g['version']}"


def gldas_pattern(config: dict, downloads: str = DOWNLOADS) -> str:
    """The monthly GLDAS download with a ``{yyyymm}`` wildcard."""
    g = config["sources"]["gldas"]
    return f"{gldas_folder(config, downloads)}/{g['short_name']}.A{{yyyymm}}.{gldas.version_code(g['version'])}.nc4"


def gldas_inputs(config: dict, downloads: str = DOWNLOADS) -> list[str]:
    """The user's GLDAS files (`local`, UserError if none match), or one download per month of the period."""
    if config["sources"]["land_model"] != "gldas":
        return []
    g = config["sources"]["gldas"]
    if g["local"]:
        return gldas.expand_local(g["local"])
    pattern = gldas_pattern(config, downloads)
    return [pattern.format(yyyymm=f"{m:%Y%m}") for m in mo.month_range(config["period"]["start"], config["period"]["end"])]
