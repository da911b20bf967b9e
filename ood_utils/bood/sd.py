"""BOOD's decoder in ``quick`` / ``paper``: Stable Diffusion v1.4 with the class token swapped (eq. 6).

DreamOOD and BOOD write the prompt "A high-quality image of the <class>", replace the row of the CLIP
token-embedding table that the class token reads by the outlier embedding z_ood for that call, and let SD
generate x_ood ~ P(x | Z_ood). Here:

- :func:`outlier_prompt_embeds` encodes one prompt per outlier with the class name's rows swapped (and
  restored at once), checks that the text states differ from the clean prompt's at the class token, and that
  the table is the same bit for bit afterwards; the UNet then runs on batches of those prompt embeddings.
  A name of several tokens ("cockroach" -> co + ck + roach) has EVERY one of its rows replaced by the outlier,
  rescaled to the mean norm of those rows: the anchor of that class is the mean of the same rows
  (:data:`MULTI_TOKEN_RULE`, :mod:`ood_utils.bood.anchors`);
- :func:`generate` is resumable (one PNG per outlier, written atomically, skipped when present) and
  shared by the processes of an ``accelerate launch``: each takes every ``world``-th item of the list;
- :func:`clip_tokenizer` builds SD's CLIP tokenizer offline from the BPE merges that open_clip ships, and
  :func:`write_tiny_pipeline` writes a random-weight pipeline in SD's folder layout, so tests and the
  rehearsal run this whole code path without the 4 GB download.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .. import distributed, paths
# the weights' location and check live with the anchors (below this module); re-exported for the decoder's users
from .anchors import (CLIP_VOCAB_SIZE, MULTI_TOKEN_RULE, SD_PARTS, SD_REPO_ID, SDWeightsMissing, check_weights,
                      name_text, name_token_ids, sd_dir)

PROMPT = "A high-quality image of the {}"       # DreamOOD's template (public code)
SD_DEFAULTS = {"steps": 50, "guidance": 7.5, "size": 512, "save_size": 256}   # PLMS 50 steps, 512 -> 256


# ---------------------------------------------------------------------------------------------- tokenizer

def _open_clip_merges() -> list[tuple[str, str]]:
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    # CLIP keeps the first 49152 - 256 - 2 merges after the header line (as OpenAI's tokenizer does)
    return [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]


def clip_tokenizer():
    """SD v1.4's CLIP BPE tokenizer, built without the hub: 256 byte tokens, their word-final forms, the
    merges, then <|startoftext|> and <|endoftext|> = 49,408 tokens (checked: offline, transformers can hand
    back a 2-token tokenizer without an error)."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    merges = _open_clip_merges()
    units = list(bytes_to_unicode().values())
    vocab = units + [u + "</w>" for u in units] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=77)
    if len(tok) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"offline CLIP tokenizer has {len(tok)} tokens, expected {CLIP_VOCAB_SIZE}")
    return tok


# ---------------------------------------------------------------------------------------------- tiny pipeline

