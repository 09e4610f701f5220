"""Each baseline recovers a known noise-free relationship and is fitted on training months only."""
from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from gracefill import baselines as bl
from gracefill import months as mo

MONTHS = mo.month_range("2002-01", "2009-12")          # 96 months
NY, NX = 3, 4


def grid_field(values, units="mm", months=MONTHS):
    return xr.DataArray(values, dims=("time", "lat", "lon"),
                        coords={"time": months, "lat": np.arange(NY) + 0.5, "lon": np.arange(NX) + 0.5},
                        attrs={"units": units})


def train_mask(n_train=53):
    """A training window that is not a whole number of years."""
    mask = np.zeros(len(MONTHS), dtype=bool)
    mask[:n_train] = True
    return mask


def seasonal_trend_truth(rng):
    offset = rng.normal(size=(NY, NX))
    slope = rng.normal(scale=0.1, size=(NY, NX))
    seasonal = rng.normal(scale=5, size=(12, NY, NX))
    seasonal -= seasonal.mean(axis=0)
    t = np.arange(len(MONTHS), dtype=float)
    y = offset + slope * t[:, None, None] + seasonal[MONTHS.month.to_numpy() - 1]
    return y, offset, slope, seasonal


def test_climatology_trend_recovers_a_noise_free_series():
    rng = np.random.default_rng(0)
    y, offset, slope, seasonal = seasonal_trend_truth(rng)
    target = grid_field(y.copy())
    target[:, 0, 0] = np.nan                           # ocean
    target[10:50, 0, 1] = np.nan                       # too few training months left
    target[7, 2, 3] = np.nan                           # an isolated missing month
    fit = bl.fit_climatology_trend(target, train_mask())
    ok = np.ones((NY, NX), bool)
    ok[0, 0] = ok[0, 1] = False
    np.testing.assert_allclose(fit["slope"].values[ok], slope[ok], atol=1e-9)
    np.testing.assert_allclose(fit["offset"].values[ok], offset[ok], atol=1e-9)
    np.testing.assert_allclose(fit["seasonal"].values[:, ok], seasonal[:, ok], atol=1e-9)
    pred = bl.climatology_trend(target, train_mask())
    np.testing.assert_allclose(pred.values[:, ok], y[:, ok], atol=1e-8)   # test months extrapolated
    assert np.isnan(pred.values[:, ~ok]).all()
    assert pred.attrs["units"] == "mm" and fit["slope"].attrs["units"] == "mm month-1"
    assert pred.dims == ("time", "lat", "lon")


def test_climatology_trend_uses_only_training_months_and_handles_absent_months():
    rng = np.random.default_rng(1)
    y, *_ = seasonal_trend_truth(rng)
    mask = train_mask()
    target = grid_field(y.copy())
    perturbed = target.copy()
    perturbed[~mask] += rng.normal(scale=50, size=perturbed[~mask].shape)
    perturbed[np.flatnonzero(~mask)[:4]] = np.nan
    np.testing.assert_array_equal(bl.climatology_trend(target, mask).values,
                                  bl.climatology_trend(perturbed, mask).values)
    # months absent from the target's axis (a gap): the month count, not the position, is used
    keep = np.ones(len(MONTHS), bool)
    keep[60:71] = False
    short = target.isel(time=np.flatnonzero(keep))
    pred = bl.climatology_trend(short, mask[keep], time=target["time"])
    np.testing.assert_allclose(pred.values, y, atol=1e-8)
    with pytest.raises(ValueError, match="train"):
        bl.climatology_trend(target, mask[:10])


def test_climatology_trend_needs_every_calendar_month():
    rng = np.random.default_rng(13)
    y, *_ = seasonal_trend_truth(rng)
    target = grid_field(y.copy())
    target[1::12, 1, 2] = np.nan                       # no February at all
    fit = bl.fit_climatology_trend(target, train_mask())
    assert np.isnan(fit["slope"].values[1, 2]) and np.isnan(fit["seasonal"].values[:, 1, 2]).all()
    assert np.isfinite(fit["slope"].values[0, 0])


def regression_truth(rng, channels=4):
    x = rng.normal(size=(len(MONTHS), channels, NY, NX))
    coef = rng.normal(size=(channels, NY, NX))
    intercept = rng.normal(size=(NY, NX))
    y = intercept + np.einsum("tcij,cij->tij", x, coef)
    inputs = xr.DataArray(x, dims=("time", "channel", "lat", "lon"),
                          coords={"time": MONTHS, "channel": np.arange(channels),
                                  "lat": np.arange(NY) + 0.5, "lon": np.arange(NX) + 0.5})
    return inputs, grid_field(y), coef, intercept


