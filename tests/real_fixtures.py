"""Test helpers for the real-data sources: a local HTTP server, a stand-in for earthaccess,
writers of tiny files with exactly the structure of each real product (data.md, "What the real
files look like"), and the shared checks of bad inputs (one line, nothing left, rerun recovers).

Nothing here touches the internet: the server binds 127.0.0.1 on a free port.
"""
from __future__ import annotations

import fnmatch
import hashlib
import http.server
import threading
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import netCDF4
import numpy as np
import pandas as pd
import pytest

from gracefill.io import UserError

# ======================================================================================
# HTTP server
# ======================================================================================


class FileServer:
    """Serves the files of a directory on 127.0.0.1 with Range / ETag support and faults.

    ``faults`` maps a file name to one of: ``"404"``, ``"500"``, ``"stall"`` (send headers and
    half the body, then wait ``stall_s``), ``"truncate"`` (announce the full length, send
    half, close), ``"html"`` (an HTML error page with status 200). ``hits`` counts requests per
    name, ``ranges`` records the Range headers received.
    """

    def __init__(self, root: Path, stall_s: float = 3.0):
        self.root = Path(root)
        self.faults: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.ranges: list[str | None] = []
        self.stall_s = stall_s
        self._stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):  # noqa: N802
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                server.hits[name] = server.hits.get(name, 0) + 1
                server.ranges.append(self.headers.get("Range"))
                fault = server.faults.get(name)
                path = server.root / name
                if fault == "404" or not path.is_file():
                    return self._plain(404, b"not found")
                if fault == "500":
                    return self._plain(500, b"internal error")
                if fault == "html":
                    body = b"<!DOCTYPE html><html><head><title>Error</title></head><body>Maintenance</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = path.read_bytes()
                etag = '"' + hashlib.md5(data).hexdigest() + '"'
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and self.headers.get("If-Range", etag) == etag:
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        return self._plain(416, b"range not satisfiable")
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/x-netcdf")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if fault in ("stall", "truncate"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if fault == "stall":
                        server._stop.wait(server.stall_s)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _plain(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def write_link_page(path: Path, hrefs: list[str]) -> Path:
    """An HTML page (like the GSFC mascon page, a CMS page with its files under
    /sites/default/files/...) linking to ``hrefs``, each as "NetCDF", between other markup."""
    links = "\n".join(f'<li><span class="file"><a href="{href}" type="application/x-netcdf">NetCDF</a></span></li>'
                      for href in hrefs)
    path.write_text(f"""<!DOCTYPE html>
<html lang="en"><head><title>GRACE and GRACE-FO Mascons | NASA GSFC</title>
<link rel="stylesheet" href="/sites/default/files/css/site.css"></head>
<body><h2>Monthly mascon products</h2><ul>
{links}
</ul><p><a href='https://earth.gsfc.nasa.gov/'>Home</a></p></body></html>
""")
    return path


@contextmanager
def serve(root: Path, stall_s: float = 3.0) -> Iterator[FileServer]:
    with FileServer(root, stall_s) as server:
        yield server


#: download() settings for tests: short timeouts, two attempts, no waiting, no progress bar.
FAST = dict(timeout=(2.0, 0.5), retries=2, backoff=0.0, progress=False)
#: Each FileServer fault and the words its one-line error must contain.
FAULTS = {"404": "HTTP 404", "500": "HTTP 500", "stall": "stalled", "truncate": "bytes (gave up after", "html": "HTML page"}


def expect_one_line(call: Callable, *parts: str) -> str:
    """Run ``call``; it must raise UserError whose message is one line containing every part."""
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(p in message for p in parts), message
    return message


def fault_then_recover(server: FileServer, name: str, target: Path, fault: str, **download_kwargs) -> Path:
    """Serve ``name`` with ``fault``: the download must fail with one line naming the URL and the
    problem and leave nothing under ``target``; with the fault gone a rerun must complete."""
    from gracefill.sources import download as dl

    server.faults[name] = fault
    url = f"{server.url}/{name}"
    expect_one_line(lambda: dl.download(url, target, **{**FAST, **download_kwargs}), url, FAULTS[fault])
    assert not target.exists() and not dl.sidecar_path(target).exists()
    server.faults.pop(name)
    path = dl.download(url, target, **{**FAST, **download_kwargs})
    assert dl.is_complete(path)
    return path


def damage(path: Path, case: str, variable: str = "lwe_thickness") -> Path:
    """Spoil a product file in place the way real files go wrong: ``units`` (the variable in m),
    ``variable`` (the variable renamed away), ``duplicates`` (every time stamp the same)."""
    with netCDF4.Dataset(path, "a") as nc:
        if case == "units":
            nc[variable].setncattr("units", "m")
        elif case == "variable":
            nc.renameVariable(variable, f"{variable}_renamed")
        elif case == "duplicates":
            nc["time"][:] = np.full(nc["time"].shape, nc["time"][0])
        else:
            raise ValueError(case)
    return path


def html_and_cut(folder: Path, source: Path, cut_at: int = 5000) -> tuple[Path, Path]:
    """Two broken files saved under data names: an HTML error page, and ``source`` cut after ``cut_at`` bytes."""
    html = folder / f"page{source.suffix}"
    html.write_text("<!DOCTYPE html><html><body>Service unavailable</body></html>")
    cut = folder / f"cut{source.suffix}"
    cut.write_bytes(source.read_bytes()[:cut_at])
    return html, cut


#: damage() cases and the words of the one-line error each must give.
DAMAGE = {"units": "has units 'm'", "variable": "missing variable(s)", "duplicates": "duplicate values"}


class FakeEarthaccess:
    """Stands in for the earthaccess module over a set of granule files, offline.

    ``files`` maps a CMR GranuleUR to a file; ``search_data`` matches its ``granule_name``
    pattern against them; ``download`` copies the chosen files into ``local_path``. ``fault``:
    ``login`` / ``search`` / ``download`` (raise, with a secret in the text, as earthaccess does
    for HTTP 404 / 500), ``empty`` (download returns nothing), ``html`` (an Earthdata login page
    saved under the file's name), ``truncate`` (half the file), ``stall`` (half the file, then
    no more bytes until ``release`` is set). ``calls`` records (what, arguments)."""

    SECRET = "hunter2-token"

    def __init__(self, files: dict[str, Path]):
        self.files = dict(files)
        self.fault: str | None = None
        self.calls: list[tuple] = []
        self.release = threading.Event()

    @property
    def stall_s(self) -> float:
        """The stall limit to fetch with: short where the stall is the fault under test, generous
        otherwise, so that a slow machine never turns a good download into a 'stall'."""
        return 0.5 if self.fault == "stall" else 60.0

    def login(self, strategy):
        self.calls.append(("login", strategy))
        if self.fault == "login":
            raise RuntimeError(f"Authentication with Earthdata Login failed with: bad password {self.SECRET}")
        return types.SimpleNamespace(authenticated=True)

    def search_data(self, **query):
        self.calls.append(("search", query))
        if self.fault == "search":
            raise ConnectionError(f"https://cmr.earthdata.nasa.gov/search?token={self.SECRET}: timed out")
        pattern = query.get("granule_name") or "*"
        return [{"umm": {"GranuleUR": name}} for name in sorted(self.files) if fnmatch.fnmatchcase(name, pattern)]

    def download(self, granules, local_path, threads=8):
        names = [g["umm"]["GranuleUR"] for g in granules]
        self.calls.append(("download", names))
        if self.fault == "download":
            raise OSError(f"500 Server Error for https://data.earthdata.nasa.gov/x.nc?token={self.SECRET}")
        if self.fault == "empty":
            return []
        out = []
        for name in names:
            src = Path(self.files[name])
            data = src.read_bytes()
            if self.fault == "html":
                data = b"<!DOCTYPE html><html><head><title>Earthdata Login</title></head><body>Log in</body></html>"
            elif self.fault in ("truncate", "stall"):
                data = data[: len(data) // 2]
            (Path(local_path) / src.name).write_bytes(data)
            if self.fault == "stall":
                self.release.wait(30)
                return []
            out.append(str(Path(local_path) / src.name))
        return out


def documented_search_keys() -> set[str]:
    """The query keys that the installed earthaccess documents for ``search_data`` (its docstring
    lists them as ``* **key**: ...``); skips the test where earthaccess is not installed."""
    import re

    earthaccess = pytest.importorskip("earthaccess")
    keys = set(re.findall(r"\*\s+\*\*(\w+)\*\*", earthaccess.search_data.__doc__ or ""))
    assert {"short_name", "version", "temporal", "granule_name"} <= keys, keys
    return keys


#: FakeEarthaccess faults and the words of the one-line error each must give.
EARTHDATA_FAULTS = {
    "login": "login or search failed (RuntimeError)", "search": "login or search failed (ConnectionError)",
    "download": "failed (OSError); rerun", "empty": "returned no NetCDF file", "html": "is an HTML page",
    "truncate": "failed verification", "stall": "stalled (no data for 0.5 s); rerun",
}


def earthdata_fault_then_recover(fake: FakeEarthaccess, fault: str, fetch: Callable[[], Path], target: Path) -> Path:
    """``fetch()`` through ``fake`` with ``fault``: one line, no secret, nothing under ``target``
    nor left beside it; without the fault the rerun completes."""
    from gracefill.sources import download as dl

    fake.fault = fault
    message = expect_one_line(fetch, EARTHDATA_FAULTS[fault])
    fake.release.set()  # a stalled download thread may end now
    assert FakeEarthaccess.SECRET not in message
    assert not target.exists() and not dl.sidecar_path(target).exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}")], "temporary files left"
    fake.fault = None
    path = fetch()
    assert dl.is_complete(path)
    return path


# ======================================================================================
# product writers
# ======================================================================================

#: The real missions' missing months inside the record (data.md), for standalone fixtures.
def to_global(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, res: float, fill=np.nan,
              lon360: bool = True, south: float = -90.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place a (time, lat, lon) field on a regular region (lon in -180..180) onto the global grid
    of the same resolution: lat ascending south+res/2..90-res/2, lon res/2..360-res/2 (lon360)
    or -180+res/2..180-res/2. Returns (values, glat, glon)."""
    glat = south + res * (np.arange(int(round((90 - south) / res))) + 0.5)
    if lon360:
        glon = res * (np.arange(int(round(360 / res))) + 0.5)
    else:
        glon = -180 + res * (np.arange(int(round(360 / res))) + 0.5)
    out = np.full((field.shape[0], glat.size, glon.size), fill, dtype=np.float64)
    ii = np.searchsorted(glat, lat - 1e-9)
    key = lon % 360 if lon360 else lon
    jj = np.searchsorted(glon, key - 1e-9)
    assert np.allclose(glat[ii], lat) and np.allclose(glon[jj], key), "region not on the global grid"
    out[:, ii[:, None], jj[None, :]] = field
    return out, glat, glon


def csr_spans(months: pd.DatetimeIndex, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Solution spans like CSR's: start a few days into the month (sometimes the last days of
    the previous one), 27..31 days long; returned as days since 2002-01-01 (start, end)."""
    rng = np.random.default_rng(seed)
    epoch = pd.Timestamp("2002-01-01")
    start = np.array([(m - epoch).days for m in months], dtype=np.float64) + rng.integers(-2, 6, len(months))
    end = start + rng.integers(27, 32, len(months))
    return start, end


def write_csr(path: Path, twsa_mm: np.ndarray, glat: np.ndarray, glon: np.ndarray, months: pd.DatetimeIndex,
              *, ocean: np.ndarray | None = None, seed: int = 0, units: str = "cm",
              time_values: np.ndarray | None = None, drop_variable: bool = False) -> Path:
    """A CSR RL06.3 mascon file: lwe_thickness(time, lat, lon) float32 cm, lat ascending,
    lon 0..360, float32 mid-span ``time`` whose unit sits in ``Units``, time_bounds(time,
    timebound), months_missing and time_mean_removed global attributes. NaN in ``twsa_mm``
    (ocean) is replaced by smooth nonsense values, as the ocean carries values in the real file."""
    rng = np.random.default_rng(seed)
    data = np.asarray(twsa_mm, dtype=np.float64) / 10.0
    data = np.where(np.isfinite(data), data, rng.normal(0, 5, data.shape))
    start, end = csr_spans(months, seed)
    mid = (start + end) / 2 if time_values is None else time_values
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("lon", glon.size)
        nc.createDimension("lat", glat.size)
        nc.createDimension("time", None)
        nc.createDimension("timebound", 2)
        v = nc.createVariable("lon", "f4", ("lon",))
        v.setncatts({"Units": "degrees_east", "long_name": "Longitude"})
        v[:] = glon
        v = nc.createVariable("lat", "f4", ("lat",))
        v.setncatts({"Units": "degrees_north", "long_name": "Latitude"})
        v[:] = glat
        v = nc.createVariable("time", "f4", ("time",))
        v.setncatts({"Units": "days since 2002-01-01T00:00:00Z", "long_name": "Time",
                     "comments": "days since 2002-01-01, middle of each solution's span"})
        v[:] = np.asarray(mid, dtype=np.float32)
        v = nc.createVariable("time_bounds", "f4", ("time", "timebound"))
        v.setncatts({"Units": "days since 2002-01-01T00:00:00Z", "long_name": "Time bounds"})
        v[:] = np.stack([start, end], axis=1)
        if not drop_variable:
            v = nc.createVariable("lwe_thickness", "f4", ("time", "lat", "lon"), fill_value=np.float32(-99999.0),
                                  zlib=True, complevel=1)
            v.setncatts({"units": units, "long_name": "Liquid_Water_Equivalent_Thickness",
                         "standard_name": "Liquid_Water_Equivalent_Thickness"})
            v[:] = data.astype(np.float32)
        full = pd.date_range(months.min(), months.max(), freq="MS")
        nc.setncatts({
            "title": "CSR GRACE/GRACE-FO RL06.3 Mascon Solutions with all corrections",
            "institution": "Center for Space Research, University of Texas at Austin",
            "months_missing": ",".join(f"{m:%Y-%m}" for m in full.difference(months)),
            "time_mean_removed": "2004.000 to 2009.999",
            "time_coverage_start": f"{months.min():%Y-%m-%d}",
            "time_coverage_end": f"{months.max():%Y-%m-%d}",
        })
    return path


def write_csr_land_mask(path: Path, land: np.ndarray, glat: np.ndarray, glon: np.ndarray) -> Path:
    """The CSR land mask file: LO_val(lat, lon), land = 1, on the mascon grid."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("lon", glon.size)
        nc.createDimension("lat", glat.size)
        nc.createVariable("lon", "f4", ("lon",))[:] = glon
        nc.createVariable("lat", "f4", ("lat",))[:] = glat
        v = nc.createVariable("LO_val", "f4", ("lat", "lon"))
        v.setncatts({"long_name": "Land(1)/Ocean(0) mask"})
        v[:] = land.astype(np.float32)
        nc.setncatts({"title": "CSR RL06 mascon land mask v02"})
    return path


ERA5_FRACTIONS = {"swvl1": 0.10, "swvl2": 0.20, "swvl3": 0.30, "swvl4": 0.30, "sd": 0.08, "src": 0.02}
ERA5_DEPTHS = {"swvl1": 0.07, "swvl2": 0.21, "swvl3": 0.72, "swvl4": 1.89}
ERA5_ATTRS = {
    "t2m": ("2 metre temperature", "K", "167"),
    "tp": ("Total precipitation", "m", "228"),
    "e": ("Total evaporation", "m of water equivalent", "182"),
    "ro": ("Runoff", "m", "205"),
    "swvl1": ("Volumetric soil water layer 1", "m**3 m**-3", "39"),
    "swvl2": ("Volumetric soil water layer 2", "m**3 m**-3", "40"),
    "swvl3": ("Volumetric soil water layer 3", "m**3 m**-3", "41"),
    "swvl4": ("Volumetric soil water layer 4", "m**3 m**-3", "42"),
    "sd": ("Snow depth water equivalent", "m of water equivalent", "141"),
    "src": ("Skin reservoir content", "m of water equivalent", "198"),
}


def era5_arrays(fields: dict[str, np.ndarray], months: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """The ERA5-Land variables that give back ``fields`` (normalised names, mm / K): mean daily
    accumulations in m, evaporation negative upward, storage split over the soil layers
    (m3 m-3), snow and the skin reservoir (m)."""
    days = months.days_in_month.to_numpy(dtype=np.float64)[:, None, None]
    storage = np.asarray(fields["land_water_storage"], dtype=np.float64) / 1000.0
    out = {
        "t2m": np.asarray(fields["temperature"], dtype=np.float64),
        "tp": np.asarray(fields["precipitation"], dtype=np.float64) / 1000.0 / days,
        "e": -np.asarray(fields["evaporation"], dtype=np.float64) / 1000.0 / days,
        "ro": np.asarray(fields["runoff"], dtype=np.float64) / 1000.0 / days,
    }
    for name, share in ERA5_FRACTIONS.items():
        out[name] = storage * share / ERA5_DEPTHS.get(name, 1.0)
    return out


def write_era5land(path: Path, fields: dict[str, np.ndarray], lat: np.ndarray, lon: np.ndarray,
                   months: pd.DatetimeIndex, *, lon360: bool = False, variables=None,
                   units: dict | None = None, time_values: np.ndarray | None = None) -> Path:
    """An ERA5-Land monthly-means file as the new CDS writes it: variables on (valid_time,
    latitude, longitude) float32 with NaN fill, latitude descending, longitude -180..180 (an
    ``area`` request) or 0..360 (``lon360``, a global request), valid_time int64 seconds since
    1970-01-01 on the first of each month, scalar ``number`` and per-month ``expver``.
    ``lat``/``lon`` are the ascending, -180..180 coordinates of ``fields``."""
    arrays = era5_arrays(fields, months)
    names = list(variables or ERA5_ATTRS)
    glon = np.asarray(lon, dtype=np.float64)
    order = np.arange(glon.size)
    if lon360:
        glon = glon % 360.0
        order = np.argsort(glon)
        glon = glon[order]
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("valid_time", len(months))
        nc.createDimension("latitude", lat.size)
        nc.createDimension("longitude", glon.size)
        v = nc.createVariable("number", "i8", ())
        v.setncatts({"long_name": "ensemble member numerical id", "units": "1", "standard_name": "realization"})
        v.assignValue(0)
        v = nc.createVariable("valid_time", "i8", ("valid_time",))
        v.setncatts({"long_name": "time", "standard_name": "time", "units": "seconds since 1970-01-01",
                     "calendar": "proleptic_gregorian"})
        stamps = (months - pd.Timestamp("1970-01-01")).total_seconds().to_numpy().astype(np.int64)
        v[:] = stamps if time_values is None else time_values
        v = nc.createVariable("latitude", "f8", ("latitude",))
        v.setncatts({"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude", "stored_direction": "decreasing"})
        v[:] = lat[::-1]
        v = nc.createVariable("longitude", "f8", ("longitude",))
        v.setncatts({"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"})
        v[:] = glon
        v = nc.createVariable("expver", str, ("valid_time",))
        v.setncatts({"long_name": "Experiment version"})
        for i in range(len(months)):
            v[i] = "0001"
        for name in names:
            long_name, unit, param = ERA5_ATTRS[name]
            v = nc.createVariable(name, "f4", ("valid_time", "latitude", "longitude"), fill_value=np.float32(np.nan),
                                  zlib=True, complevel=1)
            v.setncatts({"GRIB_paramId": int(param), "GRIB_shortName": name, "GRIB_units": unit,
                         "GRIB_name": long_name, "long_name": long_name,
                         "units": (units or {}).get(name, unit), "coordinates": "number valid_time latitude longitude expver"})
            v[:] = arrays[name][:, ::-1, :][:, :, order].astype(np.float32)
        nc.setncatts({"GRIB_centre": "ecmf", "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
                      "GRIB_subCentre": 0, "Conventions": "CF-1.7",
                      "institution": "European Centre for Medium-Range Weather Forecasts",
                      "history": "GRIB to CDM+CF via cfgrib-0.9.15.0/ecCodes-2.39.0 with {\"source\": \"data.grib\"}"})
    return path


def write_era5land_years(folder: Path, fields: dict[str, np.ndarray], lat, lon, months: pd.DatetimeIndex,
                         **kwargs) -> list[Path]:
    """One file a year, as the per-year CDS requests deliver them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for year in sorted(set(months.year)):
        sel = np.flatnonzero(months.year == year)
        sub = {k: np.asarray(v)[sel] for k, v in fields.items()}
        paths.append(write_era5land(folder / f"era5land_{year}.nc", sub, lat, lon, months[sel], **kwargs))
    return paths


def write_jpl(path: Path, twsa_mm: np.ndarray, glat: np.ndarray, glon: np.ndarray, months: pd.DatetimeIndex,
              land: np.ndarray, *, seed: int = 0) -> Path:
    """A JPL RL06.3 v04 CRI mascon file: lwe_thickness and uncertainty (time, lat, lon) float64
    cm with _FillValue -99999, lat ascending, lon 0..360, time days since 2002-01-01 (gregorian,
    mid-month), time_bounds(time, bounds), and land_mask, mascon_ID and the gain factors
    (a data variable named scale_factor) in the file. Repeated months = two solutions."""
    rng = np.random.default_rng(seed)
    data = np.asarray(twsa_mm, dtype=np.float64) / 10.0
    data = np.where(np.isfinite(data), data, rng.normal(0, 5, data.shape))
    epoch = pd.Timestamp("2002-01-01")
    start = np.array([(m - epoch).days for m in months], dtype=np.float64)
    seen: dict = {}
    for i, m in enumerate(months):  # a second solution of a month covers its second half
        if m in seen:
            start[seen[m]], start[i] = start[seen[m]], start[i] + 14
        seen[m] = i
    end = np.array([(m + pd.offsets.MonthEnd(0) - epoch).days + 1 for m in months], dtype=np.float64)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("lon", glon.size)
        nc.createDimension("lat", glat.size)
        nc.createDimension("time", None)
        nc.createDimension("bounds", 2)
        v = nc.createVariable("lon", "f8", ("lon",))
        v.setncatts({"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude", "axis": "X",
                     "valid_min": 0.25, "valid_max": 359.75})
        v[:] = glon
        v = nc.createVariable("lat", "f8", ("lat",))
        v.setncatts({"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude", "axis": "Y"})
        v[:] = glat
        v = nc.createVariable("time", "f8", ("time",))
        v.setncatts({"units": "days since 2002-01-01T00:00:00Z", "calendar": "gregorian", "long_name": "time",
                     "standard_name": "time", "axis": "T", "bounds": "time_bounds"})
        v[:] = (start + end) / 2
        v = nc.createVariable("time_bounds", "f8", ("time", "bounds"))
        v.setncatts({"long_name": "time boundaries", "units": "days since 2002-01-01T00:00:00Z"})
        v[:] = np.stack([start, end], axis=1)
        for name in ("lwe_thickness", "uncertainty"):
            v = nc.createVariable(name, "f8", ("time", "lat", "lon"), fill_value=-99999.0, zlib=True)
            v.setncatts({"units": "cm", "long_name": "Liquid_Water_Equivalent_Thickness" if name == "lwe_thickness"
                         else "uncertainty", "coordinates": "time lat lon", "grid_mapping": "WGS84"})
            v[:] = data if name == "lwe_thickness" else np.full(data.shape, 2.0)
        v = nc.createVariable("land_mask", "f8", ("lat", "lon"))
        v.setncatts({"long_name": "land_mask", "units": "binary", "comment": "1 = land, 0 = ocean"})
        v[:] = land
        v = nc.createVariable("scale_factor", "f8", ("lat", "lon"), fill_value=-99999.0)
        v.setncatts({"long_name": "scale_factor", "units": "1", "comment": "CRI-filtered gain factors"})
        v[:] = 1.1
        v = nc.createVariable("mascon_ID", "f8", ("lat", "lon"))
        v[:] = np.arange(glat.size * glon.size).reshape(glat.size, glon.size) // 4
        nc.setncatts({"title": "JPL GRACE and GRACE-FO MASCON RL06.3Mv04 CRI", "institution": "NASA/JPL",
                      "months_missing": ""})
    return path


def write_gsfc(path: Path, twsa_mm: np.ndarray, glat: np.ndarray, glon: np.ndarray, months: pd.DatetimeIndex,
               land: np.ndarray, *, split: tuple[str, ...] = ("2018-11",), seed: int = 0) -> Path:
    """A GSFC RL06 v2.0 half-degree mascon file: NETCDF3_CLASSIC; lwe_thickness(time, lat, lon)
    float64 cm with no _FillValue and no NaN (the ocean and ``twsa_mm``'s NaN cells carry smooth
    nonsense values), lat ascending whose long name sits in the misspelled ``latg_name``, lon
    0..360, lat_bounds / lon_bounds, land_mask(lat, lon) 1 = land, time days since 2002-01-01 at
    the middle of each solution and time_bounds = its first and last day, a title saying v1.0.
    Each month in ``split`` present in ``months`` is written as two sub-monthly solutions (days
    1-15 and 16-end) whose mean is that month's field."""
    rng = np.random.default_rng(seed)
    data = np.asarray(twsa_mm, dtype=np.float64) / 10.0
    data = np.where(np.isfinite(data), data, rng.normal(0, 5, data.shape))
    epoch = pd.Timestamp("2002-01-01")
    fields, spans = [], []
    for i, m in enumerate(months):
        first, last = (m - epoch).days, (m + pd.offsets.MonthEnd(0) - epoch).days
        if f"{m:%Y-%m}" in split:
            d = rng.normal(0, 3, data.shape[1:])
            fields += [data[i] + d, data[i] - d]
            spans += [(first, first + 14), (first + 15, last)]
        else:
            fields.append(data[i])
            spans.append((first, last))
    spans = np.asarray(spans, dtype=np.float64)
    res = float(glat[1] - glat[0])
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.createDimension("lat", glat.size)
        nc.createDimension("lon", glon.size)
        nc.createDimension("time", None)
        nc.createDimension("bounds", 2)
        v = nc.createVariable("lat", "f8", ("lat",))
        v.setncatts({"units": "degrees_north", "latg_name": "latitude", "standard_name": "latitude", "axis": "Y"})
        v[:] = glat
        v = nc.createVariable("lon", "f8", ("lon",))
        v.setncatts({"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude", "axis": "X"})
        v[:] = glon
        nc.createVariable("lat_bounds", "f8", ("lat", "bounds"))[:] = np.stack([glat - res / 2, glat + res / 2], axis=1)
        nc.createVariable("lon_bounds", "f8", ("lon", "bounds"))[:] = np.stack([glon - res / 2, glon + res / 2], axis=1)
        v = nc.createVariable("time", "f8", ("time",))
        v.setncatts({"units": "days since 2002-01-01T00:00:00Z", "long_name": "time", "standard_name": "time",
                     "calendar": "gregorian", "bounds": "time_bounds"})
        v[:] = spans.mean(axis=1)
        v = nc.createVariable("time_bounds", "f8", ("time", "bounds"))
        v.setncatts({"units": "days since 2002-01-01T00:00:00Z", "long_name": "first and last day of each solution"})
        v[:] = spans
        v = nc.createVariable("lwe_thickness", "f8", ("time", "lat", "lon"))
        v.setncatts({"units": "cm", "long_name": "equivalent water thickness", "standard_name": "lwe_thickness"})
        v[:] = np.stack(fields)
        v = nc.createVariable("land_mask", "f8", ("lat", "lon"))
        v.setncatts({"long_name": "land mask", "comment": "1 = land, 0 = ocean"})
        v[:] = np.asarray(land, dtype=np.float64)
        nc.setncatts({"title": "GSFC GRACE/GRACE-FO RL06 v1.0 mascon solution on a 0.5 degree grid",
                      "institution": "NASA Goddard Space Flight Center", "product": "RL06v2.0_OBP-ICE6GD"})
    return path


#: GLDAS storage variables -> (share of the land water storage, long name).
GLDAS_SHARES = {
    "SoilMoi0_10cm_inst": (0.10, "Soil moisture content (0-10 cm underground)"),
    "SoilMoi10_40cm_inst": (0.20, "Soil moisture content (10-40 cm underground)"),
    "SoilMoi40_100cm_inst": (0.30, "Soil moisture content (40-100 cm underground)"),
    "SoilMoi100_200cm_inst": (0.30, "Soil moisture content (100-200 cm underground)"),
    "SWE_inst": (0.08, "Snow depth water equivalent"),
    "CanopInt_inst": (0.02, "Plant canopy surface water"),
}


def write_gldas(folder: Path, storage_mm: np.ndarray, lat: np.ndarray, lon: np.ndarray, months: pd.DatetimeIndex,
                *, res: float | None = None, short_name: str = "GLDAS_NOAH10_M", units: str = "kg m-2",
                fill_attribute: bool = True) -> list[Path]:
    """GLDAS-2.1 Noah monthly files, one per month, ``<short_name>.AYYYYMM.021.nc4`` (netCDF-4):
    the six storage variables (shares of ``storage_mm``, kg m-2) and Tair_f_inst as float32 on
    (time = 1, lat, lon), _FillValue and missing_value -9999 over water, lat ascending from
    -60+res/2 (no Antarctica), lon -180+res/2..180-res/2, time days since 2000-01-01 at the start
    of the month with time_bnds [start, next month). ``storage_mm`` is (time, lat, lon) on the
    regional ascending grid ``lat``/``lon`` (NaN = water), placed on the product's global grid.
    ``fill_attribute=False`` writes the -9999 values without _FillValue / missing_value."""
    res = res or float(lat[1] - lat[0])
    values, glat, glon = to_global(storage_mm, lat, lon, res, lon360=False, south=-60.0)
    folder.mkdir(parents=True, exist_ok=True)
    epoch = pd.Timestamp("2000-01-01")
    paths = []
    for i, m in enumerate(months):
        path = folder / f"{short_name}.A{m:%Y%m}.021.nc4"
        with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
            nc.createDimension("lon", glon.size)
            nc.createDimension("lat", glat.size)
            nc.createDimension("time", 1)
            nc.createDimension("bnds", 2)
            v = nc.createVariable("time", "f8", ("time",))
            v.setncatts({"units": "days since 2000-01-01 00:00:00", "calendar": "standard", "long_name": "time",
                         "standard_name": "time", "axis": "T", "bounds": "time_bnds",
                         "begin_date": f"{m:%Y%m}01", "begin_time": "000000"})
            start, end = (m - epoch).days, (m + pd.offsets.MonthBegin(1) - epoch).days
            v[:] = [start]
            nc.createVariable("time_bnds", "f8", ("time", "bnds"))[:] = [[start, end]]
            v = nc.createVariable("lon", "f4", ("lon",))
            v.setncatts({"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude", "axis": "X"})
            v[:] = glon
            v = nc.createVariable("lat", "f4", ("lat",))
            v.setncatts({"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude", "axis": "Y"})
            v[:] = glat
            fields = {name: (values[i] * share, long_name, units) for name, (share, long_name) in GLDAS_SHARES.items()}
            fields["Tair_f_inst"] = (np.where(np.isfinite(values[i]), 285.0, np.nan), "Air temperature", "K")
            fill = np.float32(-9999.0) if fill_attribute else False
            for name, (field, long_name, unit) in fields.items():
                v = nc.createVariable(name, "f4", ("time", "lat", "lon"), fill_value=fill, zlib=True, complevel=1)
                v.setncatts({"units": unit, "long_name": long_name, "cell_methods": "time: mean",
                             **({"missing_value": fill} if fill_attribute else {})})
                v[:] = np.where(np.isfinite(field), field, -9999.0)[None].astype(np.float32)
            nc.setncatts({"title": "GLDAS2.1 LIS land surface model output monthly mean", "institution": "NASA GSFC",
                          "source": "Noah_v3.6", "conventions": "CF-1.6", "missing_value": np.float32(-9999.0),
                          "tavg_definision": "past 3-hour average", "ShortName": short_name, "VersionID": "2.1",
                          "Format": "netCDF-4"})
        paths.append(path)
    return paths
