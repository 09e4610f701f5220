"""Tests of the synthetic world on a coarse North American box (2 degrees, 2002-2020)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gracefill.sources import synthetic as syn

LAT = np.arange(21.0, 52.0, 2.0)  # 20N..52N
LON = np.arange(-127.0, -64.0, 2.0)  # 128W..64W
MONTHS = pd.date_range("2002-01-01", "2020-12-01", freq="MS")
CSR_MISSING = (
    "2002-06 2002-07 2003-06 2011-01 2011-06 2012-05 2012-10 2013-03 2013-08 2013-09 2014-02 "
    "2014-07 2014-12 2015-06 2015-10 2015-11 2016-04 2016-09 2016-10 2017-02 2018-08 2018-09"
).split()
DROUGHT = dict(lat_min=34.0, lat_max=44.0, lon_min=-96.0, lon_max=-82.0, start="2017-07", end="2018-05", depth_mm=100.0)
SEED = 0
VARIABLES = {
    "grace": ("twsa",),
    "era5land": ("precipitation", "temperature", "evaporation", "runoff", "land_water_storage"),
    "truth": ("twsa_true",),
}


def observed_mask(months: pd.DatetimeIndex) -> np.ndarray:
    """GRACE availability as the caller derives it: from 2002-04, minus CSR's missing months and the gap."""
    per = months.to_period("M")
    gap = (per >= pd.Period("2017-07", "M")) & (per <= pd.Period("2018-05", "M"))
    return np.asarray((per >= pd.Period("2002-04", "M")) & ~per.astype(str).isin(CSR_MISSING) & ~gap)


def make(seed: int = SEED, drought: dict | None = DROUGHT, months: pd.DatetimeIndex = MONTHS, **kw):
    return syn.generate_world(
        lat=LAT, lon=LON, months=months, observed=observed_mask(months), seed=seed, drought=drought, **kw
    )


@pytest.fixture(scope="module")
def world():
    return make()


@pytest.fixture(scope="module")
def land():
    lat2d, lon2d = np.meshgrid(LAT, LON, indexing="ij")
    return syn.land_mask(lat2d, lon2d)


def box_sel(lat_min, lat_max, lon_min, lon_max):
    return dict(lat=slice(lat_min, lat_max), lon=slice(lon_min, lon_max))


# --- land mask --------------------------------------------------------------------------
def test_land_mask_matches_global_land_mask(land):
    from global_land_mask import globe

    lat2d, lon2d = np.meshgrid(LAT, LON, indexing="ij")
    np.testing.assert_array_equal(land, globe.is_land(lat2d, lon2d))
    assert 0.3 < land.mean() < 0.8


# --- reproducibility --------------------------------------------------------------------
def test_same_seed_bit_identical(world):
    again = make()
    for name in VARIABLES:
        xr.testing.assert_identical(world[name], again[name])


def test_different_seed_differs(world):
    other = make(seed=SEED + 1)
    for name, variables in VARIABLES.items():
        for var in variables:
            assert not np.array_equal(world[name][var].values, other[name][var].values, equal_nan=True), (name, var)


