"""The science benchmark: one configuration run over several synthetic worlds, summarised in one table.

Each world (``benchmark.worlds``: a seed and optional ``sources.synthetic`` settings, e.g. another
groundwater memory or no regional trends) is an ordinary run of the whole workflow under the
run name ``<run>-<world>``, so every world is fitted, validated and scored exactly like a user's
run. This module builds the worlds' configs and turns their ``evaluation/scores.csv`` (with
``evaluation/scores_by_lead.csv``, the scores by distance to the training window, where the
run wrote one) and ``drought/detection.csv`` into:

- ``worlds.csv``: every world's value of every metric (long format);
- ``table.csv``: per method, period and metric, the mean over worlds with a bootstrap interval
  that resamples whole worlds (each world is one block: its months and cells are dependent);
- ``differences.csv``: the BCNN minus each baseline, per world paired, with the same interval
  and the number of worlds in which the BCNN is better.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd

#: metrics summarised across worlds, and whether lower is better
METRICS = {"nse_median": False, "rmse_median": True, "r_median": False, "crps": True, "mnlp": True,
           "coverage_50": None, "coverage_90": None}
DETECTION_METRICS = {"hit_rate": False, "false_alarm_ratio": True}
PERIOD_ORDER = ("validation", "test", "pseudo_gap", "gap", "gap_without_direct_part", "missing", "hindcast",
                "after_0-5y", "after_5-10y", "after_10-20y", "after_20+y",
                "before_0-5y", "before_5-10y", "before_10-20y", "before_20+y")


def with_lead_scores(scores: pd.DataFrame, by_lead: pd.DataFrame) -> pd.DataFrame:
    """A world's scores table with the rows of its ``scores_by_lead.csv`` appended; their period
    is ``<side>_<years>y`` (e.g. ``before_20+y``: 20 or more years before the training window)."""
    if by_lead.empty:
        return scores
    rows = by_lead.assign(period=by_lead["side"] + "_" + by_lead["lead_years"].astype(str) + "y")
    return pd.concat([scores, rows[[c for c in rows.columns if c in scores.columns or c in METRICS]]],
                     ignore_index=True)


def merge(base: dict, override: dict) -> dict:
    """``override`` applied over ``base``, section by section (as Snakemake merges config files)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def world_name(world: dict, position: int) -> str:
    return world.get("name") or f"world{position + 1}"


def world_configs(raw: dict, worlds: list[dict]) -> dict[str, dict]:
    """One config per world: the user's (raw, not default-filled) config with the world's run
    name ``<run>-<world>``, seed and ``sources.synthetic`` settings; the benchmark section dropped."""
    base = {k: v for k, v in copy.deepcopy(raw).items() if k != "benchmark"}
    run = base.get("run", "default")
    out = {}
    for i, world in enumerate(worlds):
        name = world_name(world, i)
        if name in out:
            raise ValueError(f"benchmark.worlds: the name {name!r} is used twice; expected one name per world")
        override = {"run": f"{run}-{name}", "seed": world["seed"],
                    "sources": {"synthetic": world.get("synthetic", {})}}
        out[name] = merge(base, override)
    return out


def collect(results: dict[str, tuple[pd.DataFrame, pd.DataFrame | None]]) -> pd.DataFrame:
    """Every world's metrics in long form: world, method, period, metric, value.

    ``results`` maps a world to its (scores table, detection table or None); detection rows
    (drought hit rate and false-alarm ratio) appear under method ``bcnn``.
    """
    rows = []
    for world, (scores, detection) in results.items():
        for _, r in scores.iterrows():
            for metric in METRICS:
                if metric in r and pd.notna(r[metric]):
                    rows.append({"world": world, "method": r["method"], "period": r["period"], "metric": metric,
                                 "value": float(r[metric])})
        if detection is not None:
            for _, r in detection.iterrows():
                for metric in DETECTION_METRICS:
                    rows.append({"world": world, "method": "bcnn", "period": r["period"],
                                 "metric": f"drought_{metric}", "value": float(r[metric])})
    if not rows:
        raise ValueError("no scores to summarise")
    return pd.DataFrame(rows)


