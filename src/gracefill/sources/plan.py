"""What the real-source rules (workflow/rules/retrieve.smk) need from the config: which files
to download from where, the inputs of the normalisation steps, and the config a CDS request
depends on. Plain functions of the validated config, so that the rule file holds no logic."""
from __future__ import annotations

import json

from gracefill.sources.download import file_name_of, join_mirror
from gracefill.sources.era5land import area_tag, expand_local

DOWNLOADS = "resources/download"


def grid_bounds(config: dict) -> dict:
    return {k: config["grid"][k] for k in ("lat_min", "lat_max", "lon_min", "lon_max")}


def download_table(config: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """(source, file name) -> (URL, what the file must contain) for the HTTPS products in use."""
    sources = config["sources"]
    table = {}
    if sources["target"] == "csr":
        csr = sources["csr"]
        for key, check in (("url", "csr"), ("land_mask_url", "csr_land_mask")):
            url = join_mirror(csr["mirror"], csr[key])
            table[("csr", file_name_of(url))] = (url, check)
    return table


def csr_inputs(config: dict, downloads: str = DOWNLOADS) -> dict[str, str]:
    """The CSR mascon file and its land mask: the user's own files, or the downloads."""
    csr = config["sources"]["csr"]
    return {
        "product": csr["local"] or f"{downloads}/csr/{file_name_of(csr['url'])}",
        "land_mask": csr["local_land_mask"] or f"{downloads}/csr/{file_name_of(csr['land_mask_url'])}",
    }


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
    """Only what shapes a CDS request (so other config changes refetch nothing), as JSON."""
    e5 = config["sources"]["era5land"]
    request = {k: e5[k] for k in ("dataset", "product_type", "variables", "area")}
    return json.dumps({"grid": config["grid"], "sources": {"era5land": request}}, sort_keys=True, separators=(",", ":"))
