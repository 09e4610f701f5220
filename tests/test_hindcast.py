"""Months before and after the GRACE record: flags, the trend outside the training window, the
spread widening with the distance to it, and a hindcast scored against the synthetic truth."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gracefill import analysis, calibration as ca, cli
from gracefill import config as config_mod
from gracefill import months as mo
from gracefill import product
from gracefill.dataset import target_trend
from gracefill.predictors import MEMORY_FIELDS, trend_month_index



def test_month_flags_before_inside_and_after_the_record():
    observed = np.array([0, 0, 1, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
    gap = np.zeros(10, dtype=bool)
    gap[5:7] = True
    flags = mo.month_flags(observed, gap)
    names = {v: k for k, v in mo.MONTH_FLAGS.items()}
    assert [names[f] for f in flags] == ["hindcast", "hindcast", "observed", "missing", "observed", "gap", "gap",
                                         "observed", "forecast", "forecast"]
    assert mo.MONTH_FLAGS["observed"] == 0 and mo.MONTH_FLAGS["missing"] == 1 and mo.MONTH_FLAGS["gap"] == 2
    attrs = mo.month_flag_attrs()
    assert attrs["flag_meanings"].split() == list(mo.MONTH_FLAGS) and attrs["flag_values"].dtype == np.int8
    with pytest.raises(ValueError, match="same length"):
        mo.month_flags(observed, gap[:-1])


def test_product_flags_hindcast_and_forecast_months():
    months = mo.month_range("2001-11", "2002-06")
    status = ["hindcast", "hindcast", "observed", "missing", "observed", "gap", "observed", "forecast"]
    values = np.where(np.array(status) == "observed", 1.0, np.nan)[:, None, None] * np.ones((1, 2, 2))
    rec = xr.Dataset({"twsa": (("time", "lat", "lon"), np.ones((8, 2, 2))),
                      "observed_twsa": (("time", "lat", "lon"), values),
                      "month_flag": ("time", np.array([mo.MONTH_FLAGS[s] for s in status], np.int8))},
                     coords={"time": months, "lat": [0.0, 1.0], "lon": [0.0, 1.0]})
    flags = product.month_flags(rec)
    assert flags.tolist() == [product.PRODUCT_FLAGS[{"missing": "reconstructed"}.get(s, s)] for s in status]
    assert product.PRODUCT_FLAGS == {"observed": 0, "reconstructed": 1, "gap": 2, "hindcast": 3, "forecast": 4}


def test_trend_extension_linear_extrapolates_and_flat_holds_the_edges():
    fit = np.zeros(10, dtype=bool)
    fit[3:7] = True
    np.testing.assert_array_equal(trend_month_index(fit, "linear"), np.arange(10))
    np.testing.assert_array_equal(trend_month_index(fit, "flat"), [3, 3, 3, 3, 4, 5, 6, 6, 6, 6])
    with pytest.raises(ValueError, match="linear, flat"):
        trend_month_index(fit, "quadratic")


@pytest.mark.parametrize("extension", ["linear", "flat"])
def test_tensors_carry_the_trend_extension(extension):
    """The target's trend outside the training months: the fitted line (linear, the default) or
    its value at the first / last training month (flat); inside them the same line, and the
    detrended target plus the trend gives GRACE back in every observed month."""
    from conftest import make_field
    from gracefill.dataset import build_tensors

    months = mo.month_range("2000-01", "2006-12")
    lat, lon = np.arange(8) + 0.5, np.arange(8) + 0.5
    rng = np.random.default_rng(2)
    shape = (len(months), 8, 8)
    preds = xr.Dataset({"P": make_field(rng.normal(size=shape), months, lat, lon, "P", "mm month-1"),
                        "T": make_field(rng.normal(size=shape), months, lat, lon, "T", "K")})
    grace = mo.in_window(months, "2002-04", "2006-12") & ~mo.in_window(months, "2005-07", "2005-09")
    target = make_field(5.0 * np.arange(len(months))[:, None, None] + rng.normal(0, 1, shape), months, lat, lon,
                        "twsa", "mm").isel(time=np.flatnonzero(grace))
    land = xr.DataArray(np.ones((8, 8), np.int8), dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    raw = {"period": {"start": "2000-01", "end": "2006-12"},
           "split": {"train_start": "2002-04", "train_end": "2004-12", "gap_start": "2005-07", "gap_end": "2005-09"},
           "drought": {"baseline_start": "2002-04", "baseline_end": "2004-12"}, "figures": {"month": "2002-04"},
           "predictors": {"names": ["P", "T"], "lags": 2, "target_trend": "fit", "trend_extension": extension}}
    if extension == "linear":
        del raw["predictors"]["trend_extension"]       # the default
    out = build_tensors(preds, target, land, xr.ones_like(land, dtype=np.float64), config_mod.validate(raw, relations=False))
    assert out.attrs["trend_extension"] == extension
    trend = target_trend(out).mean(("lat", "lon")).values
    train = np.flatnonzero(out["split"].values == mo.SPLIT_FLAGS["train"])
    assert months[train[0]] == pd.Timestamp("2002-04") and months[train[-1]] == pd.Timestamp("2004-12")
    line = (out["target_trend_offset"] + out["target_trend_slope"] * out["month_index"]).mean(("lat", "lon")).values
    np.testing.assert_allclose(trend[train], line[train], rtol=1e-5)
    assert float(out["target_trend_slope"].mean()) == pytest.approx(0.5, rel=0.02)   # 5 mm = 0.5 cm a month
    if extension == "linear":
        np.testing.assert_allclose(trend, line, rtol=1e-5)
    else:
        np.testing.assert_allclose(trend[:train[0]], trend[train[0]], rtol=1e-6)
        np.testing.assert_allclose(trend[train[-1]:], trend[train[-1]], rtol=1e-6)
    observed = out["observed"].values.astype(bool)
    back = (out["target"] + target_trend(out)).values[observed]
    np.testing.assert_allclose(back, 0.1 * target.transpose("time", "lat", "lon").values, rtol=1e-5, atol=1e-4)


def test_significant_extension_holds_the_trend_only_where_it_is_within_its_red_noise():
    """trend_extension significant: the left half of the grid has a trend of 5 mm a month (far
    above its noise), the right half red noise alone; the right half is flagged trend_held and
    its trend held at the training edges, the left half extrapolated as with linear. The
    autocorrelation is taken as measured: over these 33 training months the bias-corrected one
    is stricter (tests/test_predictors.py checks that)."""
    from conftest import make_field
    from gracefill.dataset import build_tensors
    from gracefill.predictors import significant_trend

    months = mo.month_range("2000-01", "2006-12")
    lat, lon = np.arange(8) + 0.5, np.arange(8) + 0.5
    rng = np.random.default_rng(4)
    shape = (len(months), 8, 8)
    noise = np.zeros(shape)
    for i in range(1, len(months)):                     # AR(1), rho 0.9: wanders for years
        noise[i] = 0.9 * noise[i - 1] + rng.normal(0, 10, shape[1:])
    values = noise.copy()
    values[:, :, :4] += 5.0 * np.arange(len(months))[:, None, None]
    preds = xr.Dataset({"P": make_field(rng.normal(size=shape), months, lat, lon, "P", "mm month-1"),
                        "T": make_field(rng.normal(size=shape), months, lat, lon, "T", "K")})
    target = make_field(values, months, lat, lon, "twsa", "mm")
    land = xr.DataArray(np.ones((8, 8), np.int8), dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    raw = {"period": {"start": "2000-01", "end": "2006-12"},
           "split": {"train_start": "2002-04", "train_end": "2004-12", "gap_start": "2005-07", "gap_end": "2005-09"},
           "drought": {"baseline_start": "2002-04", "baseline_end": "2004-12"}, "figures": {"month": "2002-04"},
           "predictors": {"names": ["P", "T"], "lags": 2, "target_trend": "fit", "trend_extension": "significant",
                          "trend_autocorrelation": "sample"}}
    cfg = config_mod.validate(raw, relations=False)
    out = build_tensors(preds, target, land, xr.ones_like(land, dtype=np.float64), cfg)
    train = np.flatnonzero(out["split"].values == mo.SPLIT_FLAGS["train"])
    held = out["trend_held"].values.astype(bool)
    expected = ~significant_trend(target, out["split"].values == mo.SPLIT_FLAGS["train"],
                                  cfg["predictors"]["trend_autocorrelation"]).values
    np.testing.assert_array_equal(held, expected)
    assert not held[:, :4].any() and held[:, 4:].mean() >= 0.6   # 44 of 64 here: short red noise fakes trends
    # the setting reaches the test: bias-corrected, the stricter test holds at least as many cells
    cfg["predictors"]["trend_autocorrelation"] = "bias_corrected"
    strict = build_tensors(preds, target, land, xr.ones_like(land, dtype=np.float64), cfg)
    strict = strict["trend_held"].values.astype(bool)
    np.testing.assert_array_equal(strict, ~significant_trend(target, out["split"].values == mo.SPLIT_FLAGS["train"],
                                                             "bias_corrected").values)
    assert strict.sum() > held.sum() and not (held & ~strict).any()
    trend = target_trend(out).values
    line = (out["target_trend_offset"] + out["target_trend_slope"] * out["month_index"]).transpose("time", "lat", "lon").values
    np.testing.assert_allclose(trend[:, ~held], line[:, ~held], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(trend[train[-1]:, held], np.broadcast_to(trend[train[-1], held], trend[train[-1]:, held].shape), rtol=1e-6)
    np.testing.assert_allclose(trend[train][:, held], line[train][:, held], rtol=1e-5, atol=1e-5)
    observed = out["observed"].values.astype(bool)
    back = (out["target"] + target_trend(out)).values[observed]
    np.testing.assert_allclose(back, 0.1 * values[observed], rtol=1e-5, atol=1e-3)


def _hindcast_reconstruction() -> xr.Dataset:
    months = mo.month_range("1980-01", "2016-12")
    split = np.where(mo.in_window(months, "2002-04", "2014-03"), mo.SPLIT_FLAGS["train"], mo.SPLIT_FLAGS["missing"])
    split[months > pd.Timestamp("2014-03")] = mo.SPLIT_FLAGS["test"]
    shape = (len(months), 2, 3)
    return xr.Dataset({"twsa": (("time", "lat", "lon"), np.zeros(shape)),
                       "twsa_std": (("time", "lat", "lon"), np.full(shape, 2.0), {"units": "cm"}),
                       "split": ("time", split.astype(np.int8))},
                      coords={"time": months, "lat": [0.0, 1.0], "lon": [0.0, 1.0, 2.0]},
                      attrs={"train_window": "2002-04..2014-03"})


def test_lead_of_a_hindcast_is_its_distance_to_the_first_training_month():
    rec = _hindcast_reconstruction()
    months = pd.DatetimeIndex(rec["time"].values)
    leads = ca.lead_months(rec, np.arange(len(months)))
    at = {f"{m:%Y-%m}": lead for m, lead in zip(months, leads)}
    assert at["2002-03"] == 1 and at["2001-04"] == 12 and at["1982-04"] == 240
    assert at["2002-04"] == 1 and at["2010-01"] == 1                  # inside the window, as before
    assert at["2014-04"] == 1 and at["2016-03"] == 24                 # after it, as before
    labels = dict(analysis.lead_bins(np.array([1, 60, 61, 120, 121, 240, 241])))
    assert {k: v.tolist() for k, v in labels.items()} == {"0-5": [0, 1], "5-10": [2, 3], "10-20": [4, 5], "20+": [6]}


def test_a_month_twenty_years_before_training_has_a_wider_calibrated_spread():
    """The folds' errors grow with lead; the calibration gives a hindcast 20 years before the
    training window the factor of the longest lead the folds saw, wider than a month inside it."""
    rng = np.random.default_rng(4)
    months = mo.month_range("2002-04", "2014-03")
    folds = []
    for end in ("2006-03", "2009-03"):
        after = np.asarray(months > pd.Timestamp(end))
        lead = np.maximum(np.array([mo.months_between(end, m) for m in months]), 1)
        err = np.where(after, 1.0 + lead / 12.0, 1.0)[:, None, None] * rng.normal(size=(len(months), 2, 3))
        split = np.where(after, mo.SPLIT_FLAGS["test"], mo.SPLIT_FLAGS["train"]).astype(np.int8)
        dims = ("time", "lat", "lon")
        folds.append(xr.Dataset({"twsa": (dims, np.zeros(err.shape), {"units": "cm"}),
                                 "twsa_std": (dims, np.ones(err.shape), {"units": "cm"}),
                                 "observed_twsa": (dims, err, {"units": "cm"}), "split": ("time", split)},
                                coords={"time": months, "lat": [0.0, 1.0], "lon": [0.0, 1.0, 2.0]},
                                attrs={"train_window": f"2002-04..{end}"}))
    calibration = ca.fit_calibration(folds, lead_bin_months=12)
    out = ca.apply_calibration(_hindcast_reconstruction(), calibration)
    std = out["twsa_std"].mean(("lat", "lon"))
    assert float(std.sel(time="1982-01-01")) > 1.5 * float(std.sel(time="2008-01-01"))
    assert float(std.sel(time="2001-12-01")) == pytest.approx(float(std.sel(time="2014-06-01")), rel=1e-6)


def test_benchmark_tables_take_the_scores_by_distance_to_training():
    from gracefill import benchmark as bm

    def world(nse_far):
        scores = pd.DataFrame([{"method": "bcnn", "period": "test", "months": 40, "nse_median": 0.6}])
        by_lead = pd.DataFrame([{"side": "before", "lead_years": label, "first_month": "x", "last_month": "y",
                                 "reference": "truth", "method": "bcnn", "period": f"before_{label}y", "months": 60,
                                 "nse_median": value} for label, value in (("0-5", 0.5), ("20+", nse_far))])
        return bm.with_lead_scores(scores, by_lead), None

    long = bm.collect({"w1": world(0.1), "w2": world(0.3)})
    table = bm.summarise(long, samples=100)
    assert list(dict.fromkeys(table["period"])) == ["test", "before_0-5y", "before_20+y"]
    far = table[(table.period == "before_20+y") & (table.metric == "nse_median")].iloc[0]
    assert far["mean"] == pytest.approx(0.2) and far["worlds"] == 2
    assert "| before_20+y | bcnn | 0.20" in bm.markdown(table)


# --------------------------------------------------------------------------- one small run from 1996

CONFIG = {
    "run": "hindcast",
    "seed": 11,
    "period": {"start": "1996-01", "end": "2018-12"},
    "grid": {"resolution": 4.0, "lat_min": 20, "lat_max": 52, "lon_min": -128, "lon_max": -64},
    "sources": {"synthetic": {"native_resolution": 4.0, "drought": {"enabled": False}}},
    "split": {"pseudo_gap_start": None, "pseudo_gap_end": None},
    "model": {"features": 4, "particles": 2},
    "training": {"device": "cpu", "epochs": 2, "checkpoint_every": 1, "select_epochs": "fixed"},
    "evaluation": {"folds": {"count": 1, "min_fit_months": 60, "min_validation_months": 36}},
    "figures": {"points": [{"name": "plains", "lat": 36.0, "lon": -100.0, "radius_deg": 5.0}],
                "panel_months": ["1998-06", "2016-01"]},
}
FIELDS = ("precipitation", "temperature", "evaporation", "runoff", "land_water_storage")


def _json(cfg: dict, *sections: str) -> str:
    return json.dumps(config_mod.subset(cfg, *sections))


def _run(*argv) -> None:
    assert cli.main([*map(str, argv)]) == 0, argv


def _stages(cfg: dict, root, out, folds=()) -> None:
    """build_predictors .. baselines of one run (the main run or a fold), as the rules call them."""
    regridded = root / "regridded"
    features = _json(cfg, "period", "split", "predictors")
    _run("build_predictors", "--config-json", features, "--fields", *(regridded / f"{f}.nc" for f in FIELDS),
         "--output", out / "predictors.nc")
    _run("build_tensors", "--config-json", features, "--grid", root / "grid.nc", "--predictors", out / "predictors.nc",
         "--target", regridded / "twsa.nc", "--truth", regridded / "twsa_true.nc", "--output", out / "tensors.nc")
    _run("train", "--config-json", _json(cfg, "seed", "model", "training"), "--tensors", out / "tensors.nc",
         "--model", out / "model.pt", "--log-csv", out / "training_log.csv", "--no-progress")
    _run("predict", "--config-json", _json(cfg, "model", "training", "prediction"), "--tensors", out / "tensors.nc",
         "--model", out / "model.pt", "--output", out / "reconstruction.nc", "--no-progress",
         *(["--calibration-folds", *folds] if folds else []))
    _run("baselines", "--config-json", _json(cfg, "evaluation"), "--tensors", out / "tensors.nc",
         "--fields", *(regridded / f"{f}.nc" for f in MEMORY_FIELDS), "--output", out / "baselines.nc")


def test_months_before_grace_are_reconstructed_and_scored_against_the_truth(tmp_path):
    """A world from 1996 on the tiny grid through every stage the rules call (one fold, two
    epochs): the 74 months before 2002-04 with inputs are flagged hindcast, reconstructed with a
    spread at their lead, scored against the truth as the period ``hindcast`` and by distance to
    the training window, and filled in the product."""
    cfg = config_mod.validate(CONFIG)
    _run("retrieve_synthetic", "--config-json", _json(cfg, "seed", "grid", "period", "split", "sources"),
         "--out-dir", tmp_path / "raw")
    _run("build_grid", "--config-json", _json(cfg, "grid"), "--output", tmp_path / "grid.nc")
    for product_name, variables in {"grace": ("twsa",), "era5land": FIELDS, "truth": ("twsa_true",)}.items():
        for variable in variables:
            _run("regrid", "--source", tmp_path / "raw" / f"{product_name}.nc", "--variable", variable,
                 "--grid", tmp_path / "grid.nc", "--output", tmp_path / "regridded" / f"{variable}.nc")
    (end,) = config_mod.fold_ends(cfg)
    fold_dir = tmp_path / "fold"
    _stages(config_mod.fold_config(cfg, end), tmp_path, fold_dir)
    main = tmp_path / "main"
    _stages(cfg, tmp_path, main, folds=[fold_dir / "reconstruction.nc"])
    ev = main / "evaluation"
    _run("evaluate", "--config-json", _json(cfg, "evaluation"), "--reconstruction", main / "reconstruction.nc",
         "--baselines", main / "baselines.nc", "--grid", tmp_path / "grid.nc", "--maps", ev / "maps.nc",
         "--table", ev / "scores.csv", "--calibration", ev / "calibration.csv", "--spread-skill", ev / "spread.csv",
         "--spreads", ev / "spreads.nc", "--scores-by-lead", ev / "by_lead.csv",
         "--fold-reconstructions", fold_dir / "reconstruction.nc", "--fold-baselines", fold_dir / "baselines.nc")
    _run("build_product", "--config-json", _json(cfg, "sources"), "--reconstruction", main / "reconstruction.nc",
         "--output", main / "product.nc")

    rec = xr.open_dataset(main / "reconstruction.nc").load()
    flags = dict(zip(rec["month_flag"].attrs["flag_meanings"].split(), rec["month_flag"].attrs["flag_values"]))
    months = pd.DatetimeIndex(rec["time"].values)
    hindcast = rec["month_flag"].values == flags["hindcast"]
    assert months[hindcast][-1] == pd.Timestamp("2002-03") and hindcast.sum() == 75
    land = np.isfinite(rec["twsa"].sel(time="2008-06-01").values)    # the land cells of the reconstruction
    assert land.sum() > 20
    one = rec.sel(time="1998-06-01")                      # 46 months before the first training month
    assert np.isfinite(one["twsa"].values[land]).all() and np.isfinite(one["truth"].values[land]).all()
    assert np.isnan(one["observed_twsa"].values).all()
    assert float(rec["twsa_std"].sel(time="1996-06-01").mean()) >= float(rec["twsa_std"].sel(time="2008-06-01").mean())

    scores = pd.read_csv(ev / "scores.csv")
    row = scores[(scores["period"] == "hindcast") & (scores["method"] == "bcnn")].iloc[0]
    assert row["months"] == 73 and np.isfinite(row["rmse_median"]) and np.isfinite(row["crps"])
    by_lead = pd.read_csv(ev / "by_lead.csv")
    bcnn = by_lead[by_lead["method"] == "bcnn"].set_index(["side", "lead_years"])
    assert set(bcnn.index) >= {("before", "0-5"), ("before", "5-10"), ("after", "0-5")}
    assert bcnn.loc[("before", "0-5"), "months"] == 60 and bcnn.loc[("before", "5-10"), "months"] == 13
    assert (by_lead["reference"] == "truth").all()

    prod = xr.open_dataset(main / "product.nc")
    meanings = dict(zip(prod["month_flag"].attrs["flag_meanings"].split(), prod["month_flag"].attrs["flag_values"]))
    assert (prod["month_flag"].values == meanings["hindcast"]).sum() == 75
    assert np.isfinite(prod["twsa_std"].sel(time="1998-06-01").values[land]).all()
