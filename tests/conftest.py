"""Shared fixtures: small hand-made fields on a regular grid."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gracefill import months as mo


def make_field(values: np.ndarray, months: pd.DatetimeIndex, lat: np.ndarray, lon: np.ndarray,
               name: str, units: str) -> xr.DataArray:
    return xr.DataArray(values, dims=("time", "lat", "lon"),
                        coords={"time": months, "lat": lat, "lon": lon}, name=name, attrs={"units": units})


@pytest.fixture
def small_months() -> pd.DatetimeIndex:
    return mo.month_range("2002-01", "2005-12")
