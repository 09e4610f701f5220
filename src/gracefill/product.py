"""The product file: gap-filled TWSA on land for every month, with its uncertainty and flags.

``twsa`` is GRACE / GRACE-FO where a cell is observed and the BCNN reconstruction's predictive
mean elsewhere (:func:`gracefill.drought.gap_filled`, the series the drought analysis uses).
Where the value is the reconstruction, ``twsa_std`` is its total predictive standard deviation
and ``twsa_quantile`` the quantiles of its predictive distribution: the mixture of the particles
(1/S) sum_s N(y_s, sigma_s^2), with the particles' spread about their mean stretched by
``calibration_scale`` (:func:`gracefill.calibration.scaled_samples`) and each noise standard
deviation sigma_s = exp(-log_beta_s / 2) by the same factor, the distribution the scores and
the drought probabilities use; N(twsa, twsa_std^2) when the reconstruction keeps no particles;
the Student-t with mean twsa, standard deviation twsa_std and ``calibration_dof`` degrees of
freedom when the calibration chose finite tails (``prediction.calibration_family``).
Where the value is GRACE, both are missing: the reconstruction carries no GRACE uncertainty.
``reconstruction_std`` keeps the BCNN's spread for every month. ``month_flag`` says where each
month's values come from (:data:`PRODUCT_FLAGS`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import ndtr, ndtri

from gracefill import calibration as ca
from gracefill import drought as dr
from gracefill import months as mo
from gracefill.metrics import standard_quantile, student_t_std_factor

#: CF flag values of the product's ``month_flag``: GRACE / GRACE-FO values, a month missing
#: inside the record filled by the reconstruction, a month of the inter-mission gap, a month
#: before the first GRACE month (hindcast) or after the last (forecast), both reconstructed.
PRODUCT_FLAGS = {"observed": 0, "reconstructed": 1, "gap": 2, "hindcast": 3, "forecast": 4}
DEFAULT_QUANTILES = (0.05, 0.5, 0.95)
#: variables of the reconstruction the product is built from (twsa_samples, log_beta and
#: calibration_scale are used where present)
REQUIRED = ("twsa", "twsa_std", "observed_twsa", "month_flag")
#: largest number of (particle x level x value) CDF terms evaluated at once
_BLOCK_TERMS = 1 << 22


def check_levels(levels: Sequence[float]) -> np.ndarray:
    """``levels`` as a float array, each in (0, 1), increasing, at least one."""
    q = np.asarray(levels, dtype=np.float64).reshape(-1)
    if q.size == 0 or not np.all((q > 0) & (q < 1)):
        raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {list(q)}")
    if np.any(np.diff(q) <= 0):
        raise ValueError(f"quantile levels must be increasing and distinct, got {list(q)}")
    return q


def mixture_quantiles(means: np.ndarray, stds: np.ndarray, levels: Sequence[float],
                      xtol: float = 1e-6) -> np.ndarray:
    """Quantiles of equal-weight Gaussian mixtures by bisection on the mixture CDF.

    ``means`` (S, ...) holds the S component means of one mixture per trailing index, ``stds``
    their standard deviations (broadcast against ``means``; 0 gives a point mass). Returns
    (len(levels), ...) float64 in the means' units, within ``xtol`` of the exact quantile; NaN
    where a component is NaN. Vectorised over mixtures, in blocks that bound the memory.
    """
    q = check_levels(levels)
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim < 1 or mu.shape[0] == 0:
        raise ValueError(f"means must have a leading component dim of size >= 1, got shape {mu.shape}")
    sd = np.broadcast_to(np.asarray(stds, dtype=np.float64), mu.shape)
    shape = mu.shape[1:]
    mu, sd = mu.reshape(mu.shape[0], -1), sd.reshape(mu.shape[0], -1)
    valid = np.isfinite(mu).all(0) & np.isfinite(sd).all(0) & (sd >= 0).all(0)
    out = np.full((q.size, mu.shape[1]), np.nan)
    # F(lo) <= Phi(-z) <= q[0] and F(hi) >= Phi(z) >= q[-1]: every level lies inside [lo, hi]
    z = max(-ndtri(q[0]), ndtri(q[-1]))
    block = max(1, _BLOCK_TERMS // (mu.shape[0] * q.size))
    columns = np.flatnonzero(valid)
    for start in range(0, columns.size, block):
        cols = columns[start:start + block]
        m = mu[:, cols][:, None, :]                                            # (S, 1, N)
        s = np.maximum(sd[:, cols], np.finfo(np.float64).tiny)[:, None, :]
        lo = np.broadcast_to((m - z * s).min(0), (q.size, cols.size)).copy()  # (L, N)
        hi = np.broadcast_to((m + z * s).max(0), (q.size, cols.size)).copy()
        steps = int(np.ceil(np.log2(max(float((hi - lo).max()), xtol) / xtol))) + 1
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            below = ndtr((mid[None] - m) / s).mean(0) < q[:, None]
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        out[:, cols] = 0.5 * (lo + hi)
    return out.reshape(q.size, *shape)


def month_flags(rec: xr.Dataset) -> np.ndarray:
    """:data:`PRODUCT_FLAGS` of every month of the reconstruction ``rec``: observed where GRACE
    has a value in some cell; gap, hindcast or forecast where the reconstruction flags the month
    so; reconstructed otherwise."""
    flag = np.asarray(rec["month_flag"].values)
    known = np.isin(flag, list(mo.MONTH_FLAGS.values()))
    if not known.all():
        raise ValueError(f"month_flag holds {sorted(set(flag[~known].tolist()))}; expected "
                         f"{', '.join(f'{v} ({k})' for k, v in mo.MONTH_FLAGS.items())}")
    space = [d for d in rec["observed_twsa"].dims if d != "time"]
    observed = rec["observed_twsa"].notnull().any(space).transpose("time").values
    out = np.full(flag.shape, PRODUCT_FLAGS["reconstructed"], dtype=np.int8)
    for name in ("gap", "hindcast", "forecast"):
        out[flag == mo.MONTH_FLAGS[name]] = PRODUCT_FLAGS[name]
    return np.where(observed, PRODUCT_FLAGS["observed"], out).astype(np.int8)


def predictive_quantiles(rec: xr.Dataset, where: xr.DataArray, levels: Sequence[float] = DEFAULT_QUANTILES,
                         xtol: float = 1e-6) -> xr.DataArray:
    """Quantiles (dim ``quantile`` first, then ``rec.twsa``'s dims) of the reconstruction's
    predictive distribution where ``where`` (bool, like ``rec.twsa``) is true, NaN elsewhere.

    With Student-t tails from the calibration: that Student-t; else with ``twsa_samples``: the
    calibrated particle mixture (see the module); without: the Gaussian N(twsa, twsa_std^2). The
    method is named in the ``quantile_method`` attribute.
    """
    q = check_levels(levels)
    dims = rec["twsa"].dims
    where = where.transpose(*dims)
    months = np.flatnonzero(where.any([d for d in dims if d != "time"]).values)
    out = np.full((q.size, *rec["twsa"].shape), np.nan, dtype=np.float32)
    sub, mask = rec.isel(time=months), where.isel(time=months).values
    samples = ca.scaled_samples(sub)
    dof = ca.calibration_dof(rec)
    if samples is not None and np.isinf(dof):
        if "log_beta" not in rec:
            raise ValueError("twsa_samples without log_beta: the particles' noise precisions are needed")
        noise = np.exp(-0.5 * rec["log_beta"].transpose("particle").values.astype(np.float64))
        scale = sub["calibration_scale"].transpose(*dims).values[mask] if "calibration_scale" in sub else 1.0
        particles = samples.transpose("particle", *dims).values[:, mask]
        values = mixture_quantiles(particles, noise[:, None] * scale, q, xtol=xtol)
        method = "particle_mixture"
        stretch = ("both multiplied by calibration_scale" if "calibration_scale" in sub
                   else "both as trained (the reconstruction is not calibrated)")
        comment = (f"quantiles of the particle mixture (1/S) sum_s N(y_s, sigma_s^2), the particles' spread "
                   f"about their mean and each noise standard deviation sigma_s = exp(-log_beta_s / 2) {stretch}, "
                   f"by bisection on the mixture's cumulative distribution")
    else:  # parametric: the calibration's Student-t, or the Gaussian without particles
        mean = sub["twsa"].transpose(*dims).values[mask].astype(np.float64)
        std = sub["twsa_std"].transpose(*dims).values[mask].astype(np.float64)
        standard = standard_quantile(q, dof) / student_t_std_factor(dof)
        if np.isinf(dof):
            method = "gaussian"
            comment = ("Gaussian quantiles twsa + twsa_std * z_p: the reconstruction file keeps no particle samples "
                       "(prediction.save_samples false), so the particle mixture is not available")
        else:
            method = "student_t"
            comment = (f"Student-t quantiles twsa + twsa_std / sqrt(dof / (dof - 2)) * t_p, dof = {dof:g} degrees of "
                       f"freedom chosen with the spread calibration on the validation folds")
        values = mean[None] + std[None] * standard[:, None]
    block = out[:, months]
    block[:, mask] = values
    out[:, months] = block
    units = rec["twsa"].attrs.get("units", "1")
    return xr.DataArray(out, dims=("quantile", *dims), coords={"quantile": q, **{d: rec[d] for d in dims if d in rec.coords}},
                        attrs={"long_name": "quantiles of the predictive distribution of the reconstructed twsa",
                               "units": units, "quantile_method": method, "comment": comment})


def _cell_bounds(centres: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray | None:
    """(n, 2) cell edges halfway between the centres, the ends half a step out; None for < 2 cells."""
    c = np.asarray(centres, dtype=np.float64)
    if c.size < 2:
        return None
    edges = np.concatenate([[c[0] - (c[1] - c[0]) / 2], (c[1:] + c[:-1]) / 2, [c[-1] + (c[-1] - c[-2]) / 2]])
    if limits is not None:
        edges = np.clip(edges, *limits)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def _coordinates(rec: xr.Dataset) -> tuple[dict, dict]:
    """CF coordinates of the product (time, lat, lon with their attrs) and their bounds."""
    months = mo.to_month_start(rec["time"].values)
    time = xr.DataArray(months.values.astype("datetime64[ns]"), dims="time", attrs={
        "standard_name": "time", "long_name": "month (first day; the values are monthly)", "axis": "T",
        "bounds": "time_bnds"})
    coords, bounds = {"time": time}, {"time_bnds": (("time", "nv"), np.stack(
        [months.values, (months + pd.offsets.MonthBegin(1)).values], axis=1).astype("datetime64[ns]"))}
    for name, limits, attrs in (
            ("lat", (-90.0, 90.0), {"standard_name": "latitude", "long_name": "latitude",
                                    "units": "degrees_north", "axis": "Y"}),
            ("lon", None, {"standard_name": "longitude", "long_name": "longitude",
                           "units": "degrees_east", "axis": "X"})):
        if name not in rec.coords:
            continue
        edges = _cell_bounds(rec[name].values, limits)
        extra = {"bounds": f"{name}_bnds"} if edges is not None else {}
        coords[name] = xr.DataArray(rec[name].values, dims=name, attrs={**attrs, **extra})
        if edges is not None:
            bounds[f"{name}_bnds"] = ((name, "nv"), edges)
    return coords, bounds


def build_product(rec: xr.Dataset, levels: Sequence[float] = DEFAULT_QUANTILES, xtol: float = 1e-6) -> xr.Dataset:
    """The product Dataset of a reconstruction ``rec`` (the file ``predict`` writes): gap-filled
    ``twsa``, ``twsa_std`` and ``twsa_quantile`` where the value is reconstructed,
    ``reconstruction_std`` of every month, ``month_flag``, CF coordinates with bounds. Values in
    the reconstruction's units; see the module for the definitions."""
    missing = [name for name in REQUIRED if name not in rec]
    if missing:
        raise ValueError(f"the reconstruction lacks variable(s) {', '.join(missing)}")
    if "time" not in rec["twsa"].dims:
        raise ValueError(f"twsa must have a 'time' dim, got {rec['twsa'].dims}")
    dims = rec["twsa"].dims
    units = rec["twsa"].attrs.get("units", "1")
    filled = dr.gap_filled(rec["observed_twsa"], rec["twsa"]).transpose(*dims)
    reconstructed = (rec["observed_twsa"].isnull() & rec["twsa"].notnull()).transpose(*dims)
    flags = month_flags(rec)
    quantiles = predictive_quantiles(rec, reconstructed, levels, xtol=xtol)
    calibrated = "calibration_scale" in rec
    spread = ("calibrated on the validation folds (calibration_scale of the reconstruction)" if calibrated
              else "as trained, not calibrated")
    coords, bounds = _coordinates(rec)

    def field(da: xr.DataArray, **attrs) -> xr.DataArray:
        return xr.DataArray(np.asarray(da.values, dtype=np.float32), dims=da.dims,
                            coords={d: coords[d] for d in da.dims if d in coords}, attrs={"units": units, **attrs})

    out = xr.Dataset({
        "twsa": field(filled, long_name="terrestrial water storage anomaly, gap-filled (liquid water equivalent thickness)",
                      comment="GRACE / GRACE-FO (observed_twsa of the reconstruction) where observed; the BCNN "
                              "reconstruction's predictive mean where GRACE has no value (month_flag reconstructed, "
                              "gap, hindcast and forecast, and any cell GRACE lacks in an observed month); land cells only, NaN over "
                              "the ocean",
                      ancillary_variables="twsa_std twsa_quantile month_flag"),
        "twsa_std": field(rec["twsa_std"].transpose(*dims).where(reconstructed),
                          long_name="total standard deviation of the reconstructed twsa",
                          comment=f"where twsa is the reconstruction: its total predictive standard deviation "
                                  f"(spread of the particles and their noise, {spread}). Missing (NaN) where twsa is "
                                  f"GRACE: the reconstruction file carries no GRACE uncertainty; take it from the "
                                  f"GRACE product itself. reconstruction_std is the BCNN's spread in every month"),
        "reconstruction_std": field(rec["twsa_std"].transpose(*dims),
                                    long_name="total predictive standard deviation of the BCNN reconstruction",
                                    comment=f"every month, including those where twsa is GRACE (there it is the "
                                            f"reconstruction's spread, not an uncertainty of the GRACE value); {spread}"),
        "twsa_quantile": xr.DataArray(quantiles.values, dims=quantiles.dims,
                                      coords={d: coords[d] for d in quantiles.dims if d in coords},
                                      attrs={**quantiles.attrs, "comment": quantiles.attrs["comment"] +
                                             "; where twsa is the reconstruction, NaN where it is GRACE"}),
        "month_flag": xr.DataArray(flags, dims="time", coords={"time": coords["time"]}, attrs={
            "long_name": "source of the month's twsa", "units": "1",
            "flag_values": np.array(list(PRODUCT_FLAGS.values()), dtype=np.int8),
            "flag_meanings": " ".join(PRODUCT_FLAGS),
            "comment": "observed: GRACE / GRACE-FO values; reconstructed: a month missing inside the record, "
                       "outside the inter-mission gap; gap: a month of the gap between GRACE and GRACE-FO; "
                       "hindcast: a month before the first GRACE month; forecast: a month after the last GRACE "
                       "month of the record; every month but the observed ones is filled by the BCNN "
                       "reconstruction, whose spread grows with the distance to the training window"}),
        **bounds,
    }, coords={"quantile": ("quantile", quantiles["quantile"].values,
                            {"long_name": "cumulative probability of the quantile", "units": "1"})})
    labels = mo.month_labels(pd.DatetimeIndex(out["time"].values))
    gap = [label for label, f in zip(labels, flags) if f == PRODUCT_FLAGS["gap"]]
    gap_span = f", {gap[0]} to {gap[-1]}" if gap else ""
    counts = {name: int((flags == value).sum()) for name, value in PRODUCT_FLAGS.items()}
    out.attrs.update({
        "title": "gracefill gap-filled terrestrial water storage anomalies (GRACE / GRACE-FO and a Bayesian CNN "
                 "reconstruction)",
        "summary": (f"Monthly terrestrial water storage anomalies on land, {labels[0]} to {labels[-1]}: GRACE / "
                    f"GRACE-FO where observed ({counts['observed']} months), the predictive mean of a Bayesian "
                    f"convolutional neural network trained by Stein variational gradient descent elsewhere "
                    f"({counts['reconstructed']} months missing in the record, {counts['gap']} months of "
                    f"the gap between the missions{gap_span}, {counts['hindcast']} before the record and "
                    f"{counts['forecast']} after it), with the reconstruction's standard deviation and quantiles"),
        "references": "Mo, S., et al. (2022), Water Resources Research 58, e2022WR031997; "
                      "Mo, S., et al. (2022), Journal of Hydrology 604, 127244",
        "time_coverage_start": labels[0], "time_coverage_end": labels[-1],
        "quantile_method": quantiles.attrs["quantile_method"],
        **{key: rec.attrs[key] for key in ("train_window", "particles", "backbone", "calibration", "calibration_model")
           if key in rec.attrs},
    })
    return out