# --- layout -----------------------------------------------------------------------------
def test_layout(world, land):
    for name, variables in VARIABLES.items():
        ds = world[name]
        assert set(ds.data_vars) == set(variables)
        assert ds.attrs["source"] == "gracefill synthetic world"
        assert ds.attrs["seed"] == SEED and ds.attrs["title"]
        assert ds.time.dtype == np.dtype("datetime64[ns]")
        assert (pd.DatetimeIndex(ds.time.values).day == 1).all()
        np.testing.assert_array_equal(ds.lat, LAT)
        np.testing.assert_array_equal(ds.lon, LON)
        assert (np.diff(ds.lat) > 0).all() and (np.diff(ds.lon) > 0).all()
        assert ds.lon.min() >= -180 and ds.lon.max() <= 180
        for coord, units, std, axis in (("lat", "degrees_north", "latitude", "Y"), ("lon", "degrees_east", "longitude", "X")):
            assert ds[coord].attrs["units"] == units
            assert ds[coord].attrs["standard_name"] == std
            assert ds[coord].attrs["axis"] == axis
        for var in variables:
            da = ds[var]
            assert da.dims == ("time", "lat", "lon")
            assert da.dtype == np.float32
            assert da.attrs["units"] and da.attrs["long_name"]
            nan = np.isnan(da.values)
            np.testing.assert_array_equal(nan, np.broadcast_to(~land, nan.shape), err_msg=f"{name}.{var}")
    era5 = world["era5land"]
    assert era5.temperature.attrs["units"] == "K"
    assert era5.temperature.attrs["standard_name"] == "air_temperature"
    assert era5.precipitation.attrs["standard_name"] == "lwe_precipitation_rate"
    for var in ("precipitation", "evaporation", "runoff"):
        assert era5[var].attrs["units"] == syn.FLUX_UNITS
    assert "positive" in era5.evaporation.attrs["note"]
    assert world["grace"].twsa.attrs["units"] == "mm" and world["truth"].twsa_true.attrs["units"] == "mm"
    assert era5.land_water_storage.attrs["units"] == "mm"


def test_time_axes_and_missing_months(world):
    observed = observed_mask(MONTHS)
    np.testing.assert_array_equal(world["grace"].time.values, MONTHS[observed].values.astype("datetime64[ns]"))
    for name in ("truth", "era5land"):
        np.testing.assert_array_equal(world[name].time.values, MONTHS.values.astype("datetime64[ns]"))
    listed = world["grace"].attrs["months_missing"].split(",")
    assert listed == [str(p) for p in MONTHS[~observed].to_period("M")]
    assert "2017-07" in listed and "2018-05" in listed and "2002-01" in listed and "2011-01" in listed
    assert "2017-06" not in listed and "2018-06" not in listed


def test_anomaly_baseline(world):
    """Truth and GRACE-without-noise are anomalies to the 2004-2009 mean of the observed months."""
    truth = world["truth"].twsa_true
    base = truth.sel(time=world["grace"].time).sel(time=slice("2004-01", "2009-12"))
    assert base.time.size == 72
    assert float(np.abs(base.mean("time")).max()) < 1e-3
    assert float(np.abs(truth.mean("time")).max()) > 1.0  # not centred on the whole period


def test_baseline_falls_back_to_observed_months():
    months = pd.date_range("2015-01-01", "2019-12-01", freq="MS")
    w = make(months=months)
    obs = observed_mask(months)
    assert w["truth"].time.size == 60 and w["grace"].time.size == obs.sum()
    mean_obs = w["truth"].twsa_true.isel(time=np.flatnonzero(obs)).mean("time")
    assert float(np.abs(mean_obs).max()) < 1e-3
    train = np.asarray(months < "2017-01-01")
    wt = make(months=months, train_months=train)
    mean_train = wt["truth"].twsa_true.isel(time=np.flatnonzero(obs & train)).mean("time")
    assert float(np.abs(mean_train).max()) < 1e-3


# --- physics ----------------------------------------------------------------------------
def test_physical_ranges(world):
    e = world["era5land"]
    assert float(e.precipitation.min()) >= 0
    assert float(e.evaporation.min()) >= 0 and float(e.runoff.min()) >= 0
    assert float(e.land_water_storage.min()) > 0  # absolute storage
    assert 220 < float(e.temperature.min()) and float(e.temperature.max()) < 320
    annual_p = 12 * float(e.precipitation.mean())
    assert 300 < annual_p < 1500
    # seasonal cycle: northern summer warmer than winter
    t = e.temperature.mean(("lat", "lon"))
    assert float(t.sel(time=t.time.dt.month == 7).mean()) > float(t.sel(time=t.time.dt.month == 1).mean()) + 10