def test_regression_recovers_per_cell_coefficients():
    rng = np.random.default_rng(2)
    inputs, target, coef, intercept = regression_truth(rng)
    inputs[3, 1, 1, 1] = np.nan                        # a missing predictor in a training month
    target[:, 2, 2] = np.nan
    target[5:, 0, 3] = np.nan                          # 5 valid months < channels + 2
    fit = bl.fit_regression(inputs, target, train_mask(), ridge=0.0)
    ok = np.ones((NY, NX), bool)
    ok[2, 2] = ok[0, 3] = False
    np.testing.assert_allclose(fit["coef"].values[:, ok], coef[:, ok], atol=1e-9)
    np.testing.assert_allclose(fit["intercept"].values[ok], intercept[ok], atol=1e-9)
    assert int(fit["n_train"][1, 1]) == 52
    assert (fit["rank"].values[ok] == 4).all()         # well conditioned: the guard does not act
    pred = bl.regression(inputs, target, train_mask(), ridge=0.0)
    expected = target.values.copy()
    expected[3, 1, 1] = np.nan                         # its input is missing
    np.testing.assert_allclose(pred.values[:, ok], expected[:, ok], atol=1e-8)
    assert np.isnan(pred.values[:, ~ok]).all()
    assert pred.attrs["units"] == "mm"


def test_regression_uses_only_training_months_and_target_may_lack_months():
    rng = np.random.default_rng(3)
    inputs, target, *_ = regression_truth(rng)
    target = target + rng.normal(size=target.shape)    # noisy: the fit is now data-dependent
    mask = train_mask()
    perturbed_x, perturbed_y = inputs.copy(), target.copy()
    perturbed_x[~mask] *= -3
    perturbed_y[~mask] += 100
    a = bl.fit_regression(inputs, target, mask, ridge=0.0)
    b = bl.fit_regression(perturbed_x, perturbed_y, mask, ridge=0.0)
    for v in a:
        np.testing.assert_array_equal(a[v].values, b[v].values)
    # ordinary least squares of one cell by numpy.linalg.lstsq
    design = np.column_stack([np.ones(mask.sum()), inputs.values[mask][:, :, 1, 2]])
    ref = np.linalg.lstsq(design, target.values[mask][:, 1, 2], rcond=None)[0]
    np.testing.assert_allclose(a["coef"].values[:, 1, 2], ref[1:], rtol=1e-9)
    np.testing.assert_allclose(a["intercept"].values[1, 2], ref[0], rtol=1e-9)
    # a target without the gap months is matched to the inputs' axis
    short = target.isel(time=np.flatnonzero(~np.isin(np.arange(len(MONTHS)), range(70, 80))))
    np.testing.assert_array_equal(bl.fit_regression(inputs, short, mask, ridge=0.0)["coef"].values, a["coef"].values)


def test_regression_ridge_handles_collinear_channels():
    rng = np.random.default_rng(4)
    inputs, target, *_ = regression_truth(rng, channels=2)
    twin = xr.concat([inputs, inputs.isel(channel=[1]).assign_coords(channel=[2])], dim="channel")
    # exactly collinear without ridge: the guard drops the null direction (minimum-norm split)
    fit = bl.fit_regression(twin, target, train_mask(), ridge=0.0)
    assert (fit["rank"] == 2).all()
    np.testing.assert_allclose(fit["coef"].sel(channel=1).values, fit["coef"].sel(channel=2).values, rtol=1e-6)
    np.testing.assert_allclose(bl.predict_regression(fit, twin).values, target.values, atol=1e-6)
    ridged = bl.regression(twin, target, train_mask(), ridge=1e-6)
    np.testing.assert_allclose(ridged.values, target.values, atol=1e-3)
    with pytest.raises(ValueError, match="ridge"):
        bl.regression(inputs, target, train_mask(), ridge=-1)


