"""File edges shared by every command: atomic NetCDF writes, provenance attrs, user errors."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import xarray as xr

from gracefill import __version__

if TYPE_CHECKING:
    import pandas as pd


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits non-zero."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: a disk with less free space than this counts as full when a writer fails without saying why
#: (torch.save and netCDF4 raise RuntimeErrors such as "unexpected pos" on a full disk)
FULL_DISK_BYTES = 1 << 20


def write_failed(path: str | os.PathLike, exc: BaseException) -> UserError:
    """One line naming the file that could not be written and the operating system's reason."""
    text = str(exc).strip()
    reason = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
    return UserError(f"{path}: could not be written ({reason})")


@contextmanager
def atomic_path(path: str | os.PathLike, expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the permissions of any new file under the umask (mkstemp's own are 0600); a
    failed write (e.g. a full disk) leaves nothing and raises a :class:`UserError` naming the
    file and the reason. ``expected_bytes`` (the size about to be written, where it is known)
    is checked against the free space first, so that a write that cannot fit is not started.
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if expected_bytes is not None:
            free = shutil.disk_usage(final.parent).free
            if free < expected_bytes:
                raise UserError(f"{final}: not written (No space left on device: {expected_bytes} bytes needed, "
                                f"{free} free)")
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    except OSError as exc:
        raise write_failed(final, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, final)
        except OSError as exc:
            raise write_failed(final, exc) from None
        except RuntimeError:
            free = shutil.disk_usage(final.parent).free
            if free < FULL_DISK_BYTES:
                raise UserError(f"{final}: could not be written (No space left on device: {free} bytes free)") from None
            raise
    finally:
        tmp_path.unlink(missing_ok=True)


#: The CF versions every file declares in ``Conventions``. The files use nothing newer than CF-1.8
#: (no 64-bit or unsigned integers, no string-valued coordinate variables), so they conform to
#: both, and tests/test_cf_compliance.py checks them against both with the IOOS compliance-checker.
CONVENTIONS = "CF-1.8 CF-1.10"

#: the suffix of the auxiliary coordinate that carries the string labels of a dim (CF: a
#: coordinate variable is numeric; "model" labels become model_name(model))
LABEL_SUFFIX = "_name"

#: the integer types CF-1.8 knows (no 64-bit, no unsigned ones)
_CF18_INTEGERS = (np.int8, np.int16, np.int32)


def _labels_as_auxiliary(ds: xr.Dataset) -> xr.Dataset:
    """Every string-valued dimension coordinate X(X) as the auxiliary coordinate X_name(X): CF
    allows only numeric coordinate variables; labels are auxiliary coordinates (CF 6.1), which
    the data variables name in their ``coordinates`` attribute. :func:`open_dataset` undoes it."""
    for dim in list(ds.dims):
        if dim in ds.coords and ds[dim].ndim == 1 and ds[dim].dtype.kind in "USO":
            label = f"{dim}{LABEL_SUFFIX}"
            if label in ds.variables:
                raise ValueError(f"the labels of dim {dim!r} cannot be written as {label!r}: a variable of that name exists")
            attrs = {"long_name": f"{dim} label", **ds[dim].attrs}
            ds = ds.assign_coords({label: (dim, ds[dim].values.astype(str), attrs)}).drop_vars(dim)
    return ds


def _labels_as_index(ds: xr.Dataset) -> xr.Dataset:
    """The labels a gracefill file keeps in X_name(X) as the index coordinate X again."""
    for name in list(ds.coords):
        dim = name[:-len(LABEL_SUFFIX)]
        if (name.endswith(LABEL_SUFFIX) and ds[name].dims == (dim,) and dim not in ds.variables
                and ds[name].dtype.kind in "USO"):
            ds = ds.assign_coords({dim: (dim, ds[name].values, ds[name].attrs)}).drop_vars(name)
    return ds


def _fits_int32(var: xr.Variable) -> bool:
    if var.size == 0:
        return True
    if not isinstance(var.data, np.ndarray):  # dask-backed: not computed here
        return False
    info = np.iinfo(np.int32)
    return bool(info.min <= var.values.min() and var.values.max() <= info.max)


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike, *, compress: bool = True,
                 chunks: dict[str, int] | None = None) -> Path:
    """Write ``ds`` as NetCDF-4 atomically, float variables zlib-compressed, with the package version.

    ``chunks`` ({dim: size}, e.g. {"time": 12}): the chunk shape on disk of every data variable
    with one of those dims, whole along its other dims (the netCDF library chooses otherwise).
    The file follows CF-1.8 and CF-1.10 (:data:`CONVENTIONS`): string labels of a dim become an
    auxiliary coordinate ``<dim>_name``, a datetime dim coordinate gets the time attributes,
    bounds variables and coordinates have no ``_FillValue``, integers are 8, 16 or 32 bits.
    """
    ds = _labels_as_auxiliary(ds.copy())
    for name in ds.variables:  # a "bounds" attribute must name a variable of the same file
        if ds[name].attrs.get("bounds") and ds[name].attrs["bounds"] not in ds.variables:
            ds[name].attrs = {k: v for k, v in ds[name].attrs.items() if k != "bounds"}
    for name in ds.dims:  # CF 4.4: a time coordinate is recognised by its standard_name and axis
        if name in ds.coords and ds[name].dtype.kind == "M":
            ds[name].attrs = {"standard_name": "time", "long_name": "time", "axis": "T", **ds[name].attrs}
    ds.attrs["Conventions"] = CONVENTIONS
    ds.attrs["gracefill_version"] = __version__
    encoding = {}
    if compress:
        for name, var in ds.data_vars.items():
            if var.dtype.kind in "fiu" and var.ndim >= 2:
                encoding[name] = {"zlib": True, "complevel": 1}
    for name, var in ds.data_vars.items():  # a float flag field (NaN = none) stored as its flags' integers
        flags = np.asarray(var.attrs.get("flag_values", []))
        if var.dtype.kind == "f" and flags.size and flags.dtype.kind in "iu":
            fill = -1 if -1 not in flags else int(np.iinfo(flags.dtype).min)
            encoding.setdefault(name, {}).update(dtype=flags.dtype, _FillValue=fill)
    for name, var in ds.variables.items():  # CF-1.8 has no 64-bit or unsigned integers
        if var.dtype.kind in "iu" and var.dtype.type not in _CF18_INTEGERS and _fits_int32(var):
            encoding.setdefault(name, {})["dtype"] = np.int32
    for name in ds.coords:  # CF: a coordinate has no missing value, hence no _FillValue
        encoding.setdefault(name, {})["_FillValue"] = None
    for var in list(ds.variables.values()):  # CF 7.1: nor does a bounds variable
        for key in ("bounds", "climatology"):
            if var.attrs.get(key) in ds.variables:
                encoding.setdefault(var.attrs[key], {})["_FillValue"] = None
    for name, var in ds.variables.items():  # months, as coordinate or data (time_bnds): float64 days
        if var.dtype.kind == "M":             # since 1970, not int64 nanoseconds, and never missing
            encoding.setdefault(name, {}).update(units="days since 1970-01-01", calendar="standard",
                                                 dtype="float64", _FillValue=None)
    for name, var in ds.data_vars.items():
        if chunks and any(dim in chunks for dim in var.dims) and all(var.shape):
            encoding.setdefault(name, {})["chunksizes"] = tuple(
                max(1, min(int(chunks.get(dim, size)), size)) for dim, size in zip(var.dims, var.shape))
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    return Path(path)


def read_csv(path: str | os.PathLike, required: tuple[str, ...] = ()) -> "pd.DataFrame":
    """Read a CSV table, failing with one line that names the file and what is missing."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        table = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
        raise UserError(f"{path}: not a readable CSV table ({type(exc).__name__})") from exc
    missing = [name for name in required if name not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}")
    return table


def open_dataset(path: str | os.PathLike, required: tuple[str, ...] = (), **kwargs) -> xr.Dataset:
    """Open a NetCDF file, failing with one line that names the file and what is missing."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        ds = xr.open_dataset(path, engine="netcdf4", **kwargs)
    except Exception as exc:  # netCDF4 raises OSError/ValueError with long messages
        raise UserError(f"{path}: not a readable NetCDF file ({type(exc).__name__})") from exc
    if "gracefill_version" in ds.attrs:  # labels written as <dim>_name: the index coordinate again
        restored = _labels_as_index(ds)
        if restored is not ds:
            restored.set_close(ds.close)
            ds = restored
    missing = [name for name in required if name not in ds.variables]
    if missing:
        ds.close()
        raise UserError(f"{path}: missing variable(s) {', '.join(missing)}; expected {', '.join(required)}")
    return ds


def write_csv(frame, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame as CSV atomically (5 significant digits)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.5g")
    return Path(path)


@contextmanager
def blame(path) -> Iterator[None]:
    """Turn a ValueError raised by the library into a one-line UserError naming ``path``."""
    try:
        yield
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, parent, ...), or None
    where that cannot be read (the process is gone, or no Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _parent_of(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return int(stat[1]) if stat else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"  # a zombie has ended; only its parent has not collected it yet


#: process names of the shells a workflow manager runs its commands through
SHELLS = ("bash", "sh", "dash", "zsh")


@contextmanager
def stop_with_launcher(enabled: bool = True, interval_s: float = 2.0) -> Iterator[None]:
    """Interrupt the main thread when the process that launched this one is gone: a workflow
    manager killed on its own (e.g. SIGINT to Snakemake alone) leaves the shell between it and a
    long stage alive, and the stage must not run on as an orphan. Watches the parent, and the
    parent's parent when the parent is a shell; a torchrun worker watches torchrun and torchrun's
    launcher that way. A no-op where the process tree cannot be read."""
    import _thread
    import threading

    parent = os.getppid()
    agent: tuple = ()
    if os.environ.get("TORCHELASTIC_RUN_ID"):  # a torchrun worker: its launcher is the one of torchrun
        agent, parent = (parent,), _parent_of(parent) or 0
    try:
        through_shell = Path(f"/proc/{parent}/comm").read_text().strip() in SHELLS
    except OSError:
        through_shell = False
    chain = agent + ((parent, _parent_of(parent)) if through_shell else (parent,))
    watched = [pid for pid in chain if enabled and pid and pid > 1]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval_s):
            if not all(_alive(pid) for pid in watched):
                done.set()
                _thread.interrupt_main()

    thread = threading.Thread(target=watch, name="stop-with-launcher", daemon=True)
    if watched:
        thread.start()
    try:
        yield
    finally:
        done.set()