def test_water_balance_closes_exactly():
    rng = np.random.default_rng(3)
    nt, nc = 60, 200
    precip = rng.gamma(2.0, 40.0, (nt, nc))
    seasonal = 15 * np.cos(2 * np.pi * (np.arange(nt) - 6.5) / 12)[:, None]
    temperature = 270.0 + rng.uniform(-25, 25, nc) + seasonal + rng.normal(0, 2, (nt, nc))
    days = pd.date_range("2002-01-01", periods=nt, freq="MS").days_in_month.to_numpy()
    capacity = rng.uniform(150, 500, nc)
    for tau in (rng.uniform(12, 48, nc), None):
        out = syn.run_water_balance(precip, temperature, days, syn.BucketParams(capacity=capacity, tau_gw=tau))
        storage = np.concatenate([out["storage_initial"][None], out["storage"]])
        np.testing.assert_allclose(np.diff(storage, axis=0), precip - out["et"] - out["runoff"], atol=1e-9)
        assert (out["et"] >= 0).all() and (out["runoff"] >= 0).all() and (out["soil"] >= -1e-9).all()
        assert (out["soil"] <= capacity + 1e-9).all() and (out["snow"] >= 0).all()
        if tau is None:
            assert (out["groundwater"] == 0).all()
    assert out["snow"].max() > 10  # the cold cells hold snow


def test_spinup_leaves_no_transient():
    """With stationary forcing the stores start on their annual cycle: year 1 equals year 4."""
    rng = np.random.default_rng(4)
    nc = 100
    year_p = rng.gamma(2.0, 40.0, (12, nc))
    year_t = 275.0 + rng.uniform(-15, 25, nc) + 12 * np.cos(2 * np.pi * (np.arange(12) - 6.5) / 12)[:, None]
    precip, temperature = np.tile(year_p, (4, 1)), np.tile(year_t, (4, 1))
    days = np.full(48, 30.0)
    params = syn.BucketParams(capacity=rng.uniform(150, 500, nc), tau_gw=rng.uniform(12, 48, nc))
    s = syn.run_water_balance(precip, temperature, days, params, spinup_years=5)["storage"]
    assert np.abs(s[:12] - s[36:]).max() < 0.05 * np.abs(s).max()


def test_land_model_balance_closes(world):
    """land_water_storage is the monthly mean of the land model's stores: its change is the mean of two months' fluxes."""
    e = world["era5land"].astype(np.float64)
    flux = (e.precipitation - e.evaporation - e.runoff).values
    ds = np.diff(e.land_water_storage.values, axis=0)
    np.testing.assert_allclose(ds, 0.5 * (flux[1:] + flux[:-1]), atol=0.05)


def test_drought_in_truth(world):
    d = DROUGHT
    truth = world["truth"].twsa_true
    dry = truth.sel(time=slice(d["start"], d["end"]))
    box = box_sel(d["lat_min"], d["lat_max"], d["lon_min"], d["lon_max"])
    inside = float(dry.sel(**box).mean())
    assert inside < -0.5 * d["depth_mm"]
    # against the same world without the drought (same seed: same random draws)
    calm = make(drought=None)["truth"].twsa_true
    diff = truth - calm
    assert float(diff.sel(time=slice(d["start"], d["end"])).sel(**box).mean()) < -0.8 * d["depth_mm"]
    far = diff.sel(time=slice(d["start"], d["end"])).sel(lon=slice(-128, -110))  # > 1000 km west of the box
    assert float(np.abs(far).max()) < 0.02 * d["depth_mm"]
    before = diff.sel(time=slice(None, "2016-12"))  # before the precipitation deficit starts
    assert float(np.abs(before).max()) < 1e-3
    # and a clearly lower storage in the box than around it
    outside = dry.where(diff.sel(time=slice(d["start"], d["end"])).mean("time") > -1.0)
    assert inside < float(outside.mean()) - 0.3 * d["depth_mm"]
    # the predictors see it too: precipitation is low in the box during the drought
    p = world["era5land"].precipitation
    ratio = float(p.sel(time=slice(d["start"], d["end"])).sel(**box).mean()) / float(
        make(drought=None)["era5land"].precipitation.sel(time=slice(d["start"], d["end"])).sel(**box).mean()
    )
    assert ratio < 0.7


