"""A miniature latent diffusion model: the ``mini`` profile's stand-in for Stable Diffusion (BOOD eq. 6).

BOOD decodes an outlier feature z_ood into an image x_ood ~ P(x | Z_ood) with Stable Diffusion. Offline on a
CPU there is no SD, so the kit trains one in miniature, shaped like SD:

- an autoencoder squeezes a 28x28 digit into a 32-d latent (SD's VAE squeezes 512x512x3 into 64x64x4);
- a denoiser learns v_theta(x_t, t, c) over the standardised latent, conditioned on c = the L2-normalised
  aligned feature of the image (SD is conditioned on the CLIP text states in which BOOD swaps the class
  token for z_ood); with x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, training minimises
  E || v - v_theta(x_t, t, c) ||^2 for the velocity v = sqrt(a_t) eps - sqrt(1 - a_t) x_0;
- sampling runs diffusers' DDIM scheduler for 50 steps from Gaussian noise.

Because the condition is a point of the latent space where the anchors live, an outlier feature that crossed
a class boundary conditions the denoiser directly and decodes into an image "between" the classes.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ..progress import tqdm

from .. import paths
from ..train import load_training_state, save_training_state, sha256_file


VERSION = 2      # of the networks and the objective: part of the cache key


@dataclass(frozen=True)
class LDMConfig:
    """Sizes and budget of the miniature LDM (measured on an idle 2-core CPU: about 1 minute per ID dataset;
    1,000 + 3,000 steps took 90 s for a class fidelity of 0.966 against 0.958 for these 800 + 2,000)."""

    latent_dim: int = 32
    ae_hidden: int = 512
    ae_steps: int = 800
    hidden: int = 256
    blocks: int = 3
    cond_proj: int = 64
    denoiser_steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    train_timesteps: int = 1000
    sample_steps: int = 50
    cond_noise: float = 0.02          # jitter of the condition in training: smooths c -> image between classes
    checkpoint_every: int = 500

    def smoke(self) -> "LDMConfig":
        """A handful of steps: exercises every code path in seconds (images are noise)."""
        return LDMConfig(**{**asdict(self), "ae_steps": 20, "denoiser_steps": 20, "sample_steps": 5,
                            "checkpoint_every": 10})


# ---------------------------------------------------------------------------------------------- networks

class AutoEncoder(nn.Module):
    """784 -> latent_dim -> 784 MLP; images in [0, 1], decoder outputs logits (sigmoid -> pixels)."""

    def __init__(self, latent_dim: int = 32, hidden: int = 512, pixels: int = 784):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.SiLU(), nn.Linear(hidden, hidden // 2),
                                     nn.SiLU(), nn.Linear(hidden // 2, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden // 2), nn.SiLU(), nn.Linear(hidden // 2, hidden),
                                     nn.SiLU(), nn.Linear(hidden, pixels))

    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        return self.encoder(x01.flatten(1))

    def decode_logits(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (as in DDPM / SD's UNet): [cos(t w_k), sin(t w_k)]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _Block(nn.Module):
    """Pre-norm residual MLP block; the (time, condition) embedding is added inside, like a UNet's ResBlock."""

    def __init__(self, hidden: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.emb = nn.Linear(emb, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))

    def forward(self, h, e):
        return h + self.mlp(self.norm(h) + self.emb(e))


class Denoiser(nn.Module):
    """v_theta(x_t, t, c): an MLP over the latent with a sinusoidal time embedding and a projected condition."""

    def __init__(self, latent_dim: int, cond_dim: int, hidden: int = 512, blocks: int = 3, cond_proj: int = 64,
                 time_dim: int = 64):
        super().__init__()
        self.time_dim = time_dim
        self.time = nn.Sequential(nn.Linear(time_dim, 128), nn.SiLU(), nn.Linear(128, 128))
        self.cond = nn.Sequential(nn.Linear(cond_dim, cond_proj), nn.SiLU(), nn.Linear(cond_proj, cond_proj))
        self.inp = nn.Linear(latent_dim + 128 + cond_proj, hidden)   # the embedding enters at the input too
        self.blocks = nn.ModuleList(_Block(hidden, 128 + cond_proj) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, latent_dim))

    def forward(self, x_t, t, cond):
        e = F.silu(torch.cat([self.time(timestep_embedding(t, self.time_dim)), self.cond(cond)], dim=1))
        h = self.inp(torch.cat([x_t, e], dim=1))
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)


