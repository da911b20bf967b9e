"""Progress bars for the kit's long loops: tqdm's widget in JupyterLab, a console bar elsewhere.

The notebook runner sets ``TQDM_DISABLE=1`` in its kernels: nobody watches a batch run's bars, and kept in
the executed notebook a widget bar reads "0%" forever. tqdm honours that variable for its console bar but
not for its notebook widget, so every bar of the kit is made here.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm as _auto_tqdm


def bars_off() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes"}


def tqdm(iterable=None, **kwargs):
    """``tqdm.auto.tqdm``, switched off when ``TQDM_DISABLE`` is set (the same keywords otherwise)."""
    if bars_off():
        kwargs["disable"] = True
    return _auto_tqdm(iterable, **kwargs)


tqdm.write = _auto_tqdm.write
