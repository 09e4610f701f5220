"""The file edges: atomic writes follow the umask, and a failed write (full disk) is one line."""
from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple

import numpy as np
import pytest
import xarray as xr

from gracefill import io
from gracefill.io import UserError, atomic_path, write_csv, write_netcdf


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_follow_the_umask(tmp_path, umask_022):
    import pandas as pd

    nc = write_netcdf(xr.Dataset({"x": ("t", np.arange(3.0))}), tmp_path / "a.nc")
    csv = write_csv(pd.DataFrame({"a": [1]}), tmp_path / "a.csv")
    for path in (nc, csv):
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path
    os.umask(0o077)
    private = write_csv(pd.DataFrame({"a": [1]}), tmp_path / "b.csv")
    assert oct(private.stat().st_mode & 0o777) == oct(0o600)


def test_figures_follow_the_umask(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gracefill.plots import save_figure

    for mask, mode in ((0o022, 0o644), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            fig, _ = plt.subplots()
            save_figure(fig, tmp_path / f"f{mask:o}.png")
        finally:
            os.umask(old)
        assert oct((tmp_path / f"f{mask:o}.png").stat().st_mode & 0o777) == oct(mode)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out" / "scores.csv"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError) as info:
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            no_space()
    assert str(info.value) == f"{target}: could not be written (No space left on device)"
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_writer_that_fails_without_a_reason_on_a_full_disk_is_named(tmp_path, monkeypatch):
    """torch.save says "unexpected pos ..." when the disk is full: the free space tells why."""
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 0))
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(UserError, match=r"checkpoint.pt: could not be written \(No space left on device: 0 bytes free\)"):
        with atomic_path(target):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
    assert not target.exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 0, 10 * io.FULL_DISK_BYTES))
    with pytest.raises(RuntimeError, match="unexpected pos"):   # not a disk problem: the error stays as it was
        with atomic_path(target):
            raise RuntimeError("unexpected pos 64 vs 0")


def test_checkpoint_save_on_a_full_disk_keeps_the_current_checkpoint(tmp_path, monkeypatch):
    import torch

    from gracefill.train import load_checkpoint, previous_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"engine": {}, "epoch": 1}, keep_previous=True)

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match="No space left on device"):
        save_checkpoint(path, {"engine": {}, "epoch": 2}, keep_previous=True)
    assert load_checkpoint(path)["epoch"] == 1 and not previous_checkpoint(path).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]   # no temporary file left


def test_a_checkpoint_that_cannot_fit_is_refused_before_writing(tmp_path, monkeypatch):
    import torch

    from gracefill.train import save_checkpoint, tensor_bytes

    payload = {"engine": {"w": torch.zeros(1000), "adam": [torch.zeros(10, dtype=torch.float64)]}, "epoch": 3}
    assert tensor_bytes(payload) == 4000 + 80
    path = tmp_path / "checkpoint.pt"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10_000, 8_000, 2_000))
    with pytest.raises(UserError) as info:
        save_checkpoint(path, payload)
    assert str(info.value) == f"{path}: not written (No space left on device: 4080 bytes needed, 2000 free)"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))
    save_checkpoint(path, payload)
    assert path.exists()


def test_netcdf_coordinates_carry_no_fill_value_and_months_are_days(tmp_path):
    import netCDF4
    import pandas as pd

    time = pd.date_range("2002-01-01", periods=3, freq="MS")
    ds = xr.Dataset({"x": (("time", "lat"), np.ones((3, 2)))}, coords={"time": time, "lat": [0.5, 1.5]})
    ds["lat"].attrs["bounds"] = "lat_bnds"   # copied from grid.nc, where lat_bnds lives
    path = write_netcdf(ds, tmp_path / "a.nc")
    with netCDF4.Dataset(path) as nc:
        assert "bounds" not in nc["lat"].ncattrs()
        assert "_FillValue" not in nc["lat"].ncattrs() and "_FillValue" not in nc["time"].ncattrs()
        assert nc["time"].dtype == np.float64 and nc["time"].units == "days since 1970-01-01"
        assert list(nc["time"][:]) == [11688.0, 11719.0, 11747.0]
    back = xr.open_dataset(path)
    np.testing.assert_array_equal(back["time"].values, time.values)


def test_netcdf_files_follow_cf_1_8_and_read_back_alike(tmp_path):
    import netCDF4
    import pandas as pd

    from gracefill.io import CONVENTIONS, open_dataset

    time = pd.date_range("2002-01-01", periods=3, freq="MS")
    ds = xr.Dataset({"r": (("model", "time", "lat"), np.ones((2, 3, 2)), {"units": "1", "long_name": "r"}),
                     "count": ("lat", np.array([3, 4], dtype=np.int64), {"units": "1", "long_name": "count"}),
                     "lat_bnds": (("lat", "nv"), np.array([[0.0, 1.0], [1.0, 2.0]]))},
                    coords={"model": ("model", ["bcnn", "land_model"], {"long_name": "method"}), "time": time,
                            "lat": ("lat", [0.5, 1.5], {"bounds": "lat_bnds"})})
    path = write_netcdf(ds, tmp_path / "a.nc")
    assert "standard_name" not in ds["time"].attrs and ds["model"].dtype.kind == "U"   # the input is unchanged
    with netCDF4.Dataset(path) as nc:
        assert nc.Conventions == CONVENTIONS and set(CONVENTIONS.split()) == {"CF-1.8", "CF-1.10"}
        assert "model" not in nc.variables and nc["model_name"].dimensions == ("model",)   # labels: auxiliary
        assert nc["r"].coordinates == "model_name" and nc["model_name"].long_name == "method"
        assert "_FillValue" not in nc["lat_bnds"].ncattrs()                                  # CF 7.1
        assert nc["count"].dtype == np.int32                                                 # no int64 in CF-1.8
        assert (nc["time"].standard_name, nc["time"].axis) == ("time", "T")
    back = open_dataset(path)
    assert list(back["model"].values) == ["bcnn", "land_model"] and "model_name" not in back.variables
    assert back.sel(model="land_model")["r"].dims == ("time", "lat")
    np.testing.assert_array_equal(back["count"].values, [3, 4])
    plain = xr.open_dataset(path)                                        # plain xarray: an auxiliary coordinate
    assert list(plain["model_name"].values) == ["bcnn", "land_model"] and "model_name" in plain["r"].coords
    back.close()
    plain.close()


def test_a_float_flag_field_is_stored_as_its_flags_integers_and_reads_back_with_nan(tmp_path):
    import netCDF4

    category = xr.DataArray(np.array([[0.0, 2.0], [np.nan, 5.0]], dtype=np.float32), dims=("lat", "lon"),
                            attrs={"flag_values": np.arange(6, dtype=np.int8), "flag_meanings": "a b c d e f"})
    path = write_netcdf(xr.Dataset({"category": category}), tmp_path / "c.nc")
    with netCDF4.Dataset(path) as nc:
        assert nc["category"].dtype == np.int8 and nc["category"]._FillValue == -1
    back = xr.open_dataset(path)["category"]
    np.testing.assert_array_equal(back.values, category.values)
