"""GReg's costs, as ratios measured in one run on the same machine.

1. One GReg training step (CE + energy loss + gradient regulariser: double backprop) against one plain
   energy-loss step on the same batch and model (the paper's overhead; target <= 2.5x), on the mini CNN and
   on CIFAR-sized ResNet-18 and DenseNet-BC-100 batches.
2. The energy-based sampler of GReg+ (candidate-pool forward + K-Means + per-cluster extremes) against the
   GReg step it feeds.
3. The kit's torch K-Means against scikit-learn's KMeans on the same pool (same n_init): inertia and time.

    .venv/bin/python benchmarks/bench_greg.py                 # mini CNN + CIFAR nets, small CPU batches
    .venv/bin/python benchmarks/bench_greg.py --only mini kmeans --repeat 5 --out /tmp/bench/greg
    .venv/bin/python benchmarks/bench_greg.py --only resnet18 --device cuda --batch 64   # GPU, the paper's batch
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ood_utils import greg
from ood_utils.models import build_model

#: name -> (architecture, input shape, ID batch, classes); aux batch = 2 x ID batch, as in the public code
NETWORKS = {
    "mini": ("mnist_cnn", (1, 28, 28), 128, 10),
    "resnet18": ("resnet18", (3, 32, 32), 8, 10),
    "densenet100": ("densenet100", (3, 32, 32), 8, 10),
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()       # GPU work is asynchronous: time it to its end


def _timed(fn, repeat: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs after one warm-up run."""
    fn()
    _sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _batch(shape, n_in: int, classes: int, pool: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_in, *shape, generator=g), torch.randint(0, classes, (n_in,), generator=g),
            torch.rand(pool, *shape, generator=g))


def _margins(model, x):
    """Margins that keep about half of the rows in eq. (3)'s masks, so the gradient term does real work."""
    with torch.no_grad():
        s = greg.energy_score(model(x))
    m = torch.quantile(s, torch.tensor([0.3, 0.7]))
    return float(m[0]), float(m[1])


def bench_steps(name: str, repeat: int, device: str = "cpu", batch: int | None = None) -> dict:
    """Energy step vs GReg step (same batch, model, optimizer); the GReg+ sampler vs the GReg step.
    ``batch`` replaces the network's ID batch (e.g. the paper's 64 on a GPU)."""
    arch, shape, n_in, classes = NETWORKS[name]
    n_in = batch or n_in
    torch.manual_seed(0)
    model = build_model(arch, classes).to(device).train()
    x_in, y_in, pool = (t.to(device) for t in _batch(shape, n_in, classes, pool=6 * n_in))
    x_aux = pool[: 2 * n_in]
    m_in, m_aux = _margins(model, torch.cat([x_in, x_aux]))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step(objective, batch):
        def run():
            loss = objective(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    energy = greg.make_objective("energy", m_in=m_in, m_aux=m_aux)
    greg_obj = greg.make_objective("greg", m_in=m_in, m_aux=m_aux)
    t_energy = _timed(step(energy, (x_in, y_in, x_aux)), repeat)
    t_greg = _timed(step(greg_obj, (x_in, y_in, x_aux)), repeat)
    sampler = greg.make_sampler("energy_cluster", seed=0)
    t_sampler = _timed(lambda: sampler(model, pool, x_in), repeat)
    return {"network": name, "arch": arch, "device": str(device), "id_batch": n_in, "aux_batch": 2 * n_in, "pool": len(pool),
            "energy_step_s": t_energy, "greg_step_s": t_greg, "greg_over_energy": t_greg / t_energy,
            "kept_rows": greg_obj.last["kept_in"] + greg_obj.last["kept_aux"],
            "sampler_s": t_sampler, "sampler_over_greg_step": t_sampler / t_greg}


def bench_kmeans(n: int, dim: int, k: int, n_init: int, repeat: int, seed: int = 0) -> dict:
    """Torch K-Means vs scikit-learn on L2-normalised clustered features (a candidate pool's shape). Both on
    one thread: the kit clusters on one CPU thread (``threads.one_cpu_thread``), and scikit-learn's OpenMP
    threads would otherwise compete with each other on a small, busy machine."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4 * k, dim, generator=g)
    x = F.normalize(centers[torch.randint(4 * k, (n,), generator=g)] + 0.5 * torch.randn(n, dim, generator=g), dim=1)
    xn = x.numpy()
    ours = greg.kmeans(x, k, n_init=n_init, seed=seed)
    with threadpool_limits(1):
        ref = KMeans(k, n_init=n_init, random_state=seed).fit(xn)
        t_ref = _timed(lambda: KMeans(k, n_init=n_init, random_state=seed).fit(xn), repeat)
    t_ours = _timed(lambda: greg.kmeans(x, k, n_init=n_init, seed=seed), repeat)
    return {"pool": n, "dim": dim, "k": k, "n_init": n_init, "torch_inertia": ours.inertia,
            "sklearn_inertia": float(ref.inertia_), "inertia_ratio": ours.inertia / float(ref.inertia_),
            "torch_s": t_ours, "sklearn_s": t_ref, "sklearn_over_torch": t_ref / t_ours}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {os.getloadavg()[0]:.2f}")


def report(steps: list[dict], kmeans: list[dict]) -> str:
    lines = [f"- machine: {_machine()}", ""]
    if steps:
        lines += ["| network | ID + aux batch | energy step (s) | GReg step (s) | GReg / energy | GReg+ sampler (s), "
                  "pool | sampler / GReg step |", "|---|---|---|---|---|---|---|"]
        for r in steps:
            lines.append(f"| {r['arch']} | {r['id_batch']} + {r['aux_batch']} | {r['energy_step_s']:.3f} | "
                         f"{r['greg_step_s']:.3f} | {r['greg_over_energy']:.2f}x | {r['sampler_s']:.3f}, {r['pool']} | "
                         f"{r['sampler_over_greg_step']:.2f}x |")
        lines.append("")
    if kmeans:
        lines += ["| pool x dim, k, n_init | torch inertia / sklearn | torch (s) | sklearn (s) | sklearn / torch |",
                  "|---|---|---|---|---|"]
        for r in kmeans:
            lines.append(f"| {r['pool']} x {r['dim']}, {r['k']}, {r['n_init']} | {r['inertia_ratio']:.4f} | "
                         f"{r['torch_s']:.3f} | {r['sklearn_s']:.3f} | {r['sklearn_over_torch']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[*NETWORKS, "kmeans"], default=[*NETWORKS, "kmeans"])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--out", type=Path, help="also write <out>.md and <out>.json")
    parser.add_argument("--device", default="cpu", help="where the training steps run (cpu, cuda)")
    parser.add_argument("--batch", type=int, default=None, help="ID batch of the step benchmarks (default: per network)")
    args = parser.parse_args(argv)
    print(f"- machine: {_machine()}", flush=True)
    kmeans, steps = [], []
    if "kmeans" in args.only:
        # mini: pool 6 x 128 of 128-d CNN features, k = 128; CIFAR DenseNet: 6 x 64 of 342-d, k = 64
        for shape in ((768, 128, 128), (384, 342, 64)):
            kmeans.append(bench_kmeans(*shape, n_init=3, repeat=args.repeat))
            print(kmeans[-1], flush=True)
    for name in NETWORKS:
        if name in args.only:
            steps.append(bench_steps(name, args.repeat, args.device, args.batch))
            print(steps[-1], flush=True)
    text = report(steps, kmeans)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"steps": steps, "kmeans": kmeans}, indent=2) + "\n")


if __name__ == "__main__":
    main()
