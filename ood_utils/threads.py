"""How many CPU threads small tensor work may use: the one thread helper, below every module that needs it
(the detectors, GReg's clustering and toy), so none of them imports the profiles for it."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def one_cpu_thread(device=None):
    """Run small tensor work on one CPU thread (a context manager, or a decorator): tiny MLPs, K-Means on a
    few hundred points, LAPACK on a D x D matrix. Their parallel parts synchronise threads more often than
    they compute, and far worse when another process holds one of the cores (measured on a loaded 2-core
    machine: a 2048 x 2048 eigendecomposition 25 s instead of 1.2 s, a k=128 clustering 26 s instead of
    0.5 s). Wider work (the mini decoder's 256-wide MLPs on batches of 256) gains from every thread on an
    idle machine (1.5x with two) and keeps them. A GPU ``device`` is left alone."""
    import torch

    if device is not None and torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
