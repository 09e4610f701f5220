"""The BCNN's spread calibrated on the validation folds: fit, application, scoring, no leakage."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.stats import norm

from gracefill import calibration as ca
from gracefill import metrics as me
from gracefill.analysis import Forecast, _probabilistic, bcnn_forecast
from gracefill.months import SPLIT_FLAGS, month_range

MONTHS = month_range("2002-01", "2009-12")
LAT, LON = np.arange(4.0), np.arange(5.0)


def fold_reconstruction(fit_end: str, error_factor: float, seed: int) -> xr.Dataset:
    """A fold whose errors after ``fit_end`` are ``error_factor`` times its predictive std."""
    rng = np.random.default_rng(seed)
    shape = (len(MONTHS), LAT.size, LON.size)
    std = np.full(shape, 2.0)
    mean = rng.normal(0, 5, shape)
    after = np.asarray(MONTHS > np.datetime64(f"{fit_end}-01"))
    noise = np.where(after[:, None, None], error_factor, 1.0) * std * rng.normal(size=shape)
    dims, coords = ("time", "lat", "lon"), {"time": MONTHS, "lat": LAT, "lon": LON}
    split = np.where(after, SPLIT_FLAGS["test"], SPLIT_FLAGS["train"]).astype(np.int8)
    particles = mean[None] + rng.normal(0, 1.0, (4, *shape))
    return xr.Dataset(
        {"twsa": (dims, mean, {"units": "cm"}), "twsa_std": (dims, std, {"units": "cm"}),
         "observed_twsa": (dims, mean + noise, {"units": "cm"}), "split": ("time", split),
         "twsa_samples": (("particle", *dims), particles, {"units": "cm"}),
         "log_beta": ("particle", np.full(4, -np.log(3.0)))},
        coords=coords, attrs={"train_window": f"2002-01..{fit_end}"})


def test_calibration_fitted_on_folds_rescales_the_spread_and_keeps_the_raw_one():
    folds = [fold_reconstruction(end, 2.0, seed) for seed, end in enumerate(("2004-12", "2006-12"))]
    calibration = ca.fit_calibration(folds, lead_bin_months=12)
    main = fold_reconstruction("2007-12", 2.0, 9)
    out = ca.apply_calibration(main, calibration)
    assert float(out["calibration_scale"].mean()) == pytest.approx(2.0, rel=0.1)
    np.testing.assert_allclose(out["twsa_std"], main["twsa_std"] * out["calibration_scale"], rtol=1e-6)
    np.testing.assert_array_equal(out["twsa_std_uncalibrated"], main["twsa_std"])
    assert out.attrs["calibration_lead_bin_months"] == 12
    with pytest.raises(ValueError, match="already calibrated"):
        ca.apply_calibration(out, calibration)
    # the fit reads only the folds' validation months: their training months may hold anything
    poisoned = [f.copy() for f in folds]
    for f in poisoned:
        f["observed_twsa"] = f["observed_twsa"].where(f["split"] == SPLIT_FLAGS["test"], 1e6)
    xr.testing.assert_identical(ca.fit_calibration(poisoned, 12), calibration)


def test_absolute_errors_carry_over_to_a_model_with_a_narrower_raw_spread():
    """The folds' raw spread is 2 cm and their errors 4 cm; a final model with a raw spread of
    1 cm gets the folds' 4 cm under ``absolute`` and only 2 cm under ``ratio``."""
    folds = [fold_reconstruction(end, 2.0, seed) for seed, end in enumerate(("2004-12", "2006-12"))]
    main = fold_reconstruction("2007-12", 2.0, 9)
    main["twsa_std"] = main["twsa_std"] / 2
    absolute = ca.apply_calibration(main, ca.fit_calibration(folds, 12, model="absolute"))
    ratio = ca.apply_calibration(main, ca.fit_calibration(folds, 12, model="ratio"))
    assert float(absolute["twsa_std"].mean()) == pytest.approx(4.0, rel=0.1)
    assert float(ratio["twsa_std"].mean()) == pytest.approx(2.0, rel=0.1)
    assert absolute.attrs["calibration_model"] == "absolute" and ratio.attrs["calibration_model"] == "ratio"
    assert absolute.attrs["calibration_tail_level"] == "none"
    # the folds' validation scores are refitted with the settings the file was calibrated with
    assert ca.refit_like(ratio, folds).attrs["model"] == "ratio"


