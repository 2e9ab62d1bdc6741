"""Weights registry and downloader against a real HTTP server on 127.0.0.1 (no internet needed).

The server variants cover what real mirrors do: honour Range (206), ignore it (200), drop the connection
mid-file, or stall. Registry entries are tested through `VS_KEEP_WEIGHTS_MIRROR` with a WeightSpec carrying the
hash of the generated file, so the real code path runs without the real (hundreds of MB) files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vs_keep import cache, weights
from vs_keep.errors import CheckpointError, InputError, WeightsNotFoundError
from vs_keep.weights import WeightSpec

ROOT = Path(__file__).resolve().parents[1]
DATA = random.Random(1234).randbytes(300_000)
DATA_SHA = hashlib.sha256(DATA).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        srv = self.server
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        body = srv.files.get(name)
        if body is None:
            srv.log.append((name, rng, 404, 0))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.mode != "ignore_range":
            start = int(m.group(1))
            if start >= len(body):
                srv.log.append((name, rng, 416, 0))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        status = 206 if start else 200
        if srv.mode == "truncate_once" and not srv.truncated:
            srv.truncated = True
            payload = payload[: len(payload) // 3]
            self.close_connection = True
        elif srv.mode == "stall":
            payload = payload[:1000]
        # Logged before writing, so the log is complete by the time the client has the bytes.
        srv.log.append((name, rng, status, len(payload)))
        self.wfile.write(payload)
        self.wfile.flush()
        if srv.mode == "stall":
            time.sleep(3)
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes], mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.mode, self.truncated = files, mode, False
        self.log: list[tuple[str, str | None, int, int]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/w"

    def bytes_sent(self) -> int:
        return sum(entry[3] for entry in self.log)


@pytest.fixture
def serve():
    servers: list[_Server] = []

    def start(files: dict[str, bytes], mode: str = "range") -> _Server:
        srv = _Server(files, mode)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VS_KEEP_HOME", str(cache))
    monkeypatch.delenv("VS_KEEP_WEIGHTS_MIRROR", raising=False)
    monkeypatch.setenv("VS_KEEP_DOWNLOAD_TIMEOUT", "5")
    return cache / "weights"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(url_base: str, **kw: object) -> WeightSpec:
    fields: dict[str, object] = dict(name="testw", filename="test.bin", urls=(f"{url_base}/test.bin",),
                                     sha256=DATA_SHA, size=len(DATA), license="MIT", source="test")
    fields.update(kw)
    return WeightSpec(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------


def test_registry_entries_are_consistent() -> None:
    assert [s.name for s in weights.WEIGHTS][:5] == [
        "keep", "codeformer", "retinaface_resnet50", "retinaface_mobilenet0.25", "parsenet"]
    keep = weights.get("keep")
    assert keep.filename == "KEEP-a1a14d46.pth" and keep.sha256 == "a1a14d46" and keep.license == "S-Lab-1.0"
    assert weights.get("KEEP-a1a14d46.pth") is keep
    assert weights.get("parsenet").license == "CC-BY-NC-SA-4.0"
    assert len(weights.get("retinaface_resnet50").urls) == 2
    for spec in weights.WEIGHTS:
        assert spec.urls or spec.manual_download, spec.name
        # the publisher's hash prefix in the file name is the one we check
        m = re.search(r"-([0-9a-f]{8})\.pth$", spec.filename)
        if m:
            assert spec.sha256 == m.group(1), spec.name
        assert (ROOT / "vs_keep" / "licenses" / f"{spec.license}.txt").is_file(), spec.license
        assert spec.filename in weights.license_notice(spec)
    keys = [key for spec in weights.WEIGHTS for key in (spec.name, spec.filename)]
    assert len(set(keys)) == len(keys)  # `get` finds an entry by either
    manual = [s for s in weights.WEIGHTS if s.manual_download]
    assert manual and all(not s.urls and "drive.google.com" in s.manual_download for s in manual)
    with pytest.raises(InputError, match="known names: keep, codeformer"):
        weights.get("nope")


def test_cache_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One cache root: $VS_KEEP_HOME/weights; the old engine-cache variable is an alias that warns."""
    monkeypatch.setenv("VS_KEEP_HOME", str(tmp_path / "h"))
    assert weights.cache_dir() == tmp_path / "h" / "weights"
    monkeypatch.delenv("VS_KEEP_HOME")
    monkeypatch.delenv("VS_KEEP_CACHE", raising=False)
    assert weights.cache_dir().parts[-2:] == ("vs-keep", "weights")
    monkeypatch.setenv("VS_KEEP_CACHE", str(tmp_path / "old"))
    monkeypatch.setattr(cache, "_WARNED", set())  # the warning is once per process
    with caplog.at_level(logging.WARNING, logger="vs_keep.cache"):
        assert weights.cache_dir() == tmp_path / "old" / "weights"
        assert cache.folder("trt") == tmp_path / "old" / "trt"
    assert caplog.text.count("VS_KEEP_CACHE is deprecated: set VS_KEEP_HOME") == 1


