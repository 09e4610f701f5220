"""The figure table (gracefill.figures): every entry complete, its caption filled from the
config, `gracefill plot` drawing from it, and the regional means of the time series."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from gracefill import cli
from gracefill import months as mo
from gracefill.config import validate
from gracefill.figures import FIGURES, caption, draw, outside_record_spans, regional_mean, site_series
from gracefill.io import UserError


def test_every_figure_has_inputs_sections_a_format_and_a_caption_for_the_default_config():
    cfg = validate({})
    assert {"inputs", "timeseries", "gap_animation"} <= set(FIGURES)
    for name, figure in FIGURES.items():
        assert figure.inputs and all(not path.startswith("/") for path in figure.inputs.values()), name
        assert figure.format in ("png", "gif") and "figures" in figure.sections, name
        text = caption(name, cfg)
        assert "``default``" in text and "{" not in text, (name, text)
    assert [n for n, f in FIGURES.items() if f.format == "gif"] == ["gap_animation"]
    assert "-0.5" in caption("gap_drought_probability", cfg) and "cm" in caption("training_curves", cfg)


def test_draw_names_the_inputs_a_figure_reads_when_one_is_missing_or_unknown(tmp_path):
    with pytest.raises(UserError, match=r"^--input: figure training_curves reads log=PATH; missing log; unknown maps$"):
        draw("training_curves", {"maps": "x.nc"}, validate({}), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_command_refuses_an_input_without_a_name(tmp_path, capsys):
    code = cli.main(["plot", "--figure", "training_curves", "--input", "log.csv", "--output", str(tmp_path / "x.png")])
    assert code == 1
    assert capsys.readouterr().err.strip().endswith("error: --input: expected NAME=PATH, got 'log.csv'")


def test_plot_command_draws_the_training_curves_from_a_log(tmp_path):
    log = tmp_path / "training_log.csv"
    epochs = np.arange(1, 6)
    pd.DataFrame({"epoch": epochs, "train_rmse": 10.0 / epochs, "test_rmse": 12.0 / epochs, "test_r2": 0.5,
                  "test_mnlp": 3.0, "mean_log_beta": 0.1 * epochs}).to_csv(log, index=False)
    out = tmp_path / "curves.png"
    assert cli.main(["plot", "--figure", "training_curves", "--input", f"log={log}", "--output", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and min(image.size) > 100


def _grid_and_reconstruction():
    lat, lon = np.array([0.5, 1.5, 2.5]), np.array([10.5, 11.5])
    grid = xr.Dataset({"land_mask": (("lat", "lon"), np.array([[1, 1], [1, 0], [0, 0]], dtype=np.int8)),
                       "cell_area": (("lat", "lon"), np.array([[1.0, 3.0], [2.0, 5.0], [1.0, 1.0]]))},
                      coords={"lat": lat, "lon": lon})
    months = mo.month_range("2000-01", "2000-02")
    twsa = np.array([[[1.0, 3.0], [5.0, 9.0], [9.0, 9.0]], [[2.0, np.nan], [4.0, 9.0], [9.0, 9.0]]])
    rec = xr.Dataset({"twsa": (("time", "lat", "lon"), twsa), "twsa_std": (("time", "lat", "lon"), np.ones_like(twsa)),
                      "observed_twsa": (("time", "lat", "lon"), twsa * 0.5)},
                     coords={"time": months, "lat": lat, "lon": lon})
    return grid, rec


def test_site_series_is_the_area_weighted_mean_over_the_land_cells_near_the_site():
    grid, rec = _grid_and_reconstruction()
    series = site_series(rec, grid, {"name": "x", "lat": 1.0, "lon": 11.0, "radius_deg": 1.0})
    # land cells within 1 degree of (1, 11): (0.5, 10.5) area 1, (0.5, 11.5) area 3, (1.5, 10.5) area 2
    np.testing.assert_allclose(series["mean"], [(1 * 1 + 3 * 3 + 5 * 2) / 6, (2 * 1 + 4 * 2) / 3])
    np.testing.assert_allclose(series["upper"] - series["mean"], [1.96, 1.96])
    np.testing.assert_allclose(series["observed"], 0.5 * series["mean"])
    assert series["truth"] is None
    np.testing.assert_allclose(regional_mean(rec["twsa"], grid["cell_area"].where(grid["land_mask"] == 1)),
                               [(1 + 9 + 10) / 6, (2 + 8) / 3])
    with pytest.raises(UserError, match="no land cell within 0.1 degrees of far"):
        site_series(rec, grid, {"name": "far", "lat": 2.5, "lon": 11.5, "radius_deg": 0.1})


def test_spans_outside_the_record_are_shaded_only_when_a_year_or_longer():
    months = mo.month_range("2000-01", "2003-12")
    flags = np.zeros(months.size, dtype=np.int8)
    flags[:12] = mo.MONTH_FLAGS["hindcast"]
    flags[-11:] = mo.MONTH_FLAGS["forecast"]
    rec = xr.Dataset({"month_flag": ("time", flags)}, coords={"time": months})
    spans = outside_record_spans(rec)
    assert [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in spans] == [(pd.Timestamp("2000-01"), pd.Timestamp("2000-12"))]
    assert outside_record_spans(rec.drop_vars("month_flag")) == []
