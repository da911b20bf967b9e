"""The rehearsal: every notebook under ``quick`` and ``paper``, in smoke mode, on stand-in data.

    python -m data_prep.rehearse --profiles quick paper [--only 20 21] [--device cpu|cuda] [--variants]

``quick`` and ``paper`` read the real benchmarks, which a laptop or a CI machine does not have. The rehearsal
builds stand-ins in the real on-disk formats (:mod:`data_prep.standins`, cached and rebuilt when the builder
changes), then executes the notebooks with papermill through ``ood_utils.run`` with ``OOD_KIT_SMOKE=1``
(tiny epochs and sample counts, the papers' architectures), ``OOD_KIT_DATA`` pointing at the stand-ins and
private cache / runs / figures folders, so nothing of the user's own runs is read or overwritten.

What it proves: every loader, transform, architecture and notebook branch of the paper profiles runs end
to end on data in the real formats. What it does not: any accuracy or AUROC (the stand-ins are resized
digits and patches with arbitrary labels), the downloads themselves, or GPU speed.

Each notebook runs on its own, so one failure does not hide the others; the time table is printed and
written to ``<out>/rehearsal.csv`` and ``<out>/rehearsal.md``; the exit status is 1 if any run failed. Next to
each run's time stands its recipe card (:mod:`ood_utils.recipes`): the published recipe the notebook
reproduces under that profile and how many of its values the kit runs as published, as a listed departure,
or differently, so a GPU user sees what will run before a long job.
``--variants`` adds the runs that the default parameters do not reach (:data:`VARIANTS`: the ImageNet
paths, with random-weight checkpoints where a path needs user weights, and BOOD's random-crop option),
under ``paper`` only: they are the paper's tables, and ``quick`` would run the same code again (smoke mode
sets the epochs and sample counts that tell the two profiles apart).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ood_utils import paths

from . import standins

PROFILES = ("quick", "paper")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Variant:
    """An extra run: the notebooks matching ``only`` with ``params``, under ``profile``; ``checkpoint`` =
    (arch, num_classes) of a random-weight checkpoint passed as the ``checkpoint`` parameter;
    ``torchvision_weights``: an arch whose torchvision ImageNet weights the run reads (random stand-ins)."""

    label: str
    only: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint: tuple[str, int] | None = None
    profile: str = "paper"
    torchvision_weights: str | None = None   # arch whose torchvision ImageNet weights the run fine-tunes


# Paths of the paper profiles that the notebooks' default parameters do not take.
VARIANTS: tuple[Variant, ...] = (
    Variant("MME ImageNet-1K, ViT-B/16", ("21_*",), {"id_dataset": "imagenet1k", "arch": "vit_b16"},
            checkpoint=("vit_b16", 1000)),
    Variant("MME ImageNet-1K, BiT-S-R101x1", ("20_*",), {"id_dataset": "imagenet1k", "arch": "bit_s_r101x1"},
            checkpoint=("bit_s_r101x1", 1000)),
    Variant("GReg ImageNet-10", ("12_*",), {"id_datasets": ["imagenet10"]}, torchvision_weights="densenet121"),
    Variant("BOOD ImageNet-100", ("32_*",), {"id_datasets": ["imagenet100"]}),
    # the public code's random crops of SD's saved images, CIFAR-100 (smoke mode saves 64 px images, too small
    # for ImageNet-100's 224 px crops; the main comparison only: the sweeps add nothing)
    Variant("BOOD random crops", ("32_*",), {"outlier_transform": "random_crop", "sweeps": False,
                                            "id_datasets": ["cifar100"]}),
)


@dataclass
class Row:
    profile: str
    notebook: str
    variant: str
    status: str              # ok | failed | absent
    seconds: float
    note: str = ""
    card: str = ""           # the run's recipe cards, one summary each (ood_utils.recipes.summary)


def default_root() -> Path:
    return paths.cache_dir("rehearsal", "standins")


def default_out() -> Path:
    return paths.runs_dir("rehearsal")


@contextlib.contextmanager
def rehearsal_env(data_root: Path, out: Path) -> Iterator[None]:
    """Smoke mode, the stand-ins as the data root, and private cache / runs / figures folders."""
    env = {"OOD_KIT_SMOKE": "1", "OOD_KIT_DATA": str(data_root), "OOD_KIT_CACHE": str(out / "cache"),
           "OOD_KIT_RUNS": str(out / "runs"), "OOD_KIT_FIGURES": str(out / "figures")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _defined(nb: Path) -> set[str]:
    from ood_utils.run import parameters_of

    return set(parameters_of(nb))


def card_summary(nb: Path | str, profile: str, params: dict[str, Any]) -> str:
    """The recipe cards a run of ``nb`` under ``profile`` with ``params`` reproduces, one summary each
    ("; "-joined), or "no card" for a notebook that reproduces no paper table (00, 90)."""
    from ood_utils import recipes

    stem = nb.stem if isinstance(nb, Path) else str(nb)
    try:
        chosen = recipes.cards_for(stem, params, profile)
        return "; ".join(recipes.summary(c, profile) for c in chosen) or "no card"
    except Exception as err:       # a card that cannot be read must not stop the rehearsal
        return f"card unreadable: {type(err).__name__}: {err}"


def run_one(nb: Path, profile: str, params: dict[str, Any], out: Path, label: str = "",
            timeout: int | None = None, required: frozenset = frozenset()) -> Row:
    """Execute one notebook under ``profile`` (the environment is already the rehearsal's). ``params`` the
    notebook does not define are dropped, except ``required`` ones (a variant's): their absence fails the run."""
    from ood_utils.run import NotebookFailed, run_notebooks

    defined = _defined(nb)
    absent = sorted(set(required) - defined)
    if absent:
        return Row(profile, nb.stem, label, "failed", 0.0, f"the notebook defines no parameter {', '.join(absent)}")
    chosen = {k: v for k, v in params.items() if k in defined}
    folder = out / "runs" / profile / (label.replace(" ", "_").replace("/", "") if label else "default")
    start = time.perf_counter()
    try:
        run_notebooks(profile, only=[nb.stem], params=chosen, force=True, out_dir=folder, html=False,
                      cell_timeout=timeout, notebooks_dir=nb.parent)
    except NotebookFailed as err:
        note = f"cell {err.cell_index}: {err.ename}: {err.evalue}"[:300]
        return Row(profile, nb.stem, label, "failed", time.perf_counter() - start, f"{note} (log: {err.log})")
    except Exception as err:                       # a parameter the notebook rejects, a kernel that cannot start
        return Row(profile, nb.stem, label, "failed", time.perf_counter() - start, f"{type(err).__name__}: {err}")
    return Row(profile, nb.stem, label, "ok", time.perf_counter() - start)


def matching(notebooks: list[Path], patterns) -> list[Path]:
    """The notebooks matching any pattern (as ``--only`` of the runner), or [] when none does."""
    from ood_utils.run import RunError, select

    try:
        return select(notebooks, patterns)
    except RunError:
        return []


def plan(profiles: list[str], only: list[str] | None, device: str, variants: bool,
         notebooks_dir: Path | None = None) -> list[tuple[str, Path, dict, str, tuple | None]]:
    """(profile, notebook, params, variant label, checkpoint spec) for every run, in order."""
    from ood_utils.run import find_notebooks

    notebooks = find_notebooks(notebooks_dir)
    chosen = matching(notebooks, only) if only else notebooks
    runs = [(p, nb, {"device": device}, "", None) for p in profiles for nb in chosen]
    if variants:
        wanted = sorted({v.profile for v in VARIANTS})
        if not set(wanted) & set(profiles):
            raise ValueError(f"the variants run under {', '.join(wanted)}: add it to --profiles")
        for v in VARIANTS:
            for nb in matching(notebooks, v.only):
                if v.profile in profiles and not (only and nb not in chosen):
                    runs.append((v.profile, nb, {"device": device, **v.params}, v.label, v.checkpoint))
    return runs


def rehearse(profiles: list[str], only: list[str] | None = None, device: str = "cpu", *,
             root: Path | None = None, out: Path | None = None, variants: bool = False,
             timeout: int | None = None, say: Callable[[str], None] = print) -> list[Row]:
    """Build the stand-ins, run every planned notebook, write and print the time table."""
    for profile in profiles:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r} for the rehearsal; valid: {', '.join(PROFILES)}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    runs = plan(profiles, only, device, variants)
    if not runs:
        raise ValueError(f"no notebook matches {only}")
    root = standins.build(root or default_root(), say=say)
    out = Path(out or default_out()).expanduser().resolve()
    rows: list[Row] = []
    with rehearsal_env(root, out):
        for i, (profile, nb, params, label, ckpt) in enumerate(runs, 1):
            if ckpt is not None:
                params = {**params, "checkpoint": str(standins.random_checkpoint(root, *ckpt))}
            say(f"[{i}/{len(runs)}] {profile} {nb.stem}{' · ' + label if label else ''}")
            card = card_summary(nb, profile, params)
            say(f"    card: {card}")
            variant = next((v for v in VARIANTS if v.label == label), None)
            if variant and variant.torchvision_weights:
                standins.random_torchvision_weights(variant.torchvision_weights)
            row = run_one(nb, profile, params, out, label, timeout,
                          frozenset(variant.params) if variant else frozenset())
            row.card = card
            say(f"    {row.status} in {row.seconds:.1f} s{'  ' + row.note if row.note else ''}")
            rows.append(row)
    write_table(rows, out)
    say(format_table(rows))
    say(f"\nwritten: {out / 'rehearsal.csv'}, {out / 'rehearsal.md'}")
    return rows


def format_table(rows: list[Row]) -> str:
    lines = ["| profile | notebook | variant | status | seconds | recipe card | note |", "|---|---|---|---|---:|---|---|"]
    lines += [f"| {r.profile} | {r.notebook} | {r.variant or '-'} | {r.status} | {r.seconds:.1f} | {r.card or '-'} "
              f"| {r.note} |" for r in rows]
    total = sum(r.seconds for r in rows)
    failed = sum(r.status == "failed" for r in rows)
    lines.append(f"\n{len(rows)} runs, {failed} failed, {total:.0f} s in all "
                 f"(smoke mode, stand-in data, device as given); the recipe cards in full: "
                 f"python -m ood_utils.recipes --profile PROFILE")
    return "\n".join(lines)


def write_table(rows: list[Row], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with paths.atomic_path(out / "rehearsal.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["profile", "notebook", "variant", "status", "seconds", "card", "note"])
        writer.writerows([r.profile, r.notebook, r.variant, r.status, f"{r.seconds:.1f}", r.card, r.note]
                         for r in rows)
    paths.write_bytes(out / "rehearsal.md", (format_table(rows) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.rehearse",
                                     description="Run the notebooks under quick/paper in smoke mode on stand-in data.")
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES)
    parser.add_argument("--only", nargs="+", metavar="PATTERN", help="notebooks (number, glob or substring)")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--variants", action="store_true", help="also the runs of VARIANTS (ImageNet paths)")
    parser.add_argument("--root", type=Path, help="stand-in folder (default: <cache>/rehearsal/standins)")
    parser.add_argument("--out", type=Path, help="runs, figures, cache and the time table "
                                                 "(default: <runs>/rehearsal)")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    args = parser.parse_args(argv)
    try:
        rows = rehearse(args.profiles, args.only, args.device, root=args.root, out=args.out,
                        variants=args.variants, timeout=args.timeout)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if any(r.status == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
