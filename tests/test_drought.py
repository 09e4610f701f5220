"""Deficit, WSDI, categories and events on hand-made series; probabilities; detection scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gracefill import drought as dr
from gracefill import months as mo

BASELINE = ("2000-01", "2001-12")


def series():
    """Two cells, 2000-01..2003-12: TWSA = seasonal cycle + e.

    In the baseline e alternates +-1 month to month with opposite signs in the two years, so the
    climatology is the seasonal cycle and the deficit has mean 0 and std 1 (ddof 0) there: WSDI = e.
    Cell 0: a 4-month drought 2003-03..2003-06 (e = -2, -4, -3, -1), e = +0.5 elsewhere.
    Cell 1: a 2-month dip 2002-05..06 (too short) and a drought in the last 3 months (censored).
    """
    months = mo.month_range("2000-01", "2003-12")
    seasonal = 10 * np.sin(2 * np.pi * (months.month.to_numpy() - 1) / 12) + 50
    e = np.full((len(months), 1, 2), 0.5)
    base = mo.in_window(months, *BASELINE)
    sign = np.where((months.year.to_numpy() + months.month.to_numpy()) % 2 == 0, 1.0, -1.0)
    e[base] = sign[base, None, None]
    labels = np.array(mo.month_labels(months))
    for label, v in zip(["2003-03", "2003-04", "2003-05", "2003-06"], [-2, -4, -3, -1]):
        e[labels == label, 0, 0] = v
    e[np.isin(labels, ["2002-05", "2002-06"]), 0, 1] = -2
    e[np.isin(labels, ["2003-10", "2003-11", "2003-12"]), 0, 1] = -1.5
    twsa = xr.DataArray(seasonal[:, None, None] + e, dims=("time", "lat", "lon"),
                        coords={"time": months, "lat": [-30.5], "lon": [140.5, 141.5]},
                        name="twsa", attrs={"units": "mm"})
    return twsa, e


def test_deficit_and_wsdi_of_hand_made_series():
    twsa, e = series()
    deficit = dr.storage_deficit(twsa, BASELINE)
    np.testing.assert_allclose(deficit.values, e, atol=1e-12)
    assert deficit.attrs["units"] == "mm"
    index = dr.wsdi(deficit, BASELINE)
    np.testing.assert_allclose(index.values, e, atol=1e-12)
    assert index.attrs["units"] == "1"
    ref = dr.drought_reference(twsa, BASELINE)
    np.testing.assert_allclose(ref["deficit_std"].values, 1.0)
    np.testing.assert_allclose(dr.wsdi(dr.storage_deficit(twsa, reference=ref), reference=ref).values, e, atol=1e-12)
    assert ref.attrs["baseline_start"] == "2000-01" and ref.attrs["baseline_months"] == 24


def test_baseline_statistics_ignore_months_outside_the_baseline():
    twsa, _ = series()
    changed = twsa.copy()
    outside = ~mo.in_window(mo.to_month_start(twsa["time"].values), *BASELINE)
    changed[outside] = changed[outside] * 3 + 100
    changed[np.flatnonzero(outside)[:5], 0, 0] = np.nan
    a, b = dr.drought_reference(twsa, BASELINE), dr.drought_reference(changed, BASELINE)
    for v in a:
        np.testing.assert_array_equal(a[v].values, b[v].values)
    inside = np.flatnonzero(~outside)
    np.testing.assert_array_equal(dr.wsdi(dr.storage_deficit(twsa, BASELINE), BASELINE)[inside].values,
                                  dr.wsdi(dr.storage_deficit(changed, BASELINE), BASELINE)[inside].values)
    mask = ~outside
    np.testing.assert_array_equal(dr.storage_deficit(twsa, mask).values, dr.storage_deficit(twsa, BASELINE).values)
    with pytest.raises(ValueError, match="baseline"):
        dr.storage_deficit(twsa, ("1990-01", "1991-12"))
    with pytest.raises(ValueError, match="calendar month"):
        dr.storage_deficit(twsa, ("2000-01", "2000-06"))


def test_events_of_hand_made_series():
    twsa, _ = series()
    deficit = dr.storage_deficit(twsa, BASELINE)
    events = dr.drought_events(deficit, min_duration=3)
    assert len(events) == 2
    first = events.iloc[0]
    assert (first["lat"], first["lon"]) == (-30.5, 140.5)
    assert first["onset"] == pd.Timestamp("2003-03-01") and first["end"] == pd.Timestamp("2003-06-01")
    assert first["duration"] == 4
    assert first["severity"] == pytest.approx(-10.0)                # mean deficit -2.5 x 4 months
    assert first["mean_deficit"] == pytest.approx(-2.5)
    assert first["peak_deficit"] == pytest.approx(-4.0)
    assert first["peak_month"] == pd.Timestamp("2003-04-01")
    assert not first["censored"]
    second = events.iloc[1]
    assert second["lon"] == 141.5 and second["duration"] == 3 and second["censored"]
    assert second["severity"] == pytest.approx(-4.5)
    assert events.attrs["units"]["severity"] == "mm month"
    # the 2-month dip becomes an event with min_duration 2; WSDI criterion with threshold -2.5
    assert len(dr.drought_events(deficit, min_duration=2)) == 3
    strict = dr.drought_events(deficit, dr.wsdi(deficit, BASELINE), min_duration=2, criterion="wsdi", threshold=-2.5)
    assert len(strict) == 1 and strict.iloc[0]["duration"] == 2
    assert strict.iloc[0]["onset"] == pd.Timestamp("2003-04-01")
    with pytest.raises(ValueError, match="criterion"):
        dr.drought_events(deficit, criterion="spi")


def test_missing_months_break_events():
    twsa, _ = series()
    deficit = dr.storage_deficit(twsa, BASELINE)
    labels = np.array(mo.month_labels(mo.to_month_start(deficit["time"].values)))
    dropped = deficit.isel(time=np.flatnonzero(labels != "2003-05"))        # absent month
    assert len(dr.drought_events(dropped, min_duration=3)) == 1              # only cell 1 left
    holed = deficit.copy()
    holed[labels == "2003-04", 0, 0] = np.nan                               # NaN month
    events = dr.drought_events(holed, min_duration=2)
    cell0 = events[events["lon"] == 140.5]
    assert list(cell0["duration"]) == [2]                                   # 2003-05..06 after the hole
    empty = dr.drought_events(deficit, min_duration=40)
    assert len(empty) == 0 and "severity" in empty.columns


def test_categories():
    index = xr.DataArray([0.0, -0.5, -0.79, -0.8, -1.3, -1.6, -2.0, -5.0, np.nan], dims="time")
    cat = dr.drought_category(index)
    np.testing.assert_array_equal(cat.values, [0, 1, 1, 2, 3, 4, 5, 5, np.nan])
    assert cat.attrs["flag_meanings"].split()[-1] == "exceptional"
    np.testing.assert_array_equal(dr.drought_category(index, [-1.0]).values, [0, 0, 0, 0, 1, 1, 1, 1, np.nan])
    with pytest.raises(ValueError, match="thresholds"):
        dr.drought_category(index, [-0.5, -0.4])


def test_drought_probability_is_fraction_of_particles():
    twsa, e = series()
    ref = dr.drought_reference(twsa, BASELINE)
    offsets = np.array([-1.0, 0.0, 0.3, 2.0])
    samples = (twsa + xr.DataArray(offsets, dims="particle")).transpose("particle", ...)
    samples[2, 5, 0, 1] = np.nan                                            # one particle missing
    prob = dr.drought_probability(samples, ref, threshold=-0.5)
    # with the shared reference a particle's WSDI is e + offset; standardising each particle by its
    # own baseline would remove the offsets and give 0 or 1 everywhere instead
    particle_wsdi = e[None] + offsets[:, None, None, None]
    inside = (particle_wsdi <= -0.5).astype(float)
    inside[2, 5, 0, 1] = np.nan
    np.testing.assert_allclose(prob.values, np.nanmean(inside, axis=0))
    assert prob.sel(time="2002-01-01").values[0, 0] == pytest.approx(0.25)  # e = 0.5: only offset -1
    assert prob.sel(time="2003-06-01").values[0, 0] == pytest.approx(0.75)  # e = -1: all but offset +2
    assert prob.attrs["units"] == "1"


def test_parametric_drought_probability_is_the_normal_probability_below_the_threshold():
    from scipy.stats import norm

    twsa, e = series()
    ref = dr.drought_reference(twsa, BASELINE)
    std = (0.5 * ref["deficit_std"]).broadcast_like(twsa)
    prob = dr.parametric_drought_probability(twsa, std, ref, threshold=-0.5)
    # WSDI of the mean is e; the WSDI spread is std / deficit_std = 0.5
    np.testing.assert_allclose(prob.values, norm.cdf((-0.5 - e) / 0.5))
    assert prob.attrs["units"] == "1"
    assert np.isnan(dr.parametric_drought_probability(twsa, 0 * std, ref, threshold=-0.5).values).all()
    # Student-t tails (5 degrees of freedom, the same standard deviation): the t's probability
    from scipy.stats import t as student_t

    heavy = dr.parametric_drought_probability(twsa, std, ref, threshold=-0.5, dof=5.0)
    np.testing.assert_allclose(heavy.values, student_t.cdf((-0.5 - e) / (0.5 / np.sqrt(5 / 3)), 5))


def test_gap_filled_and_detection_scores():
    twsa, _ = series()
    recon = (twsa + 1000).assign_attrs(units="mm")
    observed = twsa.isel(time=slice(0, 40)).copy()
    observed[3, 0, 0] = np.nan
    filled = dr.gap_filled(observed, recon)
    assert filled.sizes["time"] == twsa.sizes["time"]
    assert float(filled[3, 0, 0]) == float(recon[3, 0, 0])
    assert float(filled[3, 0, 1]) == float(twsa[3, 0, 1])
    np.testing.assert_array_equal(filled[40:].values, recon[40:].values)
    with pytest.raises(ValueError, match="units"):
        dr.gap_filled(observed.assign_attrs(units="cm"), recon)

    pred = xr.DataArray([[1, 1, 0, 0], [1, 0, np.nan, 0]], dims=("lat", "lon"))
    truth = xr.DataArray([[1, 0, 1, 0], [1, 1, 1, np.nan]], dims=("lat", "lon"))
    scores = dr.detection_scores(pred, truth)
    counts = [int(scores[k]) for k in ("hits", "misses", "false_alarms", "correct_negatives")]
    assert counts == [2, 2, 1, 1]
    assert float(scores["hit_rate"]) == pytest.approx(0.5)
    assert float(scores["false_alarm_ratio"]) == pytest.approx(1 / 3)
    by_wsdi = dr.detection_scores(-pred, -truth, threshold=-0.5)
    assert float(by_wsdi["hit_rate"]) == pytest.approx(0.5)
    per_row = dr.detection_scores(pred, truth, dim="lon")
    np.testing.assert_allclose(per_row["hit_rate"].values, [0.5, 0.5])