def test_land_model_units_offset_and_gain():
    rng = np.random.default_rng(5)
    stwsa_mm = grid_field(rng.normal(scale=100, size=(len(MONTHS), NY, NX)), units="mm")
    gain, shift = rng.uniform(0.5, 2, size=(NY, NX)), rng.normal(size=(NY, NX))
    target = grid_field(shift + gain * stwsa_mm.values / 10, units="cm")
    mask = train_mask()

    plain = bl.land_model(stwsa_mm.assign_attrs(comment="absolute storage, not an anomaly"), target)
    np.testing.assert_allclose(plain.values, stwsa_mm.values / 10)
    assert set(plain.attrs) == {"units", "long_name"} and plain.attrs["units"] == "cm"   # no note of the input

    fitted = bl.land_model(stwsa_mm, target, mask, fit="gain")
    np.testing.assert_allclose(fitted.values, target.values, atol=1e-9)

    offset = bl.land_model(stwsa_mm, target, mask, fit="offset")
    np.testing.assert_allclose(offset.values[mask].mean(axis=0), target.values[mask].mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(offset.values - plain.values,
                               (target.values[mask] - plain.values[mask]).mean(axis=0)[None].repeat(len(MONTHS), 0))

    perturbed = target.copy()
    perturbed[~mask] = 1e4
    for mode in ("offset", "gain"):
        np.testing.assert_array_equal(bl.land_model(stwsa_mm, target, mask, fit=mode).values,
                                      bl.land_model(stwsa_mm, perturbed, mask, fit=mode).values)
    with pytest.raises(ValueError, match="units"):
        bl.land_model(stwsa_mm.assign_attrs(units="K"), target)
    with pytest.raises(ValueError, match="train"):
        bl.land_model(stwsa_mm, target, fit="gain")


def channel_stack(*layers):
    return xr.DataArray(np.stack(layers, axis=1), dims=("time", "channel", "lat", "lon"),
                        coords={"time": MONTHS, "channel": np.arange(len(layers)),
                                "lat": np.arange(NY) + 0.5, "lon": np.arange(NX) + 0.5})


def test_regression_condition_guard_keeps_near_collinear_coefficients_bounded():
    rng = np.random.default_rng(6)
    x1 = rng.normal(size=(len(MONTHS), NY, NX))
    x2 = x1 + 1e-7 * rng.normal(size=x1.shape)         # near-collinear twin
    y = x1 + 0.1 * rng.normal(size=x1.shape)
    inputs, target, mask = channel_stack(x1, x2), grid_field(y), train_mask()
    departed = channel_stack(x1, x1 + 1.0)             # out of sample, x2 - x1 departs
    sd = y.std()
    # the toy is ill-conditioned: plain least squares resolves the 1e-7 difference and explodes
    design = np.column_stack([np.ones(mask.sum()), x1[mask][:, 0, 0], x2[mask][:, 0, 0]])
    ref = np.linalg.lstsq(design, y[mask][:, 0, 0], rcond=None)[0]
    assert np.abs(ref[1:]).max() > 1e3
    lstsq_pred = ref[0] + ref[1] * x1[:, 0, 0] + ref[2] * (x1[:, 0, 0] + 1.0)
    assert np.abs(lstsq_pred - x1[:, 0, 0]).min() > 100 * sd
    for ridge in (0.0, bl.DEFAULT_RIDGE):
        fit = bl.fit_regression(inputs, target, mask, ridge=ridge)
        coef = fit["coef"].values
        assert np.isfinite(coef).all() and np.abs(coef).max() < 10
        np.testing.assert_allclose(coef.sum(axis=0), 1.0, atol=0.1)     # the shared direction is kept
        pred = bl.predict_regression(fit, departed)
        assert np.abs(pred.values - x1).max() < 3 * sd
    assert (bl.fit_regression(inputs, target, mask, ridge=0.0)["rank"] == 1).all()


def test_memory_regression_is_the_regression_on_the_features():
    rng = np.random.default_rng(7)
    inputs, target, *_ = regression_truth(rng, channels=3)
    mask = train_mask()
    features = inputs.rename(channel="feature").assign_coords(feature=["sTWSA", "P_ew3", "P_ew12"])
    exact = bl.memory_regression(features, target, mask, ridge=0.0)
    np.testing.assert_allclose(exact.values, target.values, atol=1e-8)
    noisy = target + rng.normal(size=target.shape)
    np.testing.assert_array_equal(bl.memory_regression(features, noisy, mask).values,
                                  bl.regression(inputs, noisy, mask).values)
    assert exact.dims == ("time", "lat", "lon") and exact.attrs["units"] == "mm"
    with pytest.raises(ValueError, match="features"):
        bl.memory_regression(inputs, target, mask)


def test_memory_regression_on_memory_features_of_fields(monkeypatch):
    from gracefill import predictors as pr
    rng = np.random.default_rng(8)
    shape = (len(MONTHS), NY, NX)
    fields = {"precipitation": grid_field(rng.uniform(20, 120, shape), "mm month-1"),
              "evaporation": grid_field(rng.uniform(10, 60, shape), "mm month-1"),
              "runoff": grid_field(rng.uniform(0, 20, shape), "mm month-1"),
              "land_water_storage": grid_field(rng.uniform(300, 400, shape), "mm")}
    mask = train_mask(60)
    features = pr.memory_features(fields, mask, time_scales=(3, 12))
    truth = 0.1 * features.sel(feature="sTWSA") + 0.5 * features.sel(feature="WSC_ew12")
    target = grid_field(truth.values.astype(np.float64), "cm")
    # the features are strongly collinear (condition number ~4e3): the guard drops a direction
    pred = bl.memory_regression(features, target, mask, ridge=0.0)
    assert float(np.sqrt(((pred - target) ** 2).mean())) < 0.05 * float(target.std())
    monkeypatch.setattr(bl, "MAX_CONDITION", 1e12)     # without the guard: exact recovery
    pred = bl.memory_regression(features, target, mask, ridge=0.0)
    np.testing.assert_allclose(pred.values, target.values, atol=1e-3)   # float32 features


# --------------------------------------------------------------------------- predictive spreads
def spread_residuals(rng, n_fold=8, horizon=48, shape=(8, 10)):
    """Validation residuals ~ N(0, s_cell^2 (1 + lead / 12)) of forward-chaining folds."""
    leads = np.tile(np.arange(1, horizon + 1), n_fold)
    s = rng.uniform(0.5, 3.0, size=shape)
    res = rng.normal(size=(leads.size, *shape)) * s[None] * np.sqrt(1 + leads / 12)[:, None, None]
    da = xr.DataArray(res, dims=("sample", "lat", "lon"),
                      coords={"lat": np.arange(shape[0]) + 0.5, "lon": np.arange(shape[1]) + 0.5},
                      attrs={"units": "cm"})
    return da, leads, s


def test_fit_spread_recovers_cell_variance_and_lead_factor():
    rng = np.random.default_rng(9)
    res, leads, s = spread_residuals(rng)
    res[:, 2, 3] = np.nan                                # a cell without validation residuals
    fit = bl.fit_spread(res, leads)
    growth = 1 + leads / 12
    v_true = s ** 2 * growth.mean()
    ratio = fit["cell_variance"].values / v_true
    ok = np.ones(s.shape, bool)
    ok[2, 3] = False
    assert np.abs(ratio[ok] - 1).max() < 0.3           # 384 samples: relative SE 0.07
    assert abs(ratio[ok].mean() - 1) < 0.03
    assert np.isnan(fit["cell_variance"].values[2, 3]) and int(fit["n_valid"][2, 3]) == 0
    m_true = np.array([growth[(leads - 1) // 12 == b].mean() for b in range(4)]) / growth.mean()
    np.testing.assert_allclose(fit["lead_factor"].values, m_true, rtol=0.06)
    np.testing.assert_array_equal(fit["lead_lower"].values, [1, 13, 25, 37])
    np.testing.assert_array_equal(fit["lead_upper"].values, [13, 25, 37, 49])
    assert fit["cell_variance"].attrs["units"] == "cm2" and fit.attrs["units"] == "cm"

    months = mo.month_range("2021-01", "2026-12")
    lead = np.arange(1, len(months) + 1, dtype=float)
    lead[0] = np.nan                                     # a month without a lead
    std = bl.predict_spread(fit, lead, time=months)
    assert std.dims == ("time", "lat", "lon") and std.attrs["units"] == "cm"
    assert (std["time"].values == months.values).all()
    bins = np.minimum((lead[1:] - 1) // 12, 3).astype(int)                   # past the last: the last
    expected = np.sqrt(fit["cell_variance"].values[None] * fit["lead_factor"].values[bins][:, None, None])
    np.testing.assert_allclose(std.values[1:], expected)
    assert np.isnan(std.values[0]).all() and np.isnan(std.values[:, 2, 3]).all()
    over_time = xr.DataArray(lead, dims="time", coords={"time": months})
    np.testing.assert_array_equal(bl.predict_spread(fit, over_time).values, std.values)


def test_student_t_spread_chooses_heavy_tails_out_of_fold_and_inf_for_gaussian_errors():
    """Three folds of Student-t (4 degrees of freedom) residuals get about 4 degrees of freedom,
    three folds of Gaussian ones the Gaussian (or nearly); the spread's standard deviation then
    includes the t's sqrt(dof / (dof - 2))."""
    rng = np.random.default_rng(11)
    shape, leads = (6, 8), np.arange(1, 37)
    coords = {"lat": np.arange(6.0), "lon": np.arange(8.0)}
    scale = rng.uniform(0.5, 3.0, size=shape)

    def folds(draw):
        return [(xr.DataArray(draw((leads.size, *shape)) * scale, dims=("time", "lat", "lon"), coords=coords,
                              attrs={"units": "cm"}), leads) for _ in range(3)]

    heavy = bl.fit_spread_pooled(folds(lambda size: rng.standard_t(4, size)), "cm", 12, family="student_t")
    normal = bl.fit_spread_pooled(folds(rng.standard_normal), "cm", 12, family="student_t")
    assert heavy.attrs["family"] == "student_t" and 3 <= heavy.attrs["dof"] <= 5
    assert normal.attrs["dof"] >= 30
    gaussian = bl.fit_spread_pooled(folds(lambda size: rng.standard_t(4, size)), "cm", 12)
    assert gaussian.attrs["dof"] == math.inf and gaussian.attrs["family"] == "gaussian"
    dof = heavy.attrs["dof"]
    as_gaussian = bl.predict_spread(heavy.assign_attrs(dof=math.inf), leads).values
    np.testing.assert_allclose(bl.predict_spread(heavy, leads).values, as_gaussian * math.sqrt(dof / (dof - 2)))
    one = bl.fit_spread_pooled(folds(lambda size: rng.standard_t(4, size))[:1], "cm", 12, family="student_t")
    assert one.attrs["dof"] == math.inf                       # nothing out of fold with one fold
    assert bl.choose_tails(np.array([])) == (math.inf, 1.0)
    dof, c = bl.choose_tails(2.0 * np.random.default_rng(1).standard_normal(20000))   # Gaussian, twice as wide
    assert dof >= 30 and c == pytest.approx(2.0, rel=0.03)
    with pytest.raises(ValueError, match="spread family must be one of gaussian, student_t, got 'cauchy'"):
        bl.fit_spread_pooled(folds(rng.standard_normal), "cm", 12, family="cauchy")


def test_pooled_cell_variance_is_closer_to_a_smooth_truth_than_each_cell_alone():
    """A smooth true variance on a global 4-degree grid, each cell's estimate from 6 Gaussian
    errors (noisy): pooling over 500 km brings the estimates closer to the truth; a constant field,
    weight 0 and radius 0 change nothing; cells without a positive variance keep theirs."""
    rng = np.random.default_rng(13)
    lat, lon = np.arange(-58.0, 84.0, 4.0), np.arange(-178.0, 180.0, 4.0)
    truth = np.exp(np.cos(np.deg2rad(lat))[:, None] + 0.5 * np.sin(np.deg2rad(lon))[None, :])
    estimate = truth * rng.chisquare(6, size=truth.shape) / 6
    estimate[3, 4], estimate[5, 6] = np.nan, 0.0
    field = xr.DataArray(estimate, dims=("lat", "lon"), coords={"lat": lat, "lon": lon}, attrs={"units": "cm2"})
    pooled = bl.pool_cell_variance(field, 500.0)
    ok = np.isfinite(estimate) & (estimate > 0)
    error = lambda v: np.mean(np.abs(np.log(v[ok] / truth[ok])))  # noqa: E731
    assert error(pooled.values) < 0.75 * error(estimate)
    assert np.isnan(pooled.values[3, 4]) and pooled.values[5, 6] == 0.0 and pooled.attrs["units"] == "cm2"
    constant = xr.full_like(field, 2.5)
    np.testing.assert_allclose(bl.pool_cell_variance(constant, 500.0), constant, rtol=1e-12)
    np.testing.assert_allclose(bl.pool_cell_variance(field, 500.0, weight=0.0), field, rtol=1e-12)
    assert bl.pool_cell_variance(field, 0.0) is field
    with pytest.raises(ValueError, match="^pooling the spread: lat: expected ascending, regularly spaced cell "):
        bl.pool_cell_variance(field.isel(lat=[0, 1, 3]), 500.0)
    with pytest.raises(ValueError, match="^pooling the spread: lon: expected a 1-D array of at least 2 cell centres$"):
        bl.pool_cell_variance(field.isel(lon=[2]), 500.0)
    # the pooled fit: one part per fold, the radius kept as an attribute
    res = xr.DataArray(rng.normal(size=(24, lat.size, lon.size)) * np.sqrt(truth), dims=("time", "lat", "lon"),
                       coords={"lat": lat, "lon": lon})
    fitted = bl.fit_spread_pooled([(res, np.arange(1, 25))], "cm", 12, pooling_km=500.0)
    assert fitted.attrs["pooling_km"] == 500.0
    plain = bl.fit_spread_pooled([(res, np.arange(1, 25))], "cm", 12)
    np.testing.assert_allclose(fitted["cell_variance"], bl.pool_cell_variance(plain["cell_variance"], 500.0))


def test_fit_spread_depends_only_on_the_residuals_given():
    rng = np.random.default_rng(10)
    res, leads, _ = spread_residuals(rng, n_fold=3, horizon=36, shape=(3, 4))
    fit = bl.fit_spread(res, leads)
    order = rng.permutation(leads.size)                 # sample order is irrelevant
    shuffled = bl.fit_spread(res.isel(sample=order), leads[order])
    padded = xr.concat([res, xr.full_like(res.isel(sample=slice(0, 5)), np.nan)], dim="sample")
    with_empty = bl.fit_spread(padded, np.concatenate([leads, [1, 2, 70, 80, 90]]))   # no value: no effect
    for other in (shuffled, with_empty):
        for v in ("cell_variance", "lead_factor", "lead_lower", "lead_upper", "n_samples"):
            np.testing.assert_allclose(other[v].values, fit[v].values, rtol=1e-12)
    scaled = bl.fit_spread(-3 * res, leads)
    np.testing.assert_allclose(scaled["cell_variance"].values, 9 * fit["cell_variance"].values, rtol=1e-12)
    np.testing.assert_allclose(scaled["lead_factor"].values, fit["lead_factor"].values, rtol=1e-12)


def test_fit_spread_merges_sparse_lead_bins():
    rng = np.random.default_rng(11)
    res, leads, _ = spread_residuals(rng, n_fold=2, horizon=36, shape=(2, 2))
    first = np.flatnonzero(leads <= 12)
    leads[first] = np.where(np.arange(first.size) < 3, 3, 20)   # first bin (1-12): 3 samples, into the next
    leads[-2:] = 40                                      # last bin (37-48): 2 samples, into the previous
    fit = bl.fit_spread(res, leads, lead_bin_months=12, min_count=5)
    np.testing.assert_array_equal(fit["lead_lower"].values, [1, 25])
    np.testing.assert_array_equal(fit["lead_upper"].values, [25, 49])
    assert int(fit["n_samples"].sum()) == leads.size


def test_fit_spread_refuses_bad_input():
    rng = np.random.default_rng(12)
    res, leads, _ = spread_residuals(rng, n_fold=1, horizon=24, shape=(2, 2))
    with pytest.raises(ValueError, match="residuals"):
        bl.fit_spread(res.rename(sample="time"), leads)
    with pytest.raises(ValueError, match="residuals"):
        bl.fit_spread(res.values, leads)
    with pytest.raises(ValueError, match="lead_months"):
        bl.fit_spread(res, leads[:-1])
    with pytest.raises(ValueError, match="lead_months"):
        bl.fit_spread(res, leads - 1)                    # a lead of 0
    with pytest.raises(ValueError, match="lead_months"):
        bl.fit_spread(res, np.where(leads == 5, np.nan, leads))
    with pytest.raises(ValueError, match="lead_bin_months"):
        bl.fit_spread(res, leads, lead_bin_months=0)
    with pytest.raises(ValueError, match="min_count"):
        bl.fit_spread(res, leads, min_count=0)
    fit = bl.fit_spread(res, leads)
    with pytest.raises(ValueError, match="lead_months"):
        bl.predict_spread(fit, np.array([0.5, 3.0]))
    with pytest.raises(ValueError, match="lead_months"):
        bl.predict_spread(fit, np.ones((2, 2)))
    with pytest.raises(ValueError, match="time"):
        bl.predict_spread(fit, np.array([1.0, 2.0]), time=MONTHS[:3])
    with pytest.raises(ValueError, match="spread"):
        bl.predict_spread(fit.drop_vars("lead_factor"), np.array([1.0]))
