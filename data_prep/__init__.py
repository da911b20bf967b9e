"""Download and verification tool for the real benchmarks (``python -m data_prep --help``).

- :mod:`.registry`: every dataset with its URLs (and mirrors), checksums, format, expected file counts.
- :mod:`.fetch`: resumable downloads, checksum checks, the lock file, extraction into a temporary folder
  with a completion marker written only after the file counts match.
- :mod:`.commands`: ``status`` (``--list``), ``verify`` (``--verify``), ``get`` (``--get``).
- :mod:`.cli`: the command line.

The data root is ``ood_utils.paths.data_dir()`` (``$OOD_KIT_DATA`` or ``<repo>/data``); the loaders in
``ood_utils.data.real`` read the same folders and refuse one without its completion marker.
"""
from .commands import Status, get, status, verify
from .fetch import (ChecksumMismatch, DataPrepError, DownloadFailed, IncompleteExtraction, LockFile,
                    ManualDownloadRequired)
from .registry import ALIASES, GROUPS, REGISTRY, Archive, Count, Entry, resolve

__all__ = ["REGISTRY", "ALIASES", "GROUPS", "Archive", "Count", "Entry", "resolve", "Status", "status", "verify",
           "get", "LockFile", "DataPrepError", "ChecksumMismatch", "DownloadFailed", "IncompleteExtraction",
           "ManualDownloadRequired"]
