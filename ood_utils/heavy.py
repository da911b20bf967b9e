"""The heavy step of a notebook, shared by several processes (GPUs):

    accelerate launch --num_processes N -m ood_utils.heavy NOTEBOOK --profile paper [-p NAME VALUE ...]

It calls what the notebook calls, with the notebook's parameters (``-p`` as ``python -m ood_utils.run``
takes them), so that every trained model and generated image lands in the kit's cache (``OOD_KIT_CACHE``, default
``<repo>/cache``). Run the notebook afterwards, in one process, with the same profile and parameters: it
finds them there and goes straight to the evaluation, the tables and the figures.

NOTEBOOK:
- ``11``: GReg fine-tuning of every method, setting and seed (Table 4), base classifiers included;
- ``12``: GReg+ and the outlier samplers (Table 5);
- ``32``: BOOD's Stable Diffusion outliers (each process decodes its share) and every regularised
  classifier of the main comparison, the ablations and the sweeps (Tables 1-3, 6, Figs. 5-6).

Every process runs the same calls: training shares each batch (``train.fit``), generation shares the
images (``bood.sd.generate``); the evaluations that follow each training are cheap and run in every process.
"""
from __future__ import annotations

import argparse

from . import distributed
from .run.notebooks import parse_value

NOTEBOOKS = ("11", "12", "32")


def greg(profile: str, kind: str, params: dict, progress: bool) -> None:
    """Notebook 11 (``kind="finetune"``) or 12 (``"sampling"``): ``run_all`` as the notebook calls it."""
    from .greg import experiments as ex

    methods = params.pop("methods", None)
    valid = ex.FINETUNE_METHODS if kind == "finetune" else ex.SAMPLING_METHODS
    cfg = ex.resolve_config(profile, kind, **params)
    methods = ex.check_methods(methods or valid, valid)
    ex.check_data(cfg)
    ex.run_all(cfg, methods, kind=kind, progress=progress)


def bood(profile: str, params: dict, progress: bool) -> None:
    """Notebook 32: latent spaces, main comparison, ablations and sweeps (the notebook's order)."""
    from . import profiles
    from .bood import experiments

    cfg = profiles.resolve(profile, "bood", **params)
    names = experiments.check_setup(cfg)
    focus = "mnist6" if "mnist6" in names else names[0]      # as notebook 32 picks it
    spaces = {ds: experiments.latent_space(cfg, ds, progress=progress) for ds in names}
    for space in spaces.values():
        experiments.main_comparison(cfg, space, progress=progress)
    if experiments.wants_sweeps(cfg):
        experiments.ablations(cfg, spaces[focus], progress=progress)
        experiments.sweeps(cfg, spaces[focus], progress=progress)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ood_utils.heavy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", choices=NOTEBOOKS)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a notebook parameter, as `python -m ood_utils.run -p` takes it: a Python literal or a "
                         "string (repeat for several)")
    args = ap.parse_args(argv)
    params = {name: parse_value(value) for name, value in args.parameter}
    procs = distributed.processes()       # first: joins the process group and picks this process's GPU
    if args.notebook in ("11", "12"):
        greg(args.profile, "finetune" if args.notebook == "11" else "sampling", params, procs.is_main)
    else:
        bood(args.profile, params, procs.is_main)
    distributed.barrier()
    if procs.is_main:
        print(f"notebook {args.notebook}, profile {args.profile}: done in {procs.world} process(es); run the notebook "
              "with the same profile and parameters to read the results from the cache")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
