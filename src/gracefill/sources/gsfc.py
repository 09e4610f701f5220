"""GSFC RL06 v2.0 global mascons on the half-degree grid (plain HTTPS, no login).

The file (``gsfc.glb_.200204_YYYYMM_rl06v2.0_obp-ice6gd_halfdegree.nc``, named after its last
month, so the URL changes with every GSFC update): NETCDF3_CLASSIC, ``lwe_thickness(time, lat,
lon)`` float64 in cm, 0.5 degree, latitude ascending, longitude 0..360, ``land_mask(lat, lon)``
in the file (1 = land), ``time_bounds`` = the first and last day of each solution. Quirks: no
fill value and no NaN (the ocean carries interpolated values, so only ``land_mask`` tells land
from sea), the latitude's long name sits in an attribute misspelled ``latg_name``, the global
title still says v1.0, and 2018-11 has two sub-monthly solutions.

`read` gives the normalised layout through `gracefill.sources.csr.read` (the same mascon
reader as CSR and JPL): ``twsa`` in mm, ocean (land_mask = 0) NaN, one month per solution by
the month most of its time_bounds span falls in, and solutions sharing a month (GSFC 2018-11,
JPL 2015-04, CSR likewise) averaged with equal weights.
"""
from __future__ import annotations

from gracefill.sources import csr

NAME = "GSFC RL06 v2.0 mascons"
#: What a downloaded GSFC file must hold: lwe_thickness, lat, lon, land_mask, a readable time axis.
verify = csr.verify_with_own_mask


def read(path, **options):
    """Normalised ``twsa`` (mm) from a GSFC half-degree file, masked with its own land_mask
    (``options``: period, require, bounds as for `gracefill.sources.csr.read`)."""
    return csr.read_with_own_mask(path, NAME, **options)