def _schedulers(config: LDMConfig):
    from diffusers import DDIMScheduler, DDPMScheduler

    # v-prediction (v = sqrt(a) eps - sqrt(1 - a) x_0): at high noise v is mostly -x_0, which only the condition
    # can tell, so the denoiser must learn to use it (an eps-predictor ignored it: predicting eps ~ x_t is
    # already almost exact there) and DDIM's x_0 estimate stays bounded. x_0 is clipped to the latent's range.
    kw = dict(num_train_timesteps=config.train_timesteps, beta_schedule="squaredcos_cap_v2",
              prediction_type="v_prediction", clip_sample=True, clip_sample_range=5.0)
    return DDPMScheduler(**kw), DDIMScheduler(**kw)


class MiniLDM(nn.Module):
    """Autoencoder + conditional denoiser; ``sample(cond)`` -> images in [0, 1], shape (N, 1, 28, 28)."""

    def __init__(self, cond_dim: int, config: LDMConfig = LDMConfig()):
        super().__init__()
        self.config, self.cond_dim = config, cond_dim
        self.ae = AutoEncoder(config.latent_dim, config.ae_hidden)
        self.denoiser = Denoiser(config.latent_dim, cond_dim, config.hidden, config.blocks, config.cond_proj)
        self.register_buffer("lat_mean", torch.zeros(config.latent_dim))
        self.register_buffer("lat_std", torch.ones(config.latent_dim))

    @staticmethod
    def condition(features: torch.Tensor) -> torch.Tensor:
        """The condition is the direction of the feature: anchors, ID features and outliers (whatever norm
        F's synthesis rescaled them to) all live on the unit sphere of the latent space."""
        return F.normalize(features.float(), dim=1)

    def standardise(self, latent):
        return (latent - self.lat_mean) / self.lat_std

    def decode_latent(self, z_std: torch.Tensor) -> torch.Tensor:
        logits = self.ae.decode_logits(z_std * self.lat_std + self.lat_mean)
        return torch.sigmoid(logits).view(-1, 1, 28, 28)

    @torch.no_grad()
    def sample(self, features: torch.Tensor, *, steps: int | None = None, seed: int = 0,
               return_trajectory: bool = False):
        """DDIM (eta = 0) from x_T ~ N(0, I) seeded per call: the same features and seed give the same images."""
        if features.ndim != 2 or features.shape[1] != self.cond_dim:
            raise ValueError(f"features must be (N, {self.cond_dim}), got {tuple(features.shape)}")
        device = self.lat_mean.device
        cond = self.condition(features.to(device))
        _, ddim = _schedulers(self.config)
        ddim.set_timesteps(steps or self.config.sample_steps)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(len(cond), self.config.latent_dim, generator=gen).to(device)
        trajectory = [x]
        for t in ddim.timesteps:
            v = self.denoiser(x, t.expand(len(x)).to(device), cond)
            x = ddim.step(v, t, x).prev_sample
            trajectory.append(x)
        images = self.decode_latent(x)
        return (images, torch.stack(trajectory, 1)) if return_trajectory else images


# ---------------------------------------------------------------------------------------------- training

def _phase_params(model: MiniLDM, phase: str):
    return model.ae.parameters() if phase == "ae" else model.denoiser.parameters()


def _ae_loss(model: MiniLDM, x01, cond, gen, ddpm):
    return F.binary_cross_entropy_with_logits(model.ae.decode_logits(model.ae.encode(x01)), x01.flatten(1))


def _denoiser_loss(model: MiniLDM, x01, cond, gen, ddpm):
    with torch.no_grad():
        z0 = model.standardise(model.ae.encode(x01))
    noise = torch.randn(z0.shape, generator=gen)
    t = torch.randint(0, ddpm.config.num_train_timesteps, (len(z0),), generator=gen)
    if model.config.cond_noise > 0:
        cond = cond + model.config.cond_noise * torch.randn(cond.shape, generator=gen)
    x_t = ddpm.add_noise(z0, noise, t)
    return F.mse_loss(model.denoiser(x_t, t, model.condition(cond)), ddpm.get_velocity(z0, noise, t))


def _warmup_cosine(total: int, warmup: int = 50):
    """Learning-rate factor: linear warm-up, then cosine decay to zero at ``total`` steps."""
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / max(total, 1)))


_PHASES = (("ae", _ae_loss), ("denoiser", _denoiser_loss))


def _fit_latent_stats(model: MiniLDM, x01: torch.Tensor) -> None:
    with torch.no_grad():
        lat = torch.cat([model.ae.encode(x01[i:i + 1024]) for i in range(0, len(x01), 1024)])
    model.lat_mean.copy_(lat.mean(0))
    model.lat_std.copy_(lat.std(0).clamp_min(1e-4))


