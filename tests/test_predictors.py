"""Predictor formulas on hand-made series, trends and climatologies fitted on the baseline only."""
from __future__ import annotations

import numpy as np
import pytest

from gracefill import predictors as pr
from gracefill.months import month_range
from tests.conftest import make_field

MONTHS = month_range("2002-01", "2004-12")  # 36 months
LAT, LON = np.array([10.0]), np.array([20.0, 22.0])


def series(values, name, units):
    values = np.asarray(values, dtype=np.float64)
    return make_field(np.stack([values, 2 * values], -1)[:, None, :], MONTHS, LAT, LON, name, units)


def test_anomaly_removes_baseline_monthly_climatology():
    seasonal = np.tile(np.arange(12.0), 3)
    extra = np.zeros(36)
    extra[30] = 5.0  # a wet month outside the baseline
    baseline = np.arange(36) < 24
    anom = pr.anomaly(series(seasonal + extra, "precipitation", "mm month-1"), baseline)
    assert np.allclose(anom.values[:24], 0.0)
    assert anom.values[30, 0, 0] == pytest.approx(5.0)
    assert anom.attrs["units"] == "mm month-1"


def test_climatology_uses_only_baseline_months():
    values = np.tile(np.arange(12.0), 3)
    values[24:] += 100.0  # test months shifted: must not move the climatology
    baseline = np.arange(36) < 24
    clim = pr.climatology(series(values, "x", "1"), baseline)
    assert np.allclose(clim.values[:, 0, 0], np.arange(12.0))


def test_climatology_needs_every_calendar_month():
    with pytest.raises(ValueError, match=r"lacks calendar month"):
        pr.climatology(series(np.ones(36), "x", "1"), np.arange(36) < 6)


def test_running_sum_and_units():
    out = pr.running_sum(series(np.ones(36), "p", "mm month-1"), "mm")
    assert out.values[-1, 0, 0] == 36 and out.values[-1, 0, 1] == 72
    assert out.attrs["units"] == "mm"


def test_linear_trend_fit_on_baseline_ignores_nan_and_later_months():
    t = np.arange(36.0)
    values = 3.0 + 0.5 * t
    values[5] = np.nan
    values[30:] = 1000.0  # outside the fit window
    fit = np.arange(36) < 24
    offset, slope = pr.fit_linear_trend(series(values, "x", "mm"), fit)
    assert offset.values[0, 0] == pytest.approx(3.0) and slope.values[0, 0] == pytest.approx(0.5)
    assert offset.values[0, 1] == pytest.approx(6.0) and slope.values[0, 1] == pytest.approx(1.0)
    assert slope.attrs["units"] == "mm month-1"
    detrended, _, _ = pr.detrend(series(values, "x", "mm"), fit)
    assert np.allclose(detrended.values[:24][np.isfinite(detrended.values[:24])], 0.0, atol=1e-9)


def test_the_seven_predictors_on_a_hand_made_series():
    p = np.random.default_rng(0).uniform(20, 120, 36)
    fields, et, r, storage = memory_fields(p)
    temp = 280 + 10 * np.sin(np.arange(36) / 12 * 2 * np.pi)
    fields["temperature"] = series(temp, "temperature", "K")
    baseline = np.arange(36) < 24
    ds = pr.build_predictors(fields, baseline)
    assert list(ds.data_vars) == list(pr.PREDICTOR_NAMES)
    # a CF standard name where the table has one (temperature anomaly), none for the others
    assert ds["T"].attrs["standard_name"] == "air_temperature_anomaly"
    assert all("standard_name" not in ds[name].attrs for name in ds.data_vars if name != "T")

    def clim_anom(x):
        clim = np.array([x[:24][m::12].mean() for m in range(12)])
        return x - np.tile(clim, 3)

    expected = {
        "sTWSA": storage - storage[:24].mean(),
        "P": clim_anom(p),
        "T": clim_anom(temp),
        "CWB": clim_anom(p - et),
        "CPA": np.cumsum(clim_anom(p)),
        "CCWB": np.cumsum(clim_anom(p - et)),
        "CWSC": np.cumsum(clim_anom(p - et - r)),
    }
    units = {"sTWSA": "mm", "P": "mm month-1", "T": "K", "CWB": "mm month-1", "CPA": "mm", "CCWB": "mm", "CWSC": "mm"}
    for name, values in expected.items():
        assert np.allclose(ds[name].values[:, 0, 0], values, rtol=1e-5, atol=1e-3), name
        assert ds[name].attrs["units"] == units[name]
        assert ds[name].attrs["long_name"]
        assert ds[name].dtype == np.float32


