"""The three things a user does with the data: see what is there, check it, get what is missing."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ood_utils.data.real import MARKER, read_marker

from .fetch import (DataPrepError, IncompleteExtraction, LockFile, ManualDownloadRequired, check_counts,
                    download, extract, install_folder, temp_folder, verify_file, write_marker)
from .registry import Entry

STATUSES = ("present", "missing", "corrupt")


@dataclass
class Status:
    name: str
    status: str                          # one of STATUSES
    size: str
    note: str = ""


def target_folder(entry: Entry, root: Path) -> Path:
    return root / entry.folder


def downloads_folder(entry: Entry, root: Path) -> Path:
    return root / "downloads" / entry.name


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "?"


def entry_size(entry: Entry, lock: LockFile) -> str:
    """Total download size from the registry or the lock file ("?" if a part is unknown)."""
    sizes = [a.size if a.size is not None else (lock.archive(entry, a) or {}).get("size") for a in entry.archives]
    return "?" if not sizes or None in sizes else human_size(sum(sizes))


# ----------------------------------------------------------------------------------------------------------
# --list: cheap (markers and file names only)
# ----------------------------------------------------------------------------------------------------------

def status(entry: Entry, root: Path, lock: LockFile) -> Status:
    target, downloads = target_folder(entry, root), downloads_folder(entry, root)
    size = entry_size(entry, lock)
    marker = read_marker(target)
    if marker is not None:
        kind = "stand-in data (rehearsal), " if marker.get("standin") else ""
        return Status(entry.name, "present", size, f"{kind}complete since {marker.get('completed', '?')}")
    if (target / MARKER).exists():
        return Status(entry.name, "corrupt", size, "unreadable completion marker: run --verify or --get again")
    corrupt = sorted(p.name for p in downloads.glob("*.corrupt")) if downloads.exists() else []
    if corrupt:
        return Status(entry.name, "corrupt", size, f"{', '.join(corrupt)} failed its checksum: run --get again")
    notes = []
    if target.exists():
        notes.append("folder without completion marker (interrupted extraction or copy)")
    parts = sorted(downloads.glob("*.part")) if downloads.exists() else []
    if parts:
        notes.append("partial download " + ", ".join(f"{p.name} {human_size(p.stat().st_size)}" for p in parts)
                     + " (--get resumes it)")
    if entry.manual and not notes:
        notes.append(f"manual download: python -m data_prep --get {entry.name} prints the instructions")
    return Status(entry.name, "missing", size, "; ".join(notes))


# ----------------------------------------------------------------------------------------------------------
# --verify: recount the files, re-hash what is kept
# ----------------------------------------------------------------------------------------------------------

def verify(entry: Entry, root: Path, lock: LockFile, say: Callable[[str], None] = print) -> Status:
    """Deep check. A folder whose files no longer match loses its marker (the loaders then refuse it)."""
    target, downloads = target_folder(entry, root), downloads_folder(entry, root)
    size = entry_size(entry, lock)
    problems = []
    marker = read_marker(target)
    standin = bool(marker and marker.get("standin"))   # rehearsal data: real format, not the real bytes
    for archive in () if standin else entry.archives:  # archives kept after extraction, files used as they are
        candidates = [downloads / archive.filename]
        if archive.format == "file":
            candidates.append(target / archive.filename)
        for path in candidates:
            if path.exists():
                try:
                    verify_file(path, entry, archive, lock, record=False, say=say)
                except DataPrepError as err:
                    problems.append(f"{path}: {err}")
    if marker is None:
        base = status(entry, root, lock)
        if problems:
            return Status(entry.name, "corrupt", size, "; ".join(problems))
        return base
    try:
        counts = check_counts(entry, target, lock, record=False,
                              expected_counts=marker.get("counts", {}) if standin else None)
    except IncompleteExtraction as err:
        problems.append(str(err))
    if problems:
        (target / MARKER).unlink(missing_ok=True)
        return Status(entry.name, "corrupt", size,
                      "; ".join(problems) + f". Marked incomplete: run `python -m data_prep --get {entry.name}`")
    return Status(entry.name, "present", size, ("stand-in data, " if standin else "") + "verified: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))


# ----------------------------------------------------------------------------------------------------------
# --get
# ----------------------------------------------------------------------------------------------------------

def get(entry: Entry, root: Path, lock: LockFile, *, force: bool = False, delete_archives: bool = False,
        progress: bool = True, timeout: float = 60, retries: int = 3,
        say: Callable[[str], None] = print) -> Status:
    """Download, verify, extract and mark ``entry``; a no-op if it is already complete (unless ``force``)."""
    target = target_folder(entry, root)
    if read_marker(target) is not None and not force:
        return Status(entry.name, "present", entry_size(entry, lock), "already complete")
    if entry.manual:
        return _get_manual(entry, root, lock, say)
    downloads = downloads_folder(entry, root)
    digests = {}
    for archive in entry.archives:
        say(f"{entry.name}: {archive.filename}")
        path, digests[archive.filename] = download(entry, archive, downloads, lock, retries=retries,
                                                   timeout=timeout, progress=progress, say=say)
    tmp = temp_folder(target)
    try:
        for archive in entry.archives:
            say(f"{entry.name}: unpacking {archive.filename}")
            extract(downloads / archive.filename, archive.format, tmp)
        counts = check_counts(entry, tmp, lock, record=True)
        write_marker(tmp, entry, counts, digests)
        install_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if delete_archives:
        shutil.rmtree(downloads, ignore_errors=True)
    return Status(entry.name, "present", entry_size(entry, lock),
                  "ready: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def _get_manual(entry: Entry, root: Path, lock: LockFile, say: Callable[[str], None]) -> Status:
    """ImageNet: register a folder the user put in place, or unpack the archives the user downloaded."""
    target, downloads = target_folder(entry, root), downloads_folder(entry, root)
    instructions = entry.manual.format(folder=target, downloads=downloads)
    if (target / "train").is_dir() and (target / "val").is_dir():
        say(f"{entry.name}: counting the images in {target} (this takes a while on a large folder)")
        try:
            counts = check_counts(entry, target, lock, record=True)
        except IncompleteExtraction as err:
            raise IncompleteExtraction(f"{err}\n\n{instructions}") from None
        write_marker(target, entry, counts, {})
        return Status(entry.name, "present", entry_size(entry, lock), "registered: " +
                      ", ".join(f"{k} {v}" for k, v in counts.items()))
    archives = [downloads / a.filename for a in entry.archives]
    if not all(p.exists() for p in archives):
        raise ManualDownloadRequired(instructions)
    say(f"{entry.name}: unpacking the ILSVRC2012 archives with torchvision's ImageNet parser "
        "(it checks their md5 first; hours for the train archive)")
    from torchvision.datasets.imagenet import parse_devkit_archive, parse_train_archive, parse_val_archive

    tmp = temp_folder(target)
    try:
        parse_devkit_archive(str(tmp), file=str(archives[0].resolve()))
        parse_val_archive(str(tmp), file=str(archives[1].resolve()))
        parse_train_archive(str(tmp), file=str(archives[2].resolve()))
        counts = check_counts(entry, tmp, lock, record=True)
        write_marker(tmp, entry, counts, {a.filename: {"md5": a.md5} for a in entry.archives})
        install_folder(tmp, target)
    except DataPrepError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except RuntimeError as err:              # torchvision's md5 check
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataPrepError(f"{entry.name}: {err}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Status(entry.name, "present", entry_size(entry, lock), "ready: " +
                  ", ".join(f"{k} {v}" for k, v in counts.items()))


__all__ = ["Status", "STATUSES", "status", "verify", "get", "target_folder", "downloads_folder"]