def _bootstrap_mean(values: np.ndarray, samples: int, interval: float, rng: np.random.Generator):
    """Mean of the worlds' values and a percentile interval of it, resampling worlds."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.nan, np.nan, np.nan
    draws = rng.integers(0, values.size, size=(samples, values.size))
    means = values[draws].mean(axis=1)
    tail = (1 - interval) / 2 * 100
    return float(values.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def summarise(long: pd.DataFrame, samples: int = 2000, interval: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """Per method, period and metric: worlds, mean over worlds, and its bootstrap interval."""
    rng = np.random.default_rng(seed)
    rows = []
    for (method, period, metric), group in long.groupby(["method", "period", "metric"], sort=False):
        mean, lower, upper = _bootstrap_mean(group["value"].to_numpy(float), samples, interval, rng)
        rows.append({"method": method, "period": period, "metric": metric, "worlds": int(group["world"].nunique()),
                     "mean": mean, "lower": lower, "upper": upper})
    return _ordered(pd.DataFrame(rows))


def differences(long: pd.DataFrame, samples: int = 2000, interval: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """The BCNN minus each other method, paired by world, for the metrics with a better side:
    mean difference, bootstrap interval, and in how many worlds the BCNN is better."""
    rng = np.random.default_rng(seed)
    wide = long.pivot_table(index=["world", "period", "metric"], columns="method", values="value")
    if "bcnn" not in wide:
        raise ValueError("no BCNN scores to compare")
    rows = []
    for (period, metric), group in wide.groupby(level=["period", "metric"], sort=False):
        lower_is_better = METRICS.get(metric)
        if lower_is_better is None:
            continue
        for method in [m for m in wide.columns if m != "bcnn"]:
            diff = (group["bcnn"] - group[method]).to_numpy(float)
            if not np.isfinite(diff).any():
                continue
            mean, lower, upper = _bootstrap_mean(diff, samples, interval, rng)
            better = (diff < 0) if lower_is_better else (diff > 0)
            rows.append({"baseline": method, "period": period, "metric": metric,
                         "worlds": int(np.isfinite(diff).sum()), "bcnn_better_in": int(better[np.isfinite(diff)].sum()),
                         "mean_difference": mean, "lower": lower, "upper": upper})
    return pd.DataFrame(rows)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    rank = {p: i for i, p in enumerate(PERIOD_ORDER)}
    return table.sort_values(["period", "method"], key=lambda s: s.map(rank).fillna(99) if s.name == "period" else s,
                             kind="stable").reset_index(drop=True)


def markdown(table: pd.DataFrame, metrics=("nse_median", "rmse_median", "crps", "mnlp", "coverage_50",
                                           "coverage_90")) -> str:
    """The summary as a Markdown table: one row per period and method, "mean [lower, upper]" per metric."""
    cells = table[table["metric"].isin(metrics)].copy()
    cells["text"] = [f"{m:.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(m) else "-"
                     for m, lo, hi in zip(cells["mean"], cells["lower"], cells["upper"])]
    wide = cells.pivot_table(index=["period", "method"], columns="metric", values="text", aggfunc="first", sort=False)
    wide = wide.reindex(columns=[m for m in metrics if m in wide.columns]).fillna("-")
    header = "| period | method | " + " | ".join(wide.columns) + " |"
    lines = [header, "|" + "---|" * (len(wide.columns) + 2)]
    for (period, method), row in wide.iterrows():
        lines.append(f"| {period} | {method} | " + " | ".join(row.values) + " |")
    drought = table[table["metric"].str.startswith("drought_")]
    if len(drought):
        lines += ["", "| drought detection (BCNN, WSDI <= threshold) | hit rate | false-alarm ratio |", "|---|---|---|"]
        for period, part in drought.groupby("period", sort=False):
            cell = {r.metric: f"{r.mean:.2f} [{r.lower:.2f}, {r.upper:.2f}]" for r in part.itertuples()}
            lines.append(f"| {period} | {cell.get('drought_hit_rate', '-')} | {cell.get('drought_false_alarm_ratio', '-')} |")
    return "\n".join(lines)