def test_grace_is_truth_plus_noise(world):
    grace = world["grace"].twsa
    resid = (grace - world["truth"].twsa_true.sel(time=grace.time)).values
    resid = resid[np.isfinite(resid)]
    assert 0.8 * syn.GRACE_NOISE_STD_MM < resid.std() < 1.2 * syn.GRACE_NOISE_STD_MM
    assert abs(resid.mean()) < 1.0
    truth_std = float(world["truth"].twsa_true.std("time").median())
    assert truth_std > 2 * syn.GRACE_NOISE_STD_MM  # signal well above the noise


def test_noise_is_spatially_correlated():
    rng = np.random.default_rng(0)
    grid = syn.make_grid(np.arange(-59.5, 84, 1.0), np.arange(-179.5, 180, 1.0))
    z = syn.correlated_noise(rng, grid, 300.0, 20)
    assert abs(float(z.std()) - 1.0) < 0.05
    lag1 = np.corrcoef(z[..., 1:].ravel(), z[..., :-1].ravel())[0, 1]  # 1 degree apart in longitude
    assert 0.5 < lag1 < 0.99
    # the longitude wraps: the date line is no edge
    across = np.corrcoef(z[..., 0].ravel(), z[..., -1].ravel())[0, 1]
    assert across > 0.5


def test_land_model_is_biased_and_misses_groundwater_trend(world):
    e = world["era5land"].land_water_storage
    truth = world["truth"].twsa_true
    anom = e - e.sel(time=slice("2004-01", "2009-12")).mean("time")
    rmse = float(np.sqrt(((anom - truth) ** 2).mean()))
    assert rmse > 10.0
    assert float((anom.std("time") / truth.std("time")).median()) < 0.9
    box = next(b for b in syn.STORAGE_TREND_BOXES if b.name.startswith("California"))
    sel = box_sel(box.lat_min, box.lat_max, box.lon_min, box.lon_max)
    years = np.arange(MONTHS.size) / 12.0
    truth_trend = np.polyfit(years, truth.sel(**sel).mean(("lat", "lon")).values, 1)[0]
    land_trend = np.polyfit(years, e.sel(**sel).mean(("lat", "lon")).values, 1)[0]
    rate = abs(box.rate_mm_per_year)
    assert truth_trend < -0.3 * rate
    assert abs(land_trend) < 0.15 * rate
    assert land_trend > truth_trend + 0.3 * rate


# --- errors and files -------------------------------------------------------------------
def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="observed"):
        syn.generate_world(lat=LAT, lon=LON, months=MONTHS, observed=np.ones(5, bool), seed=0, drought=None)
    with pytest.raises(ValueError, match="depth_mm"):
        make(drought={k: v for k, v in DROUGHT.items() if k != "depth_mm"})
    with pytest.raises(ValueError, match="lat"):
        syn.generate_world(lat=LAT[::-1], lon=LON, months=MONTHS, observed=observed_mask(MONTHS), seed=0, drought=None)


def test_write_world(world, tmp_path):
    paths = syn.write_world(world, tmp_path / "raw")
    assert [p.name for p in paths] == ["grace.nc", "era5land.nc", "truth.nc"]
    for path, name in zip(paths, ("grace", "era5land", "truth")):
        with xr.open_dataset(path) as ds:
            for var in VARIABLES[name]:
                np.testing.assert_array_equal(ds[var].values, world[name][var].values)
                assert ds[var].attrs["units"] == world[name][var].attrs["units"]
            assert ds.attrs["source"] == "gracefill synthetic world"
            if name == "grace":
                assert ds.attrs["months_missing"] == world["grace"].attrs["months_missing"]
