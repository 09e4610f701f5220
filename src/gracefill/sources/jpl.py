"""JPL RL06.3 v04 CRI mascons (Earthdata login, via earthaccess).

The file (``GRCTellus.JPL.200204_YYYYMM.GLO.RL06.3M.MSCNv04CRI.nc``, one granule holding the
whole record, its name ending in the last month): ``lwe_thickness`` and
``uncertainty(time, lat, lon)`` float64 cm, ``_FillValue = -99999``, 0.5 degree, latitude
ascending, longitude 0..360, ``time`` days since 2002-01-01 (mid-span stamps) with
``time_bounds(time, bounds)``. The land mask (``land_mask``, 0 = ocean), ``mascon_ID`` and
the gain factors (a data variable literally named ``scale_factor``, not the packing
attribute; not applied: the target is the mascon TWSA itself) are in the file. Some months
have two solutions (2015-04): `read` averages them, like `gracefill.sources.csr.read`, whose
reader this shares.

Fetched from Earthdata as one whole-record granule (`gracefill.mascons`, the
``retrieve_granule`` command: `gracefill.sources.earthdata.retrieve_record`).
"""
from __future__ import annotations

from gracefill.sources import csr

NAME = "JPL RL06.3 v04 CRI mascons"
#: What a downloaded JPL granule must hold: lwe_thickness, lat, lon, land_mask, a readable time axis.
verify = csr.verify_with_own_mask


def read(path, *, period=None, require=None, bounds=None):
    """Normalised ``twsa`` (mm): ocean (land_mask = 0) set to NaN, months from time_bounds."""
    return csr.read_with_own_mask(path, NAME, period=period, require=require, bounds=bounds)