def tiny_components(seed: int = 0, hidden: int = 32, image_size: int = 32) -> dict:
    """Random-weight SD components, SD-shaped but tiny: CLIP text encoder with the real vocabulary, a UNet
    with cross-attention, a KL autoencoder (factor 2) and SD's PNDM (PLMS) scheduler."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, projection_dim=hidden))
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32, 32), latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=16, sample_size=image_size)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=hidden, attention_head_dim=8,
        norm_num_groups=16)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    return {"text_encoder": text_encoder, "vae": vae, "unet": unet, "scheduler": scheduler,
            "tokenizer": clip_tokenizer()}


def write_tiny_pipeline(path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``StableDiffusionPipeline`` to ``path`` in the diffusers folder layout of
    SD v1.4 (model_index.json, scheduler/, text_encoder/, tokenizer/, unet/, vae/). Built offline; the folder
    appears complete or not at all (written beside it, then renamed)."""
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    pipe = StableDiffusionPipeline(**tiny_components(seed), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        pipe.save_pretrained(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_pipeline(sd_weights=None, device=None):
    """The SD pipeline from the folder (offline), fp16 on a GPU and fp32 on a CPU, safety checker off."""
    from diffusers import StableDiffusionPipeline

    folder = check_weights(sd_weights)
    device = torch.device(device or "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False,
                                                   local_files_only=True)
    if len(pipe.tokenizer) != CLIP_VOCAB_SIZE:
        raise SDWeightsMissing(f"the tokenizer in {folder / 'tokenizer'} has {len(pipe.tokenizer)} tokens, expected "
                               f"{CLIP_VOCAB_SIZE}: vocab.json / merges.txt are missing or truncated")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# ---------------------------------------------------------------------------------------------- eq. (6)

def class_tokens(tokenizer, class_name: str, template: str = PROMPT) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(token ids, their positions in the prompt) of EVERY sub-token of the class name: the rows the swap
    replaces (:data:`MULTI_TOKEN_RULE`; the anchor averages the same rows, :func:`anchors.name_token_ids`).

    Raises when the name's tokens do not occur, in order, in the tokenised prompt (a name merged with its
    neighbours: every class must get its outlier injected), or when one of them also occurs elsewhere in the
    prompt (the swap would change the template's word too)."""
    ids = name_token_ids(tokenizer, class_name)
    prompt = template.format(name_text(class_name))
    prompt_ids = list(tokenizer(prompt).input_ids)
    n = len(ids)
    starts = [i for i in range(len(prompt_ids) - n + 1) if n and prompt_ids[i:i + n] == ids]
    if not starts:
        pieces = " + ".join(tokenizer.convert_ids_to_tokens(ids)) if ids else "no token"
        raise ValueError(f"the tokens of class {class_name!r} ({pieces}) do not occur in the prompt {prompt!r}: "
                         "the outlier would not be injected")
    positions = tuple(range(starts[0], starts[0] + n))
    elsewhere = [i for i, t in enumerate(prompt_ids) if t in ids and i not in positions]
    if elsewhere:
        raise ValueError(f"a token of class {class_name!r} also occurs at position(s) {elsewhere} of the prompt "
                         f"{prompt!r}: swapping its row would change the template too; choose another template")
    return tuple(ids), positions


@contextmanager
def swapped_rows(text_encoder, token_ids, vector: torch.Tensor):
    """Replace the rows ``token_ids`` of the token-embedding table by ``vector`` for the duration of the block,
    then put every one back (also on an error)."""
    table = text_encoder.get_input_embeddings().weight
    unique = sorted(set(int(t) for t in token_ids))
    original = table.data[unique].clone()
    try:
        table.data[unique] = vector.to(table).expand(len(unique), -1)
        yield
    finally:
        table.data[unique] = original


def _encode(pipe, prompts: list[str]) -> torch.Tensor:
    length = min(pipe.tokenizer.model_max_length, pipe.text_encoder.config.max_position_embeddings)
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=length,
                         truncation=True, return_tensors="pt")
    with torch.no_grad():
        return pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0]


def rescale_to_tokens(pipe, token_ids, z: torch.Tensor) -> torch.Tensor:
    """z_ood is a direction of the latent space: give it the norm of the rows it replaces (the mean of their
    norms; for a one-token name, that row's norm as in the paper), normalising first, unlike the public script,
    which multiplies an unnormalised vector by the norm."""
    rows = pipe.text_encoder.get_input_embeddings().weight[list(token_ids)].float()
    return torch.nn.functional.normalize(z.float(), dim=0) * rows.norm(dim=1).mean()


