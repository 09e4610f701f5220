"""Every NetCDF file of the end-to-end run passes the IOOS compliance-checker for CF-1.8 and
CF-1.10 without a high or medium priority failure (low priority ones are recommendations)."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SPECS = ("cf:1.8", "cf:1.10")
#: the checker's weights: 3 high ("must"), 2 medium ("should"), 1 low ("may")
MEDIUM = 2


def failures(path: Path, spec: str) -> list[str]:
    """The high and medium priority failures of ``path`` under ``spec``, and any check that
    raised instead of giving a result, one line each."""
    from compliance_checker.runner import CheckSuite

    with warnings.catch_warnings():  # the checker's own deprecation notices (its SOS checkers)
        warnings.simplefilter("ignore")
        CheckSuite.load_all_available_checkers()
        suite = CheckSuite()
        ds = suite.load_dataset(str(path))
        try:
            groups = suite.run_all(ds, [spec], skip_checks=[])
        finally:
            ds.close()
    lines = []

    def walk(result) -> None:
        value = result.value
        failed = value[0] < value[1] if isinstance(value, tuple) else not value
        if result.weight >= MEDIUM and failed:
            level = "high" if result.weight > MEDIUM else "medium"
            lines.append(f"{level} {result.name}: {'; '.join(result.msgs) or '(no message)'}")
        for child in result.children or []:
            walk(child)

    for results, errors in groups.values():
        for result in results:
            walk(result)
        lines += [f"error in {check}: {error[0]}" for check, error in (errors or {}).items()]
    return lines


def test_every_netcdf_file_passes_the_cf_checker(test_run):
    results = test_run / "results/test"
    files = sorted(results.rglob("*.nc"))
    kinds = {path.name for path in files}
    assert {"grid.nc", "predictors.nc", "tensors.nc", "reconstruction.nc", "baselines.nc", "score_maps.nc",
            "baseline_spreads.nc", "drought.nc", "gracefill_twsa.nc", "twsa.nc"} <= kinds
    report = [f"{path.relative_to(results)} [{spec}] {line}" for path in files for spec in SPECS
              for line in failures(path, spec)]
    assert not report, "CF compliance failures:\n" + "\n".join(report)