def test_wrong_units_are_refused():
    fields = {name: series(np.ones(36), name, "mm month-1") for name in pr.REQUIRED_FIELDS}
    with pytest.raises(ValueError, match=r"field temperature: units 'mm month-1', expected 'K'"):
        pr.build_predictors(fields, np.arange(36) < 24)


def clim_anomaly(x, n_base=24):
    clim = np.array([np.nanmean(x[:n_base][m::12]) for m in range(12)])
    return x - np.tile(clim, len(x) // 12)


def ew_reference(anom, tau):
    a, state, out = np.exp(-1 / tau), 0.0, []
    for v in anom:
        if np.isfinite(v):
            state = a * state + (1 - a) * v
        out.append(state if np.isfinite(v) else np.nan)
    return np.array(out)


def test_ew_anomaly_recursion_nan_and_causality():
    rng = np.random.default_rng(1)
    values = 50 + 20 * np.sin(np.arange(36) / 12 * 2 * np.pi) + rng.normal(scale=5, size=36)
    values[30] = np.nan                                  # a missing month outside the baseline
    baseline = np.arange(36) < 24
    out = pr.ew_anomaly(series(values, "precipitation", "mm month-1"), baseline, 6)
    expected = ew_reference(clim_anomaly(values), 6)
    np.testing.assert_allclose(out.values[:, 0, 0], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.values[:, 0, 1], 2 * expected, rtol=1e-12, atol=1e-12)
    # the NaN month leaves the state unchanged: month 31 continues from month 29
    a = np.exp(-1 / 6)
    assert np.isnan(out.values[30]).all()
    assert out.values[31, 0, 0] == pytest.approx(a * expected[29] + (1 - a) * clim_anomaly(values)[31])
    assert out.attrs["units"] == "mm month-1" and out.attrs["time_scale_months"] == 6.0
    assert out.dims == ("time", "lat", "lon")
    # causal: changing months after 26 (outside the baseline) leaves months up to 26 unchanged
    later = values.copy()
    later[27:] += 100.0
    changed = pr.ew_anomaly(series(later, "precipitation", "mm month-1"), baseline, 6)
    np.testing.assert_array_equal(changed.values[:27], out.values[:27])
    # a weighted mean of anomalies started at 0: never beyond the largest anomaly so far
    anom = np.abs(clim_anomaly(values))
    assert (np.abs(expected[:30]) <= np.maximum.accumulate(anom[:30]) + 1e-12).all()
    for bad in (0, -3, np.nan, "12"):
        with pytest.raises(ValueError, match="time_scale_months"):
            pr.ew_anomaly(series(values, "precipitation", "mm month-1"), baseline, bad)


def memory_fields(p):
    rng = np.random.default_rng(2)
    et = rng.uniform(10, 60, 36)
    r = rng.uniform(0, 20, 36)
    storage = rng.uniform(300, 400, 36)
    fields = {
        "precipitation": series(p, "precipitation", "mm month-1"),
        "evaporation": series(et, "evaporation", "mm month-1"),
        "runoff": series(r, "runoff", "mm month-1"),
        "land_water_storage": series(storage, "land_water_storage", "mm"),
    }
    return fields, et, r, storage


def test_memory_features_names_units_values():
    p = np.random.default_rng(3).uniform(20, 120, 36)
    fields, et, r, storage = memory_fields(p)
    baseline = np.arange(36) < 24
    feat = pr.memory_features(fields, baseline, time_scales=(3, 12))
    names = ["sTWSA", "P_ew3", "P_ew12", "CWB_ew3", "CWB_ew12", "WSC_ew3", "WSC_ew12"]
    assert list(feat["feature"].values) == names
    assert feat.dims == ("time", "feature", "lat", "lon") and feat.dtype == np.float32
    assert list(feat["feature_units"].values) == ["mm"] + ["mm month-1"] * 6
    assert list(feat["feature_time_scale"].values) == [0, 3, 12, 3, 12, 3, 12]
    expected = {
        "sTWSA": storage - storage[:24].mean(),
        "P_ew3": ew_reference(clim_anomaly(p), 3),
        "CWB_ew12": ew_reference(clim_anomaly(p - et), 12),
        "WSC_ew3": ew_reference(clim_anomaly(p - et - r), 3),
    }
    for name, values in expected.items():
        np.testing.assert_allclose(feat.sel(feature=name).values[:, 0, 0], values, rtol=1e-5, atol=1e-3)
    assert pr.memory_features(fields, baseline).sizes["feature"] == 1 + 3 * len(pr.MEMORY_TIME_SCALES)
    with pytest.raises(ValueError, match="runoff"):
        pr.memory_features({k: v for k, v in fields.items() if k != "runoff"}, baseline)
    with pytest.raises(ValueError, match="field evaporation: units"):
        pr.memory_features(dict(fields, evaporation=fields["evaporation"].assign_attrs(units="mm")), baseline)
    for bad in ((), (3, 3), (0, 12), (np.inf,)):
        with pytest.raises(ValueError, match="time_scales"):
            pr.memory_features(fields, baseline, time_scales=bad)


def test_memory_features_stay_in_range_where_running_sums_drift():
    seasonal = 50 + 30 * np.sin(np.arange(36) / 12 * 2 * np.pi)
    wet = seasonal + np.where(np.arange(36) >= 24, 10.0, 0.0)   # a persistently wet test year
    fields, *_ = memory_fields(wet)
    baseline = np.arange(36) < 24
    feat = pr.memory_features(fields, baseline, time_scales=(12,))
    cpa = pr.build_predictors(dict(fields, temperature=series(np.full(36, 280.0), "temperature", "K")),
                              baseline, names=("CPA",))["CPA"]
    assert cpa.values[-1, 0, 0] == pytest.approx(120.0, abs=1e-3)          # +10 mm per month, summed
    p_ew = feat.sel(feature="P_ew12").values[:, 0, 0]
    assert np.allclose(p_ew[:24], 0.0, atol=1e-5) and 0 < p_ew[-1] < 10.0   # bounded by the anomaly


def test_memory_predictors_by_name_equal_their_ew_anomaly():
    p = np.random.default_rng(4).uniform(20, 120, 36)
    fields, et, r, storage = memory_fields(p)
    fields["temperature"] = series(np.full(36, 280.0), "temperature", "K")
    baseline = np.arange(36) < 24
    ds = pr.build_predictors(fields, baseline, ["sTWSA", "P_ew6", "CWB_ew12", "WSC_ew24"])
    assert list(ds.data_vars) == ["sTWSA", "P_ew6", "CWB_ew12", "WSC_ew24"]
    flux = {"P_ew6": (p, 6), "CWB_ew12": (p - et, 12), "WSC_ew24": (p - et - r, 24)}
    for name, (values, tau) in flux.items():
        assert np.allclose(ds[name].values[:, 0, 0], ew_reference(clim_anomaly(values), tau), rtol=1e-5, atol=1e-4)
        assert ds[name].attrs["units"] == "mm month-1" and f"over {tau} months" in ds[name].attrs["long_name"]
    assert list(pr.PREDICTOR_PRESETS["paper"]) == list(pr.PREDICTOR_NAMES)
    assert all(pr.MEMORY_PREDICTOR.match(n) or n in pr.PREDICTOR_NAMES for n in pr.PREDICTOR_PRESETS["memory"])
    with pytest.raises(ValueError, match="unknown predictor 'Q_ew3'"):
        pr.build_predictors(fields, baseline, ["Q_ew3"])


def test_shrunk_trend_keeps_a_clear_trend_and_shrinks_red_noise_slopes():
    rng = np.random.default_rng(0)
    n, cells = 144, 40
    months = month_range("2002-01", "2013-12")
    t = np.arange(n, dtype=float)
    red = np.zeros((n, cells))                                   # AR(1) red noise, no trend at all
    for i in range(1, n):
        red[i] = 0.9 * red[i - 1] + rng.normal(0, 3.0, cells)
    clear = 0.5 * t + rng.normal(0, 1.0, n)                      # slope 0.5 per month, white noise
    values = np.concatenate([red, clear[:, None]], axis=1)[:, None, :]
    da = make_field(values, months, np.zeros(1), np.arange(cells + 1.0), "x", "cm")
    fit = np.ones(n, dtype=bool)
    _, slope = pr.fit_linear_trend(da, fit)
    offset_s, slope_s = pr.shrunk_trend(da, fit)
    raw, shrunk = slope.values[0], slope_s.values[0]
    assert shrunk[-1] / raw[-1] > 0.99                           # the clear trend is kept
    assert np.all(np.abs(shrunk[:-1]) <= np.abs(raw[:-1]) + 1e-12)
    assert np.sqrt(np.mean(shrunk[:-1] ** 2)) < 0.8 * np.sqrt(np.mean(raw[:-1] ** 2))
    # the shrunk line still passes through the fit months' mean
    line_at_mean = offset_s.values[0] + slope_s.values[0] * t.mean()
    assert np.allclose(line_at_mean, values[:, 0].mean(0), atol=1e-6)


def test_bias_corrected_autocorrelation_shrinks_red_noise_slopes_more_and_keeps_a_clear_trend():
    """AR(1) red noise with rho 0.9 over 60 months: the lag-1 estimate of the detrended series is
    about 0.77 on average; corrected, the slopes' red-noise error is larger, so they shrink more
    (a slope that is pure noise says less still), while a trend far above its noise is kept."""
    rng = np.random.default_rng(1)
    n, cells = 60, 200
    red = np.zeros((n, cells))
    for i in range(1, n):
        red[i] = 0.9 * red[i - 1] + rng.normal(0, 3.0, cells)
    clear = 0.5 * np.arange(n) + rng.normal(0, 1.0, n)
    values = np.concatenate([red, clear[:, None]], axis=1)[:, None, :]
    da = make_field(values, month_range("2002-01", "2006-12"), np.zeros(1), np.arange(cells + 1.0), "x", "cm")
    fit = np.ones(n, dtype=bool)
    _, sample = pr.shrunk_trend(da, fit)
    _, corrected = pr.shrunk_trend(da, fit, autocorrelation="bias_corrected")
    sample, corrected = sample.values[0], corrected.values[0]
    assert np.all(np.abs(corrected[:-1]) <= np.abs(sample[:-1]) + 1e-12)
    assert np.sqrt(np.mean(corrected[:-1] ** 2)) < 0.9 * np.sqrt(np.mean(sample[:-1] ** 2))
    assert corrected[-1] / sample[-1] > 0.99
    assert (pr.significant_trend(da, fit, "bias_corrected").values[0].sum()
            <= pr.significant_trend(da, fit).values[0].sum())
    with pytest.raises(ValueError, match="trend_autocorrelation must be one of sample, bias_corrected, got 'x'"):
        pr.shrunk_trend(da, fit, autocorrelation="x")
