"""Two processes on CPU give what one process gives: ``accelerate launch --num_processes 2`` runs
tests/multiprocess_worker.py (gloo between the processes), the same steps run here in this one process, and
the results are compared.

Three launches, in order, share one folder:
1. the tiny Stable Diffusion pipeline decodes 6 outliers in 2 shards; process 1 kills itself (SIGKILL) after
   its first image, so the launcher stops the run;
2. the same generation again (it must finish only what is missing), then a cross-entropy training that
   process 1 kills in its second epoch;
3. that training again (it must resume from the first epoch's checkpoint), then a short GReg fine-tune (both
   forms of eq. 3), BOOD's regularised training (with and without outliers) and GReg on a BatchNorm network.

The launcher is accelerate's own command line (``python -m accelerate.commands.launch``, the module behind
``accelerate launch``) with ``--multi_gpu``: that is the path that starts N processes through torchrun; on a
machine without GPUs they run on CPU and join with gloo. (``--cpu`` with several processes expects MPI.)
Nothing touches the network: the hub is offline and the launcher reads no user configuration.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ood_utils import distributed
from ood_utils.bood import sd

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import multiprocess_worker as worker  # noqa: E402

TRAININGS = ("greg", "greg_public_code", "bood", "bood_ce")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, *args: str, module: str | None = None, **env_vars) -> subprocess.CompletedProcess:
    """``accelerate launch --num_processes 2`` of the worker (or of ``-m module``), offline, on CPU, on a
    free port."""
    env = {**os.environ, **env_vars, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(out / "hf_home"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           *(["-m", module] if module else [str(TESTS / "multiprocess_worker.py"), str(out)]), *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    done.seconds = time.perf_counter() - t0
    return done


def _tail(done) -> str:
    return (done.stdout + done.stderr)[-4000:]


def _files(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three launches and the one-process reference; what they left behind."""
    two, one = tmp_path_factory.mktemp("two_processes"), tmp_path_factory.mktemp("one_process")
    sd.write_tiny_pipeline(two / "tiny_sd", seed=0)
    (one / "tiny_sd").symlink_to(two / "tiny_sd")
    out = {"two": two, "one": one, "seconds": {}}

    first = launch(two, "sd", "--kill-at=sd:1")
    assert first.returncode != 0, "process 1 should have been killed:\n" + _tail(first)
    out["after_kill"] = _files(two / "sd_images")
    second = launch(two, "sd", "ce", "--kill-at=ce:8")
    assert second.returncode != 0, "process 1 should have been killed:\n" + _tail(second)
    out["ce_checkpoint_after_kill"] = json.loads((two / "ce.pt.json").read_text())
    out["sd_reports"] = [json.loads((two / f"sd_rank{r}.json").read_text()) for r in (0, 1)]
    third = launch(two, "ce", *TRAININGS, "greg_bn")
    assert third.returncode == 0, _tail(third)
    out["seconds"] = {"generation killed": first.seconds, "generation resumed + training killed": second.seconds,
                      "training resumed + trainings": third.seconds}

    t0 = time.perf_counter()
    out["reference_report"] = worker.generate_step(one)
    for name in ("ce", *TRAININGS):
        model, run = worker.train_step(name, one)
        torch.save(model.state_dict(), one / f"{name}.pt")
        (one / f"{name}.json").write_text(json.dumps(run))
    out["seconds"]["one process, in pytest"] = time.perf_counter() - t0
    print("multiprocess test seconds:", {k: round(v, 1) for k, v in out["seconds"].items()})
    return out


