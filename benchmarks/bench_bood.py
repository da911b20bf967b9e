"""BOOD's costs, each against a reference measured in the same run.

    python benchmarks/bench_bood.py                       # CPU: boundary batching, mini decoder, tiny SD path
    python benchmarks/bench_bood.py --sd-size full        # GPU: an SD-v1.4-sized UNet + VAE, fp16, 512x512
    python benchmarks/bench_bood.py --only boundary --classes 100 --per-class 50
    python benchmarks/bench_bood.py --only budget         # the mini decoder's budget: time vs class fidelity
    python benchmarks/bench_bood.py --only threads        # the walks on one CPU thread vs torch's default

1. Boundary identification (eq. 3) over all ID features at once (``bood.boundary_steps`` on the whole
   matrix) vs the paper's per-feature loop (the same function on one feature at a time), on CIFAR-100-shaped
   synthetic features (D = 768). The loop runs on a subset and is extrapolated linearly; kappa is checked
   equal on that subset. Target: >= 20x.
2. The mini decoder (``mini_ldm``): images/s of 50-step DDIM sampling and seconds per training step, i.e.
   the projected training time of the profile's budget.
3. The Stable Diffusion code path (``sd.generate``: token swap, PLMS, PNG writing): images/s. ``--sd-size
   tiny`` uses the random-weight tiny pipeline of the tests; ``--sd-size full`` builds a UNet, VAE and text
   encoder of SD v1.4's sizes with random weights (speed does not depend on the weights), fp16 on a GPU,
   512x512, 50 steps, and compares with the paper's throughput (100,000 images in about 7.5 h = 3.7 img/s);
   ``--sd-size small`` runs that same builder at narrow widths on a CPU. Random weights make noise images;
   only the timing is meaningful.
4. The mini decoder's budget (``--only budget``), on the real ``mini`` latent space of MNIST-5k: training time
   and class fidelity (the share of decoded ID features that the base classifier reads as their own class)
   of the previous budget (1,000 + 3,000 steps on one CPU thread), the same on every thread, and the
   profile's budget; ratios against the first.
5. The walks' threads (``--only threads``): eq. (3) on mini-shaped features (10 classes x 400, D = 384, the
   calibrated mini step of about 0.003, K = 100) as shipped (``one_cpu_thread``) against the same walk on
   torch's default threads. Each step is a handful of small tensor operations, so threads mostly wait for
   each other; on a busy machine far more. Kappa is checked equal.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ood_utils import bood  # noqa: E402
from ood_utils.bood import mini_ldm, sd  # noqa: E402

PAPER_IMAGES_PER_S = 100_000 / (7.5 * 3600)       # BOOD Sec. 4.3.3 / Table 4: 100k images in about 7.5 h


def timed(fn, repeat: int = 1):
    """Best wall time of ``repeat`` calls (the least disturbed by other processes) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ------------------------------------------------------------------------------------------ 1. boundary

