"""Each baseline recovers a known noise-free relationship and is fitted on training months only."""
from __future__ import annotations

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
    fit = bl.fit_regression(inputs, target, train_mask())
    ok = np.ones((NY, NX), bool)
    ok[2, 2] = ok[0, 3] = False
    np.testing.assert_allclose(fit["coef"].values[:, ok], coef[:, ok], atol=1e-9)
    np.testing.assert_allclose(fit["intercept"].values[ok], intercept[ok], atol=1e-9)
    assert int(fit["n_train"][1, 1]) == 52
    pred = bl.regression(inputs, target, train_mask())
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
    a = bl.fit_regression(inputs, target, mask)
    b = bl.fit_regression(perturbed_x, perturbed_y, mask)
    for v in a:
        np.testing.assert_array_equal(a[v].values, b[v].values)
    # ordinary least squares of one cell by numpy.linalg.lstsq
    design = np.column_stack([np.ones(mask.sum()), inputs.values[mask][:, :, 1, 2]])
    ref = np.linalg.lstsq(design, target.values[mask][:, 1, 2], rcond=None)[0]
    np.testing.assert_allclose(a["coef"].values[:, 1, 2], ref[1:], rtol=1e-9)
    np.testing.assert_allclose(a["intercept"].values[1, 2], ref[0], rtol=1e-9)
    # a target without the gap months is matched to the inputs' axis
    short = target.isel(time=np.flatnonzero(~np.isin(np.arange(len(MONTHS)), range(70, 80))))
    np.testing.assert_array_equal(bl.fit_regression(inputs, short, mask)["coef"].values, a["coef"].values)


def test_regression_ridge_handles_collinear_channels():
    rng = np.random.default_rng(4)
    inputs, target, *_ = regression_truth(rng, channels=2)
    twin = xr.concat([inputs, inputs.isel(channel=[1]).assign_coords(channel=[2])], dim="channel")
    assert np.isnan(bl.fit_regression(twin, target, train_mask())["coef"].values).all()
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

    plain = bl.land_model(stwsa_mm, target)
    np.testing.assert_allclose(plain.values, stwsa_mm.values / 10)
    assert plain.attrs["units"] == "cm"

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