def test_tail_factor_matches_the_chosen_quantile_out_of_fold():
    """Student-t errors (3 degrees of freedom) have heavier tails than their variance implies:
    a variance match over-covers at 50 % and under-covers at 99 %; the tail factor fixes the level asked."""
    rng = np.random.default_rng(7)
    folds = []
    for seed, end in enumerate(("2003-12", "2005-12", "2007-12")):
        fold = fold_reconstruction(end, 1.0, seed)
        fold["observed_twsa"] = fold["twsa"] + 2.0 * rng.standard_t(3, fold["twsa"].shape)
        folds.append(fold)
    for level in (0.5, 0.9):
        calibration = ca.fit_calibration(folds, 12, tail_level=level)
        z = np.concatenate([np.abs(ca.validation_errors(f)[0].values.ravel()) / ca.apply_calibration(
            f, calibration)["twsa_std"].isel(time=ca.validation_months(f)).values.ravel() for f in folds])
        assert np.mean(z < norm.ppf(0.5 + level / 2)) == pytest.approx(level, abs=0.02)
        assert calibration.attrs["tail_level"] == level
    with pytest.raises(ValueError, match="tail_level must lie between 0 and 1"):
        ca.fit_calibration(folds, 12, tail_level=1.5)
    with pytest.raises(ValueError, match="calibration model must be one of absolute, ratio, got 'cells'"):
        ca.fit_calibration(folds, 12, model="cells")


def test_student_t_calibration_covers_heavy_tailed_errors_at_50_and_90_percent():
    """Student-t errors (4 degrees of freedom, a scale per cell): the variance-matched Gaussian
    covers well over 50 % of them with its 50 % intervals; the Student-t chosen out of fold covers
    50 and 90 % of an unseen model's errors within 0.02, and its scores say so."""
    rng = np.random.default_rng(12)
    cell_scale = rng.uniform(1.0, 3.0, size=(LAT.size, LON.size))

    def with_errors(rec):
        rec["observed_twsa"] = rec["twsa"] + cell_scale * rng.standard_t(4, size=rec["twsa"].shape)
        return rec

    folds = [with_errors(fold_reconstruction(end, 1.0, seed)) for seed, end in
             enumerate(("2003-06", "2004-06", "2005-06", "2006-06", "2007-06"))]
    main = [with_errors(fold_reconstruction("2005-06", 1.0, 20 + k)) for k in range(8)]
    gaussian = ca.fit_calibration(folds, 12)
    student = ca.fit_calibration(folds, 12, family="student_t")
    dof = student.attrs["dof"]
    assert 3 <= dof <= 5 and "Student-t" in student.attrs["comment"]
    covered = {}
    for name, calibration in (("gaussian", gaussian), ("student_t", student)):
        pits = []
        for rec in main:
            out = ca.apply_calibration(rec, calibration)
            index = ca.validation_months(out)
            crps, nlp, pit = _probabilistic(bcnn_forecast(out).isel(index), out["observed_twsa"].isel(time=index))
            pits.append(pit.values.ravel())
        pit = np.concatenate(pits)
        covered[name] = [np.nanmean(np.abs(pit - 0.5) <= level / 2) for level in (0.5, 0.9)]
    assert covered["gaussian"][0] > 0.57
    assert covered["student_t"] == [pytest.approx(0.5, abs=0.02), pytest.approx(0.9, abs=0.02)]
    out = ca.apply_calibration(main[0], student)
    assert out.attrs["calibration_family"] == "student_t" and out.attrs["calibration_dof"] == dof
    assert ca.calibration_dof(out) == dof and ca.calibration_dof(main[0]) == float("inf")
    assert ca.refit_like(out, folds).attrs["dof"] == dof
    pooled = ca.apply_calibration(main[0], ca.fit_calibration(folds, 12, pooling_km=300.0))
    assert pooled.attrs["calibration_pooling_km"] == 300.0 and ca.refit_like(pooled, folds).attrs["pooling_km"] == 300.0
    # twsa_std is the t's standard deviation: c sqrt(dof / (dof - 2)) times the Gaussian fit's
    np.testing.assert_allclose(out["twsa_std"], ca.apply_calibration(main[0], gaussian)["twsa_std"]
                               * student.attrs["tail_scale"] * np.sqrt(dof / (dof - 2)), rtol=1e-5)