def outlier_prompt_embeds(pipe, class_names, labels, features, template: str = PROMPT) -> tuple[torch.Tensor, dict]:
    """Text states of "A high-quality image of the <class>" with every class-name token's row = each outlier.

    Returns (N, 77, D) prompt embeddings and a report: for every outlier, the number of rows swapped, the
    largest change of the text states at the class name's first token (must be > 0: the outlier was injected)
    and before it (must be 0: CLIP's causal mask), and whether the embedding table is bit-identical afterwards."""
    table = pipe.text_encoder.get_input_embeddings().weight
    if features.shape[1] != table.shape[1]:
        raise ValueError(f"outlier features are {features.shape[1]}-d but the text encoder's token embeddings are "
                         f"{table.shape[1]}-d: the latent space was built from another text model")
    digest_before = hashlib.sha256(table.detach().cpu().float().numpy().tobytes()).hexdigest()
    tokens = {int(c): class_tokens(pipe.tokenizer, class_names[int(c)], template) for c in set(labels.tolist())}
    prompts = {c: template.format(name_text(class_names[c])) for c in tokens}
    clean = {c: _encode(pipe, [prompts[c]]) for c in tokens}
    embeds, at_token, before, n_tokens = [], [], [], []
    for z, c in zip(features, labels.tolist()):
        ids, positions = tokens[c]
        with swapped_rows(pipe.text_encoder, ids, rescale_to_tokens(pipe, ids, z)):
            e = _encode(pipe, [prompts[c]])
        first = positions[0]
        at_token.append(float((e[0, first] - clean[c][0, first]).abs().max()))
        before.append(float((e[0, :first] - clean[c][0, :first]).abs().max()))
        n_tokens.append(len(ids))
        embeds.append(e)
    digest_after = hashlib.sha256(table.detach().cpu().float().numpy().tobytes()).hexdigest()
    report = {"change_at_token": np.array(at_token), "change_before_token": np.array(before),
              "n_tokens": np.array(n_tokens, dtype=int), "table_restored": digest_before == digest_after}
    if not report["table_restored"]:
        raise RuntimeError("the token-embedding table changed after the swaps")
    if len(at_token) and min(at_token) <= 0:
        raise RuntimeError("an outlier left the text states unchanged at its class token: not injected")
    return torch.cat(embeds), report


# ---------------------------------------------------------------------------------------------- generation