def train_mini_ldm(images01: torch.Tensor, features: torch.Tensor, config: LDMConfig = LDMConfig(), *,
                   seed: int = 0, ckpt_path=None, progress: bool = True) -> tuple[MiniLDM, dict]:
    """Train the autoencoder, then the conditional denoiser, on CPU; resumable from ``ckpt_path``.

    ``images01`` (N, 1, 28, 28) in [0, 1]; ``features`` (N, D) the aligned features of the same images.
    The training state (weights, optimiser, step, RNG) is written atomically every ``checkpoint_every``
    steps, so an interrupted run continues where it stopped and reaches the same weights.
    """
    if images01.ndim != 4 or images01.shape[1:] != (1, 28, 28):
        raise ValueError(f"images must be (N, 1, 28, 28) in [0, 1], got {tuple(images01.shape)}")
    if features.ndim != 2 or len(features) != len(images01):
        raise ValueError(f"features must be (N, D) with N = {len(images01)}, got {tuple(features.shape)}")
    x01, cond = images01.float().cpu(), MiniLDM.condition(features.cpu())
    torch.manual_seed(seed)
    model = MiniLDM(cond.shape[1], config)
    ddpm, _ = _schedulers(config)
    gen = torch.Generator().manual_seed(seed)
    state = load_training_state(ckpt_path) if ckpt_path is not None else None
    done = {"ae": 0, "denoiser": 0} if state is None else dict(state["recipe"]["done"])
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            gen.set_state(state["rng"]["gen"])
        except (RuntimeError, KeyError) as err:      # written by another version of the networks
            warnings.warn(f"ignoring incompatible mini LDM checkpoint {ckpt_path} ({err}); training from scratch",
                          RuntimeWarning, stacklevel=2)
            model, state = MiniLDM(cond.shape[1], config), None
            done = {"ae": 0, "denoiser": 0}
    resumed_from = None if state is None else dict(done)
    history, t0 = [], time.perf_counter()
    for phase, loss_fn in _PHASES:
        total = config.ae_steps if phase == "ae" else config.denoiser_steps
        opt = torch.optim.AdamW(_phase_params(model, phase), lr=config.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(total))
        if state is not None and state["recipe"]["phase"] == phase:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        bar = tqdm(range(done[phase], total), desc=f"mini LDM {phase}", disable=not progress, leave=False)
        for step in bar:
            idx = torch.randint(len(x01), (config.batch_size,), generator=gen)  # stateless: resumes exactly
            loss = loss_fn(model, x01[idx], cond[idx], gen, ddpm)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done[phase] = step + 1
            if step % 50 == 0:
                history.append({"phase": phase, "step": step, "loss": loss.item()})
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if ckpt_path is not None and (step + 1) % config.checkpoint_every == 0 and step + 1 < total:
                _checkpoint(ckpt_path, model, opt, sched, phase, done, gen)
        if phase == "ae":
            _fit_latent_stats(model, x01)
    model.eval()
    return model, {"history": history, "train_seconds": time.perf_counter() - t0,
                   "resumed_from": resumed_from}


def _checkpoint(path, model, opt, sched, phase, done, gen):
    save_training_state(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": sum(done.values()),
                               "recipe": {"phase": phase, "done": dict(done)}, "rng": {"gen": gen.get_state()}})


# ---------------------------------------------------------------------------------------------- cache

def save_model(model: MiniLDM, weights, meta: dict) -> dict:
    """Final weights as safetensors (atomic) + a JSON sidecar with their sha256."""
    from safetensors.torch import save_file

    with paths.atomic_path(weights) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    meta = {**meta, "sha256": sha256_file(weights), "config": asdict(model.config), "cond_dim": model.cond_dim}
    paths.write_json(weights.with_suffix(".json"), meta)
    return meta


def load_model(weights, config: LDMConfig) -> tuple[MiniLDM, dict] | None:
    """The cached model if its sidecar vouches for it (hash, config); ``None`` when absent or corrupt."""
    import json

    from safetensors.torch import load_file

    meta_path = weights.with_suffix(".json")
    if not (weights.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("sha256") != sha256_file(weights):
            raise ValueError("sha256 does not match its sidecar")
        if meta.get("config") != asdict(config):
            raise ValueError("written with another configuration")
        model = MiniLDM(int(meta["cond_dim"]), config)
        model.load_state_dict(load_file(str(weights)))
        return model.eval(), meta
    except Exception as err:      # a corrupt cache is rebuilt, never used
        warnings.warn(f"cached mini LDM {weights.name} is unusable ({err}); retraining", RuntimeWarning,
                      stacklevel=2)
        return None


def to_normalised(images01: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """[0, 1] pixels -> the ID dataset's normalisation (what the classifiers eat)."""
    return (images01 - mean) / std


def to_unit(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (images * std + mean).clamp(0, 1)


def fingerprint_array(*arrays) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a.detach().cpu().numpy() if torch.is_tensor(a) else a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
