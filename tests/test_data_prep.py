"""data_prep against a local HTTP server: downloads, resume, checksums, extraction, markers, the lock file.

Every archive here is built by the test and served from 127.0.0.1 on an ephemeral port by a small handler
that understands ``Range`` (and can drop a connection half-way or ignore ``Range`` on request). The real
registry is only inspected, never downloaded from.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from ood_utils import paths

if str(paths.REPO_ROOT) not in sys.path:         # data_prep is a top-level folder of the repository, not installed
    sys.path.insert(0, str(paths.REPO_ROOT))

import data_prep  # noqa: E402
from data_prep import cli, commands, fetch  # noqa: E402
from data_prep.registry import ALIASES, REGISTRY, Archive, Count, Entry, resolve  # noqa: E402
from ood_utils.data import real  # noqa: E402


# ----------------------------------------------------------------------------------------------------------
# A local file server with Range support
# ----------------------------------------------------------------------------------------------------------

class FileServer:
    """Serves ``files[path] = bytes``; records each request's path and Range header in ``log``.

    ``cut[path] = n``: the next response for ``path`` announces the full length but stops after n bytes.
    ``ignore_range``: answer 200 with the whole file even when a Range is asked for.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path, rng = self.path, self.headers.get("Range")
                server.log.append((path, rng))
                if path not in server.files:
                    self.send_error(404)
                    return
                data = server.files[path]
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                limit = server.cut.pop(path, None)
                self.wfile.write(body if limit is None else body[:limit])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def make_tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# incompressible bytes, so the archive is ~36 kB and a connection can be cut half-way through it
IMAGES = {f"toy/images/img{i:02d}.jpg": np.random.default_rng(i).bytes(3000) for i in range(12)}


def toy_entry(server: FileServer, data: bytes, *, name="toy", md5sum: str | None = "auto", expected=12,
              urls=None, fmt="tar.gz", filename="toy.tar.gz", pattern="toy/images/*") -> Entry:
    server.files[f"/{filename}"] = data
    urls = urls or (f"{server.url}/{filename}",)
    checksum = md5(data) if md5sum == "auto" else md5sum
    return Entry(name, name, "a toy dataset",
                 (Archive(filename, tuple(urls), fmt, md5=checksum, checksum_source="test" if checksum else ""),),
                 (Count(pattern, expected),))


def run(args, registry, root, lock):
    out = io.StringIO()
    rc = cli.main(args + ["--no-progress"] * (args[0] == "--get"), registry=registry, root=root,
                  lock_path=lock, out=out)
    return rc, out.getvalue()


@pytest.fixture
def where(tmp_path):
    return tmp_path / "data", tmp_path / "checksums.lock.json"


# ----------------------------------------------------------------------------------------------------------
# Download, resume, verify, extract
# ----------------------------------------------------------------------------------------------------------

def test_full_download_extracts_counts_and_marks_complete(server, where):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data)
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 0, out
    folder = root / "toy"
    marker = real.read_marker(folder)
    assert marker["counts"] == {"toy/images/*": 12}
    assert marker["archives"]["toy.tar.gz"]["md5"] == md5(data)
    assert (root / "downloads" / "toy" / "toy.tar.gz").read_bytes() == data
    assert not list(root.glob(".tmp-*")) and not list((root / "downloads" / "toy").glob("*.part"))
    assert server.log == [("/toy.tar.gz", None)]
    # a second --get is a no-op, --list says present
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 0 and "already complete" in out and len(server.log) == 1
    rc, out = run(["--list"], {"toy": entry}, root, lock)
    assert rc == 0 and "present" in out.splitlines()[-1]


def test_resume_from_a_partial_file_uses_range(server, where):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data)
    downloads = root / "downloads" / "toy"
    downloads.mkdir(parents=True)
    half = len(data) // 2
    (downloads / "toy.tar.gz.part").write_bytes(data[:half])
    rc, out = run(["--list"], {"toy": entry}, root, lock)
    assert "missing" in out and "partial download" in out
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 0, out
    assert server.log == [("/toy.tar.gz", f"bytes={half}-")]
    assert (downloads / "toy.tar.gz").read_bytes() == data


def test_dropped_connection_is_resumed_on_retry(server, where):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data)
    server.cut["/toy.tar.gz"] = 1000
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 0, out
    assert server.log == [("/toy.tar.gz", None), ("/toy.tar.gz", "bytes=1000-")]
    assert real.read_marker(root / "toy") is not None


