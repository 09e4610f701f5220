"""NASA Earthdata products through earthaccess: credentials, the CMR query, one granule to one file.

Used by the mascon products fetched from Earthdata (`gracefill.mascons`: JPL, one
granule holding the whole record, `retrieve_record`) and GLDAS Noah (`gracefill.sources.gldas`,
one granule a month).

* Credentials are read only where earthaccess reads them: ``EARTHDATA_TOKEN``, or
  ``EARTHDATA_USERNAME`` and ``EARTHDATA_PASSWORD``, else ``~/.netrc`` (or ``$NETRC``) with
  ``machine urs.earthdata.nasa.gov``. `login_strategy` names the one that is there, or fails
  with one line saying what to set; gracefill never stores or prints them.
* `fetch` logs in, runs ``earthaccess.search_data(**query)`` (keys from its documented list:
  ``short_name``, ``version``, ``temporal``, ``granule_name``...), picks one granule, downloads
  it into a temporary folder beside the target, refuses an HTML page (an Earthdata login or
  licence page saved under a data name), runs the caller's ``verify`` and only then renames
  the file onto the target with a sidecar (size, SHA-256, granule), like
  `gracefill.sources.download`. A complete target is skipped. earthaccess sets no read timeout,
  so the download runs in a daemon thread watched for growth: no new byte for ``stall_s``
  seconds is a failure (the thread is abandoned). A failed, stalled or empty download is tried
  again up to ``retries`` attempts in all (``sources.download.retries``), then fails.
* Every failure is one line naming the collection and the problem. Exceptions raised inside
  earthaccess are reported by class name only: their texts can echo server responses.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from gracefill.io import UserError
from gracefill.sources import download as dl

EARTHDATA_HOST = "urs.earthdata.nasa.gov"
STALL_S = 120.0  # seconds without a new byte before a download counts as stalled


def login_strategy() -> str:
    """The earthaccess login strategy the user's credentials allow; UserError with the fix if none."""
    if os.environ.get("EARTHDATA_TOKEN") or (os.environ.get("EARTHDATA_USERNAME") and os.environ.get("EARTHDATA_PASSWORD")):
        return "environment"
    netrc = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    try:
        if netrc.is_file() and EARTHDATA_HOST in netrc.read_text():
            return "netrc"
    except OSError:
        pass
    raise UserError(f"Earthdata credentials not found: add 'machine {EARTHDATA_HOST} login <user> password <password>' "
                    f"to {netrc} (chmod 600), or set EARTHDATA_USERNAME and EARTHDATA_PASSWORD (or EARTHDATA_TOKEN)")


def granule_name(granule) -> str:
    """A granule's name: its CMR ``GranuleUR`` (earthaccess's DataGranule is a dict of UMM), else str()."""
    try:
        return str(granule["umm"]["GranuleUR"])
    except (KeyError, TypeError, IndexError):
        return str(granule)


def _earthaccess(module):
    """The earthaccess module (a stand-in in tests); the credentials are checked first."""
    strategy = login_strategy()
    if module is None:
        try:
            import earthaccess as module
        except ImportError:
            raise UserError("earthaccess is not installed: pip install earthaccess "
                            "(or use the conda environment envs/gracefill.yaml)") from None
    return module, strategy


def fetch(
    query: dict,
    target: str | os.PathLike,
    *,
    pick: Callable[[Sequence], object],
    verify: Callable[[Path], None] | None = None,
    what: str | None = None,
    earthaccess=None,
    stall_s: float = STALL_S,
    retries: int = 1,
    backoff_s: float = dl.RETRY_BACKOFF_S,
) -> Path:
    """Search the granules matching ``query``, download the one ``pick`` chooses to ``target``.

    ``pick(granules)`` returns one granule or raises UserError; ``verify(path)`` checks the file
    (raises UserError). A download that raises, stalls or returns no file is attempted
    ``retries`` times in all, ``backoff_s`` x attempt apart. Returns ``target``; skips everything
    if it is already complete."""
    target = Path(target)
    if dl.is_complete(target):
        return target
    what = what or f"Earthdata {query.get('short_name', '?')}"
    module, strategy = _earthaccess(earthaccess)
    try:
        auth = module.login(strategy=strategy)
        if auth is not None and getattr(auth, "authenticated", True) is False:
            raise UserError(f"{what}: Earthdata login failed (strategy {strategy}); check the credentials")
        granules = list(module.search_data(**query) or [])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - earthaccess raises many kinds, some echo responses
        raise UserError(f"{what}: Earthdata login or search failed ({type(exc).__name__})") from None
    if not granules:
        raise UserError(f"{what}: no granule found for {query}")
    granule = pick(granules)
    name = granule_name(granule)
    target.parent.mkdir(parents=True, exist_ok=True)
    attempts = max(1, int(retries))
    for attempt in range(1, attempts + 1):
        try:
            return _download_once(module, granule, name, target, what, stall_s, verify)
        except dl.TransientError as exc:
            if attempt == attempts:
                after = f" after {attempts} attempts" if attempts > 1 else ""
                raise UserError(f"{exc}{after}; rerun to retry") from None
            time.sleep(backoff_s * attempt)
    raise AssertionError("unreachable")


