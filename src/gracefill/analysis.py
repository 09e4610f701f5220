"""Evaluation and drought analysis of a reconstruction: the orchestration above metrics,
baselines and drought, shared by the ``evaluate``, ``baselines`` and ``drought`` commands.

Every method (the BCNN and each baseline) is scored by the same code, on the same months and
cells, with the trend added back and as a predictive distribution: the validation folds' months
and the test and pseudo-gap months against GRACE, and, where the world's truth is known (the
synthetic twin experiment), the gap and missing months against truth. The baselines' spreads
are fitted on the validation folds only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import baselines as bl
from gracefill import calibration as ca
from gracefill import drought as dr
from gracefill import metrics as me
from gracefill import months as mo
from gracefill import predictors as pr
from gracefill.calibration import fit_window, lead_months
from gracefill.dataset import target_trend
from gracefill.months import MONTH_FLAGS, SPLIT_FLAGS

BASELINES = ("climatology_trend", "regression", "memory_regression", "land_model")


def _months(ds: xr.Dataset, flag: str) -> np.ndarray:
    return np.flatnonzero(ds["split"].values == SPLIT_FLAGS[flag])


def baseline_predictions(tensors: xr.Dataset, fields_mm: dict[str, xr.DataArray], ridge: float,
                         memory: dict) -> xr.Dataset:
    """The four baselines for every month, in the target's units, trend added back.

    (a) climatology + trend, (b) per-cell ridge regression on the same lagged inputs and (d)
    per-cell ridge regression on memory features (``memory``: time_scales and ridge; features
    from ``fields_mm``, the regridded precipitation, evaporation, runoff and land water storage)
    are fitted on the training months; (c) is the land model's storage anomaly with a per-cell
    offset matching GRACE's mean over the training months (the two anomalies refer to different
    base periods).
    """
    units = tensors["target"].attrs["units"]
    train = tensors["split"].values == SPLIT_FLAGS["train"]
    months = pd.DatetimeIndex(tensors["time"].values)
    window = mo.in_window(months, *fit_window(tensors))
    trend = target_trend(tensors)
    observed = (tensors["target"] + trend).assign_attrs(units=units)
    land = tensors["land_mask"].astype(bool)
    fields = {name: da.assign_coords(time=tensors["time"].values) for name, da in fields_mm.items()}
    clim = bl.climatology_trend(observed, train)
    regression = bl.regression(tensors["inputs"], tensors["target"], train, ridge=ridge) + trend
    features = pr.memory_features(fields, window, memory["time_scales"])
    memory_regression = bl.memory_regression(features, tensors["target"], train, ridge=memory["ridge"]) + trend
    storage = fields["land_water_storage"]
    land_model = bl.land_model(storage - storage.isel(time=np.flatnonzero(train)).mean("time"),
                               observed, train, fit="offset")
    out = xr.Dataset({
        "climatology_trend": clim.assign_attrs(long_name="baseline: monthly climatology + linear trend (training months)"),
        "regression": regression.assign_attrs(long_name="baseline: per-cell ridge regression on the lagged predictors"),
        "memory_regression": memory_regression.assign_attrs(
            long_name="baseline: per-cell ridge regression on memory features (exponentially weighted anomalies)"),
        "land_model": land_model.assign_attrs(long_name="baseline: land-model storage anomaly, offset to GRACE"),
    })
    for name in out.data_vars:
        out[name] = out[name].where(land).astype(np.float32).assign_attrs(units=units)
    out.attrs["title"] = "gracefill baselines"
    return out


def _summary(maps: xr.Dataset, area: xr.DataArray) -> dict:
    row = {}
    for name in ("r", "nse", "rmse"):
        row[f"{name}_median"] = float(me.weighted_median(maps[name], area))
        row[f"{name}_mean"] = float(me.weighted_mean(maps[name], area))
    return row


@dataclass
class Forecast:
    """One method's predictive distribution on some months: a Student-t with mean ``mean``,
    standard deviation ``std`` and ``dof`` degrees of freedom when the spread calibration chose
    finite tails; else the particles (with their noise variance) when kept, else a Gaussian
    N(mean, std^2); std None for a point forecast. ``scale`` (a calibration factor on the spread)
    stretches the particle mixture about its mean."""

    mean: xr.DataArray
    std: xr.DataArray | None = None
    samples: xr.DataArray | None = None
    noise_var: np.ndarray | None = None
    scale: xr.DataArray | None = None
    dof: float = math.inf

    def isel(self, index: np.ndarray) -> "Forecast":
        pick = (lambda da: None if da is None else da.isel(time=index))
        return Forecast(pick(self.mean), pick(self.std), pick(self.samples), self.noise_var, pick(self.scale), self.dof)


#: fewest months a hindcast period or a lead bin needs to be scored: a whole seasonal cycle, so
#: that a per-cell NSE and R mean something
MIN_SCORED_MONTHS = 12
#: bins of the distance to the training window (years; None: open) in ``scores_by_lead``
LEAD_BINS_YEARS = ((0, 5), (5, 10), (10, 20), (20, None))


def period_months(rec: xr.Dataset, period: str) -> np.ndarray:
    """Indices of a period's months: its split label; ``missing`` counts only months after the
    first observed one (months before GRACE are not 'missing inside the record') and, where the
    month flags say so, not after the last (forecast); ``hindcast``: the months before the first
    GRACE month with a full input stack, when there are at least :data:`MIN_SCORED_MONTHS`."""
    if period == "hindcast":
        if "month_flag" not in rec:
            return np.zeros(0, dtype=np.int64)
        index = np.flatnonzero((rec["month_flag"].values == MONTH_FLAGS["hindcast"])
                               & (rec["split"].values != SPLIT_FLAGS["unused"]))
        return index if index.size >= MIN_SCORED_MONTHS else index[:0]
    index = _months(rec, period)
    if period == "missing":
        observed = np.flatnonzero(rec["split"].values == SPLIT_FLAGS["train"])
        index = index[index > observed[0]] if observed.size else index[:0]
        if "month_flag" in rec:
            index = index[rec["month_flag"].values[index] != MONTH_FLAGS["forecast"]]
    return index


def lead_bin_label(low: int, high: int | None) -> str:
    """"0-5", "20+": the label of a bin of :data:`LEAD_BINS_YEARS`."""
    return f"{low}+" if high is None else f"{low}-{high}"


def lead_bins(leads: np.ndarray, bins=LEAD_BINS_YEARS) -> list[tuple[str, np.ndarray]]:
    """(label, positions) of the leads (months, >= 1) in each bin of years (low, high]: lead 60
    (5 years) falls in 0-5, lead 61 in 5-10."""
    leads = np.asarray(leads)
    out = []
    for low, high in bins:
        inside = leads > 12 * low
        if high is not None:
            inside &= leads <= 12 * high
        out.append((lead_bin_label(low, high), np.flatnonzero(inside)))
    return out


def months_outside_training(rec: xr.Dataset) -> dict[str, np.ndarray]:
    """Indices of the months before and after the fit window that a lead-binned score uses:
    with the truth (synthetic), every month with a full input stack; without, the observed
    months after the window (test and pseudo-gap; nothing before GRACE can be scored)."""
    times = pd.DatetimeIndex(rec["time"].values)
    start, end = fit_window(rec)
    split = rec["split"].values
    usable = split != SPLIT_FLAGS["unused"]
    if "truth" not in rec:
        usable &= np.isin(split, [SPLIT_FLAGS["test"], SPLIT_FLAGS["pseudo_gap"]])
    before = usable & np.asarray(times < pd.Timestamp(start)) & (split != SPLIT_FLAGS["train"])
    after = usable & np.asarray(times > pd.Timestamp(end))
    return {"before": np.flatnonzero(before), "after": np.flatnonzero(after)}


def bcnn_forecast(rec: xr.Dataset) -> Forecast:
    samples = rec["twsa_samples"] if "twsa_samples" in rec else None
    scale = rec["calibration_scale"] if "calibration_scale" in rec else None
    return Forecast(rec["twsa"], rec["twsa_std"], samples, np.exp(-rec["log_beta"].values.astype(np.float64)), scale,
                    ca.calibration_dof(rec))


def _stack(arrays: list[xr.DataArray]) -> xr.DataArray:
    """Months of several folds one after another, renumbered so that they stack without aligning."""
    return xr.concat([a.drop_vars("time", errors="ignore") for a in arrays], dim="time", coords="minimal",
                     compat="override", join="override")


def validation_errors(folds: list[tuple[xr.Dataset, xr.Dataset]], names) -> list[dict]:
    """Per fold, each baseline's errors (prediction - GRACE) on the fold's validation months and
    the lead of each month: [{name: (errors (time, lat, lon), leads)}]."""
    out = []
    for rec, base in folds:
        index = ca.validation_months(rec)
        obs, leads = rec["observed_twsa"].isel(time=index), lead_months(rec, index)
        out.append({name: (base[name].isel(time=index) - obs, leads) for name in names})
    return out


def spreads_from_errors(errors: list[dict], units: str, lead_bin_months: int, skip: int | None = None,
                        family: str = "gaussian", pooling_km: float = 0.0) -> dict[str, xr.Dataset]:
    """Each baseline's spread (``family``, ``pooling_km``: see
    :func:`gracefill.baselines.fit_spread_pooled`) fitted on the pooled errors of
    :func:`validation_errors` (fold ``skip`` left out)."""
    kept = [fold for k, fold in enumerate(errors) if k != skip]
    return {name: bl.fit_spread_pooled([fold[name] for fold in kept], units, lead_bin_months, family=family,
                                       pooling_km=pooling_km)
            for name in (kept[0] if kept else ())}


def fit_baseline_spreads(folds, names, lead_bin_months: int, skip: int | None = None,
                         family: str = "gaussian", pooling_km: float = 0.0) -> dict[str, xr.Dataset]:
    """Each baseline's predictive spread, fitted on the folds' validation errors only."""
    return spreads_from_errors(validation_errors(folds, names), folds[0][0]["twsa"].attrs["units"],
                               lead_bin_months, skip, family, pooling_km)


def baseline_forecasts(base: xr.Dataset, rec: xr.Dataset, index: np.ndarray, names, spreads) -> dict[str, Forecast]:
    leads = lead_months(rec, index)
    out = {}
    for name in names:
        mean = base[name].isel(time=index)
        spread = spreads.get(name)
        if spread is None:
            out[name] = Forecast(mean)
        else:
            std = bl.predict_spread(spread, leads, time=mean["time"])
            out[name] = Forecast(mean, std, dof=spread.attrs.get("dof", math.inf))
    return out


def _probabilistic(forecast: Forecast, obs: xr.DataArray):
    """Per-value CRPS, negative log density and PIT of one forecast (None where it has no spread)."""
    if forecast.std is not None and not math.isinf(forecast.dof):
        return me.student_t_scores(forecast.mean, forecast.std, obs, forecast.dof)
    if forecast.samples is not None and forecast.scale is not None:
        # the mixture stretched by c about its mean m: score obs' = m + (obs - m) / c on the raw
        # mixture (CRPS scales by c, the density by 1/c, the PIT is unchanged)
        centre = forecast.samples.mean("particle")
        raw = Forecast(forecast.mean, samples=forecast.samples, noise_var=forecast.noise_var)
        crps, nlp, pit = _probabilistic(raw, (centre + (obs - centre) / forecast.scale).assign_attrs(obs.attrs))
        return crps * forecast.scale, nlp + np.log(forecast.scale), pit
    if forecast.samples is not None:
        return (me.crps_ensemble(forecast.samples, obs, forecast.noise_var),
                me.nlp_mixture(forecast.samples, forecast.noise_var, obs),
                me.pit_samples(forecast.samples, obs, forecast.noise_var))
    if forecast.std is not None:
        return (me.crps_gaussian(forecast.mean, forecast.std, obs), me.nlp_gaussian(forecast.mean, forecast.std, obs),
                me.pit_gaussian(forecast.mean, forecast.std, obs))
    return None


#: latitude bands of the coverage table (absolute latitude, degrees)
REGIONS = {"tropics": (0.0, 23.5), "mid-latitudes": (23.5, 50.0), "high latitudes": (50.0, 90.0)}


def coverage_by_lead_and_region(pit: xr.DataArray, leads: np.ndarray, levels, method: str, period: str) -> list[dict]:
    """Coverage of the central intervals from the PIT values (time, lat, lon) of one method and
    period: over everything (lead_year 0, region "all"), then by lead year (months since the end
    of the fit window, 1-12 = year 1) and latitude band (:data:`REGIONS`); ``values`` counts them."""
    years = (np.asarray(leads) - 1) // 12 + 1
    band = np.abs(pit["lat"])
    rows = []

    def add(subset, lead_year, region):
        n = int(subset.notnull().sum())
        if n:
            coverage = me.coverage_from_pit(subset, levels)
            rows.extend({"method": method, "period": period, "lead_year": lead_year, "region": region,
                         "nominal": float(level), "observed": float(value), "values": n}
                        for level, value in zip(coverage["level"].values, coverage.values))

    add(pit, 0, "all")
    for year in np.unique(years):
        by_year = pit.isel(time=np.flatnonzero(years == year))
        add(by_year, int(year), "all")
        for region, (low, high) in REGIONS.items():
            add(by_year.where((band >= low) & (band < high)), int(year), region)
    return rows


def score_period(segments, period: str, area: xr.DataArray, levels, bins: int):
    """Scores of every method over a period's segments (observations and forecasts of some months,
    e.g. one per validation fold), pooled: per-cell R, NSE, RMSE over all the period's months,
    mean CRPS and MNLP over all values, coverage of the central intervals, spread-skill (BCNN)."""
    units = segments[0][0].attrs["units"]
    obs = _stack([o for o, _ in segments]).assign_attrs(units=units)
    rows, maps, calibration, spread = [], [], [], None
    for method in segments[0][1]:
        forecasts = [f[method] for _, f in segments]
        pred = _stack([f.mean for f in forecasts]).assign_attrs(units=units)
        score = me.score_maps(pred, obs)
        maps.append(score.expand_dims(model=[method], period=[period]))  # not "method": a keyword of sel
        row = {"method": method, "period": period, "months": int(obs.sizes["time"]), **_summary(score, area)}
        parts = [_probabilistic(f, o.assign_attrs(units=units)) for f, (o, _) in zip(forecasts, segments)]
        if all(p is not None for p in parts):
            crps, nlp, pit = (_stack([p[i] for p in parts]) for i in range(3))
            row["crps"] = float(crps.mean())
            row["mnlp"] = float(nlp.mean())
            coverage = me.coverage_from_pit(pit, levels)
            for level, value in zip(coverage["level"].values, coverage.values):
                row[f"coverage_{int(round(level * 100))}"] = float(value)
            calibration += coverage_by_lead_and_region(pit, obs["lead"].values, levels, method, period)
        if method == "bcnn":
            std = _stack([f.std for f in forecasts]).assign_attrs(units=units)
            spread = me.spread_skill(pred, std, obs, n_bins=bins).to_dataframe().reset_index()
            spread.insert(0, "period", period)
        rows.append(row)
    return rows, maps, calibration, spread


def evaluate(reconstruction: xr.Dataset, baselines: xr.Dataset, area: xr.DataArray, levels, bins: int,
             folds: list[tuple[xr.Dataset, xr.Dataset]], lead_bin_months: int = 12, spread_family: str = "gaussian",
             spread_pooling_km: float = 0.0):
    """Scores of the BCNN and every baseline on each period, and the baselines' fitted spreads.

    ``folds`` holds each validation fold's (reconstruction, baselines). Periods: validation (the
    folds' validation months, pooled), test and pseudo_gap (against GRACE), gap and missing (against
    the truth, synthetic worlds only). The baselines' spreads (Gaussian, or Student-t tails chosen
    on the folds with ``spread_family`` student_t; each cell's variance pooled with its neighbours'
    over ``spread_pooling_km``) are fitted on the folds' validation errors: on
    all folds for the later periods, on the other folds for each fold's own validation months (so
    no spread is scored on the errors it was fitted on, when there are two folds or more).

    With the truth, ``hindcast`` (months before the first GRACE month) is scored against it too.

    Returns (table DataFrame: one row per method and period; maps Dataset (model, period, lat,
    lon); calibration DataFrame (method, period, lead_year, region, nominal, observed, values: see
    :func:`coverage_by_lead_and_region`); spread-skill DataFrame of the
    BCNN; spreads Dataset of the baselines; by-lead DataFrame: the same scores per side of the
    fit window (before, after) and bin of the distance to it, :data:`LEAD_BINS_YEARS`, against
    the truth where known, else the observed months after the window against GRACE).
    """
    if not folds:
        raise ValueError("evaluation needs at least one validation fold")
    rec = reconstruction
    units = rec["twsa"].attrs["units"]
    names = [name for name in BASELINES if name in baselines]
    errors = validation_errors(folds, names)  # sliced once, pooled per fold subset below
    spreads = spreads_from_errors(errors, units, lead_bin_months, family=spread_family, pooling_km=spread_pooling_km)

    def segment(ds, base, index, reference, fitted):
        obs = reference.isel(time=index).assign_attrs(units=units).assign_coords(lead=("time", lead_months(ds, index)))
        forecasts = {"bcnn": bcnn_forecast(ds).isel(index)} | baseline_forecasts(base, ds, index, names, fitted)
        return obs, forecasts

    calibrated = "calibration_scale" in rec
    periods = {"validation": []}
    for k, (fold_rec, fold_base) in enumerate(folds):
        fitted = (spreads_from_errors(errors, units, lead_bin_months, skip=k, family=spread_family,
                                      pooling_km=spread_pooling_km) if len(folds) > 1 else spreads)
        if calibrated:  # the BCNN's calibration too, fitted on the other folds
            others = [r for j, (r, _) in enumerate(folds) if j != k or len(folds) == 1]
            fold_rec = ca.apply_calibration(fold_rec, ca.refit_like(rec, others))
        index = ca.validation_months(fold_rec)
        if index.size:
            periods["validation"].append(segment(fold_rec, fold_base, index, fold_rec["observed_twsa"], fitted))
    references = {"test": rec["observed_twsa"], "pseudo_gap": rec["observed_twsa"]}
    if "truth" in rec:
        references |= {"gap": rec["truth"], "missing": rec["truth"], "hindcast": rec["truth"]}
    for period, reference in references.items():
        index = period_months(rec, period)
        if index.size:
            periods[period] = [segment(rec, baselines, index, reference, spreads)]
    rows, maps, calibration, spread = [], [], [], []
    for period, segments in periods.items():
        if not segments:
            continue
        r, m, c, s = score_period(segments, period, area, levels, bins)
        rows += r
        maps += m
        calibration += c
        spread.append(s)
    score_maps = xr.combine_by_coords(maps) if maps else xr.Dataset()
    if maps:
        score_maps["model"].attrs["long_name"] = "method scored (the BCNN or a baseline)"
        score_maps["period"].attrs["long_name"] = "evaluation period"
    by_lead = []
    reference = rec["truth"] if "truth" in rec else rec["observed_twsa"]
    for side, index in months_outside_training(rec).items():
        for label, where in lead_bins(lead_months(rec, index)):
            if where.size < MIN_SCORED_MONTHS:
                continue
            months = index[where]
            r, _, _, _ = score_period([segment(rec, baselines, months, reference, spreads)], f"{side}_{label}y",
                                      area, levels, bins)
            labels = mo.month_labels(pd.DatetimeIndex(rec["time"].values[months[[0, -1]]]))
            by_lead += [{"side": side, "lead_years": label, "first_month": labels[0], "last_month": labels[1],
                         "reference": "truth" if "truth" in rec else "grace", **row} for row in r]
    return (pd.DataFrame(rows), score_maps, pd.DataFrame(calibration),
            pd.concat(spread, ignore_index=True) if spread else pd.DataFrame(), spreads_dataset(spreads),
            pd.DataFrame(by_lead))


def spreads_dataset(spreads: dict[str, xr.Dataset]) -> xr.Dataset:
    """The baselines' fitted spreads in one file, variables prefixed by the baseline's name."""
    out = xr.Dataset()
    for name, fitted in spreads.items():
        fitted = fitted.rename(lead_bin=f"{name}_lead_bin")
        for var in fitted.data_vars:
            out[f"{name}_{var}"] = fitted[var]
        out[f"{name}_dof"] = xr.DataArray(float(fitted.attrs.get("dof", math.inf)), attrs={
            "units": "1", "long_name": f"degrees of freedom of {name}'s Student-t predictive distribution",
            "comment": "inf: Gaussian"})
    out.attrs["title"] = "gracefill baseline predictive spreads (fitted on the validation folds)"
    return out


def analyse_droughts(rec: xr.Dataset, cfg: dict, truth_direct_mm: xr.DataArray | None = None):
    """WSDI, categories, probability, events and detection scores of the gap-filled series.

    Detection of WSDI <= the first threshold: in the gap against the truth (synthetic), also
    against the truth without the drought's direct part ``truth_direct_mm`` (mm; the part no
    predictor sees) when given, and in the pseudo-gap against GRACE's own WSDI.
    Returns (fields Dataset over all months, events DataFrame, detection DataFrame or None).
    """
    d = cfg["drought"]
    baseline = (d["baseline_start"], d["baseline_end"])
    threshold = float(d["thresholds"][0])
    filled = dr.gap_filled(rec["observed_twsa"], rec["twsa"])
    reference = dr.drought_reference(filled, baseline)
    deficit = dr.storage_deficit(filled, reference=reference)
    index = dr.wsdi(deficit, reference=reference)
    dof = ca.calibration_dof(rec)
    if "twsa_samples" in rec and math.isinf(dof):
        probability = dr.drought_probability(ca.scaled_samples(rec), reference, threshold)
    else:  # no particles, or the calibration's Student-t
        probability = dr.parametric_drought_probability(rec["twsa"], rec["twsa_std"], reference, threshold, dof)
    observed = rec["month_flag"] == MONTH_FLAGS["observed"]
    probability = probability.where(~observed, (index <= threshold).astype(np.float32).where(index.notnull()))
    fields = xr.Dataset({
        "gap_filled_twsa": filled,
        "deficit": deficit,
        "wsdi": index,
        "category": dr.drought_category(index, d["thresholds"]),
        "probability": probability.assign_attrs(
            long_name=f"probability that WSDI <= {threshold} (fraction of particles; 0/1 where GRACE observed)"),
        "month_flag": rec["month_flag"],
    })
    events = dr.drought_events(deficit, index, min_duration=d["min_duration"], criterion=d["event_criterion"],
                               threshold=threshold)
    detection = []

    def detect(period, predicted, reference_index, months):
        scores = dr.detection_scores(predicted.isel(time=months), reference_index.isel(time=months), threshold=threshold)
        detection.append({"period": period, "threshold": threshold, **{k: float(v) for k, v in scores.data_vars.items()}})

    if "truth" in rec:
        truth_index = _own_wsdi(rec["truth"], baseline)
        fields["wsdi_truth"] = truth_index.assign_attrs(long_name="WSDI of the synthetic world's true storage")
        detect("gap", index, truth_index, _months(rec, "gap"))
        if truth_direct_mm is not None:
            direct = bl.convert_units(truth_direct_mm.assign_coords(time=mo.to_month_start(truth_direct_mm["time"].values)),
                                      rec["truth"].attrs["units"]).reindex(time=rec["time"].values)
            visible = (rec["truth"] - direct).assign_attrs(rec["truth"].attrs)
            detect("gap_without_direct_part", index, _own_wsdi(visible, baseline), _months(rec, "gap"))
    held_out = _months(rec, "pseudo_gap")
    if held_out.size:  # the pseudo-gap filled by the reconstruction, against its own observations
        mask = xr.DataArray(rec["split"].values == SPLIT_FLAGS["pseudo_gap"], dims="time", coords={"time": rec["time"]})
        refilled = filled.where(~mask, rec["twsa"])
        detect("pseudo_gap", dr.wsdi(dr.storage_deficit(refilled, reference=reference), reference=reference), index,
               held_out)
    return fields, events, pd.DataFrame(detection) if detection else None


def _own_wsdi(twsa: xr.DataArray, baseline) -> xr.DataArray:
    """WSDI of a series against its own baseline climatology and spread."""
    reference = dr.drought_reference(twsa, baseline)
    return dr.wsdi(dr.storage_deficit(twsa, reference=reference), reference=reference)
