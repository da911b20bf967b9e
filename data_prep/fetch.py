"""Download, check and unpack one registry entry, so that a folder is either complete or not there.

The life of an entry's data, and why each step is the way it is:

1. **Download** each archive into ``<root>/downloads/<entry>/<file>.part``. An interrupted download is
   resumed with an HTTP ``Range`` request from the bytes already there; a server that ignores ``Range``
   answers 200 and the file restarts from zero. Mirrors are tried in order when a host fails.
2. **Verify** the finished ``.part``: its md5/sha256 against the published checksum, or, where none is
   published, against the sha256 recorded in the lock file at the first download (recorded now if this
   *is* the first download, after a format sanity check so an HTML error page is never locked in). Only a
   verified file is renamed to its final name; a mismatching one is renamed ``<file>.corrupt`` and an
   error says so: a bad file is never kept as good, nor resumed from.
3. **Extract** all archives of the entry into a temporary folder next to the target, count the files the
   registry expects, write the completion marker, and only then rename the temporary folder onto the
   target (atomic on one filesystem). A folder without the marker (an interrupted extraction, a copy in
   progress) is never "present", and the loaders refuse it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import os
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from ood_utils.data.real import IMAGE_SUFFIXES, MARKER
from ood_utils.paths import write_json

from .registry import Archive, Count, Entry

CHUNK = 1 << 20
DEFAULT_LOCK = Path(__file__).resolve().parent / "checksums.lock.json"
USER_AGENT = "ood-kit-data-prep/1"


class DataPrepError(RuntimeError):
    """A dataset could not be prepared; the message says what to do."""


class ChecksumMismatch(DataPrepError):
    pass


class DownloadFailed(DataPrepError):
    pass


class IncompleteExtraction(DataPrepError):
    pass


class ManualDownloadRequired(DataPrepError):
    pass


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ----------------------------------------------------------------------------------------------------------
# Lock file: checksums and counts recorded at the first download where none is published
# ----------------------------------------------------------------------------------------------------------

class LockFile:
    """``{"archives": {"entry/file": {sha256, size, url, recorded}}, "counts": {"entry": {pattern: n}}}``."""

    def __init__(self, path: Path | str = DEFAULT_LOCK):
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        except ValueError as err:
            raise DataPrepError(f"{self.path} is not valid JSON ({err}); fix or delete it") from err
        self.archives: dict = data.get("archives", {})
        self.counts: dict = data.get("counts", {})

    def save(self) -> None:
        write_json(self.path, {
            "about": "sha256 and file counts recorded at the first download of datasets that publish none; "
                     "commit this file so later downloads are checked against the first one",
            "archives": self.archives, "counts": self.counts})

    def archive(self, entry: Entry, archive: Archive) -> dict | None:
        return self.archives.get(f"{entry.name}/{archive.filename}")

    def record_archive(self, entry: Entry, archive: Archive, digests: dict, size: int, url: str) -> None:
        self.archives[f"{entry.name}/{archive.filename}"] = {
            "sha256": digests["sha256"], "size": size, "url": url, "recorded": _now()}
        self.save()

    def record_count(self, entry: Entry, pattern: str, n: int) -> None:
        self.counts.setdefault(entry.name, {})[pattern] = n
        self.save()


# ----------------------------------------------------------------------------------------------------------
# Checksums
# ----------------------------------------------------------------------------------------------------------

def file_digests(path: Path) -> dict[str, str]:
    """md5 and sha256 of a file in one pass (the published checksums are md5, the lock file uses sha256)."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            md5.update(block)
            sha256.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def expected_digest(entry: Entry, archive: Archive, lock: LockFile) -> tuple[str, str, str] | None:
    """(algorithm, hex digest, where it comes from), or None if nothing is known yet."""
    if archive.sha256:
        return "sha256", archive.sha256.lower(), archive.checksum_source or "registry"
    if archive.md5:
        return "md5", archive.md5.lower(), archive.checksum_source or "registry"
    recorded = lock.archive(entry, archive)
    if recorded:
        return "sha256", recorded["sha256"], f"lock file {lock.path.name} (recorded {recorded.get('recorded', '?')})"
    return None


