"""The Stable Diffusion v1.4 path of BOOD's decoder (eq. 6), exercised with a tiny random-weight pipeline:
the offline tokenizer, the class-token swap and its restoration, generation, resumability, sharding, and
the clear error when the weights are missing."""
import hashlib

import numpy as np
import pytest
import torch

from ood_utils import paths, profiles
from ood_utils.bood import sd

NAMES = ["zero", "one", "two"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return sd.write_tiny_pipeline(tmp_path_factory.mktemp("sd") / "stable-diffusion-v1-4", seed=0)


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    return sd.load_pipeline(tiny_dir, "cpu")


def _table_digest(pipe):
    return hashlib.sha256(pipe.text_encoder.get_input_embeddings().weight.detach().numpy().tobytes()).hexdigest()


def test_offline_tokenizer_is_clip_bpe():
    tok = sd.clip_tokenizer()
    assert len(tok) == 49408
    ids = tok("A high-quality image of the airplane").input_ids
    # the ids OpenAI's CLIP tokenizer gives this prompt (checked against open_clip's tokenizer)
    assert ids == [49406, 320, 1400, 268, 3027, 2867, 539, 518, 16451, 49407]
    import open_clip

    assert ids == open_clip.get_tokenizer("ViT-L-14")(["A high-quality image of the airplane"])[0][:10].tolist()


def test_tiny_pipeline_has_the_sd_layout(tiny_dir, pipe):
    for part in sd.SD_PARTS:
        assert (tiny_dir / part).exists(), part
    assert len(pipe.tokenizer) == 49408
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == 49408
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"


def test_missing_weights_name_the_download(tmp_path):
    with pytest.raises(sd.SDWeightsMissing) as err:
        sd.check_weights(tmp_path / "nowhere")
    msg = str(err.value)
    assert "CompVis/stable-diffusion-v1-4" in msg and "unet" in msg and str(tmp_path / "nowhere") in msg
    partial = tmp_path / "partial"
    (partial / "unet").mkdir(parents=True)
    with pytest.raises(sd.SDWeightsMissing, match="text_encoder"):
        sd.check_weights(partial)


def test_missing_weights_stop_decode_before_work(tmp_path, monkeypatch):
    from ood_utils.bood import decoders

    monkeypatch.setenv("OOD_KIT_DATA", str(tmp_path))
    cfg = profiles.resolve("quick", "bood", seed_now=False)
    with pytest.raises(sd.SDWeightsMissing, match=str(paths.data_dir("models", "stable-diffusion-v1-4"))):
        decoders.get_decoder(cfg)


def test_every_class_gets_its_outlier_and_the_table_is_restored(pipe):
    before = _table_digest(pipe)
    torch.manual_seed(0)
    z, y = torch.randn(6, 32), torch.tensor([0, 1, 2, 2, 1, 0])
    embeds, report = sd.outlier_prompt_embeds(pipe, NAMES, y, z)
    assert embeds.shape == (6, 77, 32)
    assert (report["change_at_token"] > 1e-4).all()        # injected at the class token
    assert (report["change_before_token"] == 0).all()       # causal text encoder: earlier states untouched
    assert report["table_restored"] and _table_digest(pipe) == before
    # two different outliers of one class give different prompts
    assert not torch.allclose(embeds[0], embeds[5])


def test_swap_restores_the_rows_even_on_error(pipe):
    before = _table_digest(pipe)
    ids, _ = sd.class_tokens(pipe.tokenizer, "cockroach")
    with pytest.raises(RuntimeError):
        with sd.swapped_rows(pipe.text_encoder, ids, torch.ones(32)):
            assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[list(ids)], torch.ones(len(ids), 32))
            raise RuntimeError("interrupted")
    assert _table_digest(pipe) == before


def test_outlier_is_rescaled_to_the_row_norm(pipe):
    ids, positions = sd.class_tokens(pipe.tokenizer, "two")
    assert len(ids) == 1
    row = pipe.text_encoder.get_input_embeddings().weight[ids[0]]
    z = 7.0 * torch.randn(32)
    assert torch.isclose(sd.rescale_to_tokens(pipe, ids, z).norm(), row.norm(), atol=1e-5)
    assert pipe.tokenizer("A high-quality image of the two").input_ids[positions[0]] == ids[0]


# a name of three sub-tokens and two two-token names that share a word
MULTI = ["cockroach", "maple_tree", "oak_tree"]


def test_multi_token_names_swap_every_sub_token_in_order(pipe):
    ids, positions = sd.class_tokens(pipe.tokenizer, "cockroach")
    assert pipe.tokenizer.convert_ids_to_tokens(list(ids)) == ["co", "ck", "roach</w>"]
    prompt_ids = pipe.tokenizer("A high-quality image of the cockroach").input_ids
    assert [prompt_ids[p] for p in positions] == list(ids) and positions == tuple(range(positions[0], positions[0] + 3))
    tree_ids, _ = sd.class_tokens(pipe.tokenizer, "maple_tree")
    assert pipe.tokenizer.convert_ids_to_tokens(list(tree_ids)) == ["maple</w>", "tree</w>"]


