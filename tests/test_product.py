"""The product file: gap-filled values, standard deviations, mixture quantiles, flags, the file itself."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.optimize import brentq
from scipy.stats import norm

from gracefill import months as mo
from gracefill import product as pr
from gracefill.cli import main
from gracefill.io import write_netcdf

#: GRACE's status of the six months of the hand-made reconstruction (MONTH_FLAGS)
STATUS = ["missing", "observed", "observed", "gap", "gap", "observed"]
EXPECTED_FLAGS = ["reconstructed", "observed", "observed", "gap", "gap", "observed"]


def mixture_ppf(level, means, stds):
    """Reference quantile of the equal-weight Gaussian mixture by scipy's root finder."""
    means, stds = np.asarray(means, float), np.asarray(stds, float)
    cdf = lambda x: norm.cdf(x, means, stds).mean() - level  # noqa: E731
    return brentq(cdf, means.min() - 20 * stds.max(), means.max() + 20 * stds.max(), xtol=1e-12)


def reconstruction(samples: bool = True, calibrated: bool = True) -> xr.Dataset:
    """Six months on 2 x 3 cells, cell (0, 2) ocean; GRACE observed in months 1, 2 and 5, except
    cell (1, 1) of month 2; two particles with different noise; a calibration factor of 1.5 in
    months 3 and 4 (the gap), 2 elsewhere."""
    rng = np.random.default_rng(3)
    months = mo.month_range("2017-05", "2017-10")
    shape = (len(months), 2, 3)
    land = np.ones(shape[1:], bool)
    land[0, 2] = False
    particles = rng.normal(10.0, 1.5, size=(2, *shape)).astype(np.float32)
    particles[:, :, ~land] = np.nan
    mean = particles.mean(0)
    log_beta = np.array([np.log(1 / 4.0), np.log(1 / 0.25)], np.float32)  # noise std 2 and 0.5
    raw_std = np.sqrt(particles.var(0) + np.exp(-log_beta.astype(np.float64)).mean()).astype(np.float32)
    scale = np.where(np.isin(np.arange(len(months)), [3, 4])[:, None, None], 1.5, 2.0).astype(np.float32)
    scale = np.where(land, scale, np.nan).astype(np.float32)
    observed = np.where(np.isin(STATUS, ["observed"])[:, None, None], mean + rng.normal(0, 3, shape), np.nan)
    observed[:, ~land] = np.nan
    observed[2, 1, 1] = np.nan
    coords = {"time": months, "lat": [-1.0, 1.0], "lon": [10.0, 12.0, 14.0]}
    dims = ("time", "lat", "lon")
    ds = xr.Dataset({
        "twsa": (dims, mean, {"units": "cm"}),
        "twsa_std": (dims, (raw_std * scale if calibrated else raw_std).astype(np.float32), {"units": "cm"}),
        "observed_twsa": (dims, observed.astype(np.float32), {"units": "cm"}),
        "month_flag": ("time", np.array([mo.MONTH_FLAGS[s] for s in STATUS], np.int8)),
        "log_beta": ("particle", log_beta),
    }, coords=coords, attrs={"train_window": "2002-04..2014-03", "particles": 2})
    if samples:
        ds["twsa_samples"] = (("particle", *dims), particles, {"units": "cm"})
    if calibrated:
        ds["calibration_scale"] = (dims, scale, {"units": "1"})
    return ds


