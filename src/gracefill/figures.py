"""The figures of a run, in one table: what each reads, which config sections it depends on,
how it is drawn, and its caption in the Snakemake report.

``gracefill plot --figure NAME`` draws one entry; workflow/rules/plots.smk reads the same
table for the rule's inputs, its config parameter (a change elsewhere does not redraw the
figure) and the report caption. Adding a figure is one entry in :data:`FIGURES` and one
drawing function here, built on the primitives of :mod:`gracefill.plots`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import months as mo
from gracefill import plots
from gracefill.config import inside_grid
from gracefill.io import UserError, open_dataset


@dataclass(frozen=True)
class Figure:
    """One figure: ``inputs`` name -> file under results/<run>/, the config ``sections`` it
    reads, ``draw(inputs, cfg, output)`` and the report ``caption`` (a format string filled by
    :func:`caption`)."""

    inputs: Mapping[str, str]
    draw: Callable[[Mapping[str, str], dict, Path], None]
    caption: str
    sections: tuple[str, ...] = ("figures",)
    format: str = "png"
    category: str = "Figures"


# --------------------------------------------------------------------------- drawing


def draw_inputs(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """Maps of the GRACE TWSA and of every predictor for the month ``figures.month``."""
    from gracefill.dataset import UNIT_FACTORS_FROM_MM
    from gracefill.predictors import MEMORY_PREDICTOR

    month = pd.Timestamp(cfg["figures"]["month"])
    grid = open_dataset(inputs["grid"], required=("land_mask",))
    predictors = open_dataset(inputs["predictors"])
    target = open_dataset(inputs["target"], required=("twsa",))["twsa"]
    target = target.assign_coords(time=mo.to_month_start(target["time"].values))
    land = grid["land_mask"].astype(bool)
    units = cfg["predictors"]["target_units"]
    to_target = UNIT_FACTORS_FROM_MM[units]                        # storage in the units of every other figure
    fields, titles, cmaps = [], [], []
    if month in target.indexes["time"]:
        fields.append((target.sel(time=month).where(land) * to_target).assign_attrs(units=units))
        titles.append(f"GRACE TWSA {month:%Y-%m}")
    else:
        fields.append(xr.full_like(grid["land_mask"], np.nan, dtype=float).assign_attrs(units=units))
        titles.append(f"GRACE TWSA {month:%Y-%m}: not observed")
    cmaps.append("RdBu")
    detrended = bool(predictors.attrs.get("detrended"))
    for name in cfg["predictors"]["names"]:
        da = predictors[name].sel(time=month).where(land)
        if da.attrs.get("units") == "mm":                              # a storage (sTWSA): as GRACE
            da = (da * to_target).assign_attrs(units=units)
        fields.append(da)
        memory = MEMORY_PREDICTOR.match(name) is not None               # never detrended
        titles.append(f"{name} {month:%Y-%m}" + (" (detrended)" if detrended and not memory else ""))
        cmaps.append("RdBu_r" if name == "T" else "RdBu")              # red for warm, blue for wet
    fig = plots.map_panels(fields, titles, ncols=2, dpi=cfg["figures"]["dpi"], cmap=cmaps,
                           suptitle=f"gracefill inputs, run '{cfg['run']}'")
    plots.save_figure(fig, output)


def draw_training_curves(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """Training and test RMSE, log noise precision and learning rate against the epoch."""
    plots.save_figure(plots.training_curves(pd.read_csv(inputs["log"]), dpi=cfg["figures"]["dpi"]), output)


def draw_score_maps(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """Per-cell R and NSE of the BCNN on the test months and, where a truth exists, the gap."""
    maps = open_dataset(inputs["maps"]).sel(model="bcnn")
    fields, titles, labels = [], [], []
    for period, what in (("test", "test months against GRACE"), ("gap", "gap months against the truth")):
        if period not in maps["period"].values or not np.isfinite(maps["nse"].sel(period=period).values).any():
            continue                                                # the gap has no truth on real data
        one = maps.sel(period=period)
        fields += [one["r"], one["nse"].clip(min=-1)]
        titles += [f"R, {what}", f"NSE, {what}"]
        labels += ["R (dimensionless)", "NSE (dimensionless; 1 perfect, clipped at -1)"]
    fig = plots.map_panels(fields, titles, cmap="viridis", symmetric=False, dpi=cfg["figures"]["dpi"], labels=labels,
                           groups=[name.split(",")[0] for name in titles],
                           suptitle="BCNN skill per cell (mean of the particle mixture)")
    plots.save_figure(fig, output)


def draw_baselines(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """Median NSE, R, RMSE and CRPS of the BCNN and every baseline, by period."""
    fig = plots.bar_comparison(pd.read_csv(inputs["table"]), units=cfg["predictors"]["target_units"],
                               dpi=cfg["figures"]["dpi"])
    plots.save_figure(fig, output)


def draw_calibration(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """Reliability of the central intervals: the BCNN in every period, every method on test months."""
    table = pd.read_csv(inputs["calibration"])
    table = table[(table["lead_year"] == 0) & (table["region"] == "all")]
    lines = table[(table["method"] == "bcnn") | (table["period"] == "test")]
    fig = plots.calibration_plot({f"{method}, {period} months": g for (method, period), g
                                  in lines.groupby(["method", "period"], sort=False)}, dpi=cfg["figures"]["dpi"])
    plots.save_figure(fig, output)


def draw_monthly_panels(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """Per month of ``figures.panel_months``: GRACE (or the truth where GRACE is absent), the
    reconstruction, their difference and the predictive std."""
    rec = open_dataset(inputs["reconstruction"])
    panel_months = cfg["figures"]["panel_months"]
    fields, titles = [], []
    units = rec["twsa"].attrs["units"]
    for month in panel_months:
        one = rec.sel(time=pd.Timestamp(month))
        reference, name = one["observed_twsa"], "GRACE"
        if not np.isfinite(reference.values).any() and "truth" in rec:
            reference, name = one["truth"], "truth (synthetic)"
        error = (one["twsa"] - reference).assign_attrs(units=units)
        fields += [reference.assign_attrs(units=units), one["twsa"], error, one["twsa_std"]]
        titles += [f"{name} {month}", f"reconstruction {month}", f"reconstruction - {name} {month}",
                   f"predictive std {month}"]
    n = len(panel_months)
    groups = [key for row in range(n) for key in (row, row, row, "std")]  # one scale per row, one for the stds
    fig = plots.map_panels(fields, titles, ncols=4, dpi=cfg["figures"]["dpi"], cmap=["RdBu", "RdBu", "RdBu", "viridis"] * n,
                           symmetric=[True, True, True, False] * n, groups=groups,
                           suptitle="GRACE, reconstruction, error and uncertainty")
    plots.save_figure(fig, output)


def _gap_months(ds: xr.Dataset, flag: str, flags: Mapping[str, int]) -> xr.Dataset:
    return ds.isel(time=np.flatnonzero(ds[flag].values == flags["gap"]))


def draw_gap_wsdi(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """WSDI of every gap month on the drought categories of ``drought.thresholds``."""
    fields = open_dataset(inputs["drought"])
    gap = _gap_months(fields, "month_flag", mo.MONTH_FLAGS)
    land = open_dataset(inputs["grid"])["land_mask"]
    names = fields["category"].attrs.get("flag_meanings", "").split() if "category" in fields else None
    fig = plots.wsdi_panels(gap["wsdi"], land, thresholds=cfg["drought"]["thresholds"], dpi=cfg["figures"]["dpi"],
                            title="WSDI of the gap months (gap-filled)", category_names=names)
    plots.save_figure(fig, output)


def draw_gap_drought_probability(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """Probability of WSDI at or below the first drought threshold, month by month through the gap."""
    gap = _gap_months(open_dataset(inputs["drought"]), "month_flag", mo.MONTH_FLAGS)
    fig = plots.map_panels([gap["probability"].isel(time=i) for i in range(gap.sizes["time"])],
                           [f"{m:%Y-%m}" for m in pd.DatetimeIndex(gap["time"].values)], ncols=4,
                           cmap="YlOrRd", symmetric=False, dpi=cfg["figures"]["dpi"],
                           suptitle=f"probability of drought (WSDI <= {cfg['drought']['thresholds'][0]})")
    plots.save_figure(fig, output)


def regional_mean(da: xr.DataArray, weights: xr.DataArray) -> np.ndarray:
    """Weighted mean over lat and lon of each month, over the cells where ``da`` has a value."""
    return ((da * weights).sum(("lat", "lon"), min_count=1) / weights.where(da.notnull()).sum(("lat", "lon"))).values


def site_series(rec: xr.Dataset, grid: xr.Dataset, point: dict) -> dict:
    """Area-weighted means over the land cells within ``point['radius_deg']`` of a site; the
    95 % band uses the area mean of the cell std (an upper bound: errors of neighbouring cells
    are correlated)."""
    lat2d, lon2d = xr.broadcast(grid["lat"], grid["lon"])
    near = grid["land_mask"].astype(bool) & (np.hypot(lat2d - point["lat"], lon2d - point["lon"]) <= point["radius_deg"])
    if not bool(near.any()):
        raise UserError(f"config key 'figures.points': no land cell within {point['radius_deg']} degrees of {point['name']}")
    weights = grid["cell_area"].where(near)
    mean, std = regional_mean(rec["twsa"], weights), regional_mean(rec["twsa_std"], weights)
    return {"name": point["name"], "time": rec["time"].values, "observed": regional_mean(rec["observed_twsa"], weights),
            "mean": mean, "lower": mean - 1.96 * std, "upper": mean + 1.96 * std,
            "truth": regional_mean(rec["truth"], weights) if "truth" in rec else None}


def outside_record_spans(rec: xr.Dataset) -> list[tuple]:
    """(first, last) month of the hindcast and of the forecast span, each where it is at least
    :data:`gracefill.plots.MIN_SHADED_MONTHS` long enough to see."""
    spans = []
    if "month_flag" in rec:
        for name in ("hindcast", "forecast"):
            index = np.flatnonzero(rec["month_flag"].values == mo.MONTH_FLAGS[name])
            if index.size >= plots.MIN_SHADED_MONTHS:
                spans.append((rec["time"].values[index[0]], rec["time"].values[index[-1]]))
    return spans


def draw_timeseries(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """Regional means at the sites of ``figures.points`` inside the grid, with the 95 % band."""
    rec, grid = open_dataset(inputs["reconstruction"]), open_dataset(inputs["grid"])
    points = [p for p in cfg["figures"]["points"] if inside_grid(p, cfg["grid"])]
    if not points:
        raise UserError("config key 'figures.points': no site inside the grid; add sites within it")
    split = cfg["split"]
    fig = plots.time_series([site_series(rec, grid, point) for point in points], (split["gap_start"], split["gap_end"]),
                            rec["twsa"].attrs["units"], dpi=cfg["figures"]["dpi"], outside=outside_record_spans(rec))
    plots.save_figure(fig, output)


def draw_gap_animation(inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """A GIF of the reconstruction's mean and std through the gap, one frame per month."""
    rec = _gap_months(open_dataset(inputs["reconstruction"]), "split", mo.SPLIT_FLAGS)
    plots.gap_animation(rec["twsa"], rec["twsa_std"], output, dpi=cfg["figures"]["dpi"],
                        fps=cfg["figures"]["animation_fps"])


