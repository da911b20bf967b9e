"""Fit + score time and peak memory of every detector on synthetic ImageNet-scale features, on CPU.

    python benchmarks/bench_detectors.py --scale full    # 200k x 2048 train, 1000 classes, 50k ID + 4 x 10k OOD
    python benchmarks/bench_detectors.py --scale small   # the same shapes with 2% of the samples (about a minute)
    python benchmarks/bench_detectors.py --scale small --no-pytorch-ood --only mme   # seconds

Each kit detector is timed (fit on the training features, score on all test features), and right after it
pytorch-ood's implementation of the same detector (when installed) on the same arrays, so that both see the
same machine load. Detectors whose scoring cost pytorch-ood makes quadratic or per-sample (its KNN through
scikit-learn, its per-class Mahalanobis loop, its per-sample DICE) are scored on a fixed subset of the test
queries and extrapolated linearly to all of them; the table marks those numbers with `*`.

MME is also compared with its arithmetic floor: the matrix FLOPs it cannot avoid (``mme_flops``), divided
by this machine's float32 matmul speed, measured in the same run (at the start and right before and after
MME; the fastest measurement is used, which makes the floor as low as the machine allows).

Peak memory is the peak resident set size while a detector fits and scores (VmHWM, reset before each
detector) minus the resident size before it: what the detector allocated on top of the shared arrays.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ood_utils.detectors import get_detector  # noqa: E402
from ood_utils.detectors import _numerics as nx  # noqa: E402
from ood_utils.detectors.scores import pca_k, vim_dim  # noqa: E402

#: ImageNet-scale sample counts, multiplied by --scale
FULL = {"train": 200_000, "id": 50_000, "ood": 10_000}
SCALES = {"full": 1.0, "small": 0.02}
#: table row -> (kit detector, its hyperparameters); all with preset="imagenet"
KIT = {
    "msp": ("msp", {}), "mls": ("mls", {}), "energy": ("energy", {}), "mahalanobis": ("mahalanobis", {}),
    "kl": ("kl", {}), "vim": ("vim", {}), "gen": ("gen", {}), "she": ("she", {}), "pca": ("pca", {}),
    "nnguide": ("nnguide", {}), "knn": ("knn", {}), "fdbd": ("fdbd", {}), "react": ("react", {}),
    "dice": ("dice", {}), "ash": ("ash", {}), "scale": ("scale", {}), "vra": ("vra", {}),
    "vra_clip": ("vra_clip", {}), "vra_clip per-dim": ("vra_clip", {"per_dimension": True}),
    "nme": ("nme", {}), "nme_co": ("nme_co", {}), "mme": ("mme", {}),
}
#: pytorch-ood scores at most this many test queries for these detectors (then extrapolates)
THEIR_QUERY_CAP = {"knn": 1000, "mahalanobis": 200, "dice": 1024}


# ------------------------------------------------------------------------------------------------ memory
def rss_kb(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


#: the highest resident set size seen by any Meter (MB): the kernel's own counters restart at every reset
PEAK_RSS_MB = [0.0]


class Meter:
    """Times a block and records the peak resident memory it added (MB)."""

    def __enter__(self):
        self.can_reset = reset_peak()
        self.base = rss_kb()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        peak = rss_kb("VmHWM") if self.can_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_mb = max(0.0, (peak - self.base) / 1024)
        PEAK_RSS_MB[0] = max(PEAK_RSS_MB[0], peak / 1024)


# -------------------------------------------------------------------------------------------------- data
def make_data(scale: float, d: int = 2048, c: int = 1000, seed: int = 0) -> dict:
    """ReLU features around sparse class means (like a ResNet's pooled features), a head aligned with the
    means, ID test features from the same classes and four OOD sets (blurred class mixtures, generic
    activations)."""
    rng = np.random.default_rng(seed)
    n_train = max(2 * c, int(round(FULL["train"] * scale)))
    n_id, n_ood = int(round(FULL["id"] * scale)), int(round(FULL["ood"] * scale))
    mu = (rng.gamma(2.0, 0.5, size=(c, d)) * (rng.random((c, d)) < 0.3)).astype(np.float32)
    W = (mu / np.linalg.norm(mu, axis=1, keepdims=True) + 0.02 * rng.standard_normal((c, d))).astype(np.float32)
    b = (0.1 * rng.standard_normal(c)).astype(np.float32)

    def sample(labels, spread=0.5, shift=None):
        out = np.empty((labels.size, d), dtype=np.float32)
        for s in nx.row_blocks(labels.size, d):
            block = rng.standard_normal((s.stop - s.start, d), dtype=np.float32) * np.float32(spread)
            block += mu[labels[s]] if shift is None else shift
            out[s] = np.maximum(block, 0)
        return out

    y = rng.permutation(np.arange(n_train) % c)  # every class present (pytorch-ood's Mahalanobis needs it)
    X = sample(y)
    test = [sample(rng.integers(0, c, n_id))]
    for k in range(4):
        if k < 2:
            test.append(sample(rng.integers(0, c, n_ood), spread=0.8 + 0.4 * k) * np.float32(0.7))
        else:
            test.append(sample(np.zeros(n_ood, dtype=int), spread=0.6, shift=mu.mean(0) * np.float32(k - 1)))
    Z = np.concatenate(test)
    return dict(X=X, L=nx.linear(X, W, b), y=y, W=W, b=b, Z=Z, LZ=nx.linear(Z, W, b), n_id=n_id, n_ood=n_ood)


# ------------------------------------------------------------------------------------------------- flops
def matmul_gflops(reps: int = 3) -> float:
    """float32 matmul speed of this machine (GFLOP/s) on a feature-sized product (8192 x 2048 x 2048)."""
    a = torch.randn(8192, 2048)
    bm = torch.randn(2048, 2048)
    a @ bm
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ bm
    return reps * 2 * 8192 * 2048 * 2048 / (time.perf_counter() - t0) / 1e9


def mme_flops(n: int, m: int, d: int, c: int, dim: int, k: int) -> dict:
    """The matrix FLOPs MME cannot avoid (2 per multiply-add), given the raw train and test logits.
    Symmetric products count one triangle: a D x D scatter of N rows is N D^2 FLOPs, not 2 N D^2."""
    return {
        "fit: feature scatter, symmetric (N x D x D / 2)": n * d * d,
        "fit: ViM residual of the train features, for alpha (N x D x (D-DIM))": 2 * n * d * (d - dim),
        "fit: head Gram for fDBD, symmetric (C x D x C / 2)": c * c * d,
        "score: VRA logits (M x D x C)": 2 * m * d * c,
        "score: NME distances to the class means (M x D x C)": 2 * m * d * c,
        "score: ViM residual (M x D x (D-DIM))": 2 * m * d * (d - dim),
        "score: PCA projection (M x D x k)": 2 * m * d * k,
    }


# ------------------------------------------------------------------------------------------------ runners
#: runs longer than this are not repeated
REPEAT_UNDER_S = 60.0


def best_of(repeat: int, run):
    """The fastest of up to ``repeat`` runs (timings on a shared 2-core machine are noisy); a run longer
    than REPEAT_UNDER_S is not repeated."""
    rows = [run()]
    while len(rows) < repeat and rows[0]["fit_s"] + rows[0]["score_s"] < REPEAT_UNDER_S:
        rows.append(run())
    best = min(rows, key=lambda r: r["fit_s"] + r["score_s"])
    return {**best, "runs": len(rows)}


def run_kit(row: str, data: dict) -> dict:
    name, hparams = KIT[row]
    det = get_detector(name, preset="imagenet", **hparams)
    with Meter() as fit_m:
        det.fit(data["X"], data["L"], data["y"], data["W"], data["b"])
    with Meter() as score_m:
        s = det.score(data["Z"], data["LZ"])
    assert s.shape == (data["Z"].shape[0],) and np.all(np.isfinite(s))
    out = {"fit_s": fit_m.seconds, "score_s": score_m.seconds, "extrapolated": False,
           "peak_mb": max(fit_m.peak_mb, score_m.peak_mb)}
    if name == "mme":
        out["overflow_count"] = det.last_overflow_count
    return out


def their_runners(data: dict) -> dict:
    """pytorch-ood's detectors on the same arrays: table row -> (fit(), score(z, logits))."""
    from pytorch_ood import detector as P

    t = {k: torch.from_numpy(data[k]) for k in ("X", "L", "y", "W", "b")}
    head = torch.nn.Linear(data["W"].shape[1], data["W"].shape[0])
    with torch.no_grad():
        head.weight.copy_(t["W"])
        head.bias.copy_(t["b"])

    def flat_head(x):  # its feature-map detectors pass (N, D, 1, 1) maps to the head
        return head(x.flatten(1))

    bank = np.sort(np.random.default_rng(0).choice(data["X"].shape[0], max(10, data["X"].shape[0] // 100),
                                                   replace=False))  # NNGuide's 1% bank, as the kit draws it
    state = {}

    def fitted(key, make):
        return lambda: state.update({key: make()})

    def maps(z):
        return z[:, :, None, None].clone()

    return {
        "msp": (lambda: None, lambda z, lz: P.MaxSoftmax.score(lz)),
        "mls": (lambda: None, lambda z, lz: P.MaxLogit.score(lz)),
        "energy": (lambda: None, lambda z, lz: P.EnergyBased.score(lz)),
        "gen": (lambda: None, lambda z, lz: P.GEN.score(lz, gamma=0.1, M=100)),
        "kl": (fitted("kl", lambda: P.KLMatching(None).fit_logits(t["L"], t["y"])),
               lambda z, lz: state["kl"].predict_logits(lz)),
        "mahalanobis": (fitted("maha", lambda: P.Mahalanobis(None).fit_features(t["X"], t["y"])),
                        lambda z, lz: state["maha"].predict_features(z)),
        "vim": (fitted("vim", lambda: P.ViM(None, d=vim_dim(data["X"].shape[1]), w=t["W"], b=t["b"])
                       .fit_features(t["X"], t["y"])),
                lambda z, lz: state["vim"].predict_features(z)),
        "she": (fitted("she", lambda: P.SHE(None, head).fit_features(t["X"], t["y"])),
                lambda z, lz: state["she"].predict_features(z)),
        "knn": (fitted("knn", lambda: P.KNN(None, k=1000).fit_features(t["X"], t["y"])),
                lambda z, lz: state["knn"].predict_features(z)),
        "nnguide": (fitted("nng", lambda: P.NNGuide(None, head, k=10).fit_features(t["X"][bank], t["y"][bank])),
                    lambda z, lz: state["nng"].predict_features(z)),
        "fdbd": (fitted("fdbd", lambda: P.fDBD(None, head).fit_features(t["X"])),
                 lambda z, lz: state["fdbd"].predict_features(z)),
        "react": (fitted("react", lambda: P.ReAct(None, head, percentile=0.9).fit_feature_maps(t["X"], t["y"])),
                  lambda z, lz: state["react"].predict_feature_maps(z)),
        "dice": (fitted("dice", lambda: P.DICE(None, t["W"], t["b"], p=0.7).fit_features(t["X"], t["y"])),
                 lambda z, lz: torch.cat([state["dice"].predict_features(z[i:i + 64]) for i in range(0, len(z), 64)])),
        "ash": (fitted("ash", lambda: P.ASH(None, flat_head, variant="ash-s", percentile=0.9)),
                lambda z, lz: state["ash"].predict_feature_maps(maps(z))),
        "scale": (fitted("scale", lambda: P.SCALE(None, flat_head, percentile=0.85)),
                  lambda z, lz: state["scale"].predict_feature_maps(maps(z))),
        "vra_clip per-dim": (fitted("vra", lambda: P.VRA(None, head).fit_feature_maps(t["X"], t["y"])),
                             lambda z, lz: state["vra"].predict_feature_maps(z)),
    }


@torch.no_grad()
def run_theirs(row: str, fit_fn, score_fn, data: dict) -> dict:
    m = data["Z"].shape[0]
    q = slice(0, min(m, THEIR_QUERY_CAP.get(row, m)))
    z, lz = torch.from_numpy(data["Z"][q]), torch.from_numpy(data["LZ"][q])
    with Meter() as fit_m:
        fit_fn()
    with Meter() as score_m:
        s = score_fn(z, lz)
    assert s.shape[0] == q.stop - q.start
    factor = m / (q.stop - q.start)
    return {"fit_s": fit_m.seconds, "score_s": score_m.seconds * factor, "extrapolated": factor > 1,
            "queries": q.stop - q.start, "peak_mb": max(fit_m.peak_mb, score_m.peak_mb)}


# ------------------------------------------------------------------------------------------------ report
def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB RAM, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def fmt_seconds(x: float, mark: bool = False) -> str:
    return f"{x:.2f}{'*' if mark else ''}"


def report(cmd: str, info: dict, kit: dict, theirs: dict) -> str:
    lines = [f"- command: `{cmd}`", f"- machine: {info['machine']}",
             f"- data: {info['data']}",
             f"- float32 matmul: {', '.join(f'{g:.0f}' for g in info['gflops'])} GFLOP/s (start, before MME, after "
             f"MME); load average {info['load_start']:.2f} at the start, {info['load_end']:.2f} at the end; "
             f"peak RSS of the whole run {info['peak_rss_gb']:.1f} GB", "",
             "| detector | kit fit (s) | kit score (s) | kit total (s) | kit peak +MB | pytorch-ood total (s) "
             "| pytorch-ood peak +MB | pytorch-ood / kit |",
             "|---|---|---|---|---|---|---|---|"]
    for row, r in kit.items():
        total = r["fit_s"] + r["score_s"]
        o = theirs.get(row)
        if o:
            o_total = o["fit_s"] + o["score_s"]
            other = f"{fmt_seconds(o_total, o['extrapolated'])} | {o['peak_mb']:.0f} | {o_total / total:.2f}x"
        else:
            other = "- | - | -"
        lines.append(f"| {row} | {r['fit_s']:.2f} | {r['score_s']:.2f} | {total:.2f} | {r['peak_mb']:.0f} | {other} |")
    capped = {row: o["queries"] for row, o in theirs.items() if o["extrapolated"]}
    if capped:
        lines += ["", f"`*` pytorch-ood scored a subset of the test queries, extrapolated linearly: {capped}."]
    if "mme" in kit:
        lines += ["", mme_summary(info, kit["mme"])]
    return "\n".join(lines)


def mme_summary(info: dict, mme: dict) -> str:
    floor = info["mme_flops"]
    flops = sum(floor.values())
    gflops = max(info["gflops"])
    floor_s = flops / (gflops * 1e9)
    total = mme["fit_s"] + mme["score_s"]
    lines = [f"MME: fit {mme['fit_s']:.1f} s + score {mme['score_s']:.1f} s = {total:.1f} s; arithmetic floor "
             f"{flops / 1e12:.2f} TFLOP / {gflops:.0f} GFLOP/s = {floor_s:.1f} s; ratio {total / floor_s:.2f}x. "
             f"Samples the float32 reference code would overflow: {mme['overflow_count']} of {info['m']}.", "",
             "| MME matrix product | TFLOP | seconds at the measured speed |", "|---|---|---|"]
    lines += [f"| {k} | {v / 1e12:.3f} | {v / (gflops * 1e9):.1f} |" for k, v in floor.items()]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- main
def parse_scale(text: str) -> float:
    if text in SCALES:
        return SCALES[text]
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale must be one of {list(SCALES)} or a number, got {text!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=parse_scale, default="small",
                    help="full (ImageNet scale), small (2%% of the samples) or a fraction")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (this machine has 2 cores)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time each detector up to this many times and keep the fastest (runs over a minute: once)")
    ap.add_argument("--only", nargs="*", help=f"table rows to run (default: all): {', '.join(KIT)}")
    ap.add_argument("--no-pytorch-ood", action="store_true", help="skip the pytorch-ood comparison")
    ap.add_argument("--out", help="also write the markdown report (.md) and raw numbers (.json) to this stem")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cmd = "python benchmarks/bench_detectors.py " + " ".join(argv if argv is not None else sys.argv[1:])

    info = {"machine": machine(), "load_start": os.getloadavg()[0], "gflops": [matmul_gflops()]}
    print(f"{info['machine']}\nfloat32 matmul: {info['gflops'][0]:.1f} GFLOP/s", flush=True)
    t0 = time.perf_counter()
    data = make_data(args.scale)
    n, d = data["X"].shape
    m, c = data["Z"].shape[0], data["W"].shape[0]
    info["data"] = (f"train {n} x {d}, {c} classes; test {m} = {data['n_id']} ID + 4 x {data['n_ood']} OOD "
                    f"(synthetic, seed 0; generated in {time.perf_counter() - t0:.0f} s)")
    info["m"] = m
    print(info["data"], flush=True)

    runners = {}
    if not args.no_pytorch_ood:
        try:
            runners = their_runners(data)
        except ImportError:
            print("pytorch-ood not installed: no comparison")
    kit, theirs = {}, {}
    for row in args.only or list(KIT):
        if row == "mme":
            info["gflops"].append(matmul_gflops())
        kit[row] = best_of(args.repeat, lambda: run_kit(row, data))
        if row == "mme":
            info["gflops"].append(matmul_gflops())
        r = kit[row]
        print(f"kit         {row:17s} fit {r['fit_s']:8.2f}s score {r['score_s']:8.2f}s peak +{r['peak_mb']:.0f} MB",
              flush=True)
        if row in runners:
            theirs[row] = best_of(args.repeat, lambda: run_theirs(row, *runners[row], data))
            o = theirs[row]
            print(f"pytorch-ood {row:17s} fit {o['fit_s']:8.2f}s score {o['score_s']:8.2f}s peak +{o['peak_mb']:.0f} MB"
                  f"{' (extrapolated from %d queries)' % o['queries'] if o['extrapolated'] else ''}", flush=True)

    info["load_end"] = os.getloadavg()[0]
    info["peak_rss_gb"] = PEAK_RSS_MB[0] / 1024
    info["mme_flops"] = mme_flops(n, m, d, c, vim_dim(d), pca_k(d))
    text = report(cmd, info, kit, theirs)
    print("\n" + text)
    if args.out:
        Path(args.out + ".md").write_text(text + "\n")
        Path(args.out + ".json").write_text(json.dumps({"info": info, "kit": kit, "pytorch_ood": theirs}, indent=1))


if __name__ == "__main__":
    main()
