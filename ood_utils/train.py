"""One training loop for the whole kit, and the load-or-train entry point for the base classifiers.

:func:`fit` is plain supervised training with the recipe the papers share: SGD with momentum, weight decay,
a cosine learning-rate schedule stepped every batch (Adam and a step decay where a recipe asks for them).
It writes a checkpoint after every epoch (atomically, with ``paths.atomic_path``, and a sidecar holding its
sha256) and resumes from it, so an interrupted run continues where it stopped and, on CPU, ends with the
same weights bit for bit. A checkpoint that cannot be
read, fails its hash, or was written with another recipe or model is never used: training starts over with
a warning.
Under ``accelerate launch`` several processes share every batch (:mod:`ood_utils.distributed`); the main
process alone writes checkpoints and cached weights, and every process resumes from them.

:func:`get_classifier` returns the classifier every paper track starts from (trained once, then read from
the cache in seconds), or the weights of a user-supplied checkpoint.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import random
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from .progress import tqdm

from . import distributed, paths, profiles
from .models import (CheckpointError, build_model, check_state_dict, load_checkpoint, read_state_dict,
                     unwrap_model)

LossFn = Callable[[nn.Module, Any], torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# small helpers: hashing, atomic writes, moving batches, RNG state
# ----------------------------------------------------------------------------------------------------------
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _loader_generator(loader) -> torch.Generator | None:
    """The generator that drives the loader's shuffling, if the caller gave one."""
    g = getattr(loader, "generator", None)
    if g is None:
        g = getattr(getattr(loader, "sampler", None), "generator", None)
    return g