def synthetic_features(classes: int, per_class: int, dim: int, seed: int = 0):
    """Anchors and features spread around them, so that kappa takes many values (some near 0, some K)."""
    g = torch.Generator().manual_seed(seed)
    anchors = torch.randn(classes, dim, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    spread = torch.rand(len(y), 1, generator=g) * 2.0 + 0.5
    z = torch.nn.functional.normalize(anchors, dim=1)[y] + spread * torch.randn(len(y), dim, generator=g) / dim ** 0.5
    return z, y, anchors


def bench_boundary(classes: int, per_class: int, dim: int, loop_n: int, alpha: float, max_steps: int) -> dict:
    z, y, anchors = synthetic_features(classes, per_class, dim)
    t_batch, kappa = timed(lambda: bood.boundary_steps(z, y, anchors, alpha, max_steps), repeat=2)
    sub = torch.linspace(0, len(y) - 1, min(loop_n, len(y))).long()

    def loop():
        return torch.cat([bood.boundary_steps(z[i:i + 1], y[i:i + 1], anchors, alpha, max_steps) for i in sub.tolist()])

    t_loop_sub, kappa_loop = timed(loop)
    if not torch.equal(kappa_loop, kappa[sub]):
        raise AssertionError("per-feature loop and batched walk disagree on kappa")
    t_loop = t_loop_sub * len(y) / len(sub)
    return {"features": len(y), "dim": dim, "classes": classes, "mean_kappa": float(kappa.float().mean()),
            "batched_s": t_batch, "loop_s (extrapolated)": t_loop, "loop_subset": len(sub),
            "speedup": t_loop / t_batch, "target": 20.0}


# ------------------------------------------------------------------------------------------ 2. mini decoder

def bench_mini_ldm(n_images: int, cond_dim: int, train_steps: int) -> dict:
    config = mini_ldm.LDMConfig()
    torch.manual_seed(0)
    model = mini_ldm.MiniLDM(cond_dim, config).eval()
    cond = torch.randn(n_images, cond_dim)
    t_sample, images = timed(lambda: model.sample(cond, seed=0), repeat=2)
    assert images.shape == (n_images, 1, 28, 28)
    x01, feats = torch.rand(config.batch_size, 1, 28, 28), torch.randn(config.batch_size, cond_dim)
    small = mini_ldm.LDMConfig(ae_steps=train_steps, denoiser_steps=train_steps)
    t_train, _ = timed(lambda: mini_ldm.train_mini_ldm(x01, feats, small, progress=False))
    per_step = t_train / (2 * train_steps)
    return {"images": n_images, "ddim_steps": config.sample_steps, "sample_s": t_sample,
            "images_per_s": n_images / t_sample, "train_s_per_step": per_step,
            "projected_train_s": per_step * (config.ae_steps + config.denoiser_steps),
            "params": sum(p.numel() for p in model.parameters())}


# ------------------------------------------------------------------------------------------ 4. decoder budget

def bench_ldm_budget(budgets=((1000, 3000, 1), (1000, 3000, None), (800, 2000, None)), n_check: int = 1000) -> dict:
    """(autoencoder steps, denoiser steps, threads: 1 or None = torch's default) -> seconds and class fidelity."""
    from contextlib import nullcontext

    import numpy as np

    from ood_utils import data, profiles, train
    from ood_utils.threads import one_cpu_thread
    from ood_utils.bood import decoders, experiments, walks
    from ood_utils.bood.regularize import with_values

    cfg, ds = profiles.resolve("mini", "bood"), "mnist5k"
    space = experiments.latent_space(cfg, ds, progress=False)
    base = train.get_classifier(cfg=with_values(cfg, id_dataset=ds), dataset=ds, progress=False)[0]
    images01 = decoders._train_images(cfg, ds)
    info = data.ID_DATASETS[ds]
    feats = decoders.encode(space.encoder, mini_ldm.to_normalised(images01, info.mean[0], info.std[0]))
    z, y = torch.as_tensor(space.train.feats).float()[:n_check], np.asarray(space.train.labels)[:n_check]
    rows = []
    for ae, den, threads in budgets:
        config = mini_ldm.LDMConfig(ae_steps=ae, denoiser_steps=den)
        with one_cpu_thread() if threads == 1 else nullcontext():
            t, (model, _) = timed(lambda: mini_ldm.train_mini_ldm(images01, feats, config, seed=0, progress=False))
        fidelity = float((walks.classify(base, model.sample(z, seed=0), ds).argmax(1) == y).mean())
        rows.append({"ae_steps": ae, "denoiser_steps": den, "threads": threads or torch.get_num_threads(),
                     "train_s": t, "class_fidelity": fidelity})
    for r in rows:
        r["time_vs_first"] = r["train_s"] / rows[0]["train_s"]
    return {"rows": rows}


# ------------------------------------------------------------------------------------------ 3. SD path

#: SD v1.4's architecture (UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder 123M), and the same builder at narrow
#: widths ("small") so that a CPU run exercises the code that "full" runs on a GPU
SD_SIZES = {
    "full": {"unet": (320, 640, 1280, 1280), "vae": (128, 256, 512, 512), "text": 768, "layers": 12, "heads": 12,
             "groups": 32, "pixels": 512},
    "small": {"unet": (32, 32, 64, 64), "vae": (32, 32, 32, 32), "text": 64, "layers": 2, "heads": 2,
              "groups": 16, "pixels": 64},
}


def sd_shaped_pipeline(size: str, device, dtype):
    """An SD-v1.4-shaped pipeline (4-level UNet with cross-attention, 4-level KL VAE, CLIP text encoder with
    the real vocabulary) with random weights; timing does not depend on the weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    s = SD_SIZES[size]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=s["pixels"] // 8, cross_attention_dim=s["text"], attention_head_dim=8,
                                block_out_channels=s["unet"], norm_num_groups=s["groups"])
    vae = AutoencoderKL(block_out_channels=s["vae"], latent_channels=4, layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=s["groups"], sample_size=s["pixels"])
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=s["text"], intermediate_size=4 * s["text"],
                                        num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                                        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406,
                                        eos_token_id=49407, pad_token_id=49407, projection_dim=s["text"]))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=sd.clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def bench_sd(size: str, n_images: int, batch_size: int, steps: int) -> dict:
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if size in SD_SIZES:
        if size == "full" and device.type != "cuda":
            raise SystemExit("--sd-size full needs a CUDA GPU (fp16, 512x512); on a CPU, --sd-size small runs the "
                             "same code at narrow widths")
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        t_build, pipe = timed(lambda: sd_shaped_pipeline(size, device, dtype))
        px = SD_SIZES[size]["pixels"]
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-sd-"))
        t_build, folder = timed(lambda: sd.write_tiny_pipeline(tmp / "sd"))
        pipe, px = sd.load_pipeline(folder, device), 32
    dim = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    z = torch.randn(n_images, dim)
    y = torch.arange(n_images) % len(names)
    with tempfile.TemporaryDirectory() as out:
        # warm-up batch (CUDA kernels, allocator), not timed
        sd.generate(pipe, names, y[:batch_size], z[:batch_size], Path(out) / "warm", steps=2, size=px,
                    save_size=min(px, 256), batch_size=batch_size, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t, report = timed(lambda: sd.generate(pipe, names, y, z, Path(out) / "run", steps=steps, size=px,
                                              save_size=min(px, 256), batch_size=batch_size, progress=False))
    per_s = n_images / t
    row = {"size": size, "device": str(device), "dtype": str(pipe.unet.dtype), "pixels": px, "steps": steps,
           "batch": batch_size, "images": n_images, "build_s": t_build, "generate_s": t, "images_per_s": per_s,
           "unet_params": sum(p.numel() for p in pipe.unet.parameters()),
           "injected": int((torch.tensor(report["change_at_token"]) > 0).sum())}
    if size == "full":
        row["vs_paper (3.7 img/s)"] = per_s / PAPER_IMAGES_PER_S
        row["hours_for_100k"] = 100_000 / per_s / 3600
    return row


# ------------------------------------------------------------------------------------------ 5. threads

def bench_walk_threads(repeat: int = 2) -> dict:
    from ood_utils.bood import boundary

    z, y, anchors = synthetic_features(10, 400, 384)
    zn, yy, g = boundary._prepare(z, y, anchors)
    every_thread = boundary._walk.__wrapped__.__wrapped__        # the walk without its one-thread decorator
    t_one, kappa = timed(lambda: bood.boundary_steps(z, y, anchors, 0.003, 100), repeat=repeat)
    t_all, (_, kappa_all, _) = timed(lambda: every_thread(zn.clone(), yy, g, 0.003, 100, 1.0, 0), repeat=repeat)
    if not torch.equal(kappa, kappa_all):
        raise AssertionError("the walk on one thread and on every thread disagree on kappa")
    return {"features": len(y), "median_kappa": float(kappa.float().median()), "one_thread_s": t_one,
            "default_threads_s": t_all, "threads": torch.get_num_threads(), "speedup": t_all / t_one}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=("boundary", "mini", "sd", "budget", "threads"),
                    default=("boundary", "mini", "sd"))
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--loop-n", type=int, default=100, help="features the per-feature loop runs on")
    ap.add_argument("--sd-size", choices=("tiny", "small", "full"), default="tiny",
                    help="tiny: the saved test pipeline; small: SD v1.4's layout at narrow widths (CPU); full: SD v1.4 sizes (GPU)")
    ap.add_argument("--sd-images", type=int, default=None)
    ap.add_argument("--sd-batch", type=int, default=None)
    ap.add_argument("--sd-steps", type=int, default=50)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    rows = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if "boundary" in args.only:
        rows["boundary"] = bench_boundary(args.classes, args.per_class, args.dim, args.loop_n, 0.015, 100)
        print(json.dumps(rows["boundary"], indent=1), flush=True)
    if "mini" in args.only:
        rows["mini_ldm"] = bench_mini_ldm(256, 384, 20)
        print(json.dumps(rows["mini_ldm"], indent=1), flush=True)
    if "sd" in args.only:
        full = args.sd_size == "full"
        rows["sd"] = bench_sd(args.sd_size, args.sd_images or (64 if full else 16), args.sd_batch or (16 if full else 8),
                              args.sd_steps)
        print(json.dumps(rows["sd"], indent=1), flush=True)
    if "budget" in args.only:
        rows["budget"] = bench_ldm_budget()
        print(json.dumps(rows["budget"], indent=1), flush=True)
    if "threads" in args.only:
        rows["threads"] = bench_walk_threads()
        print(json.dumps(rows["threads"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
