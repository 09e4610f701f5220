"""Tests of the synthetic world on a coarse North American box (2 degrees, 2002-2020)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gracefill.sources import synthetic as syn
from gracefill.sources.synthetic import storage as syn_storage
from gracefill.sources.synthetic import world as syn_world

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
    "grace": ("twsa", "uncertainty"),
    "era5land": ("precipitation", "temperature", "evaporation", "runoff", "land_water_storage"),
    "truth": ("twsa_true", "twsa_direct_deficit"),
}
DETERMINISTIC = {("truth", "twsa_direct_deficit")}  # the drought's direct part draws nothing from the seed
DROUGHT_WINDOW = slice(DROUGHT["start"], DROUGHT["end"])


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
def calm():
    """The same seed without the drought."""
    return make(drought=None)


@pytest.fixture(scope="module")
def land():
    lat2d, lon2d = np.meshgrid(LAT, LON, indexing="ij")
    return syn.land_mask(lat2d, lon2d)


def box_sel(lat_min, lat_max, lon_min, lon_max):
    return dict(lat=slice(lat_min, lat_max), lon=slice(lon_min, lon_max))


DROUGHT_BOX = box_sel(DROUGHT["lat_min"], DROUGHT["lat_max"], DROUGHT["lon_min"], DROUGHT["lon_max"])


def box_mean(da, box=DROUGHT_BOX):
    return da.sel(**box).mean(("lat", "lon"))


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
            same = np.array_equal(world[name][var].values, other[name][var].values, equal_nan=True)
            assert same == ((name, var) in DETERMINISTIC), (name, var)


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
    tau_mixed = np.where(rng.uniform(size=nc) < 0.3, 0.0, rng.uniform(12, 48, nc))  # some cells without memory
    results = {}
    taus = {"memory": rng.uniform(12, 48, nc), "none": np.zeros(nc), "mixed": tau_mixed, "no store": None}
    for name, tau in taus.items():
        with np.errstate(divide="raise", invalid="raise", over="raise"):  # tau = 0 must not divide by zero
            out = syn.run_water_balance(precip, temperature, days, syn.BucketParams(capacity=capacity, tau_gw=tau))
        storage = np.concatenate([out["storage_initial"][None], out["storage"]])
        np.testing.assert_allclose(np.diff(storage, axis=0), precip - out["et"] - out["runoff"], atol=1e-9)
        assert (out["et"] >= 0).all() and (out["runoff"] >= 0).all() and (out["soil"] >= -1e-9).all()
        assert (out["soil"] <= capacity + 1e-9).all() and (out["snow"] >= 0).all()
        results[name] = out
    assert out["snow"].max() > 10  # the cold cells hold snow
    assert (results["no store"]["groundwater"] == 0).all() and (results["none"]["groundwater"] == 0).all()
    assert results["memory"]["groundwater"].mean() > 10
    # no memory: the month's recharge leaves as runoff in the same month, like the land model's drainage
    np.testing.assert_allclose(results["none"]["runoff"], results["no store"]["runoff"], atol=1e-9)
    np.testing.assert_array_equal(results["mixed"]["groundwater"][:, tau_mixed == 0], 0.0)


def test_evapotranspiration_is_the_exact_monthly_dry_down():
    soil = np.array([0.0, 50.0, 100.0, 300.0, 300.0, 80.0])
    pet = np.array([100.0, 0.0, 70.0, 50.0, 250.0, 140.0])
    wet = np.full(6, 140.0)
    et = syn_storage._evapotranspiration(soil, pet, wet)
    expected = [
        0.0,  # nothing to evaporate
        0.0,  # no PET
        100.0 * (1 - np.exp(-0.5)),  # below the wet level all month: exponential at rate PET / wet
        50.0,  # above it all month: at potential
        160.0 + 140.0 * (1 - np.exp(-(250.0 / 140.0) * (1 - 160.0 / 250.0))),  # at PET for 0.64 month, then decay
        80.0 * (1 - np.exp(-1.0)),  # the soil never empties within a month
    ]
    np.testing.assert_allclose(et, expected, rtol=1e-12)


def test_root_zone_grows_with_aridity():
    p_clim = np.array([100.0, 100.0, 30.0, 5.0])[None, :].repeat(12, 0)  # mm/month
    t_clim = np.full((12, 4), syn_storage.FREEZE_K + 20.0)  # PET = 0.15 x 20 x 30.44 = 91 mm/month
    t_clim[:, 0] = syn_storage.FREEZE_K - 5.0  # frozen: no PET
    factor = syn.root_zone_factor(p_clim, t_clim)
    aridity = syn_storage.PET_MM_PER_DAY_K * syn_storage.DAYS_PER_MONTH * 20.0 / 30.0  # about 3: humid 1, desert clipped
    exponent = syn_storage.ROOT_ZONE_ARIDITY_EXPONENT
    np.testing.assert_allclose(factor, [1.0, 1.0, aridity**exponent, syn_storage.ROOT_ZONE_MAX_ARIDITY**exponent])
    assert 1.0 < factor[2] < factor[3]


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


def test_drought_in_truth(world, calm):
    d = DROUGHT
    truth = world["truth"].twsa_true
    dry = truth.sel(time=DROUGHT_WINDOW)
    inside = float(box_mean(dry).mean())
    assert inside < -0.5 * d["depth_mm"]
    # against the same world without the drought (same seed: same random draws)
    diff = truth - calm["truth"].twsa_true
    assert float(box_mean(diff.sel(time=DROUGHT_WINDOW)).mean()) < -1.2 * d["depth_mm"]  # direct part + fluxes
    far = diff.sel(time=DROUGHT_WINDOW).sel(lon=slice(-128, -110))  # > 1000 km west of the box
    assert float(np.abs(far).max()) < 0.02 * d["depth_mm"]
    before = diff.sel(time=slice(None, "2016-12"))  # before the precipitation deficit starts
    assert float(np.abs(before).max()) < 1e-3
    # and a clearly lower storage in the box than around it
    outside = dry.where(diff.sel(time=DROUGHT_WINDOW).mean("time") > -1.0)
    assert inside < float(outside.mean()) - 0.3 * d["depth_mm"]


def test_drought_forcing_in_the_predictors(world, calm):
    """Precipitation x (1 - precip_deficit) and temperature + warming_k over the box, lead months included."""
    e, c = world["era5land"], calm["era5land"]
    on = slice("2017-01", DROUGHT["end"])  # DROUGHT_LEAD_MONTHS before the start
    ratio = box_mean(e.precipitation.sel(time=on)).sum() / box_mean(c.precipitation.sel(time=on)).sum()
    assert float(ratio) == pytest.approx(1.0 - syn_world.DROUGHT_PRECIP_DEFICIT, abs=1e-4)
    warm = (e.temperature - c.temperature).sel(**DROUGHT_BOX)
    np.testing.assert_allclose(warm.sel(time=on).values[np.isfinite(warm.sel(time=on).values)],
                               syn_world.DROUGHT_WARMING_K, atol=1e-4)
    off = (e.temperature - c.temperature).drop_sel(time=warm.sel(time=on).time)
    assert float(np.abs(off).max()) == 0.0
    assert float(np.abs((e.temperature - c.temperature).sel(lon=slice(-128, -100))).max()) == 0.0


def test_drought_through_fluxes_only_is_seen_by_the_land_model(calm):
    """depth_mm = 0: the precipitation deficit and the warming alone lower the truth and the land model."""
    dry = make(drought=dict(DROUGHT, depth_mm=0.0, precip_deficit=0.7, warming_k=2.0))
    truth = box_mean(dry["truth"].twsa_true - calm["truth"].twsa_true).sel(time=DROUGHT_WINDOW)
    land = box_mean(dry["era5land"].land_water_storage - calm["era5land"].land_water_storage).sel(time=DROUGHT_WINDOW)
    assert float(truth.mean()) < -60.0 and float(truth.max()) < -30.0  # every drought month
    assert float(land.mean()) < -40.0 and float(land.max()) < -20.0
    assert float(land.mean()) < 0.5 * float(truth.mean())  # at least half the truth's fall
    direct = dry["truth"].twsa_direct_deficit.values
    assert np.nanmax(np.abs(direct)) == 0.0 and np.isnan(direct).any()
    # a milder drought is milder; no flux forcing leaves the box alone
    mild = make(drought=dict(DROUGHT, depth_mm=0.0, precip_deficit=0.3, warming_k=0.0))
    mild_truth = box_mean(mild["truth"].twsa_true - calm["truth"].twsa_true).sel(time=DROUGHT_WINDOW)
    assert float(truth.mean()) < float(mild_truth.mean()) < -10.0
    none = make(drought=dict(DROUGHT, depth_mm=0.0, precip_deficit=0.0, warming_k=0.0))
    for name, var in (("truth", "twsa_true"), ("era5land", "land_water_storage"), ("era5land", "temperature")):
        np.testing.assert_allclose(none[name][var].values, calm[name][var].values, atol=1e-3)


def test_direct_deficit_is_the_documented_ramp(world, calm):
    """Box mean at GRACE resolution = -depth_mm x ramp: 0 until the lead start, linear to the start,
    held to the end, back to 0 over DROUGHT_RECOVERY_MONTHS; and twsa_true minus it is the flux-only world."""
    direct = world["truth"].twsa_direct_deficit
    months = pd.DatetimeIndex(direct.time.values).to_period("M")
    start, end = pd.Period(DROUGHT["start"], "M"), pd.Period(DROUGHT["end"], "M")
    since_start = np.array([(m - start).n for m in months])
    since_end = np.array([(m - end).n for m in months])
    ramp = np.clip((since_start + syn_world.DROUGHT_LEAD_MONTHS) / syn_world.DROUGHT_LEAD_MONTHS, 0, 1)
    ramp = np.where(since_end > 0, np.clip(1 - since_end / syn_world.DROUGHT_RECOVERY_MONTHS, 0, 1), ramp)
    np.testing.assert_allclose(box_mean(direct).values, -DROUGHT["depth_mm"] * ramp, atol=1e-3)
    assert ramp.max() == 1.0 and ramp[months == pd.Period("2017-04", "M")] == 0.5
    assert float(direct.max()) <= 0.0 and float(direct.sel(lon=slice(-128, -110)).min()) > -1e-6
    flux_only = make(drought=dict(DROUGHT, depth_mm=0.0))["truth"].twsa_true
    np.testing.assert_allclose((world["truth"].twsa_true - direct).values, flux_only.values, atol=1e-3)
    assert np.nanmax(np.abs(calm["truth"].twsa_direct_deficit.values)) == 0.0


def test_grace_is_truth_plus_noise(world):
    grace = world["grace"]
    resid = (grace.twsa - world["truth"].twsa_true.sel(time=grace.time)).values
    z = resid / grace.uncertainty.values
    ok = np.isfinite(z)
    assert abs(float(z[ok].std()) - 1.0) < 0.05  # the noise has the std written as uncertainty
    assert abs(float(resid[ok].mean())) < 1.0
    assert abs(np.corrcoef(np.nan_to_num(z[1:]).ravel(), np.nan_to_num(z[:-1]).ravel())[0, 1]) < 0.05  # white in time
    truth_std = float(world["truth"].twsa_true.std("time").median())
    assert truth_std > 2 * syn.GRACE_NOISE_STD_MM  # signal well above the noise


def test_heteroscedastic_noise(world):
    """Noisier at low latitudes and in late GRACE, quieter for GRACE-FO; mean std = grace_noise_std_mm."""
    grace = world["grace"]
    unc = grace.uncertainty
    assert unc.attrs["units"] == "mm"
    resid = grace.twsa - world["truth"].twsa_true.sel(time=grace.time)
    low, high = float(resid.sel(lat=slice(20, 30)).std()), float(resid.sel(lat=slice(42, 52)).std())
    assert low > 1.2 * high
    # uncertainty matches the empirical noise std, cell by cell
    ratio = (resid.std("time") / np.sqrt((unc**2).mean("time"))).values
    ratio = ratio[np.isfinite(ratio)]
    assert abs(np.median(ratio) - 1.0) < 0.03 and np.quantile(np.abs(ratio - 1.0), 0.9) < 0.12
    # area-weighted land mean over observed months is the requested mean std
    area = np.cos(np.deg2rad(unc.lat)) * np.isfinite(unc)
    assert float((unc * area).sum() / area.sum()) == pytest.approx(syn.GRACE_NOISE_STD_MM, rel=1e-4)
    # the mission epochs: one static map times a per-month factor
    land = np.isfinite(unc.values[0])
    first, late, fo = (unc.sel(time=t).values[land] for t in ("2005-03-01", "2012-03-01", "2019-03-01"))
    epochs = dict(syn_world.GRACE_NOISE_EPOCHS)
    np.testing.assert_allclose(late / first, epochs["2011-01"] / epochs["2002-01"], rtol=1e-5)
    np.testing.assert_allclose(fo / first, epochs["2018-06"] / epochs["2002-01"], rtol=1e-5)
    assert epochs["2011-01"] > epochs["2002-01"] > epochs["2018-06"]
    assert first.max() > 1.5 * first.min()
    # homoscedastic: one std everywhere, and the same seed's noise field, scaled
    flat = make(heteroscedastic_noise=False, grace_noise_std_mm=10.0)
    u = flat["grace"].uncertainty.values
    np.testing.assert_array_equal(u[np.isfinite(u)], np.float32(10.0))
    flat_resid = (flat["grace"].twsa - flat["truth"].twsa_true.sel(time=grace.time)).values
    assert 9.0 < np.nanstd(flat_resid) < 11.0
    np.testing.assert_allclose(flat_resid / 10.0, resid.values / unc.values, atol=2e-3, equal_nan=True)


def test_groundwater_memory_can_be_switched_off(world):
    with np.errstate(divide="raise", invalid="raise"):
        w = make(groundwater_tau_months=(0.0, 0.0))
    assert w["truth"].attrs["groundwater_tau_months"] == "0..0"
    for var in VARIABLES["era5land"]:  # the land model has no groundwater anyway
        xr.testing.assert_identical(w["era5land"][var], world["era5land"][var])
    # without groundwater memory storage anomalies fade faster: lower 6-month autocorrelation
    def persistence(ds, lag=6):
        x = ds["truth"].twsa_true
        x = (x.groupby("time.month") - x.groupby("time.month").mean()).values
        return np.nanmean(x[lag:] * x[:-lag]) / np.nanmean(x * x)

    assert persistence(w) < persistence(world) - 0.1
    assert not np.allclose(w["truth"].twsa_true.values, world["truth"].twsa_true.values, equal_nan=True)


def test_storage_trends_can_be_switched_off(world):
    w = make(storage_trends=False)
    for var in VARIABLES["era5land"]:
        xr.testing.assert_identical(w["era5land"][var], world["era5land"][var])
    diff = world["truth"].twsa_true - w["truth"].twsa_true
    box = next(b for b in syn.STORAGE_TREND_BOXES if b.name.startswith("California"))
    series = box_mean(diff, box_sel(box.lat_min, box.lat_max, box.lon_min, box.lon_max)).values
    years = np.arange(MONTHS.size) / 12.0
    slope, offset = np.polyfit(years, series, 1)
    assert slope < -0.3 * abs(box.rate_mm_per_year)
    # linear over the whole period: it continues past the training months
    np.testing.assert_allclose(series, slope * years + offset, atol=1e-3)
    assert float(np.abs(diff.sel(lon=slice(-84, -64))).max()) < 1e-3  # far from every trend box
    assert w["truth"].attrs["storage_trends"] == 0 and world["truth"].attrs["storage_trends"] == 1


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
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(groundwater_tau_months=(-1.0, 10.0)), "groundwater_tau_months"),
        (dict(groundwater_tau_months=(30.0, 10.0)), "groundwater_tau_months"),
        (dict(groundwater_tau_months=(0.0, 500.0)), "groundwater_tau_months"),
        (dict(groundwater_tau_months=(12.0,)), "groundwater_tau_months"),
        (dict(groundwater_tau_months="long"), "groundwater_tau_months"),
        (dict(grace_noise_std_mm=-1.0), "grace_noise_std_mm"),
        (dict(grace_noise_std_mm=float("nan")), "grace_noise_std_mm"),
        (dict(grace_noise_std_mm="loud"), "grace_noise_std_mm"),
        (dict(drought=dict(DROUGHT, precip_deficit=1.0)), "precip_deficit"),
        (dict(drought=dict(DROUGHT, precip_deficit=-0.1)), "precip_deficit"),
        (dict(drought=dict(DROUGHT, warming_k=-1.0)), "warming_k"),
        (dict(drought=dict(DROUGHT, warming_k=20.0)), "warming_k"),
        (dict(drought=dict(DROUGHT, depth_mm=-5.0)), "depth_mm"),
        (dict(drought=dict(DROUGHT, depth=5.0)), "unknown key.*depth"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


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