def test_multi_token_outlier_is_written_into_every_row_and_matches_the_anchor(pipe):
    """The anchor of a multi-token name is the mean of its rows; the swap sets every one of those rows to the
    outlier (norm = their mean norm), so the swapped name's mean row points where the outlier points."""
    from ood_utils.bood import anchors as A

    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    anchors = A.anchors_from_table(MULTI, pipe.tokenizer, table, "tiny")
    torch.manual_seed(2)
    z = torch.randn(32)
    for c, name in enumerate(MULTI):
        ids, _ = sd.class_tokens(pipe.tokenizer, name)
        assert torch.allclose(anchors.vectors[c], table[list(ids)].mean(0))          # the same rows
        assert anchors.tokens[c] == tuple(pipe.tokenizer.convert_ids_to_tokens(list(ids)))
        v = sd.rescale_to_tokens(pipe, ids, z)
        assert torch.isclose(v.norm(), table[list(ids)].norm(dim=1).mean(), atol=1e-5)
        with sd.swapped_rows(pipe.text_encoder, ids, v):
            swapped = pipe.text_encoder.get_input_embeddings().weight[list(ids)]
            assert torch.allclose(swapped, v.expand(len(ids), -1))                  # every sub-token carries it
            assert torch.allclose(torch.nn.functional.normalize(swapped.mean(0), dim=0),
                                  torch.nn.functional.normalize(z, dim=0), atol=1e-5)
    before = _table_digest(pipe)
    embeds, report = sd.outlier_prompt_embeds(pipe, MULTI, torch.tensor([0, 1, 2]), torch.randn(3, 32))
    assert list(report["n_tokens"]) == [3, 2, 2]
    assert (report["change_at_token"] > 1e-4).all() and (report["change_before_token"] == 0).all()
    assert report["table_restored"] and _table_digest(pipe) == before


def test_a_name_token_inside_the_template_is_refused(pipe):
    with pytest.raises(ValueError, match="change the template"):
        sd.class_tokens(pipe.tokenizer, "image")


def test_wrong_dimension_is_refused(pipe):
    with pytest.raises(ValueError, match="text model"):
        sd.outlier_prompt_embeds(pipe, NAMES, torch.tensor([0]), torch.randn(1, 384))


def test_generation_is_resumable_and_independent_of_batching(pipe, tmp_path):
    torch.manual_seed(1)
    z, y = torch.randn(5, 32), torch.tensor([0, 1, 2, 0, 1])
    kw = dict(steps=2, size=32, save_size=32, progress=False, seed=3)
    first = sd.generate(pipe, NAMES, y, z, tmp_path / "a", batch_size=4, **kw)
    assert first["generated"] == 5 and first["skipped"] == 0
    again = sd.generate(pipe, NAMES, y, z, tmp_path / "a", batch_size=4, **kw)
    assert again["generated"] == 0 and again["skipped"] == 5
    # a missing and a corrupt file are regenerated, the rest kept
    sd.image_path(tmp_path / "a", 1, 1).unlink()
    sd.image_path(tmp_path / "a", 3, 0).write_bytes(b"not a png")
    resumed = sd.generate(pipe, NAMES, y, z, tmp_path / "a", batch_size=4, **kw)
    assert resumed["generated"] == 2
    a = sd.read_images(tmp_path / "a", y, 32, 3)
    # one image at a time, in two shards (ranks of an accelerate launch): the same pixels
    for rank in (0, 1):
        sd.generate(pipe, NAMES, y, z, tmp_path / "b", batch_size=1, rank=rank, world=2, **kw)
    b = sd.read_images(tmp_path / "b", y, 32, 3)
    assert a.shape == (5, 3, 32, 32) and (a >= 0).all() and (a <= 1).all()
    assert torch.allclose(a, b, atol=2 / 255)
    assert sd.read_images(tmp_path / "a", y, 28, 1).shape == (5, 1, 28, 28)
    whole = sd.read_images(tmp_path / "a", y, None, 3)        # the saved size, uint8 (random crops read these)
    assert whole.dtype == torch.uint8 and whole.shape == (5, 3, 32, 32)
    assert torch.allclose(whole.float() / 255, a, atol=1e-6)  # the same pixels: 32 px were saved, no resize


def test_shard_covers_the_work_once():
    parts = [sd.shard(10, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(10))
    with pytest.raises(ValueError):
        sd.shard(10, 3, 3)


def test_class_missing_from_prompt_is_refused(pipe):
    with pytest.raises(ValueError, match="not be injected"):
        sd.class_tokens(pipe.tokenizer, "one", template="A photo of something")


def test_accelerate_entry_point(tiny_dir, tmp_path):
    z, y = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32), np.array([0, 1, 2])
    np.savez(tmp_path / "out.npz", features=z, labels=y, class_names=np.array(NAMES))
    assert sd.main([str(tmp_path / "out.npz"), str(tmp_path / "imgs"), "--sd-weights", str(tiny_dir),
                    "--steps", "2", "--size", "32", "--save-size", "32", "--batch-size", "2"]) == 0
    assert len(list((tmp_path / "imgs").glob("*.png"))) == 3