def _rng_state(loader) -> dict:
    """Every random stream a training epoch consumes, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    g = _loader_generator(loader)
    if g is not None:
        state["loader"] = g.get_state()
    return state


def _set_rng_state(state: dict, loader) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    g = _loader_generator(loader)
    if g is not None and "loader" in state:
        g.set_state(state["loader"])


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: derive numpy/python seeds from the per-worker torch seed (reproducible shuffles)."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


# ----------------------------------------------------------------------------------------------------------
# checkpoint of a training run (resume state), with a sha256 sidecar
# ----------------------------------------------------------------------------------------------------------
def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_training_state(path: Path, state: dict) -> None:
    """Write ``state`` atomically, then its sidecar (sha256 + epoch)."""
    with paths.atomic_path(path) as tmp:
        torch.save(state, tmp)
    paths.write_json(_sidecar(path), {"sha256": sha256_file(path), "epoch": state["epoch"],
                                      "torch": torch.__version__})


def load_training_state(path: Path) -> dict | None:
    """The saved state, or ``None`` (with a warning) when it is missing a sidecar, fails its hash or cannot
    be read. Never returns a state it could not verify."""
    if not path.exists():
        return None
    try:
        meta = json.loads(_sidecar(path).read_text())
        if meta.get("sha256") != sha256_file(path):
            raise CheckpointError("sha256 does not match its sidecar (file changed or truncated)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("model", "optimizer", "scheduler", "epoch", "recipe", "rng"):
            if key not in state:
                raise CheckpointError(f"no {key!r} entry")
        return state
    except Exception as err:
        warnings.warn(f"ignoring unusable checkpoint {path} ({type(err).__name__}: {err}); "
                      "training starts from scratch", RuntimeWarning, stacklevel=3)
        return None


def _discard(path: Path) -> None:
    for p in (path, _sidecar(path)):
        p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------
# the training loop
# ----------------------------------------------------------------------------------------------------------
def cross_entropy_loss(model: nn.Module, batch) -> torch.Tensor:
    """Default ``loss_fn``: the batch is ``(images, labels)``."""
    x, y = batch[0], batch[1]
    return F.cross_entropy(model(x), y)


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str, params, *, lr: float, weight_decay: float, momentum: float = 0.9,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    """SGD with momentum (the papers' recipe) or Adam (the GReg public code's ImageNet GReg+)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def fit(model: nn.Module, loader, *, epochs: int, lr: float, weight_decay: float, device, ckpt_path,
        amp: bool = False, momentum: float = 0.9, nesterov: bool = False, loss_fn: LossFn | None = None,
        progress: bool = True, milestones=None, optimizer: str = "sgd") -> dict:
    """Train ``model`` for ``epochs`` epochs with SGD + per-step cosine annealing; resume from ``ckpt_path``.

    ``loss_fn(model, batch) -> scalar`` receives the loader's batch already on ``device`` (default:
    cross-entropy on ``(x, y)``), so the same loop runs OE, energy and GReg objectives. ``amp`` is used only
    on CUDA. The model is left in eval mode. ``milestones`` (epochs) replaces the cosine schedule by a
    constant learning rate multiplied by 0.1 at each of those epochs. ``optimizer="adam"`` trains with Adam
    (``momentum`` and ``nesterov`` unused; ``weight_decay`` added to the gradient, as ``torch.optim.Adam``
    does). Returns ``{"start_epoch", "epochs",
    "history": [{"epoch", "loss", "lr", "seconds"}]}``.

    Under ``accelerate launch --num_processes N`` (see :mod:`ood_utils.distributed`) each process trains
    on its share of every batch of ``loader`` (the loader's batch is the global batch), gradients and
    BatchNorm statistics are averaged after every backward, the history holds the whole batch's losses,
    and only the main process writes the checkpoint and draws progress. ``loss_fn`` must be a mean over the
    rows it is given, each of its terms over rows shared in the same proportion (ID and auxiliary rows
    alike), so that the average over processes is the mean over the batch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    procs = distributed.processes()
    device = torch.device(device)
    ckpt_path = Path(ckpt_path)
    loss_fn = loss_fn or cross_entropy_loss
    use_amp = bool(amp) and device.type == "cuda"
    model.to(device)

    opt = make_optimizer(optimizer, model.parameters(), lr=lr, weight_decay=weight_decay, momentum=momentum,
                         nesterov=nesterov)
    steps = len(loader)
    if steps == 0:
        raise ValueError("fit: the loader yields no batches (empty dataset, or drop_last with too few samples)")
    if milestones:
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(m) * steps for m in milestones], gamma=0.1)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    recipe = {"epochs": epochs, "lr": float(lr), "weight_decay": float(weight_decay), "momentum": float(momentum),
              "nesterov": bool(nesterov), "steps_per_epoch": steps, "amp": use_amp}
    if optimizer != "sgd":      # named only when not SGD: checkpoints written before the option still resume
        recipe["optimizer"] = optimizer
    if milestones:
        recipe["milestones"] = [int(m) for m in milestones]

    start, history = 0, []
    state = load_training_state(ckpt_path)      # every process reads the same file
    if state is not None:
        start, history = _resume(state, model, opt, sched, scaler, loader, recipe, ckpt_path)
    distributed.agree(start, f"the epoch to resume {ckpt_path.name} from", procs)
    distributed.broadcast_model(model, procs)
    show = progress and procs.is_main
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not show)
        for step, batch in enumerate(bar, 1):
            batch, weight = distributed.local_share(batch, procs)
            batch = to_device(batch, device)
            with torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext():
                loss = loss_fn(model, batch)
            value, finite = distributed.global_mean(loss, weight, procs)
            if not finite:
                where = f" (in one of {procs.world} processes)" if procs.several else ""
                raise FloatingPointError(f"loss is {loss.item() if procs.world == 1 else 'not finite'}{where} at "
                                         f"epoch {epoch + 1}, step {step} of {steps}; lower lr or check the data")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss * weight if procs.several else loss).backward()
            distributed.average_gradients(model, procs)
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += value
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        history.append({"epoch": epoch + 1, "loss": total / max(count, 1), "lr": opt.param_groups[0]["lr"],
                        "seconds": time.perf_counter() - t0})
        if show:
            tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f} "
                       f"({history[-1]['seconds']:.1f}s)")
        if procs.is_main:
            save_training_state(ckpt_path, {
                "model": unwrap_model(model).state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                "recipe": recipe, "rng": _rng_state(loader), "history": history})
        distributed.barrier()       # nobody reads the checkpoint (or trains on) before it is complete
    model.eval()
    return {"start_epoch": start, "epochs": epochs, "history": history}


def _resume(state, model, opt, sched, scaler, loader, recipe, ckpt_path) -> tuple[int, list]:
    """Restore everything from a verified checkpoint; returns (first epoch to run, history so far)."""
    if state["recipe"] != recipe:
        changed = {k: (state["recipe"].get(k), v) for k, v in recipe.items() if state["recipe"].get(k) != v}
        warnings.warn(f"checkpoint {ckpt_path} was written with another recipe {changed} (saved, now); "
                      "training starts from scratch", RuntimeWarning, stacklevel=3)
        return 0, []
    try:
        check_state_dict(model, state["model"], source=f"checkpoint {ckpt_path}")
    except CheckpointError as err:
        warnings.warn(f"{err}; training starts from scratch", RuntimeWarning, stacklevel=3)
        return 0, []
    unwrap_model(model).load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"], loader)
    return int(state["epoch"]), list(state.get("history", []))


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader, device=None) -> float:
    """Top-1 accuracy in [0, 1] (eval mode; the model's previous mode is restored)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in loader:
        x, y = to_device(batch[0], device), to_device(batch[1], device)
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluate_accuracy: the loader is empty")
    return correct / total


# ----------------------------------------------------------------------------------------------------------
# load-or-train the base classifier of a profile
# ----------------------------------------------------------------------------------------------------------
def _data():
    """The dataset registry (imported late: it is heavy and optional for model-only uses)."""
    return importlib.import_module(f"{__package__}.data")


def _fmt(value) -> str:
    return "all" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))


