"""Decoding outlier features into images (BOOD eq. 6): one entry point for every profile.

    images01 = decoders.decode(cfg, space, z_ood, labels)      # (N, C, H, W) in [0, 1], the ID resolution

- ``mini``: the kit's miniature latent diffusion model (:mod:`.mini_ldm`), trained once per latent space on
  the ID training images conditioned on their aligned features, cached (keyed by its configuration and
  the encoder's weights) and resumable;
- ``quick`` / ``paper``: Stable Diffusion v1.4 with the class token swapped (:mod:`.sd`); images are written
  as PNGs into a cache folder keyed by the outlier features and the settings, so an interrupted run resumes
  and a re-run reads them back.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .. import data, features, health, paths
from . import mini_ldm, sd
from .regularize import prepare_outliers

_MODELS: dict[str, object] = {}       # decoders already loaded in this process, by cache path


def ldm_config(cfg) -> mini_ldm.LDMConfig:
    """The mini LDM's budget from the profile (smoke mode shrinks it to a handful of steps)."""
    return mini_ldm.LDMConfig(ae_steps=cfg.ldm_ae_steps, denoiser_steps=cfg.ldm_steps,
                              sample_steps=cfg.ldm_sample_steps,
                              checkpoint_every=min(500, max(10, cfg.ldm_steps // 4)))


def _train_images(cfg, dataset: str) -> torch.Tensor:
    info = data.ID_DATASETS[dataset]
    ds = data.get_dataset(dataset, "train", max_n=cfg.max_train, seed=cfg.seed)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    return mini_ldm.to_unit(x, info.mean[0], info.std[0])


@torch.no_grad()
def encode(encoder, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Aligned features h(x) of normalised images (eval mode, CPU result)."""
    device = next(encoder.parameters()).device
    encoder.eval()
    return torch.cat([encoder.features(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


def _ldm_path(cfg, space, config: mini_ldm.LDMConfig, n_train: int) -> Path:
    key = json.dumps({"config": config.__dict__, "version": mini_ldm.VERSION, "encoder": features.model_fingerprint(space.encoder),
                      "n": n_train, "seed": cfg.seed, "smoke": cfg.smoke}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return paths.cache_dir("bood", cfg.profile, "decoders") / f"mini_ldm_{space.dataset}_{digest}.safetensors"


def get_mini_ldm(cfg, space, *, progress: bool = True) -> tuple[mini_ldm.MiniLDM, dict]:
    """Load-or-train the mini LDM of ``space`` (a :class:`experiments.LatentSpace`): cached, resumable."""
    if data.ID_DATASETS[space.dataset].channels != 1 or data.ID_DATASETS[space.dataset].image_size != 28:
        raise ValueError(f"the mini LDM decodes 28x28 grey digits; {space.dataset!r} needs the SD decoder "
                         "(profile quick or paper)")
    config = ldm_config(cfg)
    images01 = _train_images(cfg, space.dataset)
    weights = _ldm_path(cfg, space, config, len(images01))
    if str(weights) in _MODELS:
        return _MODELS[str(weights)]
    cached = mini_ldm.load_model(weights, config)
    if cached is None:
        info = data.ID_DATASETS[space.dataset]
        feats = encode(space.encoder, mini_ldm.to_normalised(images01, info.mean[0], info.std[0]))
        model, run = mini_ldm.train_mini_ldm(images01, feats, config, seed=cfg.seed,
                                             ckpt_path=weights.with_suffix(".train.pt"), progress=progress)
        meta = mini_ldm.save_model(model, weights, {"dataset": space.dataset, "n_train": len(images01),
                                                    "train_seconds": run["train_seconds"],
                                                    "history": run["history"], "resumed_from": run["resumed_from"]})
        for leftover in (weights.with_suffix(".train.pt"), weights.with_suffix(".train.pt.json")):
            leftover.unlink(missing_ok=True)
        cached = (model, {**meta, "source": "trained"})
    else:
        cached = (cached[0], {**cached[1], "source": "cache"})
    _MODELS[str(weights)] = cached
    return cached


def get_sd(cfg):
    """The SD v1.4 pipeline of ``cfg.sd_weights`` on the profile's device (loaded once per process)."""
    folder = sd.check_weights(cfg.sd_weights)
    key = f"sd:{folder.resolve()}:{cfg.torch_device}"
    if key not in _MODELS:
        _MODELS[key] = sd.load_pipeline(folder, cfg.torch_device)
    return _MODELS[key]


def get_decoder(cfg, space=None, *, progress: bool = True):
    """The profile's decoder: ``MiniLDM`` in mini (needs the latent ``space``), the SD pipeline otherwise."""
    if cfg.profile == "mini":
        if space is None:
            raise ValueError("the mini decoder is trained on a latent space: pass space=experiments.latent_space(...)")
        return get_mini_ldm(cfg, space, progress=progress)[0]
    return get_sd(cfg)


def sd_settings(cfg) -> dict:
    return {"steps": cfg.sd_steps, "guidance": float(cfg.sd_guidance), "size": cfg.sd_size,
            "save_size": min(cfg.sd_size, 256), "batch_size": cfg.sd_batch}


def _sd_folder(cfg, space, z, y, settings, seed) -> Path:
    fp = sd.pipeline_fingerprint(sd.check_weights(cfg.sd_weights))
    digest = mini_ldm.fingerprint_array(z.float(), y.long())[:16]
    key = hashlib.sha256(json.dumps([fp, digest, settings, seed], sort_keys=True).encode()).hexdigest()[:16]
    return paths.cache_dir("bood", cfg.profile, "sd_images", f"{space.dataset}_{key}")


def decode(cfg, space, z, y, *, seed: int = 0, progress: bool = True, batch_size: int = 512,
           keep_size: bool = False) -> torch.Tensor:
    """Outlier images of features ``z`` (N, D) from classes ``y`` (N,): (N, C, H, W) in [0, 1] at the ID
    dataset's resolution. ``seed`` fixes the diffusion noise (same inputs, same images). ``keep_size``: SD's
    images at the size they were saved at, uint8 in [0, 255] (for the public code's random crops; the mini
    decoder generates at the ID resolution already)."""
    z, y = torch.as_tensor(z).float().cpu(), torch.as_tensor(y).long().cpu()
    if z.ndim != 2 or y.shape != (len(z),):
        raise ValueError(f"z must be (N, D) with one label each; got {tuple(z.shape)} and {tuple(y.shape)}")
    if len(z) and z.shape[1] != space.anchors.dim:
        raise ValueError(f"z is {z.shape[1]}-d but the latent space of {space.dataset} is {space.anchors.dim}-d")
    info = data.ID_DATASETS[space.dataset]
    if cfg.profile == "mini":
        model = get_mini_ldm(cfg, space, progress=progress)[0]
        out = [model.sample(z[i:i + batch_size], seed=seed + i) for i in range(0, len(z), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 1, 28, 28)
    pipe = get_sd(cfg)
    settings = sd_settings(cfg)
    folder = _sd_folder(cfg, space, z, y, settings, seed)
    sd.generate(pipe, info.class_names, y, z, folder, seed=seed, progress=progress, **settings)
    return sd.read_images(folder, y, None if keep_size else info.image_size, info.channels)


@torch.no_grad()
def classify(model, images01: torch.Tensor, dataset: str, batch_size: int = 256) -> np.ndarray:
    """Logits of a classifier of ``dataset`` on decoded images in [0, 1] (normalised and resized first)."""
    device = next(model.parameters()).device
    x = to_classifier_input(images01, dataset)
    model.eval()
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(x), batch_size)]).numpy()


#: the least share of decoded ID test features the base classifier must read as their own class
FIDELITY_FLOOR = 0.8


def class_fidelity(cfg, space, base_model, n_per_class: int = 30, *, seed: int = 0) -> dict:
    """Decode the features of ``n_per_class`` ID *test* images per class (conditions the decoder never
    trained on) and let the ID dataset's base classifier read them: ``fidelity`` is the share read as the
    class the feature came from. Returns the images, their labels and the logits too."""
    y = torch.as_tensor(space.test.labels).long()
    rows = torch.cat([(y == c).nonzero().squeeze(1)[:n_per_class] for c in y.unique().tolist()])
    images = decode(cfg, space, torch.as_tensor(space.test.feats)[rows].float(), y[rows], seed=seed, progress=False)
    logits = classify(base_model, images, space.dataset)
    return {"fidelity": float((logits.argmax(1) == y[rows].numpy()).mean()), "images": images,
            "labels": y[rows], "logits": logits}


def decoder_health(cfg, space, base_model, n_per_class: int = 30) -> health.Health:
    """Health of the mini decoder of ``space``: both loss curves (autoencoder, denoiser) finite and lower at
    the end than at the start, and a class fidelity of decoded ID test features of at least
    ``FIDELITY_FLOOR``. A claim about decoded outliers that rests on a failed decoder is undetermined."""
    if cfg.profile != "mini":
        raise ValueError("decoder_health checks the mini LDM the kit trains; SD v1.4 is pretrained")
    meta = get_mini_ldm(cfg, space, progress=False)[1]
    checks = [health.loss_check([h["loss"] for h in meta["history"] if h["phase"] == phase],
                                name=f"mini LDM {phase} loss") for phase in ("ae", "denoiser")]
    fid = class_fidelity(cfg, space, base_model, n_per_class, seed=cfg.seed)["fidelity"]
    passed = fid >= FIDELITY_FLOOR
    checks.append(health.Check("class fidelity", fid, FIDELITY_FLOOR, passed,
                               f"class fidelity {fid:.3f} of decoded ID test features"
                               + ("" if passed else f" (< {FIDELITY_FLOOR})")))
    return health.assess(f"mini LDM ({space.dataset})", checks)


def to_classifier_input(images01: torch.Tensor, dataset: str) -> torch.Tensor:
    """Decoded [0, 1] images -> the ID dataset's normalisation and resolution (what its classifiers eat):
    :func:`regularize.prepare_outliers` with that dataset's size, channels and statistics."""
    info = data.ID_DATASETS[dataset]
    return prepare_outliers(images01, info.image_size, info.channels, info.mean, info.std)