def test_lead_factor_grows_where_the_errors_grow_with_lead():
    fold = fold_reconstruction("2003-12", 1.0, 3)
    lead = ca.lead_months(fold, np.arange(fold.sizes["time"]))
    growth = np.where(lead > 36, 3.0, 1.0)[:, None, None]     # errors 3x larger after 3 years
    fold["observed_twsa"] = fold["twsa"] + (fold["observed_twsa"] - fold["twsa"]) * growth
    calibration = ca.fit_calibration([fold], lead_bin_months=12)
    factors = calibration["lead_factor"].values
    assert factors[-1] / factors[0] == pytest.approx(9.0, rel=0.3)


def test_stretched_mixture_scores_equal_the_explicit_mixture():
    rec = fold_reconstruction("2005-12", 1.0, 4)
    c = 1.7
    scale = xr.full_like(rec["twsa"], c)
    noise = np.exp(-rec["log_beta"].values)
    obs = rec["observed_twsa"]
    centre = rec["twsa_samples"].mean("particle")
    stretched = centre + c * (rec["twsa_samples"] - centre)
    crps, nlp, pit = _probabilistic(Forecast(rec["twsa"], None, rec["twsa_samples"], noise, scale), obs)
    np.testing.assert_allclose(crps, me.crps_ensemble(stretched, obs, noise * c ** 2), rtol=1e-6)
    np.testing.assert_allclose(nlp, me.nlp_mixture(stretched, noise * c ** 2, obs), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(pit, me.pit_samples(stretched, obs, noise * c ** 2), rtol=1e-6, atol=1e-9)
    out = ca.apply_calibration(rec, ca.fit_calibration([rec], 12))
    np.testing.assert_allclose(ca.scaled_samples(out).std("particle"),
                               rec["twsa_samples"].std("particle") * out["calibration_scale"], rtol=1e-5)


def test_no_validation_month_is_an_error():
    fold = fold_reconstruction("2009-12", 1.0, 5)
    with pytest.raises(ValueError, match="no validation month"):
        ca.fit_calibration([fold])


def test_coverage_by_lead_year_and_latitude_band():
    from gracefill.analysis import coverage_by_lead_and_region

    lat = np.array([-60.0, -10.0, 10.0, 40.0, 70.0])
    months = 30
    pit = np.full((months, lat.size, 2), 0.5)
    pit[12:, 4, :] = 0.99                       # high latitudes fall outside the 90 % interval after year 1
    da = xr.DataArray(pit, dims=("time", "lat", "lon"), coords={"lat": lat, "lon": [0.0, 1.0]})
    rows = coverage_by_lead_and_region(da, np.arange(1, months + 1), [0.9], "bcnn", "test")
    table = {(r["lead_year"], r["region"]): (r["observed"], r["values"]) for r in rows}
    assert table[(0, "all")] == (pytest.approx(1 - 18 * 2 / (months * 10)), months * 10)
    assert table[(1, "high latitudes")] == (1.0, 48) and table[(2, "high latitudes")] == (0.5, 48)  # 60S, 70N
    assert table[(3, "high latitudes")] == (0.5, 24)      # months 25-30: lead year 3
    assert table[(2, "tropics")] == (1.0, 48) and table[(2, "mid-latitudes")] == (1.0, 24)