# ---------------------------------------------------------------------------------------------------------------
# downloads
# ---------------------------------------------------------------------------------------------------------------


def test_download_verifies_and_writes_sidecar(serve, home: Path) -> None:
    srv = serve({"test.bin": DATA})
    path = weights.download(_spec(srv.base), progress=False)
    assert path == home / "test.bin" and path.read_bytes() == DATA
    assert not (home / "test.bin.part").exists()
    assert (home / "test.bin.sha256").read_text().split()[0] == DATA_SHA
    assert srv.log == [("test.bin", None, 200, len(DATA))]


def test_resume_transfers_only_remaining_bytes(serve, home: Path) -> None:
    srv = serve({"test.bin": DATA})
    home.mkdir(parents=True)
    (home / "test.bin.part").write_bytes(DATA[:120_000])
    path = weights.download(_spec(srv.base), progress=False)
    assert path.read_bytes() == DATA
    assert srv.log == [("test.bin", "bytes=120000-", 206, len(DATA) - 120_000)]


def test_complete_part_is_finished_without_transfer(serve, home: Path) -> None:
    srv = serve({"test.bin": DATA})
    home.mkdir(parents=True)
    (home / "test.bin.part").write_bytes(DATA)  # e.g. interrupted between the last byte and the rename
    assert weights.download(_spec(srv.base), progress=False).read_bytes() == DATA
    assert srv.log == [("test.bin", f"bytes={len(DATA)}-", 416, 0)]


def test_server_ignoring_range_restarts(serve, home: Path) -> None:
    srv = serve({"test.bin": DATA}, mode="ignore_range")
    home.mkdir(parents=True)
    (home / "test.bin.part").write_bytes(b"x" * 50_000)  # garbage: must be overwritten, not appended to
    path = weights.download(_spec(srv.base), progress=False)
    assert path.read_bytes() == DATA
    assert srv.log == [("test.bin", "bytes=50000-", 200, len(DATA))]


def test_stale_part_is_discarded_after_mismatch(serve, home: Path) -> None:
    srv = serve({"test.bin": DATA})
    home.mkdir(parents=True)
    (home / "test.bin.part").write_bytes(b"y" * 1000)
    assert weights.download(_spec(srv.base), progress=False).read_bytes() == DATA
    assert [e[1] for e in srv.log] == ["bytes=1000-", None]


def test_dropped_connection_is_resumed(serve, home: Path) -> None:
    srv = serve({"test.bin": DATA}, mode="truncate_once")
    path = weights.download(_spec(srv.base), progress=False)
    assert path.read_bytes() == DATA
    first = len(DATA) // 3
    assert srv.log == [("test.bin", None, 200, first), ("test.bin", f"bytes={first}-", 206, len(DATA) - first)]
    assert srv.bytes_sent() == len(DATA)


