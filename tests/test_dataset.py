"""Lag stacking, split labels, missing months and the absence of leakage in the tensors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gracefill import months as mo
from gracefill.config import validate
from gracefill.dataset import build_tensors, stack_lags
from tests.conftest import make_field

MONTHS = mo.month_range("2002-01", "2019-12")
LAT, LON = np.array([0.5, 1.5]), np.array([0.5, 1.5, 2.5])
CFG = validate({"period": {"start": "2002-01", "end": "2019-12"}, "figures": {"month": "2010-01"},
                "grid": {"resolution": 1, "lat_min": 0, "lat_max": 8, "lon_min": 0, "lon_max": 8},
                "sources": {"synthetic": {"drought": {"enabled": False}}},
                "predictors": {"names": "paper", "target_trend": "fit"}})


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    shape = (len(MONTHS), LAT.size, LON.size)
    return xr.Dataset({name: make_field(rng.normal(size=shape), MONTHS, LAT, LON, name, "1")
                       for name in CFG["predictors"]["names"]})


def grid():
    land = xr.DataArray(np.array([[1, 1, 0], [1, 1, 1]], dtype=np.int8), dims=("lat", "lon"),
                        coords={"lat": LAT, "lon": LON})
    return land, xr.ones_like(land, dtype=np.float64).assign_attrs(units="m2")


def target_field(observed_months):
    rng = np.random.default_rng(5)
    t = np.arange(len(MONTHS))[:, None, None]
    values = 20.0 + 1.5 * t + rng.normal(0, 10, (len(MONTHS), LAT.size, LON.size))
    da = make_field(values, MONTHS, LAT, LON, "twsa", "mm")
    return da.sel(time=observed_months)


def observed_months():
    return MONTHS[mo.synthetic_grace_availability(MONTHS, ("2017-07", "2018-05"))]


def test_lag_stacking_puts_month_t_minus_k_in_channel_k():
    ds = xr.Dataset({"A": make_field(np.arange(len(MONTHS), dtype=float)[:, None, None] * np.ones((1, 2, 3)),
                                     MONTHS, LAT, LON, "A", "1"),
                     "B": make_field(1000 + np.arange(len(MONTHS), dtype=float)[:, None, None] * np.ones((1, 2, 3)),
                                     MONTHS, LAT, LON, "B", "1")})
    stacked = stack_lags(ds, ["A", "B"], 3)
    assert stacked.dims == ("time", "channel", "lat", "lon")
    assert list(stacked["channel_predictor"].values) == ["A", "A", "A", "B", "B", "B"]
    assert list(stacked["channel_lag"].values) == [0, 1, 2, 0, 1, 2]
    t = 50
    assert list(stacked.values[t, :, 0, 0]) == [t, t - 1, t - 2, 1000 + t, 1000 + t - 1, 1000 + t - 2]
    assert np.isnan(stacked.values[1, 2, 0, 0]) and stacked.values[2, 2, 0, 0] == 0


def test_tensors_layout_splits_and_missing_months():
    land, area = grid()
    ds = build_tensors(inputs(), target_field(observed_months()), land, area, CFG)
    assert ds["inputs"].shape == (len(MONTHS), 21, 2, 3)
    assert ds["inputs"].dtype == np.float32 and np.isfinite(ds["inputs"].values).all()
    assert (ds["inputs"].values[:, :, 0, 2] == 0).all()  # ocean cell
    split = pd.Series(ds["split"].values, index=mo.month_labels(MONTHS))
    flags = mo.SPLIT_FLAGS
    assert split["2002-01"] == flags["unused"] and split["2002-02"] == flags["unused"]
    assert split["2002-03"] == flags["missing"]
    assert split["2002-04"] == flags["train"] and split["2014-03"] == flags["train"]
    assert split["2002-06"] == flags["missing"] and split["2014-02"] == flags["missing"]
    assert split["2014-04"] == flags["test"] and split["2019-12"] == flags["test"]
    assert all(split[m] == flags["gap"] for m in mo.month_labels(mo.month_range("2017-07", "2018-05")))
    assert split["2018-08"] == flags["missing"]
    # missing months are NaN, flagged, never zero-filled
    for month in ("2002-06", "2011-01", "2017-10"):
        i = mo.month_labels(MONTHS).index(month)
        assert ds["observed"].values[i] == 0
        assert np.isnan(ds["target"].values[i]).all()
    assert ds.attrs["train_months"] == (split == flags["train"]).sum()
    for name, var in ds.data_vars.items():
        assert var.attrs.get("long_name") and var.attrs.get("units"), name


def test_pseudo_gap_months_are_held_out_of_training_and_test():
    land, area = grid()
    cfg = dict(CFG, split=dict(CFG["split"], pseudo_gap_start="2010-01", pseudo_gap_end="2010-11"))
    ds = build_tensors(inputs(), target_field(observed_months()), land, area, cfg)
    split = pd.Series(ds["split"].values, index=mo.month_labels(MONTHS))
    held = mo.month_labels(mo.month_range("2010-01", "2010-11"))
    assert (split[held] == mo.SPLIT_FLAGS["pseudo_gap"]).all()
    assert ds.attrs["pseudo_gap_months"] == 11 and ds.attrs["train_window"] == "2002-04..2014-03"
    assert np.isfinite(ds["target"].sel(time="2010-05-01").values[land.values.astype(bool)]).all()  # kept for scoring
    base = build_tensors(inputs(), target_field(observed_months()), land, area, CFG)
    assert ds.attrs["train_months"] == base.attrs["train_months"] - 11
    # a pseudo-gap after the training window takes test months, never missing or gap months
    labels = mo.split_labels(MONTHS, MONTHS.isin(observed_months()), np.ones(len(MONTHS), bool), ("2002-04", "2014-03"),
                             ("2017-07", "2018-05"), ("2018-06", "2019-04"))
    labels = pd.Series(labels, index=mo.month_labels(MONTHS))
    assert labels["2018-06"] == mo.SPLIT_FLAGS["pseudo_gap"] and labels["2018-08"] == mo.SPLIT_FLAGS["missing"]
    assert labels["2019-05"] == mo.SPLIT_FLAGS["test"]


def test_all_nan_grace_months_are_missing_and_recorded():
    land, area = grid()
    target = target_field(observed_months())
    target.loc[{"time": ["2005-03-01", "2006-07-01"]}] = np.nan
    ds = build_tensors(inputs(), target, land, area, CFG)
    base = build_tensors(inputs(), target_field(observed_months()), land, area, CFG)
    assert ds.attrs["empty_target_months"] == "2005-03, 2006-07" and base.attrs["empty_target_months"] == "none"
    assert ds.attrs["train_months"] == base.attrs["train_months"] - 2
    split = pd.Series(ds["split"].values, index=mo.month_labels(MONTHS))
    assert split["2005-03"] == split["2006-07"] == mo.SPLIT_FLAGS["missing"]


def test_fold_ends_spread_from_the_shortest_fit_to_the_last_validation_window():
    assert mo.fold_ends("2002-04", "2014-03", 3, 60, 36) == ["2007-03", "2009-03", "2011-03"]
    assert mo.fold_ends("2002-04", "2014-03", 1, 60, 36) == ["2007-03"]
    assert mo.months_between("2014-03", "2017-07") == 40 and mo.shift_month("2014-03", 13) == "2015-04"
    with pytest.raises(ValueError, match="cannot hold 2 fold"):
        mo.fold_ends("2002-04", "2008-03", 2, 60, 36)


def test_target_detrended_with_training_trend_and_converted_to_cm():
    land, area = grid()
    ds = build_tensors(inputs(), target_field(observed_months()), land, area, CFG)
    assert ds["target"].attrs["units"] == "cm"
    assert ds["target_trend_slope"].values[0, 0] == pytest.approx(0.15, abs=0.02)  # 1.5 mm/month
    restored = ds["target"] + ds["target_trend_offset"] + ds["target_trend_slope"] * ds["month_index"]
    original = target_field(MONTHS).where(land.astype(bool)) / 10
    obs = ds["observed"].values.astype(bool)
    assert np.allclose(restored.values[obs], original.values[obs], equal_nan=True, atol=1e-4)


def test_no_training_statistic_uses_test_or_gap_months():
    land, area = grid()
    base = build_tensors(inputs(), target_field(observed_months()), land, area, CFG)
    not_train = base["split"].values != mo.SPLIT_FLAGS["train"]
    # perturb every predictor and target value outside the training months
    preds = inputs()
    for name in preds.data_vars:
        preds[name].values[not_train] += 1e3
    target = target_field(observed_months())
    shifted = target.copy()
    in_test = np.isin(pd.DatetimeIndex(target["time"].values), MONTHS[not_train])
    shifted.values[in_test] -= 500.0
    other = build_tensors(preds, shifted, land, area, CFG)
    stats = [f"input_{stat}_{name}" for stat in ("mean", "std") for name in CFG["predictors"]["names"]]
    for name in (*stats, "target_trend_offset", "target_trend_slope"):
        xr.testing.assert_allclose(base[name], other[name])
    train = ~not_train
    assert np.allclose(base["inputs"].values[train][:, ::3], other["inputs"].values[train][:, ::3])


def test_empty_training_split_is_an_error():
    land, area = grid()
    late = observed_months()[observed_months() > pd.Timestamp("2014-12")]
    with pytest.raises(ValueError, match="training split is empty"):
        build_tensors(inputs(), target_field(late), land, area, CFG)


def test_duplicate_target_months_are_an_error():
    land, area = grid()
    target = target_field(observed_months())
    doubled = xr.concat([target.isel(time=[0]), target], "time")
    with pytest.raises(ValueError, match="more than one field for month"):
        build_tensors(inputs(), doubled, land, area, CFG)


def test_a_predictor_missing_on_land_cells_enters_as_zero_and_leaves_the_others_alone():
    """GLDAS stops at 60S: on a grid reaching further south its sTWSA is NaN on land cells there.
    Those cells enter the network as 0 (the training mean of the normalised predictor), like ocean,
    and the statistics of every predictor come from finite values only."""
    land, area = grid()
    complete = inputs()
    gappy = complete.copy()
    gappy["sTWSA"] = complete["sTWSA"].where(complete["lat"] > 1.0)  # the southern row: no product
    full = build_tensors(complete, target_field(observed_months()), land, area, CFG)
    ds = build_tensors(gappy, target_field(observed_months()), land, area, CFG)
    assert np.isfinite(ds["inputs"].values).all()
    stwsa = ds["channel_predictor"].values == "sTWSA"
    assert (ds["inputs"].values[:, stwsa, 0, :] == 0).all()
    np.testing.assert_array_equal(ds["inputs"].values[:, ~stwsa], full["inputs"].values[:, ~stwsa])
    # the northern row keeps its values, normalised with the statistics of that row alone
    train = ds["split"].values == mo.SPLIT_FLAGS["train"]
    north = gappy["sTWSA"].isel(lat=1).values[train][:, land.values[1].astype(bool)]
    expected = (gappy["sTWSA"].isel(lat=1).values - north.mean()) / north.std()
    lag0 = np.flatnonzero(stwsa)[0]
    got = ds["inputs"].values[:, lag0, 1, :]
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["shrunk", "none"])
def test_target_trend_modes_restore_the_target_and_use_training_months_only(mode):
    land, area = grid()
    cfg = {**CFG, "predictors": {**CFG["predictors"], "target_trend": mode}}
    target = target_field(observed_months())
    ds = build_tensors(inputs(), target, land, area, cfg)
    restored = ds["target"] + ds["target_trend_offset"] + ds["target_trend_slope"] * ds["month_index"]
    expected = (target * 0.1).reindex(time=MONTHS).where(land.astype(bool))
    np.testing.assert_allclose(restored.values, expected.values, rtol=1e-5, atol=1e-4)
    train = ds["split"].values == 1
    if mode == "none":
        assert np.nanmax(np.abs(ds["target_trend_slope"].values)) == 0
        assert np.nanmax(np.abs(ds["target"].values[train].mean(0))) < 1e-5  # the training mean removed
    else:  # a 1.5 mm/month trend under 10 mm of white noise is clear: kept
        assert ds["target_trend_slope"].values[0, 0] == pytest.approx(0.15, abs=0.02)
    assert ds.attrs["target_trend"] == mode
    late = target.copy()
    late.loc[{"time": late["time"] > np.datetime64("2014-03-01")}] = 1e6
    poisoned = build_tensors(inputs(), late, land, area, cfg)
    xr.testing.assert_allclose(poisoned["target_trend_slope"], ds["target_trend_slope"])