def test_server_ignoring_range_restarts_the_file(server, where):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data)
    downloads = root / "downloads" / "toy"
    downloads.mkdir(parents=True)
    (downloads / "toy.tar.gz.part").write_bytes(b"x" * 500)          # not even the right bytes
    server.ignore_range = True
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 0, out
    assert (downloads / "toy.tar.gz").read_bytes() == data


def test_checksum_mismatch_is_a_clear_error_and_the_file_is_not_kept_as_good(server, where):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data, md5sum="0" * 32)
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 1
    assert f"md5 is {md5(data)}, expected {'0' * 32}" in out and "FAILED" in out
    downloads = root / "downloads" / "toy"
    assert not (downloads / "toy.tar.gz").exists() and not (downloads / "toy.tar.gz.part").exists()
    assert (downloads / "toy.tar.gz.corrupt").exists()
    assert not (root / "toy").exists() and not real.read_marker(root / "toy")
    rc, out = run(["--list"], {"toy": entry}, root, lock)
    assert "corrupt" in out.splitlines()[-1]
    # with the right checksum the next --get downloads afresh (never resumes from the bad bytes)
    good = toy_entry(server, data)
    rc, out = run(["--get", "toy"], {"toy": good}, root, lock)
    assert rc == 0, out
    assert server.log[-1] == ("/toy.tar.gz", None)


def test_an_existing_archive_that_fails_its_checksum_is_moved_aside_and_fetched_again(server, where):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data)
    downloads = root / "downloads" / "toy"
    downloads.mkdir(parents=True)
    (downloads / "toy.tar.gz").write_bytes(data[:-10] + b"0" * 10)
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 0, out
    assert "moved the file aside" in out and (downloads / "toy.tar.gz").read_bytes() == data


def test_mirrors_are_tried_in_order_and_manual_instructions_when_all_fail(server, where):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data, urls=(f"{server.url}/gone/toy.tar.gz", f"{server.url}/toy.tar.gz"))
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 0, out
    assert [p for p, _ in server.log] == ["/gone/toy.tar.gz", "/toy.tar.gz"]

    dead = toy_entry(server, data, name="dead", urls=(f"{server.url}/nope1.tar.gz", f"{server.url}/nope2.tar.gz"))
    rc, out = run(["--get", "dead"], {"dead": dead}, root, lock)
    assert rc == 1
    assert "Download it by hand from one of:" in out
    assert f"{server.url}/nope1.tar.gz" in out and f"{server.url}/nope2.tar.gz" in out
    assert str(root / "downloads" / "dead" / "toy.tar.gz") in out and f"md5 {md5(data)}" in out


def test_wrong_file_count_leaves_no_folder(server, where):
    root, lock = where
    entry = toy_entry(server, make_tar_gz(IMAGES), expected=13)
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 1 and "12 files, expected 13" in out
    assert not (root / "toy").exists() and not list(root.glob(".tmp-*"))


def test_half_extracted_folder_is_not_present(server, where, monkeypatch):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data)
    (root / "toy" / "toy" / "images").mkdir(parents=True)                # an interrupted copy/extraction
    (root / "toy" / "toy" / "images" / "img00.jpg").write_bytes(b"x")
    rc, out = run(["--list"], {"toy": entry}, root, lock)
    last = out.splitlines()[-1]
    assert "missing" in last and "without completion marker" in last
    rc, out = run(["--verify", "toy"], {"toy": entry}, root, lock)
    assert rc == 1 and "missing" in out.splitlines()[-1]

    # an extraction that dies half-way leaves the old state, never a marked folder
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "check_counts", boom)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--get", "toy", "--no-progress"], registry={"toy": entry}, root=root, lock_path=lock,
                 out=io.StringIO())
    assert real.read_marker(root / "toy") is None and not list(root.glob(".tmp-*"))
    monkeypatch.undo()
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)           # replaces the stale folder
    assert rc == 0, out
    assert real.read_marker(root / "toy") is not None
    assert (root / "toy" / "toy" / "images" / "img00.jpg").read_bytes() == IMAGES["toy/images/img00.jpg"]


def test_real_loaders_refuse_a_folder_without_marker(tmp_path):
    folder = real.dataset_folder("lsun_c", tmp_path)
    (folder / "LSUN" / "test").mkdir(parents=True)
    with pytest.raises(real.DatasetNotFound, match="incomplete"):
        real.load_real("lsun_c", "test", root=tmp_path)