def looks_like(path: Path, fmt: str) -> bool:
    """A cheap check that a downloaded file is what the registry says (not an HTML error page)."""
    if fmt in ("tar", "tar.gz"):
        return tarfile.is_tarfile(path)
    if fmt == "zip":
        return zipfile.is_zipfile(path)
    with open(path, "rb") as fh:
        head = fh.read(512)
    return not head.lstrip().lower().startswith((b"<!doctype html", b"<html"))


def verify_file(path: Path, entry: Entry, archive: Archive, lock: LockFile, url: str = "",
                record: bool = True, say: Callable[[str], None] = print) -> dict:
    """Check ``path`` against the known checksum; record it in the lock file if none is known.

    Raises :class:`ChecksumMismatch` on a mismatch (the caller decides what happens to the file).
    """
    digests = file_digests(path)
    expected = expected_digest(entry, archive, lock)
    if expected is None:
        if not looks_like(path, archive.format):
            raise ChecksumMismatch(f"{archive.filename} from {url or 'disk'} is not a {archive.format} file "
                                   "(the host probably answered with an error page)")
        if record:
            lock.record_archive(entry, archive, digests, path.stat().st_size, url)
            say(f"  no published checksum for {archive.filename}: recorded sha256 {digests['sha256']} in "
                f"{lock.path} (commit it so later downloads are checked against this one)")
        return digests
    algorithm, value, source = expected
    if digests[algorithm] != value:
        raise ChecksumMismatch(f"{archive.filename}: {algorithm} is {digests[algorithm]}, expected {value} "
                               f"(from {source})")
    return digests


# ----------------------------------------------------------------------------------------------------------
# Download (resumable)
# ----------------------------------------------------------------------------------------------------------

def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not enabled, leave=False)


def fetch_url(url: str, part: Path, *, timeout: float = 60, progress: bool = True) -> None:
    """Append the missing bytes of ``url`` to ``part`` (HTTP Range), or restart it if the host ignores Range.

    Raises on network errors and when the connection ends before the announced length: ``part`` keeps the
    bytes received so far, and the next call resumes from there.
    """
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:        # nothing left to send: the file is complete (the checksum decides)
            return
        raise
    with response:
        resumed = start > 0 and response.status == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {start}-")
        if not resumed:
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, \
                _progress(total, start, part.name.removesuffix(".part"), progress) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError, TimeoutError)


def download(entry: Entry, archive: Archive, downloads: Path, lock: LockFile, *, retries: int = 3,
             timeout: float = 60, progress: bool = True, say: Callable[[str], None] = print) -> tuple[Path, dict]:
    """The verified archive in ``downloads`` (fetched, resumed, or already there) and its digests."""
    downloads.mkdir(parents=True, exist_ok=True)
    final, part = downloads / archive.filename, downloads / (archive.filename + ".part")
    if final.exists():
        try:
            return final, verify_file(final, entry, archive, lock, record=True, say=say)
        except ChecksumMismatch as err:
            os.replace(final, final.with_name(final.name + ".corrupt"))
            say(f"  {err}; moved the file aside and downloading it again")
    problems: list[str] = []
    for url in archive.urls:
        if not _fetch_with_retries(url, part, retries, timeout, progress, problems):
            continue                         # this host failed: next mirror (a .part is resumed there)
        try:
            digests = verify_file(part, entry, archive, lock, url=url, say=say)
        except ChecksumMismatch as err:
            bad = final.with_name(final.name + ".corrupt")
            os.replace(part, bad)
            problems.append(f"{url}: {err}")
            say(f"  {err}\n  the download from {url} was kept as {bad} for inspection, never used")
            continue
        os.replace(part, final)
        return final, digests
    raise DownloadFailed(manual_instructions(entry, archive, downloads, problems))


def _fetch_with_retries(url: str, part: Path, retries: int, timeout: float, progress: bool,
                        problems: list[str]) -> bool:
    """True once ``part`` holds the whole file from ``url``; each retry resumes where the last one stopped."""
    for attempt in range(1, retries + 1):
        try:
            fetch_url(url, part, timeout=timeout, progress=progress)
            return True
        except _NETWORK_ERRORS as err:
            problems.append(f"{url} (attempt {attempt}): {err!r}")
            if isinstance(err, urllib.error.HTTPError) and err.code in (401, 403, 404, 410):
                return False                 # this host will not serve it
    return False