def test_stalled_server_times_out(serve, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_KEEP_DOWNLOAD_TIMEOUT", "0.5")
    srv = serve({"test.bin": DATA}, mode="stall")
    t0 = time.monotonic()
    with pytest.raises(WeightsNotFoundError, match="timed out"):
        weights.download(_spec(srv.base), progress=False)
    assert time.monotonic() - t0 < 10
    # What arrived before each stall is kept and resumed (up to 3 tries per URL), and stays for the next run.
    ranges = [e[1] for e in srv.log]
    assert 1 <= len(ranges) <= 3 and ranges == [None, "bytes=1000-", "bytes=2000-"][: len(ranges)]
    assert (home / "test.bin.part").stat().st_size == 1000 * len(ranges)


def test_hash_mismatch_deletes_file_and_names_both_hashes(serve, home: Path) -> None:
    bad = bytes(len(DATA))
    srv = serve({"test.bin": bad})
    with pytest.raises(CheckpointError) as err:
        weights.download(_spec(srv.base), progress=False)
    msg = str(err.value)
    assert hashlib.sha256(bad).hexdigest() in msg and DATA_SHA in msg
    assert not (home / "test.bin").exists() and not (home / "test.bin.part").exists()


def test_mirrors_tried_in_order(serve, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = serve({})
    good = serve({"test.bin": DATA})
    monkeypatch.setenv("VS_KEEP_WEIGHTS_MIRROR", f"{empty.base} http://127.0.0.1:{_closed_port()}/m")
    spec = _spec(good.base)
    assert weights.candidate_urls(spec)[-1] == f"{good.base}/test.bin"
    assert weights.download(spec, progress=False).read_bytes() == DATA
    assert empty.log == [("test.bin", None, 404, 0)] and good.bytes_sent() == len(DATA)


def test_no_network_message_names_the_cache_path(home: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/w"
    with pytest.raises(WeightsNotFoundError) as err:
        weights.download(_spec(url), progress=False)
    msg = str(err.value)
    assert f"{url}/test.bin" in msg and str(home / "test.bin") in msg
    assert "--weights FILE" in msg and "VS_KEEP_WEIGHTS_MIRROR" in msg


def test_manual_entry_without_url(home: Path) -> None:
    spec = weights.get("dicgan_celeba_x8_official")
    with pytest.raises(WeightsNotFoundError) as err:
        weights.resolve("dicgan_celeba_x8_official")
    assert "drive.google.com" in str(err.value) and str(home / spec.filename) in str(err.value)
    home.mkdir(parents=True)
    (home / spec.filename).write_bytes(b"placed by hand")
    assert weights.resolve("dicgan_celeba_x8_official") == home / spec.filename


def test_license_notice_on_first_download_only(serve, home: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    srv = serve({"KEEP-a1a14d46.pth": DATA, "test.bin": DATA})
    monkeypatch.setenv("VS_KEEP_WEIGHTS_MIRROR", srv.base)
    keep = dataclasses.replace(weights.get("keep"), sha256=DATA_SHA[:8])  # the real entry, our file's hash
    capsys.readouterr()
    path = weights.resolve(keep, progress=False)
    assert path == home / "KEEP-a1a14d46.pth"
    err = capsys.readouterr().err
    assert "S-Lab License 1.0" in err and "NON-COMMERCIAL" in err and "endorse" in err
    assert "https://github.com/jnjaby/KEEP" in err
    path.unlink()
    weights.download(keep, progress=False)
    assert "S-Lab" not in capsys.readouterr().err
    weights.download(_spec(srv.base), progress=False)  # a third-party notice, also once
    assert "MIT License" in capsys.readouterr().err
    assert srv.bytes_sent() == 3 * len(DATA)


def test_resolve_paths_and_sidecar(serve, home: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my.pth"
    mine.write_bytes(b"anything")
    assert weights.resolve(mine) == mine and weights.resolve(str(mine)) == mine  # explicit path: used as is
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        weights.resolve(tmp_path / "missing.pth")
    with pytest.raises(InputError, match="unknown weights name"):
        weights.resolve("no_such_model")
    spec = _spec(f"http://127.0.0.1:{_closed_port()}/w")
    with pytest.raises(WeightsNotFoundError, match=re.escape(str(home / "test.bin"))):
        weights.resolve(spec, download=False)
    srv = serve({"test.bin": DATA})
    spec = _spec(srv.base)
    cached = weights.resolve(spec, progress=False)
    assert weights.resolve(spec) == cached and len(srv.log) == 1  # second resolve: cached, no transfer
    # Same size, older mtime than the sidecar: trusted without re-hashing (that is what makes resolve instant).
    sidecar_ns = (home / "test.bin.sha256").stat().st_mtime_ns
    cached.write_bytes(bytes(len(DATA)))
    os.utime(cached, ns=(sidecar_ns - 10**9, sidecar_ns - 10**9))
    assert weights.resolve(spec) == cached
    # Newer than its sidecar: checked again, and the corruption is reported (the user's file is not deleted).
    os.utime(cached, ns=(sidecar_ns + 10**9, sidecar_ns + 10**9))
    with pytest.raises(CheckpointError, match="delete it to download again"):
        weights.resolve(spec)
    assert cached.exists()


# ---------------------------------------------------------------------------------------------------------------
# CLI end to end
# ---------------------------------------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vs_keep", "download", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_download_and_list(serve, tmp_path: Path) -> None:
    dic = weights.get("dic_celeba_x8_official")
    srv = serve({dic.filename: DATA, "KEEP-a1a14d46.pth": DATA})
    env = dict(os.environ, VS_KEEP_HOME=str(tmp_path / "c"), VS_KEEP_WEIGHTS_MIRROR=srv.base)

    out = _cli("dic_celeba_x8_official", env=env)  # no hash known: the mirror copy is accepted
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and f"ok dic_celeba_x8_official: {tmp_path / 'c' / 'weights' / dic.filename}" in out.stderr
    assert "MIT License" in out.stderr and "100%" in out.stderr  # notice and progress bar on stderr
    assert (tmp_path / "c" / "weights" / dic.filename).read_bytes() == DATA

    out = _cli("keep", "--dir", str(tmp_path / "d"), "--no-progress", env=env)  # our bytes are not KEEP's
    assert out.returncode == 1
    assert "a1a14d46" in out.stderr and DATA_SHA in out.stderr and "S-Lab" in out.stderr
    assert not (tmp_path / "d" / "KEEP-a1a14d46.pth").exists()

    out = _cli("--list", env=env)
    assert out.returncode == 0
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.strip()}
    assert rows["dic_celeba_x8_official"][-1] == "yes" and rows["keep"][-1] == "no"
    assert rows["dicgan_celeba_x8_official"][-1] == "manual" and rows["parsenet"][-2] == "CC-BY-NC-SA-4.0"

    out = _cli("nonexistent", env=env)
    assert out.returncode == 1 and "unknown weights name 'nonexistent'" in out.stderr


# ---------------------------------------------------------------------------------------------------------------
# KEEP v1.0.0 files: keep-v1 and keep-asian
# ---------------------------------------------------------------------------------------------------------------


def test_keep_v1_entries() -> None:
    """The v1.0.0 release's two KEEP files, under the same terms as `keep`, which stays v0.1.0."""
    keep = weights.get("keep")
    assert keep.urls == ("https://github.com/jnjaby/KEEP/releases/download/v0.1.0/KEEP-a1a14d46.pth",)
    base = "https://github.com/jnjaby/KEEP/releases/download/v1.0.0/"
    for name, filename, prefix in (("keep-v1", "KEEP-b76feb75.pth", "b76feb75"),
                                   ("keep-asian", "KEEP_Asian-4765ebe0.pth", "4765ebe0")):
        spec = weights.get(name)
        assert weights.get(filename) is spec
        assert spec.urls == (base + filename,) and spec.sha256 == prefix
        assert (spec.license, spec.source, spec.license_url) == (keep.license, keep.source, keep.license_url)
        assert weights.RESTORERS[name] == "keep"
        assert spec.hash_matches(prefix + "0" * 56) and not spec.hash_matches("0" * 64)


def test_keep_v1_names_offline(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`model=` by name with download=False: not cached -> where to get it and where to put it; a local file or a
    cached file (hash-checked) -> a KEEP network, whatever fusion layout the file holds."""
    import argparse

    from vs_keep.cli.restore import add_arguments
    from vs_keep.engine import EngineOptions, load_model
    from vs_keep.models.keep import KEEP
    from vs_keep.models.synthetic import small_keep_config, write_synthetic_checkpoint

    with pytest.raises(WeightsNotFoundError) as err:
        load_model(EngineOptions(model="keep-asian", download=False, device="cpu"))
    msg = str(err.value)
    assert "releases/download/v1.0.0/KEEP_Asian-4765ebe0.pth" in msg and str(home / "KEEP_Asian-4765ebe0.pth") in msg
    wide = small_keep_config((32, 64, 128), (16, 32))
    local = write_synthetic_checkpoint(tmp_path / "asian.pth", "keep", config=wide, release="v1.0.0")
    model, _ = load_model(EngineOptions(model="keep-asian", weights=local, download=False, device="cpu"))
    assert isinstance(model, KEEP) and model.connect_list == (32, 64, 128)
    cached = write_synthetic_checkpoint(home / "KEEP-b76feb75.pth", "keep", release="v1.0.0")
    with pytest.raises(CheckpointError, match="b76feb75"):  # our bytes are not the release's
        load_model(EngineOptions(model="keep-v1", download=False, device="cpu"))
    digest = weights.sha256_file(cached)
    patched = tuple(dataclasses.replace(s, sha256=digest[:8]) if s.name == "keep-v1" else s for s in weights.WEIGHTS)
    monkeypatch.setattr(weights, "WEIGHTS", patched)
    model, _ = load_model(EngineOptions(model="keep-v1", download=False, device="cpu"))
    assert isinstance(model, KEEP) and model.connect_list == (16, 32, 64)
    with pytest.raises(InputError, match="keep-v1, keep-asian"):
        load_model(EngineOptions(model="keep-v2", download=False, device="cpu"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["in", "out", "--model", "keep-asian"]).model == "keep-asian"


@pytest.mark.vapoursynth
def test_keep_v1_names_in_the_filter(home: Path, tmp_path: Path) -> None:
    """`keep(model="keep-asian")` with a local file restores faces; by name offline, one vs.Error saying where the
    file goes; an unknown name, one vs.Error listing the names."""
    vs = pytest.importorskip("vapoursynth")
    from data.face_scenes import two_face_scene
    from media import write_video

    from vs_keep import keep
    from vs_keep.models.synthetic import small_keep_config, write_synthetic_checkpoint
    from vs_keep.plugin import source

    local = write_synthetic_checkpoint(tmp_path / "asian.pth", "keep", config=small_keep_config((32, 64, 128)), release="v1.0.0")
    src = source(write_video(tmp_path / "scene.mp4", two_face_scene(n=2).frames, fps=25, audio=False))
    with keep(src, weights=str(local), model="keep-asian", chunk=2).get_frame(1) as f:
        assert f.props["KeepFaces"] >= 1
    with pytest.raises(vs.Error, match=r"keep: .*KEEP-b76feb75\.pth"):
        keep(src, model="keep-v1", download=False)
    with pytest.raises(vs.Error, match="keep: model must be one of keep, keep-v1, keep-asian, codeformer"):
        keep(src, model="keep2")
