"""Scores against hand computations: skill maps, area weighting, MNLP, CRPS, coverage, spread-skill."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import integrate, stats

from gracefill import metrics as m


def field(values, units="mm", name="twsa"):
    values = np.asarray(values, dtype=np.float64)
    t, ny, nx = values.shape
    return xr.DataArray(values, dims=("time", "lat", "lon"),
                        coords={"time": pd.date_range("2010-01-01", periods=t, freq="MS"),
                                "lat": np.arange(ny) + 0.5, "lon": np.arange(nx) + 0.5},
                        name=name, attrs={"units": units})


@pytest.fixture
def pair():
    """2 x 2 cells, 5 months: a full cell, a cell with a missing obs, an empty cell, a missing pred."""
    obs = np.full((5, 2, 2), np.nan)
    pred = np.full((5, 2, 2), np.nan)
    obs[:, 0, 0] = [1, 2, 3, 4, 5]
    pred[:, 0, 0] = [1.5, 2, 2.5, 4.5, 5]
    obs[:, 0, 1] = [2, np.nan, 0, 1, 4]
    pred[:, 0, 1] = [1, 7, 1, 1, 3]
    obs[:, 1, 1] = [0, 1, 0, 2, 2]
    pred[:, 1, 1] = [0, np.nan, 1, 2, 1]
    return field(pred), field(obs)


def hand_scores(p, o):
    ok = np.isfinite(p) & np.isfinite(o)
    p, o = p[ok], o[ok]
    r = np.sum((p - p.mean()) * (o - o.mean())) / math.sqrt(np.sum((p - p.mean()) ** 2) * np.sum((o - o.mean()) ** 2))
    nse = 1 - np.sum((p - o) ** 2) / np.sum((o - o.mean()) ** 2)
    rmse = math.sqrt(np.mean((p - o) ** 2))
    return r, nse, rmse


def test_skill_maps_match_hand_computation(pair):
    pred, obs = pair
    scores = m.score_maps(pred, obs)
    assert scores["rmse"].values[0, 0] == pytest.approx(math.sqrt(0.75 / 5))
    assert scores["nse"].values[0, 0] == pytest.approx(1 - 0.75 / 10)
    for i, j in [(0, 0), (0, 1), (1, 1)]:
        r, nse, rmse = hand_scores(pred.values[:, i, j], obs.values[:, i, j])
        assert scores["r"].values[i, j] == pytest.approx(r)
        assert scores["nse"].values[i, j] == pytest.approx(nse)
        assert scores["rmse"].values[i, j] == pytest.approx(rmse)
    assert np.isnan(scores["r"].values[1, 0]) and np.isnan(scores["rmse"].values[1, 0])
    assert scores["r"].attrs["units"] == "1" and scores["nse"].attrs["units"] == "1"
    assert scores["rmse"].attrs["units"] == "mm"
    assert all("long_name" in scores[v].attrs for v in scores)
    assert scores["r"].dims == ("lat", "lon")


def test_nse_perfect_is_one_and_climatology_is_zero():
    rng = np.random.default_rng(1)
    obs = field(rng.normal(size=(30, 3, 4)))
    obs[4, 1, 1] = np.nan
    assert np.allclose(m.nse(obs, obs).values, 1.0)
    assert np.allclose(m.pearson_r(obs, obs).values, 1.0)
    clim = (obs * 0 + obs.mean("time")).assign_attrs(units="mm")
    assert np.allclose(m.nse(clim, obs).values, 0.0, atol=1e-12)


def test_units_mismatch_and_misaligned_inputs_raise(pair):
    pred, obs = pair
    with pytest.raises(ValueError, match="units differ"):
        m.rmse(pred.assign_attrs(units="cm"), obs)
    with pytest.raises(ValueError, match="coordinates"):
        m.rmse(pred.isel(time=slice(1, None)), obs)


def test_area_weighted_mean_and_median_skip_nan():
    values = xr.DataArray([[1.0, 2.0], [np.nan, 4.0]], dims=("lat", "lon"), attrs={"units": "mm"})
    area = xr.DataArray([[1.0, 1.0], [5.0, 2.0]], dims=("lat", "lon"), attrs={"units": "m2"})
    mean = m.weighted_mean(values, area)
    assert float(mean) == pytest.approx((1 + 2 + 2 * 4) / 4)
    assert mean.attrs["units"] == "mm"
    # cumulative weights 1, 2, 4 of the total 4: exactly one half at value 2 -> mean of 2 and 4
    assert float(m.weighted_median(values, area)) == pytest.approx(3.0)
    area2 = xr.DataArray([[1.0, 1.0], [5.0, 3.0]], dims=("lat", "lon"))
    assert float(m.weighted_median(values, area2)) == pytest.approx(4.0)
    assert m.weighted_median(values, area2).attrs["units"] == "mm"


def test_weighted_statistics_keep_other_dims_and_equal_weights_give_median():
    rng = np.random.default_rng(2)
    data = field(rng.normal(size=(6, 5, 7)))
    data[2, 1, :] = np.nan
    data[5] = np.nan
    ones = xr.ones_like(data.isel(time=0, drop=True))
    med = m.weighted_median(data, ones)
    mean = m.weighted_mean(data, ones)
    assert med.dims == ("time",) and mean.dims == ("time",)
    for k in range(5):
        assert float(med[k]) == pytest.approx(np.nanmedian(data.values[k]))
        assert float(mean[k]) == pytest.approx(np.nanmean(data.values[k]))
    assert np.isnan(med[5]) and np.isnan(mean[5])
    with pytest.raises(ValueError, match="non-negative"):
        m.weighted_mean(data, -ones)


def samples_field(values, units="mm"):
    values = np.asarray(values, dtype=np.float64)
    base = field(values[0], units)
    return xr.DataArray(values, dims=("particle", *base.dims), coords=base.coords, attrs={"units": units})


def test_nlp_of_mixture_and_gaussian_match_densities():
    rng = np.random.default_rng(3)
    y = samples_field(rng.normal(size=(3, 4, 2, 2)))
    obs = field(rng.normal(size=(4, 2, 2)))
    obs[1, 0, 0] = np.nan
    var = np.array([0.5, 1.0, 2.0])
    nlp = m.nlp_mixture(y, var, obs)
    dens = np.mean([stats.norm.pdf(obs.values, y.values[s], math.sqrt(var[s])) for s in range(3)], axis=0)
    np.testing.assert_allclose(nlp.values, -np.log(dens), rtol=1e-12)
    assert np.isnan(nlp.values[1, 0, 0])
    assert float(m.mnlp_mixture(y, var, obs)) == pytest.approx(np.nanmean(-np.log(dens)))
    assert m.mnlp_mixture(y, var, obs, dim="time").dims == ("lat", "lon")

    mean, std = field(rng.normal(size=(4, 2, 2))), field(rng.uniform(0.5, 2, size=(4, 2, 2)))
    np.testing.assert_allclose(m.nlp_gaussian(mean, std, obs).values,
                               -stats.norm.logpdf(obs.values, mean.values, std.values), rtol=1e-12)
    # identical particles: the mixture is that Gaussian
    same = samples_field(np.repeat(mean.values[None], 4, axis=0))
    np.testing.assert_allclose(m.nlp_mixture(same, np.full(4, 0.7 ** 2), obs).values,
                               m.nlp_gaussian(mean, mean * 0 + 0.7, obs).values, rtol=1e-12)
    with pytest.raises(ValueError, match="noise_var"):
        m.nlp_mixture(y, [1.0, -1.0, 1.0], obs)
    with pytest.raises(ValueError, match="noise_var"):
        m.nlp_mixture(y, [1.0, 1.0], obs)


def test_published_per_field_nlp():
    rng = np.random.default_rng(4)
    y = samples_field(rng.normal(size=(2, 3, 2, 2)))
    obs = field(rng.normal(size=(3, 2, 2)))
    var = np.array([0.5, 2.0])
    out = m.nlp_mixture_per_field(y, var, obs)
    d = 4
    for t in range(3):
        logs = [-np.sum((obs.values[t] - y.values[s, t]) ** 2) / (2 * var[s]) - d / 2 * np.log(var[s])
                for s in range(2)]
        expected = -np.logaddexp(*logs) + d / 2 * np.log(2 * np.pi) + np.log(2)
        assert float(out[t]) == pytest.approx(expected)


def crps_by_integration(cdf, y, lo, hi):
    left = integrate.quad(lambda x: cdf(x) ** 2, lo, y, limit=200)[0]
    right = integrate.quad(lambda x: (1 - cdf(x)) ** 2, y, hi, limit=200)[0]
    return left + right


def test_crps_gaussian_closed_form_and_large_ensemble():
    mean = field([[[0.3, -1.0]]])
    std = field([[[1.5, 0.0]]])
    obs = field([[[1.2, 0.5]]])
    crps = m.crps_gaussian(mean, std, obs)
    expected = crps_by_integration(lambda x: stats.norm.cdf(x, 0.3, 1.5), 1.2, -20, 20)
    assert float(crps[0, 0, 0]) == pytest.approx(expected, rel=1e-7)
    assert float(crps[0, 0, 1]) == pytest.approx(1.5)          # std 0: absolute error
    assert crps.attrs["units"] == "mm"

    rng = np.random.default_rng(5)
    draws = rng.normal(0.3, 1.5, size=(20000, 1, 1, 1))
    ens = m.crps_ensemble(samples_field(draws), obs.isel(lon=[0]))
    assert ens.item() == pytest.approx(float(crps[0, 0, 0]), rel=0.02)
    # small ensemble: the sorted formula equals the brute-force definition
    x = rng.normal(size=7)
    brute = np.mean(np.abs(x - 0.2)) - 0.5 * np.mean(np.abs(x[:, None] - x[None, :]))
    small = m.crps_ensemble(samples_field(x.reshape(7, 1, 1, 1)), field([[[0.2]]]))
    assert small.item() == pytest.approx(brute)


def test_student_t_scores_are_those_of_the_location_scale_t():
    """Mean 0.3, standard deviation 1.5 * sqrt(5/3) with 5 degrees of freedom: the t of scale 1.5."""
    dof, scale = 5.0, 1.5
    mean, obs = field([[[0.3, 0.3]]]), field([[[1.2, -6.0]]])
    std = field([[[scale * math.sqrt(dof / (dof - 2))] * 2]])
    crps, nlp, pit = m.student_t_scores(mean, std, obs, dof)
    for k, y in enumerate((1.2, -6.0)):
        cdf = lambda x: stats.t.cdf(x, dof, 0.3, scale)  # noqa: E731
        assert float(crps[0, 0, k]) == pytest.approx(crps_by_integration(cdf, y, -400, 400), rel=1e-6)
        assert float(nlp[0, 0, k]) == pytest.approx(-stats.t.logpdf(y, dof, 0.3, scale), rel=1e-12)
        assert float(pit[0, 0, k]) == pytest.approx(stats.t.cdf(y, dof, 0.3, scale), rel=1e-12)
    assert crps.attrs["units"] == "mm" and pit.attrs["units"] == "1" and "Student-t" in crps.attrs["long_name"]
    # inf degrees of freedom: the Gaussian scores
    gauss = m.student_t_scores(mean, std, obs, math.inf)
    np.testing.assert_allclose(gauss[0], m.crps_gaussian(mean, std, obs))
    np.testing.assert_allclose(gauss[1], m.nlp_gaussian(mean, std, obs))
    assert m.student_t_std_factor(4.0) == pytest.approx(math.sqrt(2)) and m.student_t_std_factor(math.inf) == 1.0
    with pytest.raises(ValueError, match="more than 2 degrees of freedom"):
        m.student_t_scores(mean, std, obs, 2.0)


@pytest.mark.parametrize("dof", [3.0, 7.0, math.inf])
def test_standard_quantile_and_cdf_are_those_of_the_family(dof):
    """One helper for the calibration's half-widths, the product's quantiles and the drought
    probabilities: the standard t's (scipy) for finite dof, the standard normal's for inf."""
    family = stats.norm() if math.isinf(dof) else stats.t(dof)
    p = np.array([0.05, 0.25, 0.5, 0.9])
    np.testing.assert_allclose(m.standard_quantile(p, dof), family.ppf(p), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.standard_cdf(family.ppf(p), dof), p, rtol=1e-10)


def test_crps_mixture_with_aleatoric_noise_is_exact():
    mu = np.array([-0.5, 0.2, 1.4])
    var = np.array([0.3, 1.0, 0.6])
    y = samples_field(mu.reshape(3, 1, 1, 1))
    obs = field([[[0.4]]])
    crps = m.crps_ensemble(y, obs, noise_var=var).item()
    cdf = lambda x: np.mean(stats.norm.cdf(x, mu, np.sqrt(var)))  # noqa: E731
    assert crps == pytest.approx(crps_by_integration(cdf, 0.4, -20, 20), rel=1e-7)
    same = samples_field(np.full((4, 1, 1, 1), 0.3))
    mixture = m.crps_ensemble(same, field([[[1.2]]]), noise_var=np.full(4, 1.5 ** 2)).item()
    assert mixture == pytest.approx(m.crps_gaussian(field([[[0.3]]]), field([[[1.5]]]), field([[[1.2]]])).item())


def binomial_ok(frac, p, n, k=4.0):
    return abs(frac - p) <= k * math.sqrt(p * (1 - p) / n)


def test_coverage_of_well_specified_gaussian():
    n = 20000
    rng = np.random.default_rng(6)
    mean = xr.DataArray(rng.normal(size=n), dims="time", attrs={"units": "mm"})
    std = xr.DataArray(rng.uniform(0.5, 3.0, size=n), dims="time", attrs={"units": "mm"})
    obs = mean + std * rng.normal(size=n)
    obs.attrs["units"] = "mm"
    cov = m.coverage_gaussian(mean, std, obs)
    assert cov.dims == ("level",) and cov.attrs["units"] == "1"
    for level in (0.5, 0.9, 0.95):
        assert binomial_ok(float(cov.sel(level=level)), level, n)
    # an over-confident predictive (half the std) under-covers
    assert float(m.coverage_gaussian(mean, std / 2, obs).sel(level=0.9)) < 0.75


def test_coverage_of_samples_mixture_and_ensemble():
    n, s = 20000, 5
    rng = np.random.default_rng(7)
    centres = np.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    var = np.array([0.2, 0.5, 1.0, 0.3, 0.8])
    comp = rng.integers(0, s, size=n)
    obs = xr.DataArray(centres[comp] + np.sqrt(var[comp]) * rng.normal(size=n), dims="time")
    samples = xr.DataArray(np.repeat(centres[:, None], n, axis=1), dims=("particle", "time"))
    cov = m.coverage_samples(samples, obs, noise_var=var)
    for level in (0.5, 0.9, 0.95):
        assert binomial_ok(float(cov.sel(level=level)), level, n)
    # empirical ensemble of S exchangeable draws: the rank of obs is uniform on 0..S
    s = 99
    draws = xr.DataArray(rng.normal(size=(s, n)), dims=("particle", "time"))
    truth = xr.DataArray(rng.normal(size=n), dims="time")
    cov = m.coverage_samples(draws, truth)
    ranks = np.arange(s + 1) / s
    for level in (0.5, 0.9, 0.95):
        expected = np.mean(np.abs(ranks - 0.5) <= level / 2 + 1e-12)
        assert binomial_ok(float(cov.sel(level=level)), expected, n)


def test_spread_skill_of_calibrated_predictive():
    n = 40000
    rng = np.random.default_rng(8)
    mean = xr.DataArray(rng.normal(size=n), dims="time", attrs={"units": "mm"})
    std = xr.DataArray(rng.uniform(1, 5, size=n), dims="time", attrs={"units": "mm"})
    obs = (mean + std * rng.normal(size=n)).assign_attrs(units="mm")
    table = m.spread_skill(mean, std, obs, n_bins=5)
    assert int(table["count"].sum()) == n
    assert np.all(np.diff(table["spread"].values) > 0)
    np.testing.assert_allclose(table["rmse"] / table["spread"], 1.0, atol=0.05)
    assert table["rmse"].attrs["units"] == "mm"
    assert list(table.to_dataframe().columns) == ["std_lower", "std_upper", "spread", "rmse", "count"]


def test_spread_skill_hand_bins():
    mean = xr.DataArray([0.0, 0.0, 0.0, 0.0, np.nan], dims="time")
    std = xr.DataArray([1.0, 1.0, 3.0, 4.0, 1.0], dims="time")
    obs = xr.DataArray([1.0, -3.0, 2.0, 0.0, 0.0], dims="time")
    table = m.spread_skill(mean, std, obs, bins=[0, 2, 5, 9])
    np.testing.assert_array_equal(table["count"].values, [2, 2, 0])
    np.testing.assert_allclose(table["spread"].values[:2], [1.0, math.sqrt(12.5)])
    np.testing.assert_allclose(table["rmse"].values[:2], [math.sqrt(5.0), math.sqrt(2.0)])
    assert np.isnan(table["rmse"].values[2])


def test_score_maps_carry_only_their_own_attributes():
    from gracefill.metrics import score_maps

    time = np.arange(5)
    pred = xr.DataArray(np.arange(10.0).reshape(5, 2), dims=("time", "x"), coords={"time": time},
                        attrs={"units": "cm", "long_name": "baseline: land model", "note": "not an anomaly"})
    obs = (pred * 1.1 + 1).assign_attrs(units="cm")
    maps = score_maps(pred, obs)
    assert maps["r"].attrs == {"units": "1", "long_name": "Pearson correlation R over time"}
    assert maps["nse"].attrs == {"units": "1", "long_name": "Nash-Sutcliffe efficiency over time"}
    assert maps["rmse"].attrs == {"units": "cm", "long_name": "root mean squared error over time"}