def cache_key(cfg, dataset: str, arch: str) -> str:
    """Name of a trained classifier in the cache: everything that changes the weights is in it, including
    smoke mode, so smoke weights are never read by a real run and vice versa."""
    key = (f"{dataset}_{arch}_s{cfg.seed}_e{cfg.epochs}_b{cfg.batch_size}_lr{_fmt(cfg.lr)}"
           f"_wd{_fmt(cfg.weight_decay)}_n{_fmt(cfg.max_train)}")
    return key + ("_smoke" if cfg.smoke else "")


def _versions() -> dict:
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__}


def _make_loader(dataset, cfg, *, train: bool, batch_size: int | None = None):
    device = cfg.torch_device
    kw = {}
    if train:
        kw = {"shuffle": True, "generator": torch.Generator().manual_seed(cfg.seed), "drop_last": False}
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size or cfg.batch_size, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", worker_init_fn=_seed_worker if cfg.num_workers else None, **kw)


def _test_accuracy(model, dataset: str, cfg) -> float:
    test = _data().get_dataset(dataset, "test", max_n=cfg.max_eval if cfg.smoke else None)
    return evaluate_accuracy(model, _make_loader(test, cfg, train=False, batch_size=2 * cfg.batch_size),
                             cfg.torch_device)


def _read_cached(model, weights: Path, meta_path: Path, cfg) -> dict | None:
    """Load cached final weights if the sidecar vouches for them; otherwise ``None`` (with a warning)."""
    if not (weights.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("smoke") != cfg.smoke:
            raise CheckpointError(f"smoke={meta.get('smoke')} weights cannot serve a smoke={cfg.smoke} run")
        if meta.get("sha256") != sha256_file(weights):
            raise CheckpointError("sha256 does not match its sidecar")
        state = read_state_dict(weights)
        check_state_dict(model, state, source=str(weights))
        model.load_state_dict(state)
        return meta
    except Exception as err:
        warnings.warn(f"cached classifier {weights.name} is unusable ({err}); retraining", RuntimeWarning,
                      stacklevel=3)
        return None


def _save_final(model, weights: Path, meta_path: Path, meta: dict) -> dict:
    """Write the final weights and their sidecar (the main process only, when several train together)."""
    from safetensors.torch import save_file

    if distributed.processes().is_main:
        with paths.atomic_path(weights) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
        paths.write_json(meta_path, {**meta, "sha256": sha256_file(weights), "versions": _versions()})
    distributed.barrier()
    return json.loads(meta_path.read_text())


def get_classifier(profile: str = "mini", dataset: str | None = None, arch: str | None = None, cfg=None, *,
                   retrain: bool = False, progress: bool = True) -> tuple[nn.Module, dict]:
    """Load-or-train the base classifier of a profile; returns ``(model, info)`` with the model in eval mode
    on ``cfg.torch_device`` and ``info["test_accuracy"]`` (ID test set, fraction in [0, 1]).

    Order: ``cfg.checkpoint`` (user weights, checked) > cached weights (sha256-verified) > train with
    :func:`fit` (SGD momentum 0.9, wd ``cfg.weight_decay``, cosine, ``cfg.epochs`` epochs of batch
    ``cfg.batch_size``). ``retrain=True`` ignores the cache.
    """
    cfg = cfg if cfg is not None else profiles.resolve(profile)
    profile = cfg.profile
    dataset = dataset or cfg.id_dataset
    arch = arch or cfg.arch
    data = _data()
    if dataset not in data.ID_DATASETS:
        raise ValueError(f"unknown ID dataset {dataset!r}; valid: {', '.join(data.ID_DATASETS)}")
    num_classes = data.ID_DATASETS[dataset].num_classes
    device = cfg.torch_device
    profiles.seed_everything(cfg.seed)  # the initial weights depend on the seed only
    model = build_model(arch, num_classes, image_size=data.ID_DATASETS[dataset].image_size)
    info = {"profile": profile, "dataset": dataset, "arch": arch, "seed": cfg.seed, "smoke": cfg.smoke}

    if cfg.checkpoint:
        return _from_user_checkpoint(model, cfg, dataset, arch, info)

    folder = paths.cache_dir("checkpoints", profile)
    key = cache_key(cfg, dataset, arch)
    weights, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    meta = None if retrain else _read_cached(model, weights, meta_path, cfg)
    if meta is not None:
        model.to(device).eval()
        return model, {**info, **meta, "source": "cache", "path": str(weights)}

    train_set = data.get_dataset(dataset, "train", train_transform=True, max_n=cfg.max_train)
    loader = _make_loader(train_set, cfg, train=True)
    ckpt = folder / f"{key}.train.pt"
    if retrain:
        _discard(ckpt)
    t0 = time.perf_counter()
    run = fit(model, loader, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, device=device,
              ckpt_path=ckpt, amp=cfg.amp, progress=progress)
    seconds = time.perf_counter() - t0
    acc = _test_accuracy(model, dataset, cfg)
    meta = _save_final(model, weights, meta_path, {
        **info, "test_accuracy": acc, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
        "weight_decay": cfg.weight_decay, "max_train": cfg.max_train, "n_train": len(train_set),
        "train_seconds": seconds, "final_loss": run["history"][-1]["loss"] if run["history"] else None})
    _discard(ckpt)  # the final weights are cached; the resume state is no longer needed
    model.to(device).eval()
    return model, {**meta, "source": "trained", "path": str(weights)}


def _from_user_checkpoint(model, cfg, dataset: str, arch: str, info: dict) -> tuple[nn.Module, dict]:
    """Weights from ``cfg.checkpoint`` (checked by :func:`models.load_checkpoint`); test accuracy cached per
    file hash so re-runs skip the evaluation."""
    path = Path(cfg.checkpoint).expanduser()
    load_checkpoint(model, path)
    model.to(cfg.torch_device).eval()
    digest = sha256_file(path)
    meta_path = paths.cache_dir("checkpoints", cfg.profile, "external") / (
        f"{dataset}_{arch}_{digest[:16]}{'_smoke' if cfg.smoke else ''}.json")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("sha256") != digest:
            raise ValueError("stale")
    except (OSError, ValueError):
        meta = {**info, "sha256": digest, "test_accuracy": _test_accuracy(model, dataset, cfg),
                "versions": _versions()}
        paths.write_json(meta_path, meta)
    return model, {**info, **meta, "source": "checkpoint", "path": str(path)}
