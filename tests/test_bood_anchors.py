"""Class anchors Gamma(y): token rows, multi-token names, errors before heavy work."""
import pytest
import torch

from ood_utils import bood
from ood_utils.bood import anchors as A


class WordTokenizer:
    """A tiny stand-in with the Hugging Face call signature: whitespace words, unknown -> id 0."""

    unk_token_id = 0

    def __init__(self, words):
        self.vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
        self.inverse = {i: w for w, i in self.vocab.items()}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocab.get(w, 0) for w in text.split()]}

    def convert_ids_to_tokens(self, ids):
        return [self.inverse[i] for i in ids]

    def __len__(self):
        return len(self.vocab)


@pytest.fixture
def table():
    return torch.arange(5 * 3, dtype=torch.float32).reshape(5, 3)


def test_single_token_rows_are_table_rows(table):
    tok = WordTokenizer(["cat", "dog", "maple", "tree"])
    a = bood.anchors_from_table(["cat", "dog"], tok, table)
    assert torch.equal(a.vectors, table[[1, 2]])
    assert a.tokens == (("cat",), ("dog",)) and a.multi_token == {} and a.dim == 3


def test_multi_token_name_is_the_mean_and_is_reported(table):
    tok = WordTokenizer(["cat", "dog", "maple", "tree"])
    a = bood.anchors_from_table(["cat", "maple_tree"], tok, table)
    assert torch.allclose(a.vectors[1], table[[3, 4]].mean(0))
    assert a.multi_token == {"maple_tree": ("maple", "tree")}
    assert len(a.notes) == 1 and "maple" in a.notes[0]
    assert list(a.table()["n_tokens"]) == [1, 2]


@pytest.mark.parametrize("name", ["", "zebra", "___"])
def test_untokenisable_name_raises(table, name):
    tok = WordTokenizer(["cat"])
    with pytest.raises(bood.AnchorError, match="does not tokenise"):
        bood.anchors_from_table(["cat", name], tok, table)


def test_tokenizer_larger_than_table_raises():
    tok = WordTokenizer(["a", "b", "c", "d", "e", "f"])
    with pytest.raises(bood.AnchorError, match="do not belong together"):
        bood.anchors_from_table(["a", "f"], tok, torch.zeros(4, 2))


def test_missing_sd_weights_names_the_download(tmp_path):
    with pytest.raises(bood.AnchorError, match="stable-diffusion-v1-4") as err:
        bood.class_anchors(["cat", "dog"], source="sd", sd_weights=tmp_path / "nothing")
    assert "huggingface-cli download" in str(err.value) and "sd_weights" in str(err.value)


def test_broken_clip_tokenizer_is_refused():
    with pytest.raises(bood.AnchorError, match="49408"):
        bood.check_clip_tokenizer(WordTokenizer(["a"]))


def test_unknown_source_lists_valid():
    with pytest.raises(bood.AnchorError, match="minilm, sd"):
        bood.class_anchors(["a", "b"], source="clip")


def test_profile_sources():
    assert A.anchor_source("mini") == "minilm" and A.anchor_source("paper") == "sd"


def test_minilm_anchors_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a = bood.class_anchors(["zero", "one", "aquarium_fish"], source="minilm")
    assert a.vectors.shape == (3, 384) and torch.isfinite(a.vectors).all()
    assert a.tokens[0] == ("zero",) and a.multi_token == {"aquarium_fish": ("aquarium", "fish")}
    # distinct words, distinct rows
    assert torch.cdist(a.vectors, a.vectors)[0, 1] > 0.1


def test_identical_anchors_are_refused(table):
    tok = WordTokenizer(["cat", "dog"])
    with pytest.raises(bood.AnchorError, match="same anchor"):
        bood.anchors_from_table(["cat", "cat_"], tok, table)


def test_anchors_and_sd_share_one_tokenisation_without_an_import_cycle():
    """anchors is the lower module: it never imports the SD decoder, which reads its tokens from it."""
    import ast
    import inspect

    from ood_utils.bood import sd

    tree = ast.parse(inspect.getsource(A))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.endswith("sd") or m.endswith("decoders")}, imported
    assert sd.name_token_ids is A.name_token_ids and sd.check_weights is A.check_weights
    assert sd.MULTI_TOKEN_RULE == A.MULTI_TOKEN_RULE


def test_cifar100_names_get_distinct_anchors_with_the_clip_tokenizer():
    """All 100 CIFAR-100 names, with SD's CLIP tokenizer and a random table of its size: every class its own
    anchor (the five *_tree classes included), each the mean of all its sub-token rows."""
    from ood_utils import data
    from ood_utils.bood import sd

    names = data.ID_DATASETS["cifar100"].class_names
    tok = sd.clip_tokenizer()
    table = torch.randn(A.CLIP_VOCAB_SIZE, 16, generator=torch.Generator().manual_seed(0))
    a = A.anchors_from_table(names, tok, table, "random")
    assert torch.cdist(a.vectors, a.vectors).add(torch.eye(len(names))).min() > 0
    multi = a.multi_token
    assert multi["cockroach"] == ("co", "ck", "roach</w>") and len(multi) == 15
    trees = [n for n in names if n.endswith("_tree")]
    assert len(trees) == 5 and all(len(multi[n]) == 2 for n in trees)
    for n in ("cockroach", "maple_tree"):
        ids = A.name_token_ids(tok, n)
        assert torch.allclose(a.vectors[names.index(n)], table[ids].mean(0))