def record_query(cfg: dict) -> dict:
    """Keyword arguments of ``earthaccess.search_data`` for a product whose one granule holds the
    whole record (``sources.<name>``: short_name, optional version and granule_name).

    No ``temporal``: the granule spans the whole record, so a period-dependent query would change
    nothing but make a new period refetch the same file; the period is checked when the file is
    normalised."""
    query = {"short_name": cfg["short_name"]}
    if cfg.get("version"):
        query["version"] = cfg["version"]
    if cfg.get("granule_name"):
        query["granule_name"] = cfg["granule_name"]
    return query


def newest_record(granules):
    """The granule with the latest record: whole-record names end in the last month
    (``..._200204_YYYYMM...``), so the greatest name."""
    return max(granules, key=granule_name)


def retrieve_record(cfg: dict, target: str | os.PathLike, *, verify: Callable[[Path], None] | None = None,
                    earthaccess=None, stall_s: float = STALL_S, retries: int = 1) -> Path:
    """Download the newest whole-record granule of ``sources.<name>`` (``cfg``) to ``target``
    (skipped if complete), checked by ``verify``."""
    return fetch(record_query(cfg), target, pick=newest_record, verify=verify,
                 what=f"Earthdata {cfg['short_name']}", earthaccess=earthaccess, stall_s=stall_s, retries=retries)


def _download_once(module, granule, name: str, target: Path, what: str, stall_s: float,
                   verify: Callable[[Path], None] | None) -> Path:
    """One download of ``granule`` into a temporary folder beside ``target``, checked, renamed."""
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        files = _download_watched(module, granule, tmpdir, stall_s, f"{what}: download of {name}")
        files = [Path(f) for f in files or [] if Path(f).suffix in (".nc", ".nc4") and Path(f).is_file()]
        if not files:
            raise dl.TransientError(f"{what}: the download of {name} returned no NetCDF file (failed or refused)")
        got = files[0]
        with open(got, "rb") as f:
            if dl.looks_like_html(f.read(dl.HTML_SNIFF_BYTES)):
                raise UserError(f"{what}: {got.name} is an HTML page, not a data file (Earthdata login or "
                                "licence page? accept the data's licence at urs.earthdata.nasa.gov)")
        try:
            return dl.finalise(got, target, f"{what} granule {name} ({got.name})", verify)
        except UserError as exc:
            raise UserError(f"{what}: downloaded {got.name} failed verification: {exc}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _size_of(folder: Path) -> int:
    total = 0
    for f in folder.rglob("*"):
        try:
            total += f.stat().st_size if f.is_file() else 0
        except FileNotFoundError:  # renamed or removed by the download meanwhile
            pass
    return total


def _download_watched(module, granule, folder: Path, stall_s: float, what: str) -> list:
    """``module.download([granule], folder)`` in a daemon thread; UserError if it raises, or if
    no new byte lands in ``folder`` for ``stall_s`` seconds."""
    result: dict = {}

    def work():
        try:
            result["files"] = module.download([granule], local_path=str(folder), threads=1)
        except BaseException as exc:  # noqa: BLE001 - reported by class name in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=work, name="earthaccess-download", daemon=True)
    thread.start()
    size, changed = -1, time.monotonic()
    while thread.is_alive():
        thread.join(timeout=min(1.0, stall_s / 4))
        now, current = time.monotonic(), _size_of(folder)
        if current != size:
            size, changed = current, now
        elif thread.is_alive() and now - changed > stall_s:
            raise dl.TransientError(f"{what} stalled (no data for {stall_s:g} s)")
    if "error" in result:
        raise dl.TransientError(f"{what} failed ({type(result['error']).__name__})")
    return result.get("files") or []