def manual_instructions(entry: Entry, archive: Archive, downloads: Path, problems: list[str]) -> str:
    expected = (f"{'sha256 ' + archive.sha256 if archive.sha256 else 'md5 ' + archive.md5}"
                if archive.published else "no published checksum")
    lines = [f"could not download {archive.filename} for {entry.name!r}."]
    if problems:
        lines += ["What went wrong:"] + [f"  - {p}" for p in problems[-6:]]
    lines += ["Download it by hand from one of:"] + [f"  {u}" for u in archive.urls]
    lines += [f"save it as\n  {downloads / archive.filename}\n({expected}) and run "
              f"`python -m data_prep --get {entry.name}` again: it verifies and unpacks the file."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Extraction, counting, marker
# ----------------------------------------------------------------------------------------------------------

def extract(archive_path: Path, fmt: str, into: Path) -> None:
    """Unpack (or place) one archive into ``into``; refuses members that would land outside it."""
    into.mkdir(parents=True, exist_ok=True)
    if fmt == "file":
        target = into / archive_path.name
        try:
            os.link(archive_path, target)            # same filesystem: no copy of a 1 GB array
        except OSError:
            shutil.copy2(archive_path, target)
    elif fmt in ("tar", "tar.gz"):
        with tarfile.open(archive_path, "r:*") as tar:
            for member in tar:                       # streaming: no second pass over a large .tar.gz
                tar.extract(member, into, filter="data")
    elif fmt == "zip":
        with zipfile.ZipFile(archive_path) as zf:
            root = into.resolve()
            for name in zf.namelist():
                if not (root / name).resolve().is_relative_to(root):
                    raise DataPrepError(f"{archive_path.name}: member {name!r} would be written outside {into}")
            zf.extractall(into)
    else:
        raise DataPrepError(f"unknown archive format {fmt!r}")


def count_files(folder: Path, count: Count) -> int:
    n = 0
    for path in folder.glob(count.pattern):
        rel = path.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or not path.is_file():
            continue
        if count.images and path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        n += 1
    return n


def check_counts(entry: Entry, folder: Path, lock: LockFile, record: bool,
                 expected_counts: dict[str, int] | None = None) -> dict[str, int]:
    """Count the files; raise :class:`IncompleteExtraction` on a mismatch, record unpublished counts.
    ``expected_counts`` (pattern -> n) replaces the registry's and the lock file's (stand-in data)."""
    found, problems = {}, []
    for count in entry.counts:
        n = count_files(folder, count)
        expected = count.expected if count.expected is not None else lock.counts.get(entry.name, {}).get(count.pattern)
        if expected_counts is not None:
            expected = expected_counts.get(count.pattern)
        if expected is None:
            if n == 0:
                problems.append(f"{count.pattern}: no files")
            elif record:
                lock.record_count(entry, count.pattern, n)
        elif n != expected:
            problems.append(f"{count.pattern}: {n} files, expected {expected}")
        found[count.pattern] = n
    if problems:
        raise IncompleteExtraction(f"{entry.name} in {folder}: " + "; ".join(problems))
    return found


def write_marker(folder: Path, entry: Entry, counts: dict[str, int], digests: dict[str, dict],
                 standin: bool = False) -> None:
    """The completion record the loaders require. ``standin``: written by ``data_prep.standins`` (rehearsal
    data in the real format); ``--verify`` then checks the counts recorded here instead of the real ones."""
    record = {"name": entry.name, "completed": _now(), "counts": counts, "archives": digests}
    write_json(folder / MARKER, {**record, "standin": True} if standin else record)


def install_folder(tmp: Path, target: Path) -> None:
    """Put the finished ``tmp`` folder at ``target``, replacing an incomplete one, with one rename."""
    if target.is_symlink():
        target.unlink()
    elif target.exists():
        stale = target.with_name(f".stale-{target.name}-{os.getpid()}")
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, target)


def temp_folder(target: Path) -> Path:
    """A fresh ``.tmp-<name>`` beside the target (a leftover of an interrupted run is discarded)."""
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp
