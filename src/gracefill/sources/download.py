"""HTTPS downloads that are resumable, atomic, verified and recorded.

`download` fetches one URL to one file:

* the bytes go to ``<file>.part`` beside the final name; an interrupted download resumes
  from there with an HTTP ``Range`` request (``If-Range`` on the validator the server gave,
  so a changed file restarts cleanly); a server that ignores the range restarts it;
* the received size is checked against ``Content-Length`` (a truncated transfer is an
  error), an HTML page (an error or login page saved under a data name) is refused, and a
  caller's ``verify(path)`` (e.g. "opens as NetCDF with these variables") runs on the
  complete ``.part`` file; a resumed file that fails verification is downloaded once more
  from scratch;
* only then is the file renamed onto its final name, and a sidecar ``<file>.sha256.json``
  records URL (without credentials), size, SHA-256 and time. A file whose sidecar matches
  its size and hash is complete: a rerun skips it;
* every failure is a `DownloadError` (a `UserError`): one line naming the URL or file and
  the problem; nothing is left under the final name.

Timeouts are (connect, read) seconds; the read timeout bounds every wait for bytes, so a
stalled server fails instead of hanging. A tqdm bar shows the progress.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from gracefill.io import UserError

CHUNK_BYTES = 1 << 16
DEFAULT_TIMEOUT = (30.0, 120.0)  # (connect, read) seconds
DEFAULT_RETRIES = 3  # attempts for transient failures (connection errors, stalls, 5xx)
RETRY_BACKOFF_S = 5.0  # wait before attempt k: backoff * k
SIDECAR_SUFFIX = ".sha256.json"
PART_SUFFIX = ".part"
HTML_SNIFF_BYTES = 512
USER_AGENT = "gracefill (https://github.com/; scientific workflow)"


class DownloadError(UserError):
    """A download failed; the message is one line naming the URL or file and the problem."""


class TransientError(Exception):
    """A failure worth another attempt (connection, stall, server error); the downloaders retry
    it within their budget and then report it in one line."""


def is_transient_status(status: int) -> bool:
    """An HTTP status worth another attempt: a server error or "too many requests"."""
    return status >= 500 or status == 429


@contextlib.contextmanager
def _http_session(session=None):
    """``session`` as given (the caller closes it), or a new one closed on exit; either way
    with the project's User-Agent unless one is set."""
    import requests

    own = session is None
    session = session or requests.Session()
    session.headers.setdefault("User-Agent", USER_AGENT)
    try:
        yield session
    finally:
        if own:
            session.close()


def redact(url: str) -> str:
    """The URL without user:password and without a query string (tokens live there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def part_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + PART_SUFFIX)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def is_complete(path: str | os.PathLike, *, check_hash: bool = True) -> bool:
    """True if ``path`` exists and its sidecar records its size (and SHA-256)."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        return False
    try:
        record = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if record.get("size") != path.stat().st_size:
        return False
    return not check_hash or record.get("sha256") == sha256_of(path)


