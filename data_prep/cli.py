"""``python -m data_prep``: list, verify and fetch the real benchmarks."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .commands import Status, get, status, verify
from .fetch import DEFAULT_LOCK, DataPrepError, LockFile, ManualDownloadRequired
from .registry import ALIASES, GROUPS, REGISTRY, Entry, resolve

EPILOG = """\
examples:
  python -m data_prep --list                     what is on disk
  python -m data_prep --get cifar10 svhn         fetch, check and unpack
  python -m data_prep --get cifar                the whole CIFAR benchmark (ID, OOD sets, 300K aux)
  python -m data_prep --verify                   recount and re-hash everything that is there
  OOD_KIT_DATA=/datasets python -m data_prep --list

groups: {groups}
aliases: {aliases}
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download and verify the real benchmarks of the quick/paper profiles (resumable, "
                    "checksummed; a dataset counts as present only once fully unpacked and counted).",
        epilog=EPILOG.format(groups="; ".join(f"{k} = {' '.join(v)}" for k, v in GROUPS.items()),
                             aliases=", ".join(f"{k} -> {v}" for k, v in ALIASES.items())))
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="name, download size and status of every dataset")
    action.add_argument("--verify", nargs="*", metavar="NAME", help="recount files and re-hash kept archives "
                        "(all datasets if no name is given)")
    action.add_argument("--get", nargs="+", metavar="NAME", help="download, verify and unpack")
    parser.add_argument("--root", type=Path, help="data folder (default: $OOD_KIT_DATA or <repo>/data)")
    parser.add_argument("--lock", type=Path, default=None, help=f"lock file of recorded checksums "
                        f"(default: {DEFAULT_LOCK.name} beside this tool)")
    parser.add_argument("--force", action="store_true", help="--get: redo even if already complete")
    parser.add_argument("--delete-archives", action="store_true", help="--get: delete archives once unpacked")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--timeout", type=float, default=60, help="seconds without data before a retry")
    return parser


def _table(rows: list[Status]) -> str:
    header = ("name", "size", "status", "note")
    cells = [header] + [(r.name, r.size, r.status, r.note) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    return "\n".join(f"{c[0]:<{widths[0]}}  {c[1]:>{widths[1]}}  {c[2]:<{widths[2]}}  {c[3]}".rstrip()
                     for c in cells)


def main(argv: list[str] | None = None, *, registry: dict[str, Entry] | None = None, root: Path | None = None,
         lock_path: Path | None = None, out=None) -> int:
    """Run the tool; returns the exit status (0 = everything asked for is present and verified).

    ``registry``, ``root`` and ``lock_path`` replace the real ones (the tests serve their own archives).
    """
    args = _parser().parse_args(argv)
    out = out or sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    if args.root is not None:
        root = args.root
    if root is None:
        from ood_utils import paths
        root = paths.data_dir()
    root = Path(root).expanduser()
    lock = LockFile(args.lock or lock_path or DEFAULT_LOCK)
    registry = REGISTRY if registry is None else registry

    try:
        if args.list:
            say(f"data root: {root}")
            say(_table([status(e, root, lock) for e in registry.values()]))
            return 0
        if args.verify is not None:
            entries = resolve(args.verify, registry) if args.verify else list(registry.values())
            rows = [verify(e, root, lock, say=say) for e in entries]
            say(_table(rows))
            asked = bool(args.verify)
            return 1 if any(r.status == "corrupt" or (asked and r.status != "present") for r in rows) else 0
        entries = resolve(args.get, registry)
    except KeyError as err:
        say(f"error: {err.args[0]}")
        return 2

    failures = 0
    rows = []
    for entry in entries:
        try:
            rows.append(get(entry, root, lock, force=args.force, delete_archives=args.delete_archives,
                            progress=not args.no_progress, timeout=args.timeout, say=say))
        except ManualDownloadRequired as err:
            failures += 1
            say(f"\n{entry.name}: manual download needed.\n{err}")
            rows.append(Status(entry.name, "missing", "", "manual download needed (instructions above)"))
        except DataPrepError as err:
            failures += 1
            say(f"\n{entry.name}: FAILED\n{err}")
            rows.append(Status(entry.name, "missing", "", "failed (see above)"))
    say(_table(rows))
    return 1 if failures else 0
