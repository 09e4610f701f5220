"""ERA5-Land monthly means from the Copernicus Climate Data Store (cdsapi), or local files.

Requests (`cds_request`) go one year at a time, so that a failure loses one year. The new
CDS (2024 on) answers with NetCDF variables ``t2m, tp, e, ro, swvl1..4, sd, src`` on
``(valid_time, latitude, longitude)``, latitude north to south, longitude 0..360 for a global
request or -180..180 for an ``area`` in -180..180; a request is sometimes wrapped in a zip
(one NetCDF per kind of field) even when "unarchived" was asked for: `retrieve_year` merges
the members into one file.

`read` converts to the normalised layout:

* ``tp``, ``e``, ``ro`` are mean daily accumulations in metres: x 1000 x days in the month
  gives mm per month; ``e`` is negative for evaporation (ECMWF's upward-negative sign), so
  ``evaporation = -e`` (positive = water leaving the land);
* ``swvl1..4`` (m3 m-3) x the layer thicknesses 0.07, 0.21, 0.72, 1.89 m, plus snow water
  equivalent ``sd`` and the skin reservoir ``src`` (m of water equivalent), x 1000 =
  ``land_water_storage`` in mm;
* ``t2m`` stays in K.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import months as mo
from gracefill.io import UserError, open_dataset, write_netcdf
from gracefill.sources import download as dl
from gracefill.sources import normalise as nz

#: CDS request name -> short name in the NetCDF file.
SHORT_NAMES = {
    "total_precipitation": "tp",
    "2m_temperature": "t2m",
    "total_evaporation": "e",
    "runoff": "ro",
    "volumetric_soil_water_layer_1": "swvl1",
    "volumetric_soil_water_layer_2": "swvl2",
    "volumetric_soil_water_layer_3": "swvl3",
    "volumetric_soil_water_layer_4": "swvl4",
    "snow_depth_water_equivalent": "sd",
    "skin_reservoir_content": "src",
}
LAYER_THICKNESS_M = {"swvl1": 0.07, "swvl2": 0.21, "swvl3": 0.72, "swvl4": 1.89}
#: The variables behind land_water_storage: soil water of the four layers, snow, skin reservoir.
STORAGE_VARIABLES = tuple(v for v, short in SHORT_NAMES.items() if short in (*LAYER_THICKNESS_M, "sd", "src"))
M_TO_MM = 1000.0
ACCUMULATION_UNITS = ("m", "m of water equivalent")
UNITS = {
    "tp": ACCUMULATION_UNITS, "e": ACCUMULATION_UNITS, "ro": ACCUMULATION_UNITS,
    "t2m": ("K",),
    "swvl1": ("m**3 m**-3", "m3 m-3", "m3/m3", "m^3 m^-3"), "swvl2": ("m**3 m**-3", "m3 m-3", "m3/m3", "m^3 m^-3"),
    "swvl3": ("m**3 m**-3", "m3 m-3", "m3/m3", "m^3 m^-3"), "swvl4": ("m**3 m**-3", "m3 m-3", "m3/m3", "m^3 m^-3"),
    "sd": ("m of water equivalent", "m"), "src": ("m of water equivalent", "m"),
}
#: Keys of a CDS request for this dataset (the CDS web form's "API request").
REQUEST_KEYS = ("product_type", "variable", "year", "month", "time", "data_format", "download_format", "area")
FLUX_UNITS = "mm month-1"
NAME = "ERA5-Land monthly means"
CDS_RC = "~/.cdsapirc"
CDS_RETRY_SLEEP_S = 10.0  # longest wait between two attempts after a CDS server error


# --------------------------------------------------------------------------- requests


def needed_variables(sources: dict) -> list[str]:
    """The ERA5-Land variables a run needs (``sources`` = the config's sources section): the
    configured ones, less the six behind land_water_storage when ``sources.land_model`` takes
    that storage from GLDAS (a request of 4 variables instead of 10)."""
    variables = list(sources["era5land"]["variables"])
    if sources["land_model"] == "gldas":
        return [v for v in variables if v not in STORAGE_VARIABLES]
    return variables


def area_of(bounds: dict | None) -> list[float] | None:
    """CDS ``area`` [north, west, south, east] of a lat/lon box (None = global)."""
    if not bounds:
        return None
    return [float(bounds["lat_max"]), float(bounds["lon_min"]), float(bounds["lat_min"]), float(bounds["lon_max"])]


def area_tag(bounds: dict | None) -> str:
    """A folder name for the downloads of one area."""
    area = area_of(bounds)
    if area is None:
        return "global"
    return "area_" + "_".join(f"{v:g}" for v in area)


def cds_request(cfg: dict, year: int, bounds: dict | None = None) -> dict:
    """The CDS request for one year of the configured variables (``cfg`` = sources.era5land)."""
    unknown = [v for v in cfg["variables"] if v not in SHORT_NAMES]
    if unknown:
        raise UserError(f"sources.era5land.variables: unknown variable(s) {', '.join(unknown)}; "
                        f"expected some of {', '.join(SHORT_NAMES)}")
    request = {
        "product_type": [cfg["product_type"]],
        "variable": list(cfg["variables"]),
        "year": [f"{int(year):04d}"],
        "month": [f"{m:02d}" for m in range(1, 13)],
        "time": ["00:00"],
        "data_format": "netcdf",
        "download_format": "unarchived",
    }
    area = area_of(bounds)
    if area is not None:
        request["area"] = area
    return request


def credentials_hint() -> str | None:
    """None if CDS credentials are where cdsapi looks for them; else the one-line fix."""
    if os.environ.get("CDSAPI_URL") and os.environ.get("CDSAPI_KEY"):
        return None
    rc = Path(os.environ.get("CDSAPI_RC", CDS_RC)).expanduser()
    if rc.is_file():
        return None
    return (f"CDS API credentials not found: create {rc} with the lines 'url: https://cds.climate.copernicus.eu/api' "
            "and 'key: <your personal access token>' (or set CDSAPI_URL and CDSAPI_KEY), and accept the "
            "ERA5-Land licence on the dataset's page")


def _secret_free(text: str) -> str:
    """``text`` with the CDS key (if known) blanked out, on one line."""
    key = os.environ.get("CDSAPI_KEY")
    rc = Path(os.environ.get("CDSAPI_RC", CDS_RC)).expanduser()
    if not key and rc.is_file():
        try:
            for line in rc.read_text().splitlines():
                if line.strip().startswith("key:"):
                    key = line.split(":", 1)[1].strip()
        except OSError:
            pass
    if key:
        text = text.replace(key, "***")
    return " ".join(text.split())[:300]


def retrieve_year(cfg: dict, year: int, target: str | os.PathLike, *, bounds: dict | None = None,
                  client=None, timeout_s: float = 120.0, retries: int = 3) -> Path:
    """Download one year with cdsapi to ``target`` (atomic, verified, sidecar); skip if complete.

    The CDS client gets the configured budget (``sources.download``): ``timeout_s`` per HTTP
    request and ``retries`` attempts on a server error, at most :data:`CDS_RETRY_SLEEP_S` apart
    (cdsapi's own defaults, 500 attempts 120 s apart, hang a job for hours); then one line.
    A queued request still waits for the CDS as long as it takes."""
    target = Path(target)
    if dl.is_complete(target):
        return target
    if client is None:
        hint = credentials_hint()
        if hint:
            raise UserError(hint)
        try:
            import cdsapi
        except ImportError:
            raise UserError("cdsapi is not installed: pip install cdsapi (or use the conda environment envs/gracefill.yaml)") from None
        client = cdsapi.Client(timeout=timeout_s, retry_max=retries, sleep_max=min(CDS_RETRY_SLEEP_S, timeout_s))
    request = cds_request(cfg, year, bounds)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = dl.part_path(target)
    part.unlink(missing_ok=True)  # a CDS result cannot be resumed: a failed year restarts cleanly
    what = f"CDS {cfg['dataset']} {year}"
    try:
        client.retrieve(cfg["dataset"], request, str(part))
    except Exception as exc:  # noqa: BLE001 - cdsapi raises plain Exceptions with long texts
        part.unlink(missing_ok=True)
        raise UserError(f"{what}: request failed ({type(exc).__name__}: {_secret_free(str(exc))})") from None
    try:
        unzip_in_place(part)
        return dl.finalise(part, target, what, verify=lambda p: verify(p, cfg["variables"], year))
    except Exception as exc:
        part.unlink(missing_ok=True)
        if isinstance(exc, UserError):
            raise UserError(f"{what}: downloaded file failed verification: {exc}") from None
        raise


def unzip_in_place(path: Path) -> None:
    """If ``path`` is a zip of NetCDF files (the CDS sometimes wraps them), merge them into it."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return
    folder = path.with_name(path.name + ".unzipped")
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.endswith(".nc")]
            if not members:
                raise UserError(f"{path}: zip archive without NetCDF members")
            archive.extractall(folder, members)
        # lazily, a month at a time: a global year of 0.1-degree fields is gigabytes
        opened = []
        try:
            for member in members:
                opened.append(open_dataset(folder / member))
            parts = [ds.chunk({_time_name(ds, str(folder / m)): 1}) for ds, m in zip(opened, members)]
            merged = xr.merge(parts, compat="override", join="outer", combine_attrs="drop_conflicts")
            write_netcdf(merged, path)
        finally:
            for ds in opened:
                ds.close()
    finally:
        for f in sorted(folder.rglob("*"), reverse=True) if folder.exists() else []:
            f.unlink() if f.is_file() else f.rmdir()
        if folder.exists():
            folder.rmdir()


def verify(path: str | os.PathLike, variables, year: int | None = None) -> None:
    """A year file opens, has the short names of ``variables`` and a time axis (in ``year``)."""
    needed = tuple(SHORT_NAMES[v] for v in variables)
    with open_dataset(path, required=needed) as ds:
        name = _time_name(ds, str(path))
        times = pd.DatetimeIndex(ds[name].values)
        if len(times) == 0:
            raise UserError(f"{path}: time axis '{name}' is empty")
        if year is not None and not (times.year == int(year)).all():
            raise UserError(f"{path}: time axis holds {times.min():%Y-%m}..{times.max():%Y-%m}, expected months of {year}")


# --------------------------------------------------------------------------- reading


def _time_name(ds: xr.Dataset, where: str) -> str:
    for name in ("valid_time", "time"):
        if name in ds.dims:
            return name
    raise UserError(f"{where}: no time dimension (expected valid_time or time)")


def expand_local(pattern: str | list) -> list[str]:
    """The files ``sources.era5land.local`` names (a path, a glob or a list), sorted; error if none."""
    return nz.expand_local(pattern, "sources.era5land.local")


def _open_one(path: str | os.PathLike, needed: tuple[str, ...]) -> xr.Dataset:
    ds = open_dataset(path, required=needed)
    name = _time_name(ds, str(path))
    ds = ds[list(needed)]
    if "expver" in ds.dims:  # old-CDS files mixing ERA5 (1) and ERA5T (5): take the first valid
        levels = [ds.isel(expver=i, drop=True) for i in range(ds.sizes["expver"])]
        ds = levels[0]
        for level in levels[1:]:
            ds = ds.combine_first(level)
    ds = ds.drop_vars([c for c in ("number", "expver") if c in ds.coords])
    if name != "time":
        ds = ds.rename({name: "time"})
    ds.attrs["_path"] = str(path)
    return ds


def _check_has_values(ds: xr.Dataset, needed: tuple[str, ...], path: str) -> None:
    """Each variable has a value somewhere in the box (an all-NaN variable, e.g. a request for
    the wrong area, would pass everything else and fail stages later with another file's name).
    The first month is looked at first; the whole variable only when that month is empty."""
    for short in needed:
        var = ds[short]
        if var.sizes.get("time", 0) and bool(var.isel(time=0).notnull().any()):
            continue
        if not bool(var.notnull().any()):
            raise UserError(f"{path}: variable '{short}' has no value (all NaN) in the grid's box; expected data over land")


def read(
    paths,
    variables=tuple(SHORT_NAMES),
    *,
    period: tuple[str, str] | None = None,
    bounds: dict | None = None,
    chunks: dict | None = None,
) -> xr.Dataset:
    """The normalised predictors from ERA5-Land NetCDF files (one per year, or any split).

    ``period`` ("YYYY-MM", "YYYY-MM") is kept and must be complete; ``bounds`` crops to a box
    (+1 cell). Lazy (dask, one month per chunk): the caller writes it out.
    """
    paths = [str(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    needed = tuple(SHORT_NAMES[v] if v in SHORT_NAMES else v for v in variables)
    parts = []
    for path in paths:
        ds = _open_one(path, needed)
        for short in needed:
            if short in UNITS:
                nz.check_units(ds[short], UNITS[short], path)
        nz.check_unique(ds["time"].values, path, "valid_time")
        ds = nz.standard_lat_lon(ds, "latitude", "longitude")
        ds = nz.crop(ds, bounds)
        _check_has_values(ds, needed, path)
        parts.append(ds)
    where = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"
    for a in parts[1:]:
        if a.sizes["lat"] != parts[0].sizes["lat"] or not np.allclose(a["lat"], parts[0]["lat"]) \
                or a.sizes["lon"] != parts[0].sizes["lon"] or not np.allclose(a["lon"], parts[0]["lon"]):
            raise UserError(f"{a.attrs['_path']}: grid differs from {paths[0]}'s")
    ds = xr.concat(parts, dim="time", data_vars="minimal", coords="minimal", compat="override", join="override")
    times = pd.DatetimeIndex(ds["time"].values)
    month_of = mo.to_month_start(times) if len(parts) > 1 else None
    if month_of is not None and month_of.has_duplicates:
        first = month_of[month_of.duplicated()][0]
        holders = [a.attrs["_path"] for a in parts if (mo.to_month_start(a["time"].values) == first).any()]
        raise UserError(f"{' and '.join(holders)}: more than one field for {first:%Y-%m} across files "
                        "(time axis 'valid_time'); expected each month in one file")
    months = nz.to_months(times, where)
    ds = ds.assign_coords(time=months.values).sortby("time")
    months = pd.DatetimeIndex(ds["time"].values)
    if period is not None:
        nz.check_complete(months, *period, where, NAME)
        keep = (months >= pd.Timestamp(period[0])) & (months <= pd.Timestamp(period[1]))
        ds = ds.isel(time=np.flatnonzero(keep))
    ds = ds.chunk(chunks or {"time": 1, "lat": -1, "lon": -1})
    days = xr.DataArray(pd.DatetimeIndex(ds["time"].values).days_in_month.astype(np.float32), dims="time",
                        coords={"time": ds["time"]})
    scale = days * np.float32(M_TO_MM)
    out = {}
    if "tp" in ds:
        out["precipitation"] = nz.finish(ds["tp"] * scale, "precipitation", FLUX_UNITS, "total precipitation (monthly total)",
                                         standard_name="lwe_precipitation_rate", source_variable="tp (m day-1) x 1000 x days in month")
    if "e" in ds:
        out["evaporation"] = nz.finish(-ds["e"] * scale, "evaporation", FLUX_UNITS, "total evapotranspiration (monthly total)",
                                       note="positive = water leaving the land (ECMWF's e is negative upward; sign flipped)",
                                       source_variable="-e (m day-1) x 1000 x days in month")
    if "ro" in ds:
        out["runoff"] = nz.finish(ds["ro"] * scale, "runoff", FLUX_UNITS, "total runoff, surface + subsurface (monthly total)",
                                  source_variable="ro (m day-1) x 1000 x days in month")
    if "t2m" in ds:
        out["temperature"] = nz.finish(ds["t2m"], "temperature", "K", "2 m air temperature", standard_name="air_temperature")
    storage_parts = [k for k in (*LAYER_THICKNESS_M, "sd", "src") if k in ds]
    if storage_parts:
        missing = [k for k in (*LAYER_THICKNESS_M, "sd", "src") if k not in ds]
        if missing:
            raise UserError(f"{where}: land_water_storage needs {', '.join(missing)} too")
        total = sum(ds[k] * np.float32(d) for k, d in LAYER_THICKNESS_M.items()) + ds["sd"] + ds["src"]
        out["land_water_storage"] = nz.finish(
            total * np.float32(M_TO_MM), "land_water_storage", "mm",
            "land model water storage: soil water of all layers + snow water equivalent + canopy water",
            note="absolute storage: sum of swvl1..4 x layer thickness (0.07, 0.21, 0.72, 1.89 m) + sd + src, x 1000",
        )
    result = xr.Dataset(out)
    result.attrs = {
        "title": f"Predictors from {NAME}, normalised by gracefill",
        "source": NAME,
        "source_files": ", ".join(Path(p).name for p in paths),
    }
    return result