def record_file(path: str | os.PathLike, source: str) -> dict:
    """Write the sidecar of a complete file (atomically) and return its record."""
    path = Path(path)
    record = {
        "file": path.name,
        "source": source,
        "size": path.stat().st_size,
        "sha256": sha256_of(path),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    side = sidecar_path(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, side)
    return record


def finalise(tmp: str | os.PathLike, path: str | os.PathLike, source: str,
             verify: Callable[[Path], None] | None = None) -> Path:
    """Verify a complete temporary file, rename it onto ``path`` and record its sidecar.

    The sidecar is removed first and written last, so a crash in between leaves a file that
    `is_complete` rejects (and a rerun replaces)."""
    tmp, path = Path(tmp), Path(path)
    if verify is not None:
        verify(tmp)
    sidecar_path(path).unlink(missing_ok=True)
    os.replace(tmp, path)
    record_file(path, source)
    return path


def looks_like_html(head: bytes) -> bool:
    text = head.lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in text[:HTML_SNIFF_BYTES]


def download(
    url: str,
    path: str | os.PathLike,
    *,
    verify: Callable[[Path], None] | None = None,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = RETRY_BACKOFF_S,
    progress: bool = True,
    session=None,
    auth=None,
) -> Path:
    """Download ``url`` to ``path`` (see the module docstring); return ``path``.

    Skips the download when ``path`` is already complete (its sidecar matches). ``verify``
    raises `UserError` (or any exception) for a file that is not what was expected.
    """
    path = Path(path)
    shown = redact(url)
    if is_complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(path)
    with _http_session(session) as session:
        restarted = False
        attempt = 0
        while True:
            attempt += 1
            resumed = part.exists() and part.stat().st_size > 0
            try:
                _fetch(session, url, shown, part, timeout=timeout, progress=progress, auth=auth)
            except TransientError as exc:
                if attempt >= max(1, retries):
                    raise DownloadError(f"{shown}: {exc} (gave up after {attempt} attempt(s); rerun to resume)") from None
                time.sleep(backoff * attempt)
                continue
            try:
                return finalise(part, path, shown, verify)
            except Exception as exc:  # noqa: BLE001 - any verification failure
                part.unlink(missing_ok=True)
                message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
                if resumed and not restarted:  # the resumed bytes may not belong together
                    restarted = True
                    continue
                raise DownloadError(f"{shown}: downloaded file failed verification: {message}") from None


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _fetch(session, url: str, shown: str, part: Path, *, timeout, progress: bool, auth) -> None:
    """Fetch (or resume) ``url`` into ``part``; raise DownloadError or TransientError."""
    import requests
    from tqdm.auto import tqdm

    meta_file = _meta_path(part)
    have = part.stat().st_size if part.exists() else 0
    validator = None
    if have and meta_file.exists():
        try:
            validator = json.loads(meta_file.read_text()).get("validator")
        except (OSError, json.JSONDecodeError):
            validator = None
    headers = {"Accept-Encoding": "identity"}
    if have and validator:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = validator
    elif have:  # nothing to tie the partial bytes to: start again
        part.unlink()
        have = 0
    try:
        response = session.get(url, stream=True, timeout=timeout, headers=headers, allow_redirects=True, auth=auth)
    except requests.exceptions.ConnectTimeout:
        raise TransientError(f"no connection within {timeout[0]:g} s") from None
    except requests.exceptions.ReadTimeout:
        raise TransientError(f"server stalled (no answer within {timeout[1]:g} s)") from None
    except requests.exceptions.SSLError as exc:
        raise DownloadError(f"{shown}: TLS/SSL error ({type(exc).__name__})") from None
    except requests.exceptions.ConnectionError:
        raise TransientError("connection failed") from None
    except requests.exceptions.RequestException as exc:
        raise DownloadError(f"{shown}: request failed ({type(exc).__name__})") from None
    with response:
        status = response.status_code
        if status == 416:  # our range is past the end: the file changed, start again
            part.unlink(missing_ok=True)
            meta_file.unlink(missing_ok=True)
            raise TransientError("server refused the resume range (HTTP 416); restarting")
        if status in (401, 403):
            raise DownloadError(f"{shown}: HTTP {status} {response.reason} (login or permission needed)")
        if is_transient_status(status):
            raise TransientError(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise DownloadError(f"{shown}: HTTP {status} {response.reason}")
        if status == 206 and have:
            mode = "ab"
            total = _content_length(response)
            total = have + total if total is not None else None
        else:  # 200: the whole file (the server ignored or rejected our range)
            mode, have = "wb", 0
            total = _content_length(response)
        ctype = response.headers.get("Content-Type", "").lower()
        if "text/html" in ctype:
            raise DownloadError(f"{shown}: server answered with an HTML page (Content-Type {ctype.split(';')[0]}), not a data file")
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        meta_file.write_text(json.dumps({"url": shown, "validator": validator, "total": total}))
        received = have
        first = mode == "wb"
        try:
            with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                             desc=Path(urlsplit(url).path).name or "download", disable=not progress,
                                             mininterval=1.0, leave=False) as bar:
                for block in response.iter_content(CHUNK_BYTES):
                    if first and block:
                        first = False
                        if looks_like_html(block[:HTML_SNIFF_BYTES]):
                            f.close()
                            part.unlink(missing_ok=True)
                            meta_file.unlink(missing_ok=True)
                            raise DownloadError(f"{shown}: server sent an HTML page, not a data file")
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ReadTimeout) as exc:
            stalled = "timed out" in str(exc).lower() or isinstance(exc, requests.exceptions.ReadTimeout)
            what = f"server stalled (no data for {timeout[1]:g} s)" if stalled else "connection broken"
            raise TransientError(f"{what} after {received} of {total if total is not None else '?'} bytes") from None
    if total is not None and received != total:
        raise TransientError(f"truncated: received {received} of {total} bytes")
    if received == 0:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{shown}: server sent an empty file")
    meta_file.unlink(missing_ok=True)


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or response.headers.get("Content-Encoding", "identity") not in ("identity", ""):
        return None
    try:
        return int(value)
    except ValueError:
        return None


_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def newest_link(page: str, pattern: str, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                retries: int = DEFAULT_RETRIES, backoff: float = RETRY_BACKOFF_S, session=None) -> str:
    """The absolute URL of the newest file linked from the HTML ``page`` whose name matches the
    glob ``pattern`` (case-insensitive; "newest" = the greatest name, which works for names
    that carry their last month as YYYYMM). For products renamed with every update."""
    import fnmatch
    from urllib.parse import unquote, urljoin

    import requests

    shown = redact(page)
    with _http_session(session) as session:
        for attempt in range(1, max(1, retries) + 1):
            try:
                response = session.get(page, timeout=timeout, allow_redirects=True)
            except requests.exceptions.RequestException as exc:
                problem = f"request failed ({type(exc).__name__})"
            else:
                if response.status_code < 400:
                    break
                problem = f"HTTP {response.status_code} {response.reason}"
                if not is_transient_status(response.status_code):
                    raise DownloadError(f"{shown}: {problem}; set the file's URL instead")
            if attempt == max(1, retries):
                raise DownloadError(f"{shown}: {problem} (gave up after {attempt} attempt(s); rerun to retry)")
            time.sleep(backoff * attempt)
    found = {}  # lower-case name -> URL
    for href in _HREF.findall(response.text):
        name = unquote(Path(urlsplit(href).path).name).lower()
        if fnmatch.fnmatch(name, pattern.lower()):
            found.setdefault(name, urljoin(response.url or page, href))
    if not found:
        raise DownloadError(f"{shown}: no link to a file named like {pattern}; set the file's URL instead")
    return found[max(found)]


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def file_name_of(url: str) -> str:
    """The last path component of a URL, as a safe file name."""
    name = Path(urlsplit(url).path).name
    if not name or name in (".", ".."):
        raise UserError(f"{redact(url)}: URL does not end in a file name")
    return _SAFE.sub("_", name)


def join_mirror(mirror: str | None, url: str) -> str:
    """``url`` with its folder replaced by ``mirror`` (a base URL), or ``url`` if no mirror."""
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + Path(urlsplit(url).path).name
