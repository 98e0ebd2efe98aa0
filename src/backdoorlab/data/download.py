"""Fetching the data files from their official sources, with MD5 verification.

A missing file is downloaded to a temporary file in its target directory, checked against the official
MD5, then moved into place with :func:`os.replace` (so a partial or bad download never appears under the
real name). A file already present is trusted after parsing; if its MD5 differs from the official one, a
:class:`ChecksumWarning` is emitted (the shared CIFAR-10 copy, for one, is a faithful rebuild, not the
official bytes).

Each data set's module declares its files' official mirrors and MD5s where it registers the data set (traits
``mirrors`` and ``md5`` in :data:`~backdoorlab.data.registry.DATASETS`).

Set ``BACKDOORLAB_MIRROR`` to a base URL to fetch every file as ``{mirror}/{dataset}/{filename}`` instead
(the layout of the data directory), e.g. from a local server.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from tqdm.auto import tqdm

from backdoorlab.data.registry import DATASETS
from backdoorlab.errors import BackdoorlabError

MIRROR_ENV = "BACKDOORLAB_MIRROR"
TIMEOUT_S = 30.0
_CHUNK = 1 << 20


class _PerDataset(Mapping):
    """A trait of the registered data sets, by name: those that declare it (a read-only view of the registry,
    where each data set's module declares its mirrors and MD5s)."""

    def __init__(self, trait: str):
        self.trait = trait

    def __getitem__(self, dataset: str):
        value = DATASETS.entry(dataset).traits[self.trait] if dataset in DATASETS else None
        if not value:
            raise KeyError(dataset)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in DATASETS if DATASETS.entry(n).traits[self.trait]])

    def __len__(self) -> int:
        return sum(1 for _ in self)


#: Base URLs per dataset, tried in order; a file's URL is base + filename.
MIRRORS: Mapping[str, Sequence[str]] = _PerDataset("mirrors")

#: Official MD5 of every file, per dataset.
MD5: Mapping[str, dict[str, str]] = _PerDataset("md5")


class ChecksumWarning(UserWarning):
    """A data file already on disk parsed fine but is not byte-identical to the official download."""


# (resolved path, size, mtime_ns) -> md5 hex, so a file is hashed at most once per process.
_md5_cache: dict[tuple[str, int, int], str] = {}


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def md5sum(path: Path) -> str:
    """MD5 hex digest of the file at ``path`` (cached per path, size and modification time)."""
    path = Path(path)
    key = _cache_key(path)
    if key not in _md5_cache:
        h = hashlib.md5()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _md5_cache[key] = h.hexdigest()
    return _md5_cache[key]


def mirror_urls(dataset: str, filename: str, mirror: str | None = None) -> list[str]:
    """URLs to try for ``dataset/filename``: ``mirror`` (or env ``BACKDOORLAB_MIRROR``) alone, else the official
    mirrors in order."""
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if mirror:
        return [f"{mirror.rstrip('/')}/{dataset}/{filename}"]
    return [base + filename for base in MIRRORS[dataset]]


def _describe(url: str, exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        why = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        why = str(exc.reason)
    else:
        why = f"{type(exc).__name__}: {exc}"
    return " ".join(f"{url}: {why}".split())


def _fetch(url: str, dest: Path, desc: str, progress: bool) -> str:
    """Stream ``url`` into the file ``dest`` (overwriting it); returns the MD5 hex digest of what was written."""
    h, size = hashlib.md5(), 0
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress,
                  leave=False) as bar:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)
    return h.hexdigest()


def download_file(dataset: str, filename: str, dest: Path, progress: bool = True, mirror: str | None = None) -> None:
    """Download ``dataset/filename`` to ``dest``, verifying the official MD5; atomic (temp file + os.replace).

    Mirrors are tried in order until one answers; a checksum mismatch is an error at once (the temp file
    is deleted and nothing appears at ``dest``).
    """
    dest = Path(dest)
    expected = MD5[dataset][filename]
    tmp = dest.with_name(f".{filename}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.open("xb").close()  # claim the name; unlike mkstemp this keeps the umask's permissions
    except OSError as e:
        raise BackdoorlabError(f"{dataset}: cannot write to {dest.parent} ({e.strerror or e})") from None
    last = "no mirror configured"
    try:
        for url in mirror_urls(dataset, filename, mirror):
            try:
                got = _fetch(url, tmp, f"{dataset}/{filename}", progress)
            except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, timeouts, bad URLs
                last = _describe(url, e)
                continue
            if got != expected:
                raise BackdoorlabError(
                    f"{dataset}: download of {url} failed the checksum: MD5 {got}, expected the official {expected}; "
                    "the file was discarded"
                )
            try:
                os.replace(tmp, dest)
            except OSError as e:
                raise BackdoorlabError(
                    f"{dataset}: cannot move the download into place at {dest} ({e.strerror or e})"
                ) from None
            _md5_cache[_cache_key(dest)] = got
            return
        raise BackdoorlabError(
            f"could not download {dataset}/{filename} from any mirror: {last}; "
            f"place the file at {dest} by hand or set --data-dir"
        )
    finally:
        tmp.unlink(missing_ok=True)


def ensure_file(dataset: str, filename: str, data_dir: Path, download: bool = True, progress: bool = True,
                mirror: str | None = None) -> Path:
    """Path of ``data_dir/dataset/filename``, downloading it first if it is missing and ``download`` is set."""
    path = Path(data_dir) / dataset / filename
    if path.is_file():
        return path
    if not download:
        raise BackdoorlabError(
            f"{dataset}: {filename} not found in {path.parent} and download=False; place it there or allow downloading"
        )
    download_file(dataset, filename, path, progress=progress, mirror=mirror)
    return path


def warn_if_unofficial(dataset: str, path: Path) -> None:
    """Emit a :class:`ChecksumWarning` if the (already parsed) file at ``path`` differs from the official MD5."""
    expected = MD5[dataset][Path(path).name]
    got = md5sum(path)
    if got != expected:
        warnings.warn(
            f"{dataset}: {path} differs from the official checksum (MD5 {got}, official {expected}) "
            "but parsed fine; using it",
            ChecksumWarning,
            stacklevel=4,  # the caller of load_dataset
        )
