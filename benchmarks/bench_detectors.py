"""Fit + score time and peak memory of every detector on synthetic ImageNet-scale features, on CPU.

    python benchmarks/bench_detectors.py                # 200k x 2048 train, 1000 classes, 50k ID + 4 x 10k OOD
    python benchmarks/bench_detectors.py --scale 0.05   # the same shapes with 5% of the samples (a minute)

Next to each kit detector it times pytorch-ood's implementation (when installed) on the same arrays in the
same run, and compares MME with its arithmetic floor: the matrix FLOPs MME cannot avoid, divided by this
machine's float32 matmul speed, measured at the start. Detectors whose scoring is quadratic in the number
of samples (KNN, and pytorch-ood's per-class Mahalanobis and per-sample DICE) are timed on a fixed subset of
the test queries and extrapolated linearly to all of them; the table marks those rows.
Peak memory is the peak resident set size (VmHWM, reset before each detector) above the resident size
before it, i.e. what the detector itself allocated on top of the shared arrays.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ood_utils.detectors import get_detector  # noqa: E402
from ood_utils.detectors import _numerics as nx  # noqa: E402

# kit detector name -> (preset kwargs, query cap or None)
KIT = {
    "msp": {}, "mls": {}, "energy": {}, "mahalanobis": {}, "kl": {}, "vim": {}, "gen": {}, "she": {},
    "pca": {}, "nnguide": {}, "knn": {}, "fdbd": {}, "react": {}, "dice": {}, "ash": {}, "scale": {},
    "vra": {}, "vra_clip": {}, "nme": {}, "nme_co": {}, "mme": {},
}
QUERY_CAP = {"knn": 4000}
THEIR_QUERY_CAP = {"knn": 1000, "mahalanobis": 200, "dice": 1024}


# ------------------------------------------------------------------------------------------------ memory
def rss_kb(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Meter:
    """Times a block and reports the peak resident memory it added (MB)."""

    def __enter__(self):
        self.can_reset = reset_peak()
        self.base = rss_kb()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        peak = rss_kb("VmHWM") if self.can_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_mb = max(0.0, (peak - self.base) / 1024)


# -------------------------------------------------------------------------------------------------- data
def make_data(scale: float, d: int = 2048, c: int = 1000, seed: int = 0):
    """ReLU features around class means (like a ResNet's pooled features), a head aligned with the means."""
    rng = np.random.default_rng(seed)
    n_train, n_id, n_ood = (max(c * 2, int(round(200_000 * scale))), int(round(50_000 * scale)),
                            int(round(10_000 * scale)))
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

    y = rng.integers(0, c, n_train)
    X = sample(y)
    test = [sample(rng.integers(0, c, n_id))]
    for k in range(4):  # four OOD sets: blurred class mixtures and generic activations
        if k < 2:
            test.append(sample(rng.integers(0, c, n_ood), spread=0.8 + 0.4 * k) * np.float32(0.7))
        else:
            test.append(sample(np.zeros(n_ood, dtype=int), spread=0.6, shift=mu.mean(0) * np.float32(k - 1)))
    Z = np.concatenate(test)
    return dict(X=X, L=nx.linear(X, W, b), y=y, W=W, b=b, Z=Z, LZ=nx.linear(Z, W, b))


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
    """Matrix FLOPs MME must do (2 per multiply-add), given the raw train and test logits."""
    return {
        "fit: feature scatter (N x D x D)": 2 * n * d * d,
        "fit: ViM residual of train features, for alpha (N x D x (D-DIM))": 2 * n * d * (d - dim),
        "fit: head Gram for fDBD (C x D x C)": 2 * c * c * d,
        "score: VRA logits (M x D x C)": 2 * m * d * c,
        "score: NME distances to class means (M x D x C)": 2 * m * d * c,
        "score: ViM residual (M x D x (D-DIM))": 2 * m * d * (d - dim),
        "score: PCA projection (M x D x k)": 2 * m * d * k,
    }


# ------------------------------------------------------------------------------------------------ runners
def run_kit(name, data):
    cap = QUERY_CAP.get(name)
    m = data["Z"].shape[0]
    q = slice(0, min(m, cap)) if cap else slice(0, m)
    det = get_detector(name, preset="imagenet")
    with Meter() as fit_m:
        det.fit(data["X"], data["L"], data["y"], data["W"], data["b"])
    with Meter() as score_m:
        s = det.score(data["Z"][q], data["LZ"][q])
    assert np.all(np.isfinite(s))
    factor = m / (q.stop - q.start)
    row = {"fit_s": fit_m.seconds, "score_s": score_m.seconds * factor, "extrapolated": factor > 1,
           "peak_mb": max(fit_m.peak_mb, score_m.peak_mb)}
    if name == "mme":
        row["overflow_count"] = det.last_overflow_count
    return row


def their_runners(data):
    """pytorch-ood's detectors on the same arrays: name -> (fit(), score(queries))."""
    from pytorch_ood import detector as P

    t = {k: torch.from_numpy(data[k]) for k in ("X", "L", "y", "W", "b")}
    lin = torch.nn.Linear(data["W"].shape[1], data["W"].shape[0])
    with torch.no_grad():
        lin.weight.copy_(t["W"])
        lin.bias.copy_(t["b"])
    flat = lambda x: lin(x.flatten(1))  # noqa: E731
    bank = np.sort(np.random.default_rng(0).choice(data["X"].shape[0], max(10, data["X"].shape[0] // 100), replace=False))
    state = {}

    def logits_only(cls, **kw):
        return (lambda: None, lambda z, lz: cls.score(lz, **kw))

    def dice_score(z, lz):
        return torch.cat([state["dice"].predict_features(z[i:i + 64]) for i in range(0, z.shape[0], 64)])

    return {
        "msp": logits_only(P.MaxSoftmax),
        "mls": logits_only(P.MaxLogit),
        "energy": logits_only(P.EnergyBased),
        "gen": (lambda: None, lambda z, lz: P.GEN.score(lz, gamma=0.1, M=100)),
        "kl": (lambda: state.update(kl=P.KLMatching(None).fit_logits(t["L"], t["y"])),
               lambda z, lz: state["kl"].predict_logits(lz)),
        "mahalanobis": (lambda: state.update(maha=P.Mahalanobis(None).fit_features(t["X"], t["y"])),
                        lambda z, lz: state["maha"].predict_features(z)),
        "vim": (lambda: state.update(vim=P.ViM(None, d=1000, w=t["W"], b=t["b"]).fit_features(t["X"], t["y"])),
                lambda z, lz: state["vim"].predict_features(z)),
        "she": (lambda: state.update(she=P.SHE(None, lin).fit_features(t["X"], t["y"])),
                lambda z, lz: state["she"].predict_features(z)),
        "knn": (lambda: state.update(knn=P.KNN(None, k=1000).fit_features(t["X"], t["y"])),
                lambda z, lz: state["knn"].predict_features(z)),
        "nnguide": (lambda: state.update(nng=P.NNGuide(None, lin, k=10).fit_features(t["X"][bank], t["y"][bank])),
                    lambda z, lz: state["nng"].predict_features(z)),
        "fdbd": (lambda: state.update(fdbd=P.fDBD(None, lin).fit_features(t["X"])),
                 lambda z, lz: state["fdbd"].predict_features(z)),
        "react": (lambda: state.update(react=P.ReAct(None, lin, percentile=0.9).fit_feature_maps(t["X"], t["y"])),
                  lambda z, lz: state["react"].predict_feature_maps(z)),
        "dice": (lambda: state.update(dice=P.DICE(None, t["W"], t["b"], p=0.7).fit_features(t["X"], t["y"])),
                 dice_score),
        "ash": (lambda: state.update(ash=P.ASH(None, flat, variant="ash-s", percentile=0.9)),
                lambda z, lz: state["ash"].predict_feature_maps(z[:, :, None, None].clone())),
        "scale": (lambda: state.update(scale=P.SCALE(None, flat, percentile=0.85)),
                  lambda z, lz: state["scale"].predict_feature_maps(z[:, :, None, None].clone())),
        "vra_clip": (lambda: state.update(vra=P.VRA(None, lin).fit_feature_maps(t["X"], t["y"])),
                     lambda z, lz: state["vra"].predict_feature_maps(z)),
    }


@torch.no_grad()
def run_theirs(name, fit_fn, score_fn, data):
    m = data["Z"].shape[0]
    cap = THEIR_QUERY_CAP.get(name)
    q = slice(0, min(m, cap)) if cap else slice(0, m)
    z, lz = torch.from_numpy(data["Z"][q]), torch.from_numpy(data["LZ"][q])
    with Meter() as fit_m:
        fit_fn()
    with Meter() as score_m:
        s = score_fn(z, lz)
    assert s.shape[0] == q.stop - q.start
    factor = m / (q.stop - q.start)
    return {"fit_s": fit_m.seconds, "score_s": score_m.seconds * factor, "extrapolated": factor > 1,
            "peak_mb": max(fit_m.peak_mb, score_m.peak_mb)}


# ------------------------------------------------------------------------------------------------ report
def report(args, info, kit, theirs, gflops, floor):
    lines = [f"command: `python benchmarks/bench_detectors.py --scale {args.scale}`",
             f"data: {info}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
             f"float32 matmul {gflops:.1f} GFLOP/s; peak RSS of the whole run "
             f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB", "",
             "| detector | kit fit (s) | kit score (s) | kit total (s) | kit peak +MB | pytorch-ood total (s) | pytorch-ood peak +MB | pytorch-ood / kit |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in kit.items():
        mark = "*" if r["extrapolated"] else ""
        total = r["fit_s"] + r["score_s"]
        o = theirs.get(name)
        if o:
            ototal = o["fit_s"] + o["score_s"]
            omark = "*" if o["extrapolated"] else ""
            ocols = f"{ototal:.2f}{omark} | {o['peak_mb']:.0f} | {ototal / total:.1f}x"
        else:
            ocols = "- | - | -"
        lines.append(f"| {name} | {r['fit_s']:.2f} | {r['score_s']:.2f}{mark} | {total:.2f}{mark} | "
                     f"{r['peak_mb']:.0f} | {ocols} |")
    lines.append("")
    lines.append("`*` scoring timed on a subset of the test queries and extrapolated linearly "
                 f"(kit: {QUERY_CAP}; pytorch-ood: {THEIR_QUERY_CAP} queries).")
    mme = kit["mme"]
    total = mme["fit_s"] + mme["score_s"]
    flops = sum(floor.values())
    floor_s = flops / (gflops * 1e9)
    lines += ["", f"MME: fit {mme['fit_s']:.1f} s + score {mme['score_s']:.1f} s = {total:.1f} s; arithmetic floor "
              f"{flops / 1e12:.2f} TFLOP / {gflops:.1f} GFLOP/s = {floor_s:.1f} s; ratio {total / floor_s:.2f}x; "
              f"samples the float32 reference would overflow: {mme['overflow_count']}", "",
              "| MME matrix product | TFLOP |", "|---|---|"]
    lines += [f"| {k} | {v / 1e12:.3f} |" for k, v in floor.items()]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the ImageNet-scale sample counts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="detector names to run (default: all)")
    ap.add_argument("--no-pytorch-ood", action="store_true", help="skip the pytorch-ood comparison")
    ap.add_argument("--out", help="also write the markdown report and raw numbers (JSON) to this stem")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    gflops = matmul_gflops()
    print(f"float32 matmul: {gflops:.1f} GFLOP/s", flush=True)
    t0 = time.perf_counter()
    data = make_data(args.scale)
    n, d = data["X"].shape
    m, c = data["Z"].shape[0], data["W"].shape[0]
    info = f"train {n} x {d}, {c} classes, test {m} (ID {int(round(50_000 * args.scale))} + 4 x OOD)"
    print(f"{info}; generated in {time.perf_counter() - t0:.1f} s", flush=True)

    names = args.only or list(KIT)
    kit = {}
    for name in names:
        kit[name] = run_kit(name, data)
        print(f"kit {name:12s} fit {kit[name]['fit_s']:8.2f}s score {kit[name]['score_s']:8.2f}s "
              f"peak +{kit[name]['peak_mb']:.0f} MB", flush=True)

    theirs = {}
    if not args.no_pytorch_ood:
        try:
            runners = their_runners(data)
        except ImportError:
            runners = {}
            print("pytorch-ood not installed: no comparison")
        for name in names:
            if name in runners:
                theirs[name] = run_theirs(name, *runners[name], data)
                print(f"pytorch-ood {name:12s} fit {theirs[name]['fit_s']:8.2f}s score {theirs[name]['score_s']:8.2f}s "
                      f"peak +{theirs[name]['peak_mb']:.0f} MB", flush=True)

    from ood_utils.detectors.scores import pca_k, vim_dim
    floor = mme_flops(n, m, d, c, vim_dim(d), pca_k(d))
    text = report(args, info, kit, theirs, gflops, floor) if "mme" in kit else ""
    print("\n" + text)
    if args.out:
        Path(args.out + ".md").write_text(text + "\n")
        Path(args.out + ".json").write_text(json.dumps({"kit": kit, "pytorch_ood": theirs, "gflops": gflops,
                                                         "info": info}, indent=1))


if __name__ == "__main__":
    main()