# --------------------------------------------------------------------------- the table

FIGURES: dict[str, Figure] = {
    "inputs": Figure(
        inputs={"grid": "grid.nc", "predictors": "predictors.nc", "target": "regridded/twsa.nc"},
        draw=draw_inputs, sections=("run", "predictors", "figures"), category="Inputs",
        caption="GRACE terrestrial water storage anomaly ({units}) and the predictors (detrended, in their own "
                "units) for the month ``figures.month`` ({month}) of run ``{run}``, on the target grid, land only."),
    "training_curves": Figure(
        inputs={"log": "model/training_log.csv"}, draw=draw_training_curves,
        caption="**Training curves** of run ``{run}``: the SVGD ensemble's training RMSE ({units}, mean over "
                "particles, every epoch) and the RMSE of the test months (scored every ``training.score_every`` "
                "epochs and at the last), with the mean log noise precision and the learning rate, against the "
                "epoch. Read: a test RMSE that flattens or rises while the training RMSE falls marks over-fitting; "
                "the epoch count itself is chosen on the validation folds."),
    "score_maps": Figure(
        inputs={"maps": "evaluation/score_maps.nc"}, draw=draw_score_maps,
        caption="**Skill maps** of run ``{run}``: per-cell correlation R and Nash-Sutcliffe efficiency NSE "
                "(dimensionless, NSE clipped at -1; 1 is perfect, 0 is no better than the cell's test-period mean) "
                "of the BCNN's mean against GRACE over the test months (after the training window, outside the gap "
                "and pseudo-gap), land cells only. Read: where NSE is below 0 the reconstruction's month-to-month "
                "anomalies are not to be trusted."),
    "baselines": Figure(
        inputs={"table": "evaluation/scores.csv"}, draw=draw_baselines, sections=("figures", "predictors"),
        caption="**The BCNN against the baselines** of run ``{run}``: land-area-weighted median NSE "
                "(dimensionless) and median RMSE ({units}) per period (validation folds, test, pseudo-gap, gap and "
                "missing months; gap and missing against the synthetic truth) for the BCNN, climatology + trend, "
                "the per-cell regressions and the land model, all fitted on the same training months. Read: higher "
                "NSE and lower RMSE are better; each bar is a median over cells."),
    "calibration": Figure(
        inputs={"calibration": "evaluation/calibration.csv"}, draw=draw_calibration,
        caption="**Calibration (reliability) of the predictive intervals** of run ``{run}``: observed coverage of "
                "the central 50, 90 and 95 % intervals against their nominal level, for the BCNN in every period and "
                "for every method on test months (all lead years, all regions). Read: points on the diagonal are "
                "calibrated; below it the intervals are too narrow. Coverage by lead year and latitude band is in "
                "``evaluation/calibration.csv``."),
    "monthly_panels": Figure(
        inputs={"reconstruction": "reconstruction.nc"}, draw=draw_monthly_panels,
        caption="**GRACE, reconstruction, error and uncertainty** of run ``{run}`` for the months {panel_months}: "
                "per row GRACE (or the synthetic truth in a month without GRACE), the reconstructed mean, their "
                "difference and the predictive standard deviation, all in {units}. The first three panels of a row "
                "share one symmetric colour scale, the standard deviations one scale across rows. Read: an error "
                "panel much wider than the std panel means the intervals are too narrow there."),
    "gap_wsdi": Figure(
        inputs={"drought": "drought/drought.nc", "grid": "grid.nc"}, draw=draw_gap_wsdi,
        sections=("figures", "drought"),
        caption="**Water storage deficit index (WSDI) in the gap months** (2017-07..2018-05 by default) of run "
                "``{run}``, from the gap-filled series (GRACE where observed, the reconstruction in the gap), "
                "dimensionless, on the drought categories of ``drought.thresholds`` ({thresholds}). Read: darker is "
                "a deeper storage deficit relative to the cell's own climate; cells above the first threshold are "
                "not in drought."),
    "gap_drought_probability": Figure(
        inputs={"drought": "drought/drought.nc", "grid": "grid.nc"}, draw=draw_gap_drought_probability,
        sections=("figures", "drought"),
        caption="**Probability of drought in the gap months** of run ``{run}``: the share of the calibrated "
                "particle mixture whose WSDI is at or below {first_threshold} (0-1, dimensionless), month by month "
                "through the gap. Read: 0.9 means nine in ten plausible reconstructions put the cell in drought "
                "that month."),
    "timeseries": Figure(
        inputs={"reconstruction": "reconstruction.nc", "grid": "grid.nc"}, draw=draw_timeseries,
        sections=("figures", "split", "grid"),
        caption="**Time series at the configured points** of run ``{run}``: land-area-weighted mean TWSA ({units}) "
                "around each point of ``figures.points``, GRACE and the reconstruction with its 95 % band (the area "
                "mean of the cells' standard deviations, an upper bound), the training window and the gap shaded. "
                "Read: GRACE outside the band after training means under-dispersed intervals there."),
    "gap_animation": Figure(
        inputs={"reconstruction": "reconstruction.nc"}, draw=draw_gap_animation, format="gif",
        caption="The gap-filled TWSA (predictive mean, {units}) and its total predictive standard deviation "
                "through the GRACE / GRACE-FO gap of run ``{run}``, one frame per month."),
}


def caption(name: str, cfg: dict) -> str:
    """The report caption of figure ``name`` for the run configured by ``cfg``."""
    thresholds = cfg["drought"]["thresholds"]
    return FIGURES[name].caption.format(
        run=cfg["run"], units=cfg["predictors"]["target_units"], month=cfg["figures"]["month"],
        panel_months=", ".join(cfg["figures"]["panel_months"]), thresholds=", ".join(map(str, thresholds)),
        first_threshold=thresholds[0])


def draw(name: str, inputs: Mapping[str, str], cfg: dict, output: Path) -> None:
    """Draw figure ``name`` from its ``inputs`` (name -> path) to ``output``; a missing or unknown
    input is one line naming it."""
    figure = FIGURES[name]
    missing = sorted(set(figure.inputs) - set(inputs))
    unknown = sorted(set(inputs) - set(figure.inputs))
    if missing or unknown:
        raise UserError(f"--input: figure {name} reads {', '.join(f'{k}=PATH' for k in figure.inputs)}"
                        + (f"; missing {', '.join(missing)}" if missing else "")
                        + (f"; unknown {', '.join(unknown)}" if unknown else ""))
    figure.draw(inputs, cfg, Path(output))
