"""The 2D toy of GReg's Fig. 1a and Fig. 3: ID blobs, an auxiliary ring, held-out OOD, a small ReLU MLP.

Everything the notebook trains goes through the package's objectives (``Objective("energy" | "greg")``),
with the toy's own margins: a 3-class MLP on 2D points has energies around -5 to -15, not CIFAR's -25.

* ID: three labelled Gaussian blobs at radius 2 (120, 240, 360 degrees).
* auxiliary outliers (training): an annulus 3.5 < r < 6 around them (the "300K random images" stand-in).
* OOD (never trained on): ``near`` = blobs in the gaps between the ID blobs, at radius 2; ``far`` = an
  annulus 7 < r < 9, beyond the auxiliary data.

:func:`experiment` trains Energy and GReg over seeds and :func:`sweep` a (lambda_grad, margins) grid; both
are cached under ``cache/greg/toy`` (atomic writes, keyed by their parameters, verified on load).
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from ..progress import tqdm

from .. import metrics, paths
from ..models import Classifier
from ..threads import one_cpu_thread
from .certify import certified_radius, steepest_flip
from .energy import energy_loss, energy_score
from .objectives import Objective
from .regularizer import scores_and_gradient_norms

#: the toy's training recipe; margins sit inside the toy's energy range, m_in < m_aux as eq. (1) needs
TOY_DEFAULTS = {"hidden": 64, "lr": 0.05, "lambda_s": 0.1, "lambda_grad": 1.0, "m_in": -8.0, "m_aux": -3.0,
                "eps": 0.5, "n_id": 400, "n_aux": 400, "n_ood": 300, "log_every": 3}
ANGLES_ID = (90.0, 210.0, 330.0)


@dataclass
class ToyData:
    x_in: torch.Tensor        # ID training points (n, 2) and labels
    y_in: torch.Tensor
    x_aux: torch.Tensor       # auxiliary outliers (training)
    x_test: torch.Tensor      # ID test points and labels
    y_test: torch.Tensor
    x_near: torch.Tensor      # held-out OOD between the blobs
    x_far: torch.Tensor       # held-out OOD beyond the auxiliary ring


def _blobs(n: int, angles, radius: float, std: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % len(angles)
    rad = torch.deg2rad(torch.tensor(angles, dtype=torch.float32))[y]
    centers = radius * torch.stack([rad.cos(), rad.sin()], 1)
    return centers + std * torch.randn(n, 2, generator=g), y


def _annulus(n: int, r_min: float, r_max: float, g: torch.Generator) -> torch.Tensor:
    theta = 2 * math.pi * torch.rand(n, generator=g)
    r = torch.sqrt(r_min ** 2 + (r_max ** 2 - r_min ** 2) * torch.rand(n, generator=g))  # uniform in area
    return r[:, None] * torch.stack([theta.cos(), theta.sin()], 1)


def make_toy(n_id: int = TOY_DEFAULTS["n_id"], n_aux: int = TOY_DEFAULTS["n_aux"],
             n_ood: int = TOY_DEFAULTS["n_ood"], seed: int = 0) -> ToyData:
    """The toy data set; the same ``seed`` gives the same points."""
    if min(n_id, n_aux, n_ood) < 3:
        raise ValueError(f"need at least 3 points per set, got n_id={n_id}, n_aux={n_aux}, n_ood={n_ood}")
    g = torch.Generator().manual_seed(seed)
    x_in, y_in = _blobs(n_id, ANGLES_ID, 2.0, 0.35, g)
    x_test, y_test = _blobs(n_ood, ANGLES_ID, 2.0, 0.35, g)
    gaps = tuple(a + 60.0 for a in ANGLES_ID)
    return ToyData(x_in, y_in, _annulus(n_aux, 3.5, 6.0, g), x_test, y_test, _blobs(n_ood, gaps, 2.0, 0.35, g)[0],
                   _annulus(n_ood, 7.0, 9.0, g))


class ToyMLP(Classifier):
    """2 -> hidden -> hidden -> hidden (ReLU) -> classes: piecewise linear, so eq. (4) can be certified."""

    def __init__(self, hidden: int = 64, num_classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x):
        return self.body(x)


def train_toy(data: ToyData, *, lambda_grad: float, m_in: float, m_aux: float, steps: int, seed: int = 0,
              lambda_s: float = TOY_DEFAULTS["lambda_s"], lr: float = TOY_DEFAULTS["lr"],
              hidden: int = TOY_DEFAULTS["hidden"], log_every: int = TOY_DEFAULTS["log_every"]
              ) -> tuple[ToyMLP, dict]:
    """Full-batch SGD (momentum 0.9, cosine schedule, as the paper fine-tunes) on CE + lambda_S L_S
    (+ lambda_grad L_grad when ``lambda_grad > 0``). Every ``log_every`` steps (0: never) ``history``
    records the energy loss of eq. (1) (unweighted) and the mean ``||grad_x S||`` over the training points,
    as in Fig. 3."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    model = ToyMLP(hidden)
    method = "greg" if lambda_grad > 0 else "energy"
    # the printed form of eq. (3): the toy (Fig. 1a) is not in the public code, and trains full-batch
    objective = Objective(method, lambda_s=lambda_s, lambda_grad=max(lambda_grad, 0.0), m_in=m_in, m_aux=m_aux,
                          form="printed")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    batch = (data.x_in, data.y_in, data.x_aux)
    x_train = torch.cat([data.x_in, data.x_aux])
    history = {"step": [], "energy_loss": [], "grad_norm": [], "ce": []}
    with one_cpu_thread():
        _fit_toy(model, objective, opt, sched, batch, x_train, len(data.x_in), steps, log_every, history)
    model.eval()
    return model, {k: np.asarray(v) for k, v in history.items()}


