"""What tests/test_multiprocess.py runs under ``accelerate launch --num_processes 2`` (and, for the
reference, in one process): short trainings of the tiny models through ``train.fit`` and the tiny Stable
Diffusion pipeline through ``sd.generate``.

    accelerate launch ... tests/multiprocess_worker.py OUT_DIR STEP [STEP ...] [--kill-at=sd:1 | --kill-at=ce:N]

Steps: ``sd`` (6 outlier images of the tiny pipeline in OUT_DIR/sd_images, pipeline in OUT_DIR/tiny_sd),
``ce`` (plain cross-entropy, 3 epochs, checkpoint OUT_DIR/ce.pt), ``greg`` (energy + gradient regulariser,
eq. 3 as printed), ``greg_public_code`` (the same with eq. 3 as the authors' code computes it), ``bood`` (eq. 7 with
outliers), ``bood_ce`` (BOOD's classifier without outliers: phi unused),
``greg_bn`` (GReg on a small network with BatchNorm). Each process saves its final weights as
OUT_DIR/<step>_rank<r>.pt, what ``fit`` returned as OUT_DIR/<step>_rank<r>.json and its generation report
as OUT_DIR/sd_rank<r>.json.
``--kill-at=sd:1`` makes process 1 kill itself (SIGKILL) right after writing its first image;
``--kill-at=ce:N`` after N steps of ``ce`` (a real crash: the launcher then stops the other process).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ood_utils import distributed, profiles
from ood_utils.bood import regularize, sd
from ood_utils.greg import objectives
from ood_utils.models import Classifier, build_model
from ood_utils.train import fit

torch.set_num_threads(1)
NAMES = ["cat", "dog", "car"]


def toy_digits(n: int = 96, seed: int = 1):
    """Separable 28x28 'digits': class c brightens row block c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 28, 28, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 2 * c:2 * c + 3] += 2.0
    return x, y


def noise_images(n: int, seed: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _loader(dataset, batch_size: int, seed: int, drop_last: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(seed))


class TinyBN(Classifier):
    """conv-BN-ReLU-pool twice, then a linear head: a network whose rows interact through BatchNorm."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, 10)

    def features(self, x):
        return self.body(x)


def killer(loss_fn, at_step: int | None):
    """``loss_fn`` that kills this process (SIGKILL, no cleanup) at step ``at_step`` in process 1."""
    calls = [0]

    def wrapped(model, batch):
        calls[0] += 1
        if at_step is not None and calls[0] == at_step and distributed.processes().rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return loss_fn(model, batch)

    return wrapped


def train_step(name: str, out: Path, kill_at: int | None = None) -> tuple[nn.Module, dict]:
    """One of the short trainings; returns the trained model (eval mode) and what ``fit`` returned."""
    profiles.seed_everything(0)
    x, y = toy_digits()
    common = dict(weight_decay=5e-4, device="cpu", progress=False)
    if name == "ce":      # 96 images in batches of 20: the last batch (16) splits 8 + 8, with 3 it would not
        model = build_model("mnist_cnn", 10)
        loss = killer(lambda m, b: F.cross_entropy(m(b[0]), b[1]), kill_at)
        run = fit(model, _loader(TensorDataset(x, y), 20, 0), epochs=3, lr=0.05, ckpt_path=out / "ce.pt", loss_fn=loss,
                  **common)
    elif name in ("greg", "greg_public_code", "greg_bn"):
        model = TinyBN() if name == "greg_bn" else build_model("mnist_cnn", 10)
        loader = objectives.IDAuxLoader(_loader(TensorDataset(x, y), 16, 0, drop_last=True),
                                        _loader(TensorDataset(noise_images(64)), 32, 1, drop_last=True))
        form = {"form": "public_code" if name == "greg_public_code" else "printed"}
        run = fit(model, loader, epochs=2, lr=0.02, ckpt_path=out / f"{name}.pt",
            loss_fn=objectives.make_objective("greg", m_in=-5.0, m_aux=-3.0, lambda_grad=10.0, **form), **common)
    elif name in ("bood", "bood_ce"):
        model = regularize.RegularizedClassifier(build_model("mnist_cnn", 10))
        if name == "bood":
            data = regularize.WithOutliers(TensorDataset(x, y), noise_images(40))
            loss = regularize.bood_loss(2.5)
        else:
            data, loss = TensorDataset(x, y), (lambda m, b: F.cross_entropy(m(b[0]), b[1]))
        run = fit(model, _loader(data, 16, 0), epochs=2, lr=0.02, ckpt_path=out / f"{name}.pt", loss_fn=loss, **common)
    else:
        raise ValueError(f"unknown step {name!r}")
    return model, run


def outlier_features(n: int = 6):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 32, generator=g), torch.arange(n) % len(NAMES)


def generate_step(out: Path, kill: bool = False, **given) -> dict:
    """The tiny pipeline decodes 6 outliers into OUT/sd_images (resumable, shared by the processes)."""
    pipe = sd.load_pipeline(out / "tiny_sd", "cpu")
    if kill:
        save = sd._save_png

        def save_then_die(*args, **kw):
            save(*args, **kw)
            if distributed.processes().rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        sd._save_png = save_then_die
    z, y = outlier_features()
    return sd.generate(pipe, NAMES, y, z, out / "sd_images", steps=2, size=32, save_size=32, batch_size=2, seed=3,
                       progress=False, **given)


def main(argv: list[str]) -> None:
    out, steps = Path(argv[0]), [a for a in argv[1:] if not a.startswith("--kill-at")]
    kill = dict(a.split("=", 1)[1].split(":") for a in argv[1:] if a.startswith("--kill-at="))
    rank = distributed.processes().rank
    for step in steps:
        if step == "sd":
            report = generate_step(out, kill="sd" in kill)
            report.pop("change_at_token")
            (out / f"sd_rank{rank}.json").write_text(json.dumps(report))
        else:
            model, run = train_step(step, out, int(kill["ce"]) if step == "ce" and "ce" in kill else None)
            torch.save(model.state_dict(), out / f"{step}_rank{rank}.pt")
            (out / f"{step}_rank{rank}.json").write_text(json.dumps(run))


if __name__ == "__main__":
    main(sys.argv[1:])
