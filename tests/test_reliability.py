"""Reliability: bad inputs end in one line (no traceback, nothing at the output, input untouched), interrupts leave
nothing behind, outputs are written atomically, and the filter leaks nothing across seeks and reloads."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from media import write_video
from vs_keep.atomic import atomic_output, atomic_write, file_lock, same_file
from vs_keep.errors import InputError, user_message
from vs_keep.models.synthetic import write_synthetic_checkpoint

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real material: a synthetic KEEP checkpoint, a tiny two-face clip, and broken variants of both."""
    import av

    from data.face_scenes import two_face_scene

    d = tmp_path_factory.mktemp("reliability")
    weights = write_synthetic_checkpoint(d / "keep_small.pth", "keep", "small")
    video = write_video(d / "scene.mkv", two_face_scene(n=8, size=(120, 160)).frames, fps=25, audio=False)
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("these are my notes, not a video\n")
    with av.open(str(d / "tone.m4a"), "w") as c:  # audio only
        a = c.add_stream("aac", rate=48000)
        a.layout = "mono"
        tone = (0.2 * np.sin(np.arange(48000) / 10)).astype(np.float32)
        for i in range(0, 48000, 1024):
            fr = av.AudioFrame.from_ndarray(tone[None, i : i + 1024], format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 48000, i
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    data = video.read_bytes()
    (d / "cut.mkv").write_bytes(data[: len(data) // 2])  # an interrupted copy: header says 8 frames
    (d / "cut.pth").write_bytes(weights.read_bytes()[:1_000_000])  # an interrupted download
    torch.save({"params": {"conv.weight": torch.zeros(3, 3)}}, d / "other.pth")  # some other network
    return {"dir": d, "weights": weights, "video": video}


def cli(*args: str | Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vs_keep", "restore", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, timeout=timeout)


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def packets(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.pts is not None)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


def assert_clean_failure(r: subprocess.CompletedProcess, message: str, out: Path) -> None:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"vs-keep restore: {message}"], r.stderr
    assert not out.exists() and not out.is_symlink()
    if out.parent.is_dir():
        assert leftovers(out.parent) == []


# ------------------------------------------------------------------------------------------------ bad inputs

BAD_INPUTS = {
    "missing": ("missing.mp4", "input not found: {p}; pass a video file, an image or a folder of images"),
    "empty": ("empty.mp4", "{p}: cannot open as a video ([Errno 1094995529] Invalid data found when processing "
              "input: '{p}')"),
    "not a video": ("notes.mp4", "{p}: cannot open as a video ([Errno 1094995529] Invalid data found when "
                    "processing input: '{p}')"),
    "audio only": ("tone.m4a", "{p}: no video stream"),
    "truncated video": ("cut.mkv", "{p}: truncated: its header declares 0.32 s (~8 frames) but only {n} frames are "
                        "in the file; use a complete copy (re-download or re-export it)"),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_video(media, tmp_path: Path, case: str) -> None:
    name, message = BAD_INPUTS[case]
    src = media["dir"] / name
    before = digest(src) if src.exists() else None
    out = tmp_path / "out.mkv"
    r = cli(src, out, "--weights", media["weights"])
    assert_clean_failure(r, message.format(p=src, n=packets(src) if case == "truncated video" else 0), out)
    assert (digest(src) if src.exists() else None) == before


def test_raw_stream_is_counted_by_decoding(media, tmp_path: Path) -> None:
    """A raw .h264 stream has no timestamps to count packets by: counted by decoding, not refused as empty."""
    import av

    from vs_keep.cli.safety import checked_length
    from vs_keep.video import FrameSource

    raw = tmp_path / "raw.h264"
    with av.open(str(media["video"])) as src, av.open(str(raw), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    assert checked_length(FrameSource(raw)) == 8


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, message", [
    ("cut.pth", "{p}: not a PyTorch checkpoint, or truncated (1000000 bytes; the download may have been interrupted: "
                "delete it and download again): unexpected EOF, expected {missing} more bytes. The file might be "
                "corrupted."),
    ("other.pth", "{p}: unknown model (1 tensors; top-level key prefixes: conv). Supported: keep, codeformer, dic"),
])
def test_bad_checkpoint(media, tmp_path: Path, name: str, message: str) -> None:
    weights = media["dir"] / name
    before, src_before = digest(weights), digest(media["video"])
    out = tmp_path / "out.mkv"
    r = cli(media["video"], out, "--weights", weights)
    missing = r.stderr.split("expected ")[-1].split(" ")[0] if "expected " in r.stderr else "?"
    assert_clean_failure(r, message.format(p=weights, missing=missing), out)
    assert digest(weights) == before and digest(media["video"]) == src_before


@pytest.mark.timeout(300)
@pytest.mark.parametrize("link", ["same path", "symlink", "hard link", "symlinked input"])
def test_output_is_the_input(media, tmp_path: Path, link: str) -> None:
    src = tmp_path / "film.mkv"
    src.write_bytes(media["video"].read_bytes())
    before = digest(src)
    inp, out = src, src
    if link == "symlink":
        out = tmp_path / "restored.mkv"
        out.symlink_to(src)
    elif link == "hard link":
        out = tmp_path / "restored.mkv"
        os.link(src, out)
    elif link == "symlinked input":
        inp = tmp_path / "alias.mkv"
        inp.symlink_to(src)
    r = cli(inp, out, "--weights", media["weights"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"vs-keep restore: output {out} is the input {inp} (the same file on disk): the input would be overwritten; "
        "choose another output path"
    ]
    assert digest(src) == before and leftovers(tmp_path) == []


@pytest.mark.timeout(300)
def test_unwritable_output(media, tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder should be")
    out = blocker / "out.mkv"
    r = cli(media["video"], out, "--weights", media["weights"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"vs-keep restore: {out}: cannot write the output ({blocker} is a file); check the path (a part of it is a "
        "file, not a folder)"
    ]
    if not IS_ROOT:  # root writes anywhere: a read-only folder only refuses other users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        out = ro / "out.mkv"
        r = cli(media["video"], out, "--weights", media["weights"])
        assert_clean_failure(r, f"{out}: cannot write the output (Permission denied); fix its permissions or choose "
                                "a writable location", out)


@pytest.mark.timeout(300)
def test_debug_shows_traceback(media, tmp_path: Path) -> None:
    r = cli(media["video"], tmp_path / "o.mkv", "--weights", media["dir"] / "other.pth", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("vs-keep restore: ")


# ------------------------------------------------------------------------------------------------ interrupts


def _wait_for(pred, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < end, "timed out waiting for the run to get going"
        time.sleep(0.05)


def _as_from_a_terminal() -> None:
    """The child's SIGINT and SIGTERM as a command started from a shell sees them (default, unblocked). In two whole
    suite runs the SIGINT run finished untouched (exit 0, every frame written) while the file alone passed 5 of 5:
    most likely an ignored or blocked SIGINT inherited from the test process (cause not pinned down), which a user
    at a terminal never has."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_interrupt_leaves_nothing(media, tmp_path: Path, sig: int, code: int, word: str) -> None:
    """SIGINT once frames are being written (mid-run); SIGTERM while the model loads. The clip is long (96 frames)
    so that on a fast, quiet machine the run cannot finish between the first frame on disk and the signal (with the
    8-frame clip it once did: exit 0, 'wrote 8 frames')."""
    from data.face_scenes import two_face_scene

    clip = write_video(tmp_path / "long.mkv", two_face_scene(n=8, size=(120, 160)).frames * 12, fps=25, audio=False)
    out = tmp_path / "frames"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vs_keep", "restore", "--aligned", str(clip), str(out), "--weights",
         str(media["weights"]), "--chunk", "2", "--no-progress"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal,
    )
    try:
        if sig == signal.SIGINT:
            _wait_for(lambda: any(p.suffix == ".png" for t in tmp_path.glob(".frames.*") for p in t.iterdir()), proc, 500)
        else:
            _wait_for(lambda: bool(list(tmp_path.glob(".frames.*"))), proc, 120)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"vs-keep restore: {word}; nothing written to {out}"
    assert not out.exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ atomic files


def test_atomic_output_file_commits_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "clip.mp4"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            assert tmp.parent == out.parent and tmp.suffix == ".mp4" and tmp.name.startswith(".")
            tmp.write_bytes(b"half")
            raise RuntimeError("encoder died")
    assert not (tmp_path / "new").exists()  # folders made for the output are removed again
    out.parent.mkdir(parents=True)
    out.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert out.read_bytes() == b"previous" and leftovers(out.parent) == []
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole" and leftovers(out.parent) == []
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_atomic_output_folder_and_symlink(tmp_path: Path) -> None:
    out = tmp_path / "frames"
    with atomic_output(out) as tmp:
        (tmp / "000000.png").write_bytes(b"a")
    assert sorted(p.name for p in out.iterdir()) == ["000000.png"]
    with atomic_output(out) as tmp:  # an existing, non-empty folder: files move in at the end
        (tmp / "000001.png").write_bytes(b"b")
        assert sorted(p.name for p in out.iterdir()) == ["000000.png"]
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"] and leftovers(tmp_path) == []
    target = tmp_path / "real.mkv"
    target.write_bytes(b"old")
    link = tmp_path / "link.mkv"
    link.symlink_to(target)
    with atomic_output(link) as tmp:
        tmp.write_bytes(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_atomic_output_names_the_real_path(tmp_path: Path) -> None:
    out = tmp_path / "clip.mkv"
    with pytest.raises(OSError) as info:
        with atomic_output(out) as tmp:
            raise OSError(28, "No space left on device", str(tmp))
    assert info.value.filename == str(out) and not out.exists()


def test_same_file_through_links(tmp_path: Path) -> None:
    a = tmp_path / "a.mkv"
    a.write_bytes(b"x")
    (tmp_path / "s.mkv").symlink_to(a)
    os.link(a, tmp_path / "h.mkv")
    (tmp_path / "c.mkv").write_bytes(b"x")
    assert same_file(a, tmp_path / "s.mkv") and same_file(a, tmp_path / "h.mkv") and same_file(tmp_path, tmp_path)
    assert not same_file(a, tmp_path / "c.mkv") and not same_file(a, tmp_path / "missing.mkv")


def test_file_lock_serialises_writers(tmp_path: Path) -> None:
    lock, target = tmp_path / "x.lock", tmp_path / "x.bin"
    log: list[str] = []

    def writer(tag: str) -> None:
        with file_lock(lock):
            log.append(f"{tag}+")
            time.sleep(0.05)
            atomic_write(target, tag.encode() * 1000)
            log.append(f"{tag}-")

    threads = [threading.Thread(target=writer, args=(t,)) for t in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(log[i][0] == log[i + 1][0] for i in range(0, len(log), 2))  # never interleaved
    assert target.read_bytes() in {t.encode() * 1000 for t in "abcd"} and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ one-line errors


def test_user_message() -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8 GiB total)\nmore")
    assert user_message(oom) == ("GPU out of memory: lower faces ('largest'), upscale or chunk, set fp16=True, or use "
                                 "another device (device='cuda:1' or 'cpu')")
    assert user_message(RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR out of memory")).startswith("GPU out")
    assert user_message(InputError("faces must be 'all', got 'x'")) == "faces must be 'all', got 'x'"
    assert user_message(ValueError("\n  bad shape (3, 4)\n  at line 2")) == "ValueError: bad shape (3, 4)"
    assert user_message(KeyError()) == "KeyError"
    assert user_message(MemoryError("host")) == "MemoryError: host"


def test_failure_lines() -> None:
    """What the CLI prints for failures that are not vs-keep's own: the file, the reason, the fix."""
    import errno

    from av.codec.codec import UnknownCodecError

    from vs_keep.cli.safety import failure_line

    assert failure_line(OSError(errno.ENOSPC, "No space left on device", "/films/out.mkv")) == (
        "/films/out.mkv: No space left on device; the disk is full; free space or write to another disk")
    assert failure_line(PermissionError(errno.EACCES, "Permission denied", "/films/in.mkv")) == (
        "/films/in.mkv: Permission denied; fix its permissions or choose a writable location")
    assert failure_line(UnknownCodecError("nope")) == (
        "ffmpeg has no codec nope; pick one it has (e.g. --codec libx264, libx265 or ffv1)")
    assert failure_line(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")) == (
        "GPU out of memory: lower --faces (largest), --upscale or --chunk, add --fp16, or use another device "
        "(--device cuda:1 or cpu)")
    assert failure_line(ZeroDivisionError("division by zero")) == (
        "ZeroDivisionError: division by zero (unexpected; run again with --debug for the traceback and please "
        "report it)")


# ------------------------------------------------------------------------------------------------ process state


def test_load_model_leaves_process_settings(media) -> None:
    from vs_keep.engine import EngineOptions, cudnn_tf32_off, load_model

    threads, tf32 = torch.get_num_threads(), torch.backends.cudnn.allow_tf32
    load_model(EngineOptions(weights=media["weights"], device="cpu"))
    assert torch.get_num_threads() == threads and torch.backends.cudnn.allow_tf32 == tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with cudnn_tf32_off():
            assert torch.backends.cudnn.allow_tf32 is False
            with cudnn_tf32_off():
                pass
            assert torch.backends.cudnn.allow_tf32 is False  # nested scopes: still off until the outermost leaves
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count file descriptors")
def test_pyav_source_closes_its_file(media) -> None:
    pytest.importorskip("vapoursynth")
    from vs_keep.plugin import source

    gc.collect()
    before = _fds()
    clip = source(media["video"])
    for n in (5, 1, 7, 0):  # backward jumps reopen the file; one container at a time
        clip.get_frame(n).close()
        assert _fds() <= before + 1
    del clip
    gc.collect()
    assert _fds() == before


# ------------------------------------------------------------------------------------------------ soak


@pytest.mark.timeout(900)
def test_soak_seeks_and_reloads(media, tmp_path: Path) -> None:
    """scripts/soak.py as shipped: 2,000 random seeks through the filter over 4 chunks of which 3 fit the cache (so
    chunks are evicted and recomputed), then 20 vsjetengine load/dispose cycles: RSS within 10 %, no thread or
    file-descriptor growth."""
    pytest.importorskip("vapoursynth")
    pytest.importorskip("vsengine")
    from data.face_scenes import two_face_scene

    video = write_video(tmp_path / "soak.mkv", two_face_scene(n=16, size=(120, 160)).frames, fps=25, audio=False)
    out = tmp_path / "soak.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--seeks", "2000", "--chunk", "4", "--cycles", "20",
         "--weights", str(media["weights"]), "--video", str(video), "--json", str(out)],
        capture_output=True, text=True, timeout=880,
    )
    assert out.exists(), r.stderr[-3000:]
    result = json.loads(out.read_text())
    seeks, reload = result["seeks"], result["reload"]
    print(json.dumps({"seeks": {k: v for k, v in seeks.items()}, "reload": {k: v for k, v in reload.items() if k != "rows"}}))
    assert seeks["num_frames"] == 16 and seeks["ok"] and seeks["rss_ratio"] <= 1.1, seeks
    assert reload["peak_rss_ratio_last_to_second"] <= 1.1, reload
    assert reload["thread_growth"] <= 0 and reload["fd_growth"] <= 0, reload
    assert r.returncode == 0 and result["ok"]