def _fit_toy(model, objective, opt, sched, batch, x_train, n_in, steps, log_every, history) -> None:
    m_in, m_aux = objective.m_in, objective.m_aux
    for step in range(1, steps + 1):
        model.train()
        loss = objective(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == 1):
            s, norms = scores_and_gradient_norms(model, x_train)
            history["energy_loss"].append(energy_loss(s[:n_in], s[n_in:], m_in, m_aux).item())
            history["grad_norm"].append(norms.mean().item())
            history["ce"].append(objective.last["ce"])
            history["step"].append(step)


def threshold(model: nn.Module, x_id: torch.Tensor, tpr: float = 0.95) -> float:
    """gamma with ``tpr`` of the ID points detected (ID when ``S <= gamma``)."""
    with torch.no_grad():
        return float(torch.quantile(energy_score(model(x_id)), tpr))


def evaluate(model: nn.Module, data: ToyData, eps: float = TOY_DEFAULTS["eps"], seed: int = 0) -> dict:
    """AUROC (ID test vs near / far OOD), mean ``||grad S||``, mean certified radius (eq. 4, sampled
    Lipschitz estimate and the linear-region certificate) of ID test points and of near-OOD points, and the
    fraction of detected near-OOD points that one step of length ``eps`` pushes across the threshold."""
    with one_cpu_thread():
        return _evaluate(model, data, eps, seed)


def _evaluate(model: nn.Module, data: ToyData, eps: float, seed: int) -> dict:
    gamma = threshold(model, data.x_test)
    with torch.no_grad():
        s = {k: energy_score(model(x)) for k, x in (("id", data.x_test), ("near", data.x_near), ("far", data.x_far))}
    out = {"gamma": gamma, "auroc_near": metrics.auroc(-s["id"], -s["near"]),
           "auroc_far": metrics.auroc(-s["id"], -s["far"])}
    for key, x, side in (("id", data.x_test, "id"), ("near", data.x_near, "ood")):
        out[f"grad_norm_{key}"] = scores_and_gradient_norms(model, x)[1].mean().item()
        for est in ("sampled", "region"):
            cert = certified_radius(model, x, gamma, eps, side=side, estimate=est, seed=seed)
            out[f"radius_{key}_{est}"] = cert["radius"].mean().item()
    detected = s["near"] > gamma
    flips = steepest_flip(model, data.x_near[detected], gamma, eps, side="ood") if detected.any() else None
    out["flip_rate_near"] = float(flips.float().mean()) if flips is not None else 0.0
    return out


