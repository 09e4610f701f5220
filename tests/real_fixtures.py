"""Test helpers for the real-data sources: a local HTTP server and writers of tiny files with
exactly the structure of each real product (data.md, "What the real files look like").

Nothing here touches the internet: the server binds 127.0.0.1 on a free port.
"""
from __future__ import annotations

import hashlib
import http.server
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import netCDF4
import numpy as np
import pandas as pd

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


@contextmanager
def serve(root: Path, stall_s: float = 3.0) -> Iterator[FileServer]:
    with FileServer(root, stall_s) as server:
        yield server


# ======================================================================================
# product writers
# ======================================================================================

#: The real missions' missing months inside the record (data.md), for standalone fixtures.
def to_global(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, res: float, fill=np.nan,
              lon360: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place a (time, lat, lon) field on a regular region (lon in -180..180) onto the global grid
    of the same resolution: lat ascending -90+res/2..90-res/2, lon res/2..360-res/2 (lon360)
    or -180+res/2..180-res/2. Returns (values, glat, glon)."""
    glat = -90 + res * (np.arange(int(round(180 / res))) + 0.5)
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