def test_verify_recounts_and_rehashes(server, where):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data)
    assert run(["--get", "toy"], {"toy": entry}, root, lock)[0] == 0
    rc, out = run(["--verify", "toy"], {"toy": entry}, root, lock)
    assert rc == 0 and "verified: toy/images/* 12" in out
    (root / "toy" / "toy" / "images" / "img03.jpg").unlink()
    rc, out = run(["--verify"], {"toy": entry}, root, lock)
    assert rc == 1 and "11 files, expected 12" in out and "corrupt" in out
    assert real.read_marker(root / "toy") is None                          # the loaders now refuse it
    # a kept archive that was damaged is reported too
    (root / "downloads" / "toy" / "toy.tar.gz").write_bytes(b"garbage")
    rc, out = run(["--verify", "toy"], {"toy": entry}, root, lock)
    assert rc == 1 and "expected " + md5(data) in out


# ----------------------------------------------------------------------------------------------------------
# Lock file (no published checksum)
# ----------------------------------------------------------------------------------------------------------

def test_unpublished_checksum_and_count_are_recorded_then_enforced(server, where):
    root, lock = where
    data = make_zip({f"set/{i}.png": b"p" * (100 + i) for i in range(5)})
    entry = toy_entry(server, data, md5sum=None, expected=None, fmt="zip", filename="toy.zip", pattern="**/*")
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 0, out
    assert "recorded sha256" in out and str(lock) in out
    recorded = json.loads(lock.read_text())
    assert recorded["archives"]["toy/toy.zip"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert recorded["archives"]["toy/toy.zip"]["url"] == f"{server.url}/toy.zip"
    assert recorded["counts"] == {"toy": {"**/*": 5}}
    rc, out = run(["--list"], {"toy": entry}, root, lock)
    assert commands.human_size(len(data)) in out                       # the size comes from the lock file

    # the host now serves different bytes: the lock file catches it
    server.files["/toy.zip"] = make_zip({f"set/{i}.png": b"q" * 50 for i in range(5)})
    rc, out = run(["--get", "toy", "--force"], {"toy": entry}, root, lock)  # the kept archive still matches
    assert rc == 0, out
    (root / "downloads" / "toy" / "toy.zip").unlink()
    rc, out = run(["--get", "toy", "--force"], {"toy": entry}, root, lock)
    assert rc == 1 and "sha256 is" in out and "lock file" in out


def test_an_error_page_is_never_locked_in(server, where):
    root, lock = where
    entry = toy_entry(server, b"<!DOCTYPE html><html>quota exceeded</html>", md5sum=None, fmt="zip",
                      filename="toy.zip", expected=None, pattern="**/*")
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 1 and "not a zip file" in out
    assert not lock.exists() or json.loads(lock.read_text())["archives"] == {}


def test_plain_file_format_and_zip_path_traversal(server, where, tmp_path):
    root, lock = where
    array = np.zeros((4, 32, 32, 3), np.uint8)
    buf = io.BytesIO()
    np.save(buf, array)
    entry = Entry("arr", "arr", "an array", (Archive("a.npy", (f"{server.url}/a.npy",), "file",
                                                       md5=md5(buf.getvalue())),),
                  (Count("a.npy", 1, images=False),))
    server.files["/a.npy"] = buf.getvalue()
    rc, out = run(["--get", "arr"], {"arr": entry}, root, lock)
    assert rc == 0, out
    assert np.load(root / "arr" / "a.npy").shape == (4, 32, 32, 3)

    evil = make_zip({"../../escaped.txt": b"x"})
    (tmp_path / "evil.zip").write_bytes(evil)
    target = tmp_path / "x" / "y"
    with pytest.raises(data_prep.DataPrepError, match="outside"):
        fetch.extract(tmp_path / "evil.zip", "zip", target)
    assert not (tmp_path / "escaped.txt").exists()
    evil_tar = make_tar_gz({"../escaped.txt": b"x"})
    (tmp_path / "evil.tar.gz").write_bytes(evil_tar)
    with pytest.raises(tarfile.TarError):
        fetch.extract(tmp_path / "evil.tar.gz", "tar.gz", target)
    assert not (tmp_path / "x" / "escaped.txt").exists()


def test_unknown_name_lists_the_valid_ones(where):
    root, lock = where
    rc, out = run(["--get", "nope"], {"toy": Entry("toy", "toy", "")}, root, lock)
    assert rc == 2 and "unknown dataset 'nope'" in out and "toy" in out
    with pytest.raises(KeyError, match="cifar10"):
        resolve(["cifar1O"])


# ----------------------------------------------------------------------------------------------------------
# The real registry (inspected only)
# ----------------------------------------------------------------------------------------------------------

def test_every_real_dataset_has_an_entry_in_its_loader_folder():
    for name, entry_name in real.DATA_PREP_ENTRY.items():
        entry = resolve([name])[0]
        assert entry.name == entry_name
        assert entry.folder == real.dataset_folder(name, "/r").name
    assert ALIASES["imagenet10"] == "imagenet1k"
    assert [e.name for e in resolve(["cifar"])][:2] == ["cifar10", "cifar100"]


def test_registry_entries_are_well_formed():
    unpublished = set()
    for name, entry in REGISTRY.items():
        assert entry.counts, name
        assert entry.manual or all(a.urls for a in entry.archives), name
        for archive in entry.archives:
            assert all(u.startswith(("http://", "https://")) for u in archive.urls)
            if archive.md5:
                assert len(archive.md5) == 32 and int(archive.md5, 16) >= 0 and archive.checksum_source
            if not archive.published:
                unpublished.add(name)
    assert unpublished == {"ssb_hard", "openimage_o"}          # their sha256 goes to the lock file
    assert REGISTRY["imagenet1k"].manual and "image-net.org" in REGISTRY["imagenet1k"].manual
    assert data_prep.REGISTRY is REGISTRY


def test_imagenet_prints_instructions_and_registers_an_existing_layout(tmp_path):
    lock = tmp_path / "lock.json"
    out = io.StringIO()
    rc = cli.main(["--get", "imagenet10", "--no-progress"], root=tmp_path, lock_path=lock, out=out)
    assert rc == 1
    text = out.getvalue()
    assert "image-net.org" in text and str(tmp_path / "downloads" / "imagenet1k") in text
    assert str(tmp_path / "imagenet1k") in text
    # a layout that is short of images is refused with the counts
    (tmp_path / "imagenet1k" / "train" / "n01443537").mkdir(parents=True)
    (tmp_path / "imagenet1k" / "val" / "n01443537").mkdir(parents=True)
    (tmp_path / "imagenet1k" / "train" / "n01443537" / "a.JPEG").write_bytes(b"x")
    out = io.StringIO()
    rc = cli.main(["--get", "imagenet1k"], root=tmp_path, lock_path=lock, out=out)
    assert rc == 1 and "1 files, expected 1281167" in out.getvalue()
    assert not real.is_available("imagenet10", tmp_path)


def test_list_shows_every_real_dataset(tmp_path):
    out = io.StringIO()
    assert cli.main(["--list"], root=tmp_path, lock_path=tmp_path / "lock.json", out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"data root: {tmp_path}"
    names = [line.split()[0] for line in lines[2:]]
    assert names == list(REGISTRY)
    assert all(" missing" in line for line in lines[2:])


def test_committed_lock_file_is_valid():
    lock = fetch.LockFile(fetch.DEFAULT_LOCK)
    assert isinstance(lock.archives, dict) and isinstance(lock.counts, dict)
    for key, record in lock.archives.items():
        assert key.split("/")[0] in REGISTRY and len(record["sha256"]) == 64


def test_a_part_file_that_is_already_whole_is_verified_not_refetched(server, where):
    root, lock = where
    data = make_tar_gz(IMAGES)
    entry = toy_entry(server, data)
    downloads = root / "downloads" / "toy"
    downloads.mkdir(parents=True)
    (downloads / "toy.tar.gz.part").write_bytes(data)                    # interrupted before the rename
    rc, out = run(["--get", "toy"], {"toy": entry}, root, lock)
    assert rc == 0, out
    assert server.log == [("/toy.tar.gz", f"bytes={len(data)}-")]         # answered 416: nothing left to send
    assert (downloads / "toy.tar.gz").read_bytes() == data


def test_readme_lists_every_dataset():
    text = (Path(data_prep.__file__).parent / "README.md").read_text()
    for name, entry in REGISTRY.items():
        assert f"| `{name}` | `{entry.folder}/` |" in text