def test_gap_filled_values_std_and_flags():
    rec = reconstruction()
    out = pr.build_product(rec)
    obs, rec_twsa = rec["observed_twsa"].values, rec["twsa"].values
    seen = np.isfinite(obs)
    assert seen.sum() == 3 * 5 - 1
    # GRACE exactly where observed, the reconstruction exactly elsewhere on land, NaN over the ocean
    np.testing.assert_array_equal(out["twsa"].values[seen], obs[seen])
    assert np.array_equal(out["twsa"].values[~seen], rec_twsa[~seen], equal_nan=True)
    assert np.isnan(out["twsa"].values[:, 0, 2]).all() and np.isfinite(out["twsa"].values[:, [0, 0, 1, 1, 1],
                                                                                            [0, 1, 0, 1, 2]]).all()
    np.testing.assert_array_equal(out["twsa"].values[3:5], rec_twsa[3:5])        # the gap months
    # the std of the reconstruction where it fills, none where GRACE is; reconstruction_std everywhere
    filled = ~seen & np.isfinite(rec_twsa)
    np.testing.assert_array_equal(out["twsa_std"].values[filled], rec["twsa_std"].values[filled])
    assert np.isnan(out["twsa_std"].values[seen]).all()
    assert np.array_equal(out["reconstruction_std"].values, rec["twsa_std"].values, equal_nan=True)
    assert "no GRACE uncertainty" in out["twsa_std"].attrs["comment"]
    # cell (1, 1) of month 2 is filled by the reconstruction in an observed month
    assert out["twsa"].values[2, 1, 1] == rec_twsa[2, 1, 1] and np.isfinite(out["twsa_std"].values[2, 1, 1])
    flag = out["month_flag"]
    meanings = dict(zip(flag.attrs["flag_meanings"].split(), flag.attrs["flag_values"].tolist()))
    assert meanings == {"observed": 0, "reconstructed": 1, "gap": 2, "hindcast": 3, "forecast": 4}
    assert flag.dtype == np.int8 and flag.attrs["flag_values"].dtype == np.int8
    assert flag.values.tolist() == [meanings[name] for name in EXPECTED_FLAGS]
    for name in ("twsa", "twsa_std", "reconstruction_std", "twsa_quantile"):
        assert out[name].attrs["units"] == "cm" and out[name].attrs["long_name"], name
        assert "standard_name" not in out[name].attrs, name
    assert out["twsa"].dims == ("time", "lat", "lon")
    assert out["twsa_quantile"].dims == ("quantile", "time", "lat", "lon")


def test_quantiles_are_those_of_the_calibrated_particle_mixture():
    rec = reconstruction()
    out = pr.build_product(rec)
    q = out["twsa_quantile"]
    assert q["quantile"].values.tolist() == [0.05, 0.5, 0.95] and q.attrs["quantile_method"] == "particle_mixture"
    seen = np.isfinite(rec["observed_twsa"].values)
    assert np.isnan(q.values[:, seen]).all()
    particles, noise = rec["twsa_samples"].values.astype(float), np.exp(-0.5 * rec["log_beta"].values.astype(float))
    checked = 0
    for t, i, j in zip(*np.nonzero(~seen & np.isfinite(rec["twsa"].values))):
        c = float(rec["calibration_scale"].values[t, i, j])
        y = particles[:, t, i, j]
        means = y.mean() + c * (y - y.mean())                     # the spread stretched about the mean
        for k, level in enumerate(q["quantile"].values):
            assert abs(q.values[k, t, i, j] - mixture_ppf(level, means, c * noise)) < 1e-3
        checked += 1
    assert checked == 3 * 5 + 1


def test_uncalibrated_quantiles_use_the_raw_particles():
    rec = reconstruction(calibrated=False)
    q = pr.build_product(rec)["twsa_quantile"]
    y = rec["twsa_samples"].values[:, 3, 1, 2].astype(float)
    noise = np.exp(-0.5 * rec["log_beta"].values.astype(float))
    for k, level in enumerate((0.05, 0.5, 0.95)):
        assert abs(q.values[k, 3, 1, 2] - mixture_ppf(level, y, noise)) < 1e-3


def test_without_samples_the_quantiles_are_gaussian():
    rec = reconstruction(samples=False)
    out = pr.build_product(rec, levels=(0.1, 0.9))
    q = out["twsa_quantile"]
    assert q.attrs["quantile_method"] == "gaussian" and out.attrs["quantile_method"] == "gaussian"
    assert "no particle samples" in q.attrs["comment"]
    mean, std = rec["twsa"].values[3:5], rec["twsa_std"].values[3:5]
    np.testing.assert_allclose(q.values[:, 3:5], mean + std * norm.ppf([0.1, 0.9])[:, None, None, None], rtol=1e-6)


def test_with_student_t_tails_the_quantiles_are_the_calibrations_student_t():
    from scipy.stats import t as student_t

    rec = reconstruction()
    rec.attrs.update(calibration_family="student_t", calibration_dof=5.0)
    q = pr.build_product(rec, levels=(0.05, 0.5, 0.95))["twsa_quantile"]
    assert q.attrs["quantile_method"] == "student_t" and "5 degrees of freedom" in q.attrs["comment"]
    mean, std = rec["twsa"].values[3:5], rec["twsa_std"].values[3:5]
    expected = mean + std / np.sqrt(5 / 3) * student_t.ppf([0.05, 0.5, 0.95], 5)[:, None, None, None]
    np.testing.assert_allclose(q.values[:, 3:5], expected, rtol=1e-5)


