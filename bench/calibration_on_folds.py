"""Compare ways of calibrating the BCNN's spread on the validation folds of finished runs.

Reads each run's fold reconstructions (``validation/fold_*/reconstruction.nc``) and final
reconstruction, and for every calibration variant prints, over the runs:

* ``lofo``: each fold's validation months calibrated on the other folds (the selection score);
* ``forward``: the last fold calibrated on the earlier ones (the final model's situation:
  calibrated on the past, applied to later months with a longer fit window);
* ``test`` / ``gap``: the final reconstruction calibrated on all folds, scored against GRACE on
  test months and against the truth on gap months (a report only: nothing is chosen on them).

Scores: coverage of the central 50 and 90 % intervals, the CRPS (cm) and the negative log
density per value of the calibrated distribution about the ensemble mean (Gaussian, or the
Student-t the calibration chose with ``student_t`` in the variant's name); ``poolR``: each cell's
error variance pooled with its neighbours' over R km.

    python bench/calibration_on_folds.py results/benchmark-*/
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np
import pandas as pd
import xarray as xr

from gracefill import calibration as ca
from gracefill import metrics as me
from gracefill.months import SPLIT_FLAGS


def scores(err: np.ndarray, std: np.ndarray, dof: float = np.inf) -> dict:
    """Coverage of the central 50 and 90 % intervals, mean CRPS and NLP of errors under the
    distribution of standard deviation ``std`` (Gaussian, or Student-t with ``dof``)."""
    ok = np.isfinite(err) & np.isfinite(std) & (std > 0)
    as_field = (lambda a: xr.DataArray(a[ok], dims="value", attrs={"units": "cm"}))  # noqa: E731
    crps, nlp, pit = me.student_t_scores(as_field(np.zeros_like(err)), as_field(std), as_field(err), dof)
    inside = np.abs(pit.values - 0.5)
    return {"coverage_50": float(np.mean(inside <= 0.25)), "coverage_90": float(np.mean(inside <= 0.45)),
            "crps": float(crps.mean()), "nlp": float(nlp.mean()), "values": int(ok.sum())}


def score(rec: xr.Dataset, calibration: xr.Dataset | None, flag: str, against: str = "observed_twsa") -> dict:
    """Scores of ``rec``'s months with split ``flag`` with its raw spread calibrated by ``calibration``."""
    index = np.flatnonzero(rec["split"].values == SPLIT_FLAGS[flag])
    raw = rec["twsa_std_uncalibrated"] if "twsa_std_uncalibrated" in rec else rec["twsa_std"]
    base = rec.drop_vars(["calibration_scale", "twsa_std_uncalibrated"], errors="ignore").assign(twsa_std=raw)
    std = base["twsa_std"] if calibration is None else ca.apply_calibration(base, calibration)["twsa_std"]
    err = (rec["twsa"] - rec[against]).isel(time=index).values
    dof = np.inf if calibration is None else calibration.attrs.get("dof", np.inf)
    return scores(err.ravel(), std.isel(time=index).values.ravel(), dof)


def variants() -> dict:
    out = {"raw": None}
    for model in ca.CALIBRATION_MODELS:
        for tail in (None, 0.5, 0.9):
            out[f"{model}_{tail}"] = (model, tail, "gaussian", 0.0)
        out[f"{model}_None_student_t"] = (model, None, "student_t", 0.0)
    for radius in (250.0, 500.0, 1000.0):   # each cell's variance pooled with its neighbours'
        out[f"absolute_None_pool{radius:g}"] = ("absolute", None, "gaussian", radius)
    out["absolute_None_student_t_pool500"] = ("absolute", None, "student_t", 500.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (results/<run>/)")
    parser.add_argument("--lead-bin-months", type=int, default=12)
    parser.add_argument("--out", help="CSV of every score")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        folds = [xr.load_dataset(p) for p in sorted(glob.glob(os.path.join(run, "validation", "fold_*",
                                                                            "reconstruction.nc")))]
        final = xr.load_dataset(os.path.join(run, "reconstruction.nc"))
        world = os.path.basename(os.path.normpath(run))
        for name, model in variants().items():
            def fit(recs):
                return None if model is None else ca.fit_calibration(recs, args.lead_bin_months, model=model[0],
                                                                      tail_level=model[1], family=model[2],
                                                                      pooling_km=model[3])
            for k, fold in enumerate(folds):
                rows.append({"world": world, "variant": name, "check": "lofo",
                             **score(fold, fit(folds[:k] + folds[k + 1:]), "test")})
            rows.append({"world": world, "variant": name, "check": "forward",
                         **score(folds[-1], fit(folds[:-1]), "test")})
            calibration = fit(folds)
            rows.append({"world": world, "variant": name, "check": "test", **score(final, calibration, "test")})
            if "truth" in final:
                rows.append({"world": world, "variant": name, "check": "gap",
                             **score(final, calibration, "gap", against="truth")})
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    pooled = table.groupby(["check", "variant", "world"])[["coverage_50", "coverage_90", "crps", "nlp"]].mean()
    summary = pooled.groupby(["check", "variant"]).agg(["mean", "min"]).round(3)
    pd.set_option("display.width", 200)
    print(summary.to_string())


if __name__ == "__main__":
    main()
