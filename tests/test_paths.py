"""paths: folders moved by environment variables, and the one atomic-write helper every writer uses."""
import json
import stat

import pytest

from ood_utils import paths


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_folders_follow_their_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_FIGURES", str(tmp_path / "figs"))
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path / "cache"))
    assert paths.figures_dir("mini") == tmp_path / "figs" / "mini" and (tmp_path / "figs" / "mini").is_dir()
    assert paths.cache_dir("checkpoints", "mini") == tmp_path / "cache" / "checkpoints" / "mini"
    monkeypatch.setenv("OOD_KIT_DATA", str(tmp_path / "data"))
    assert paths.data_dir("cifar10") == tmp_path / "data" / "cifar10"
    assert not (tmp_path / "data").exists(), "data_dir only reads: it never creates folders"


def test_atomic_write_replaces_the_file_with_the_mode_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    target = tmp_path / "sub" / "out.json"
    paths.write_json(target, {"b": 1, "a": tmp_path})
    assert json.loads(target.read_text()) == {"a": str(tmp_path), "b": 1}
    assert target.read_text().index('"a"') < target.read_text().index('"b"'), "keys are sorted"
    assert _mode(target) == _mode(plain), "not the owner-only mode of a bare temporary file"
    paths.write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_debris(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with paths.atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