def shard(n: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's share of ``n`` work items (every ``world``-th one, starting at ``rank``)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    return list(range(rank, n, world))


def image_path(out_dir, index: int, label: int) -> Path:
    return Path(out_dir) / f"{index:06d}_c{label:03d}.png"


def _is_readable(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:
        return False


def _save_png(array01: np.ndarray, path: Path, size: int) -> None:
    from PIL import Image

    im = Image.fromarray((np.clip(array01, 0, 1) * 255).round().astype(np.uint8))
    if im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    with paths.atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _finished(out_dir, index: int, label: int) -> bool:
    path = image_path(out_dir, index, label)
    return path.exists() and _is_readable(path)


def generate(pipe, class_names, labels, features, out_dir, *, steps: int = 50, guidance: float = 7.5,
             size: int = 512, save_size: int = 256, batch_size: int = 8, seed: int = 0, rank: int | None = None,
             world: int | None = None, template: str = PROMPT, progress: bool = True) -> dict:
    """Decode outlier ``features`` (N, D) of classes ``labels`` into PNGs in ``out_dir``.

    Image i is ``out_dir/{i:06d}_c{label:03d}.png``, drawn from its own seed ``seed + i``, so the result does
    not depend on the batch size, on the number of processes or on interruptions; files already there (and
    readable) are skipped, each new file appears complete or not at all. The work is shared by the
    processes of an ``accelerate launch`` (``rank`` / ``world`` from the launcher unless given): process r
    takes images r, r + world, ... (every image once, whatever was finished before), and all of them wait
    at the end until every image is there. Returns counts, the indices written now (``written``) and the
    injection report of what was generated now."""
    from ..progress import tqdm

    procs = distributed.processes()
    together = rank is None and world is None and procs.several     # the launcher's processes share the list
    rank, world = (procs.rank, procs.world) if rank is None and world is None else (rank or 0, world or 1)
    labels = torch.as_tensor(labels).long().cpu()
    mine = shard(len(labels), rank, world)
    todo = [i for i in mine if not _finished(out_dir, i, int(labels[i]))]
    report = {"generated": 0, "skipped": len(mine) - len(todo), "written": [], "change_at_token": []}
    negative = _encode(pipe, [""]) if todo else None
    bar = tqdm(range(0, len(todo), batch_size), desc=f"SD outliers (process {rank} of {world})",
               disable=not progress or (together and rank != 0))
    for start in bar:
        idx = todo[start:start + batch_size]
        embeds, check = outlier_prompt_embeds(pipe, class_names, labels[idx], torch.as_tensor(features)[idx], template)
        gens = [torch.Generator().manual_seed(seed + i) for i in idx]
        images = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative.expand(len(idx), -1, -1),
                      num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                      generator=gens, output_type="np").images
        for i, im in zip(idx, images):
            _save_png(im, image_path(out_dir, i, int(labels[i])), save_size)
        report["generated"] += len(idx)
        report["written"] += idx
        report["change_at_token"] += check["change_at_token"].tolist()
    if together:
        distributed.barrier()       # the caller reads every image next
    return report


def read_images(out_dir, labels, size: int | None, channels: int) -> torch.Tensor:
    """The generated PNGs as (N, C, size, size) floats in [0, 1], resized (not cropped) to the ID resolution;
    ``size=None``: at the size they were saved at, as uint8 (a quarter of the memory), for random crops."""
    from PIL import Image

    out = []
    for i, c in enumerate(torch.as_tensor(labels).tolist()):
        with Image.open(image_path(out_dir, i, int(c))) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None:
                im = im.resize((size, size), Image.BICUBIC)
            a = np.asarray(im, dtype=np.uint8 if size is None else np.float32)
        a = a if size is None else a / 255.0
        out.append(torch.from_numpy(np.ascontiguousarray(a[None] if channels == 1 else a.transpose(2, 0, 1))))
    return torch.stack(out)


def pipeline_fingerprint(folder) -> str:
    """Identifies a weights folder cheaply: the configs and the sizes of the weight files."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            h.update(f"{rel}:{p.stat().st_size}".encode())
            if p.suffix == ".json":
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- several GPUs

def main(argv=None) -> int:
    """``accelerate launch --num_processes N -m ood_utils.bood.sd OUTLIERS.npz OUT_DIR``: the processes share
    the images (process r decodes images r, r + N, ...); a second launch finishes what a stopped one left.

    OUTLIERS.npz holds ``features`` (N, D), ``labels`` (N,) and ``class_names``. (Notebook 32's own images:
    ``accelerate launch -m ood_utils.heavy 32``, which writes them where the notebook looks.)"""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("outliers"), ap.add_argument("out_dir")
    ap.add_argument("--sd-weights", default=None)
    for key, value in {**SD_DEFAULTS, "batch_size": 8, "seed": 0}.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = ap.parse_args(argv)
    check_weights(args.sd_weights)
    procs = distributed.processes()        # joins the launch and picks this process's GPU
    arrays = np.load(args.outliers, allow_pickle=False)
    pipe = load_pipeline(args.sd_weights, "cuda" if torch.cuda.is_available() else "cpu")
    report = generate(pipe, [str(c) for c in arrays["class_names"]], arrays["labels"],
                      torch.from_numpy(arrays["features"]), args.out_dir, steps=args.steps, guidance=args.guidance,
                      size=args.size, save_size=args.save_size, batch_size=args.batch_size, seed=args.seed,
                      progress=procs.is_main)
    print(json.dumps({"process": procs.rank, "generated": report["generated"], "skipped": report["skipped"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