def test_mixture_quantiles_of_a_known_two_particle_mixture():
    means, stds = np.array([0.0, 3.0]), np.array([1.0, 0.5])
    levels = (0.05, 0.25, 0.5, 0.95)
    got = pr.mixture_quantiles(means, stds, levels)
    expected = [mixture_ppf(level, means, stds) for level in levels]
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert abs(got[2] - 1.5) > 0.1  # a skewed mixture: the median is not the midpoint
    # one component: the Gaussian quantiles; many mixtures at once, a NaN component gives NaN
    one = pr.mixture_quantiles(np.array([[2.0, 5.0, np.nan]]), np.array([[3.0, 0.1, 1.0]]), (0.05, 0.95))
    np.testing.assert_allclose(one[:, :2], [[2 + 3 * norm.ppf(0.05), 5 + 0.1 * norm.ppf(0.05)],
                                            [2 + 3 * norm.ppf(0.95), 5 + 0.1 * norm.ppf(0.95)]], atol=1e-6)
    assert np.isnan(one[:, 2]).all()
    # a zero spread is a point mass: the median of two equal point masses at 4 is 4
    assert abs(pr.mixture_quantiles(np.array([4.0, 4.0]), 0.0, (0.5,))[0] - 4) < 1e-6
    with pytest.raises(ValueError, match="between 0 and 1"):
        pr.mixture_quantiles(means, stds, (0.5, 1.0))
    with pytest.raises(ValueError, match="increasing"):
        pr.check_levels((0.9, 0.1))


def test_unknown_month_flag_is_refused():
    rec = reconstruction()
    rec["month_flag"].values[0] = 7
    with pytest.raises(ValueError, match=r"month_flag holds \[7\]"):
        pr.build_product(rec)
    with pytest.raises(ValueError, match="lacks variable.*observed_twsa"):
        pr.build_product(reconstruction().drop_vars("observed_twsa"))


def test_product_file_is_chunked_compressed_and_cf(tmp_path):
    out = pr.build_product(reconstruction())
    path = write_netcdf(out, tmp_path / "gracefill_twsa.nc", chunks={"time": 4})
    ds = xr.open_dataset(path)
    assert ds["twsa"].encoding["zlib"] and ds["twsa"].encoding["chunksizes"] == (4, 2, 3)
    assert ds["twsa_quantile"].encoding["chunksizes"] == (3, 4, 2, 3)
    assert np.array_equal(ds["twsa"].values, out["twsa"].values, equal_nan=True)
    assert ds["month_flag"].dtype == np.int8
    assert ds["time"].attrs["bounds"] == "time_bnds" and ds["lat"].attrs["bounds"] == "lat_bnds"
    assert str(ds["time_bnds"].values[5, 1])[:10] == "2017-11-01"
    np.testing.assert_array_equal(ds["lon_bnds"].values[0], [9.0, 11.0])
    assert ds.attrs["Conventions"].startswith("CF-") and ds.attrs["time_coverage_end"] == "2017-10"


def test_cli_writes_the_product_and_refuses_bad_input(tmp_path, capsys):
    rec_path = write_netcdf(reconstruction(), tmp_path / "reconstruction.nc")
    out_path = tmp_path / "gracefill_twsa.nc"
    assert main(["build_product", "--reconstruction", str(rec_path), "--output", str(out_path)]) == 0
    ds = xr.open_dataset(out_path)
    assert ds.attrs["source_files"] == "reconstruction.nc" and ds.attrs["config_hash"]
    assert ds.attrs["history"].endswith(" gracefill build_product")
    assert ds["twsa"].encoding["chunksizes"] == (6, 2, 3)  # 12-month chunks, clipped to the 6 months
    capsys.readouterr()
    write_netcdf(reconstruction().drop_vars("month_flag"), tmp_path / "bad.nc")
    assert main(["build_product", "--reconstruction", str(tmp_path / "bad.nc"), "--output", str(out_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.nc: missing variable(s) month_flag" in err[0]
    assert main(["build_product", "--reconstruction", str(rec_path), "--output", str(out_path),
                 "--quantiles", "0.5", "1.5"]) == 1
    assert capsys.readouterr().err.strip().endswith("--quantiles: expected distinct levels strictly between "
                                                    "0 and 1, got [0.5, 1.5]")