def score_grid(model: nn.Module, lim: float = 9.5, n: int = 121) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, Y, S)`` on an n x n grid of [-lim, lim]^2, for surfaces and contours."""
    t = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    with torch.no_grad():
        s = energy_score(model(torch.stack([xx.flatten(), yy.flatten()], 1))).view(n, n)
    return xx.numpy(), yy.numpy(), s.numpy()


# ----------------------------------------------------------------------------------- cached experiments
def _key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(name: str, params: dict, compute) -> dict:
    """``compute()`` once per ``params``; the result (tensors, arrays, numbers, state dicts) is stored
    atomically under ``cache/greg/toy/<name>_<key>.pt`` and read back (``weights_only``) on later calls.
    A file that cannot be read or belongs to other parameters is rebuilt."""
    key = _key(params)
    path = paths.cache_dir("greg", "toy") / f"{name}_{key}.pt"
    if path.exists():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=False)
            if stored.get("params_key") == key:
                return stored["result"]
            raise ValueError("parameters do not match")
        except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt
            warnings.warn(f"toy cache {path.name} unusable ({type(err).__name__}: {err}); recomputing",
                          RuntimeWarning, stacklevel=2)
    result = compute()
    with paths.atomic_path(path) as tmp:
        torch.save({"params_key": key, "params": params, "result": result}, tmp)
    return result


def _run(data: ToyData, params: dict, lambda_grad: float, m_in: float, m_aux: float, seed: int,
         log: bool = True, grid: bool = False) -> dict:
    model, history = train_toy(data, lambda_grad=lambda_grad, m_in=m_in, m_aux=m_aux, steps=params["steps"],
                               seed=seed, lambda_s=params["lambda_s"], lr=params["lr"], hidden=params["hidden"],
                               log_every=params["log_every"] if log else 0)
    out = {"history": history, "eval": evaluate(model, data, params["eps"], seed),
           "state": {k: v.clone() for k, v in model.state_dict().items()}}
    if grid:
        out["grid"] = score_grid(model)
    return out


def experiment(steps: int, seeds: int, first_seed: int = 0, progress: bool = True, **overrides) -> dict:
    """Energy (``lambda_grad = 0``) and GReg (``lambda_grad``) trained on the same toy data for ``seeds``
    seeds from ``first_seed`` on: ``{"params", "energy": [run per seed], "greg": [...]}``, each run with its
    Fig. 3 history, its evaluation and its weights (and the score grid for the first seed). Cached."""
    unknown = sorted(set(overrides) - set(TOY_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown toy parameter(s) {unknown}; valid: {', '.join(TOY_DEFAULTS)}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    params = {**TOY_DEFAULTS, **overrides, "steps": steps, "seeds": seeds, "first_seed": first_seed}

    def compute():
        data = make_toy(params["n_id"], params["n_aux"], params["n_ood"], seed=0)
        runs = {"energy": [], "greg": []}
        jobs = [(m, s) for s in range(first_seed, first_seed + seeds) for m in runs]
        with one_cpu_thread():
            for method, seed in tqdm(jobs, desc="toy runs", disable=not progress):
                lam = params["lambda_grad"] if method == "greg" else 0.0
                runs[method].append(_run(data, params, lam, params["m_in"], params["m_aux"], seed,
                                         grid=seed == first_seed))
        return {"params": params, **runs}

    return cached("experiment", params, compute)


def sweep(steps: int, lambda_grads=(0.0, 0.01, 0.1, 1.0), margins=((-8.0, -3.0), (-10.0, -2.0)),
          seed: int = 0, progress: bool = True, **overrides) -> dict:
    """One run per (lambda_grad, (m_in, m_aux)): score grid and evaluation, for the notebook's widget.
    ``{(lambda_grad, m_in, m_aux): {"grid", "eval"}}``. Cached."""
    params = {**TOY_DEFAULTS, **overrides, "steps": steps, "seed": seed,
              "lambda_grads": [float(v) for v in lambda_grads], "margins": [tuple(map(float, m)) for m in margins]}

    def compute():
        data = make_toy(params["n_id"], params["n_aux"], params["n_ood"], seed=0)
        grid = [(lam, m) for lam in params["lambda_grads"] for m in params["margins"]]
        out = {}
        with one_cpu_thread():
            for lam, (m_in, m_aux) in tqdm(grid, desc="sweep", disable=not progress):
                run = _run(data, params, lam, m_in, m_aux, seed, log=False, grid=True)
                out[(lam, m_in, m_aux)] = {"grid": run["grid"], "eval": run["eval"]}
        return out

    return cached("sweep", params, compute)


def load_model(run: dict, hidden: int = TOY_DEFAULTS["hidden"]) -> ToyMLP:
    """The trained toy network of one cached run."""
    model = ToyMLP(hidden)
    model.load_state_dict(run["state"])
    return model.eval()


# ------------------------------------------------------------------------------------- numbers per seed
def per_seed(runs: list[dict], key: str) -> list[float]:
    """One evaluation number (see :func:`evaluate`) or the last logged value of a Fig. 3 curve
    (``energy_loss``, ``grad_norm``), per seed."""
    if key in runs[0]["history"]:
        return [float(r["history"][key][-1]) for r in runs]
    if key not in runs[0]["eval"]:
        raise ValueError(f"unknown toy quantity {key!r}; valid: {', '.join([*runs[0]['history'], *runs[0]['eval']])}")
    return [float(r["eval"][key]) for r in runs]


def setting_label(profile: str, hidden: int = TOY_DEFAULTS["hidden"]) -> str:
    """What ran, for claims and records: the toy, not a benchmark of the paper."""
    return f"{profile} · 2D toy · ReLU MLP 2-{hidden}-{hidden}-{hidden}-3"


#: what the notebook records per method and seed: (record metric, toy quantity, record dataset)
RECORDED = (("energy_loss_final", "energy_loss", "toy_train"), ("grad_norm_final", "grad_norm", "toy_train"),
            ("auroc", "auroc_near", "toy_near"), ("auroc", "auroc_far", "toy_far"),
            ("certified_radius", "radius_id_sampled", "toy_id"), ("certified_radius", "radius_near_sampled", "toy_near"),
            ("flip_rate", "flip_rate_near", "toy_near"))


def records(exp: dict, cfg) -> list:
    """Result records of :func:`experiment` (one per method, seed and quantity), table ``fig3``."""
    from .. import results

    setting = f"toy2d/mlp{exp['params']['hidden']}"
    out = []
    for method, title in (("energy", "Energy Loss"), ("greg", "GReg")):
        for metric, key, dataset in RECORDED:
            for i, value in enumerate(per_seed(exp[method], key)):
                out.append(results.record("greg", "fig3", title, dataset, metric, value, setting=setting,
                                          seed=exp["params"]["first_seed"] + i, profile=cfg.profile))
    return out