def _weights(folder: Path, name: str) -> dict:
    return torch.load(folder / name, weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("name", ("ce", *TRAININGS))
def test_two_processes_train_like_one(runs, name):
    """Same global batches, gradients averaged: the weights of one process within float rounding; both
    processes hold the same weights; the logged losses are the whole batch's."""
    two, one = runs["two"], runs["one"]
    rank0, rank1 = _weights(two, f"{name}_rank0.pt"), _weights(two, f"{name}_rank1.pt")
    assert _max_diff(rank0, rank1) == 0
    reference = _weights(one, f"{name}.pt")
    # float rounding: sums over other row orders; BOOD's phi (1 -> 512 -> 2) adds the widest reductions
    # (measured 1.2e-5 after 2 epochs, against < 1e-7 for the others)
    assert _max_diff(rank0, reference) < (5e-5 if name == "bood" else 1e-5)
    losses_two = [h["loss"] for h in json.loads((two / f"{name}_rank0.json").read_text())["history"]]
    losses_one = [h["loss"] for h in json.loads((one / f"{name}.json").read_text())["history"]]
    assert losses_two == pytest.approx(losses_one, rel=1e-5)


def test_killed_training_resumes_from_its_checkpoint(runs):
    """Process 1 was killed in epoch 2: the checkpoint held epoch 1, written once and complete; the next
    launch started from it and ended where an uninterrupted one-process run ends."""
    assert runs["ce_checkpoint_after_kill"]["epoch"] == 1
    resumed = json.loads((runs["two"] / "ce_rank0.json").read_text())
    assert resumed["start_epoch"] == 1 and len(resumed["history"]) == 3
    assert json.loads((runs["two"] / "ce_rank1.json").read_text())["start_epoch"] == 1
    assert not list(runs["two"].glob(".ce.pt.*"))       # no temporary file left behind


def test_batchnorm_network_stays_in_step(runs):
    """GReg's double backward through BatchNorm under two processes: both hold the same, finite weights and
    running statistics (each process normalises with its own share's batch statistics, as DDP does)."""
    rank0, rank1 = _weights(runs["two"], "greg_bn_rank0.pt"), _weights(runs["two"], "greg_bn_rank1.pt")
    assert _max_diff(rank0, rank1) == 0
    assert all(torch.isfinite(v.float()).all() for v in rank0.values())
    assert rank0["body.1.running_mean"].abs().sum() > 0


def test_generation_shares_the_work_and_resumes(runs):
    """Every image written exactly once: the killed launch left some, the next one wrote exactly the
    missing ones (each process from its own shard) and left the finished files untouched."""
    folder, n = runs["two"] / "sd_images", 6
    z, y = worker.outlier_features(n)
    names = {sd.image_path(folder, i, int(y[i])).name for i in range(n)}
    before = runs["after_kill"]
    assert 1 <= len(before) < n and set(before) <= names
    written = [set(r["written"]) for r in runs["sd_reports"]]
    assert not written[0] & written[1]
    assert written[0] <= set(sd.shard(n, 0, 2)) and written[1] <= set(sd.shard(n, 1, 2))
    redone = {sd.image_path(folder, i, int(y[i])).name for i in written[0] | written[1]}
    assert redone == names - set(before)
    after = _files(folder)
    assert set(after) == names
    assert all(after[k] == v for k, v in before.items())       # same bytes, same modification time


def test_generation_in_two_processes_has_the_pixels_of_one(runs):
    _, y = worker.outlier_features(6)
    two = sd.read_images(runs["two"] / "sd_images", y, 32, 3)
    one = sd.read_images(runs["one"] / "sd_images", y, 32, 3)
    assert runs["reference_report"]["generated"] == 6
    assert torch.allclose(two, one, atol=2 / 255)


def test_notebook_reads_what_the_heavy_step_wrote(tmp_path, monkeypatch):
    """``accelerate launch -m ood_utils.heavy 11`` fine-tunes in two processes; the notebook's own call,
    made afterwards in one process with the same parameters, reads the model from the cache."""
    from ood_utils.greg import experiments as ex

    cache = tmp_path / "cache"
    done = launch(tmp_path, "11", "--profile", "mini", "-p", "methods", '["greg"]', "-p", "id_datasets", '["mnist6"]',
                  module="ood_utils.heavy", OOD_KIT_CACHE=str(cache))
    assert done.returncode == 0, _tail(done)
    print(f"heavy step of notebook 11 in two processes: {done.seconds:.1f} s")
    monkeypatch.setenv("OOD_KIT_CACHE", str(cache))
    cfg = ex.resolve_config("mini", id_datasets=["mnist6"])
    _, base = ex.base_classifier(cfg, ex.settings(cfg)[0])
    _, meta = ex.finetune(cfg, ex.settings(cfg)[0], "greg", ex.seeds(cfg)[0])
    assert base["source"] == "cache" and meta["source"] == "cache"
    assert len(meta["history"]) == cfg.ft_epochs


# ------------------------------------------------------------------------------ sharing a batch, in-process

def test_local_shares_cover_the_batch_and_weights_average_to_one():
    x, y, aux = torch.arange(7.0), torch.arange(7), torch.arange(14.0)
    shares = [distributed.local_share((x, y, aux), distributed.Processes(r, 3, r)) for r in range(3)]
    assert torch.equal(torch.cat([s[0][0] for s in shares]), x)
    assert torch.equal(torch.cat([s[0][2] for s in shares]), aux)
    assert sum(w for _, w in shares) / 3 == pytest.approx(1.0)
    one = distributed.local_share((x, y), distributed.Processes())
    assert one[1] == 1.0 and one[0][0] is x


def test_a_batch_smaller_than_the_processes_is_refused():
    with pytest.raises(ValueError, match="drop_last"):
        distributed.local_share((torch.zeros(1, 3),), distributed.Processes(0, 2, 0))
