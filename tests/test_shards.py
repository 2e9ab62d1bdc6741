"""`vs-keep restore --shards N [--ray]`: a video restored in pieces decodes to the frames of one process.

Every run here uses one torch thread (the `one_thread` fixture) for speed: small tensors on a busy 2-core machine.
Equality does not need it: each shard carries the planning run's thread count and its worker pins torch to it
(tests/test_determinism.py compares `--shards 2 --ray` with the plain command at the default thread count).

The clip is mostly background with a short face scene across a shard seam, and `--max-gap 2` keeps the detection
context (26 frames before a shard, 23 after) shorter than the clip, so every shard's window is cut on the inside:
a plan that missed context would fail loudly (`StreamAccess` raises outside its window) or change frames at the seam."""

from __future__ import annotations

import os
import signal
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from data.face_scenes import two_face_scene
from media import assert_same_video as check_same_video
from media import decoded_rgb as decoded
from media import write_video
from vs_keep.cli import main
from vs_keep.models.synthetic import write_synthetic_checkpoint
from vs_keep.sequencer import Sequencer
from vs_keep.resume import plan_pieces, restore_resumable
from vs_keep.shards import Encoding

pytestmark = pytest.mark.usefixtures("one_thread")
N, CHUNK, GAP = 64, 8, 2
OPTS = ["--chunk", str(CHUNK), "--max-gap", str(GAP), "--faces", "largest", "--codec", "ffv1", "--no-progress"]


def clip_frames() -> list[np.ndarray]:
    """26 background frames, 12 with faces (frames 26..37, across the seam at 32), 26 background frames."""
    bg = two_face_scene(n=0, empty_head=1).frames[0]
    return [bg] * 26 + two_face_scene(n=12).frames + [bg] * 26


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, one_thread) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("shards")
    weights = write_synthetic_checkpoint(d / "keep_small.pth", "keep", "small")
    # keyframe every 10 frames with B-frames: shard windows start mid-GOP, so the seek is really exercised
    src = write_video(d / "in.mp4", clip_frames(), fps=Fraction(30000, 1001), audio=True, options={"g": "10", "bf": "2"})
    one = d / "one.mkv"
    assert main(["restore", str(src), str(one), "--weights", str(weights), *OPTS]) == 0
    return {"weights": weights, "video": src, "one": one, "dir": d}


def assert_same_video(got: Path, want: Path) -> None:
    check_same_video(got, want, N)


def test_iter_frames_seeks_frame_accurately(tmp_path: Path) -> None:
    """Decoding from frame i (keyframe before it, then frames dropped by timestamp) gives the frames a decode from
    the start gives, for starts on, before and after keyframes (GOP of 5, B-frames)."""
    from vs_keep.video import FrameSource, iter_frames

    src = write_video(tmp_path / "gop.mp4", two_face_scene(n=17).frames, fps=Fraction(30000, 1001), audio=False,
                      crf=30, options={"g": "5", "bf": "2"})
    full = list(iter_frames(src))
    stamps = FrameSource(src).timestamps()
    assert len(full) == len(stamps) == 17
    for start in (1, 4, 5, 6, 13, 16):
        got = list(iter_frames(src, start=start, start_pts=stamps[start], max_frames=3))
        assert len(got) == min(3, 17 - start)
        assert all(np.array_equal(a, b) for a, b in zip(got, full[start:])), start
    rest = list(iter_frames(src, start=7))  # timestamp looked up by iter_frames itself
    assert len(rest) == 10 and all(np.array_equal(a, b) for a, b in zip(rest, full[7:]))


def plan_shards(total: int, count: int, sequencer: Sequencer) -> list:
    """The shards of `plan_pieces` (pieces longer than the clip: one piece a shard)."""
    return [s for group in plan_pieces(total, sequencer, shards=count, piece=10**9) for s in group]


def test_plan_cuts_whole_chunks_with_context() -> None:
    plan = plan_shards(N, 2, Sequencer(chunk=CHUNK, max_gap=GAP))
    assert [(s.start, s.stop, s.lo, s.hi) for s in plan] == [(0, 32, 0, 55), (32, 64, 6, 64)]
    primed = plan_shards(N, 2, Sequencer.of(chunk=CHUNK, max_gap=GAP, overlap=3))  # the run of chunk 32 starts at 29
    assert [(s.lo, s.hi) for s in primed] == [(0, 55), (3, 64)]
    plan = plan_shards(100, 3, Sequencer(chunk=20, max_gap=10))  # 5 chunks in 3 shards; context 42 before, 31 after
    assert [(s.start, s.stop) for s in plan] == [(0, 40), (40, 60), (60, 100)]
    assert (plan[1].lo, plan[1].hi) == (0, 91) and (plan[2].lo, plan[2].hi) == (18, 100)
    assert len(plan_shards(10, 4, Sequencer(chunk=20))) == 1  # never more shards than chunks


@pytest.mark.timeout(600)
def test_shards_in_process_equal_one_process(media, tmp_path: Path) -> None:
    out = tmp_path / "sharded.mkv"
    assert main(["restore", str(media["video"]), str(out), "--weights", str(media["weights"]), "--shards", "2", *OPTS]) == 0
    assert_same_video(out, media["one"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded.mkv"]  # segments and partial files removed


@pytest.mark.timeout(600)
def test_shards_with_overlap_equal_one_process(media, tmp_path: Path) -> None:
    """`--overlap 3` primes each chunk's run on the 3 frames before it, so every window reaches 3 frames further
    back. The second shard starts at 32, far past its window's reach (frame 3): a shard that decoded the window
    of unprimed chunks would fail (`StreamAccess` raises outside its window) or change frames at the seam. Without
    scene cuts (the clip's cuts at 26 and 38 would stop the window there) each shard reads its whole window."""
    one, sharded = tmp_path / "one.mkv", tmp_path / "sharded.mkv"
    args = ["--weights", str(media["weights"]), *OPTS, "--overlap", "3", "--scene-detect", "off"]
    assert main(["restore", str(media["video"]), str(one), *args]) == 0
    assert any(not np.array_equal(a, b) for a, b in zip(decoded(one), decoded(media["one"]))), "priming changed nothing"
    assert main(["restore", str(media["video"]), str(sharded), *args, "--shards", "2"]) == 0
    assert_same_video(sharded, one)


def test_bad_shard_arguments(media, tmp_path: Path, capsys) -> None:
    args = ["restore", str(media["video"])]
    assert main([*args, str(tmp_path / "o.mkv"), "--shards", "0"]) == 1
    assert main([*args, str(tmp_path / "folder"), "--shards", "2"]) == 1
    assert main([*args, str(tmp_path / "o.mkv"), "--ray"]) == 1
    assert main([*args, str(tmp_path / "o.mkv"), "--piece", "0"]) == 1
    err = capsys.readouterr().err
    assert "--shards must be >= 1" in err and "one video file" in err and "add --shards N" in err
    assert "--piece must be >= 1 frame" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs, started by this process (so its workers are this process's descendants)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def shard_workers() -> list[int]:
    """Pids of this process's Ray workers that are running a piece (Ray titles them after the task body)."""
    def descends_from_us(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                return False
        return False

    found = []
    for entry in Path("/proc").iterdir():
        try:
            running = entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::_ray_piece")
        except OSError:
            continue
        if running and descends_from_us(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_a_worker_mid_shard(work: Path, stop: threading.Event, killed: list[int]) -> None:
    """Once a shard has opened its segment (in the work folder under `work`), SIGKILL the worker running it, once."""
    while not stop.wait(0.05):
        if not list(work.glob(".*.resume/*.partial.*")):
            continue
        for pid in shard_workers():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return


def sharded_on_ray(media, out: Path) -> None:
    from vs_keep.engine import EngineOptions

    options = EngineOptions(weights=str(media["weights"]), device="cpu", chunk=CHUNK, max_gap=GAP, faces="largest",
                            scene_reset=False)
    restore_resumable(media["video"], out, options, shards=2, encoding=Encoding(fps=Fraction(30000, 1001), codec="ffv1"),
                      ray=True, progress=False)


@pytest.mark.timeout(600)
def test_ray_two_shards_equal_one_process(media, local_ray, tmp_path: Path) -> None:
    """Through the CLI: `--ray` without ADDRESS uses the Ray instance this process runs (the fixture's)."""
    out = tmp_path / "ray.mkv"
    args = ["restore", str(media["video"]), str(out), "--weights", str(media["weights"]), "--shards", "2", "--ray"]
    assert main([*args, *OPTS]) == 0
    assert_same_video(out, media["one"])


@pytest.mark.timeout(600)
def test_ray_worker_killed_mid_shard_is_retried(media, local_ray, tmp_path: Path) -> None:
    """A worker lost mid-shard (killed from outside, as an OOM killer or a lost node would) is replaced and its
    shard rerun from the start: the video is the same."""
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_a_worker_mid_shard, args=(tmp_path, stop, killed), daemon=True)
    killer.start()
    out = tmp_path / "ray.mkv"
    try:
        sharded_on_ray(media, out)
    finally:
        stop.set()
        killer.join(10)
    assert len(killed) == 1, "no worker was killed mid-shard"
    assert_same_video(out, media["one"])


def y4m_frames(data: bytes) -> tuple[bytes, list[bytes]]:
    """(stream header without vspipe's XLENGTH=frame count, frame payloads) of a YUV4MPEG2 stream."""
    header, _, body = data.partition(b"\n")
    header = b" ".join(t for t in header.split(b" ") if not t.startswith(b"XLENGTH="))
    parts = body.split(b"FRAME\n")
    assert parts[0] == b""
    return header, parts[1:]


@pytest.mark.timeout(600)
def test_vspipe_chunk_aligned_ranges_concatenate_to_the_whole_run(media, tmp_path: Path) -> None:
    """What av1an-style chunked encoders do: `vspipe -s A -e B` per range (inclusive B), one process each."""
    import subprocess
    import sys

    pytest.importorskip("vapoursynth")
    root = Path(__file__).resolve().parents[1]
    vspipe = Path(sys.executable).parent / "vspipe"
    src = write_video(tmp_path / "scene.mp4", two_face_scene(n=12).frames, fps=25, audio=False)

    def run(*extra: str) -> bytes:
        cmd = [str(vspipe), "-c", "y4m", str(root / "plugin" / "templates" / "keep_vspipe.vpy"), "-a", f"input={src}",
               "-a", f"weights={media['weights']}", "-a", "chunk=6", *extra, "-"]
        r = subprocess.run(cmd, capture_output=True, timeout=600)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        return r.stdout

    header, whole = y4m_frames(run())
    assert len(whole) == 12
    pieces = [y4m_frames(run("-s", str(a), "-e", str(b))) for a, b in ((0, 5), (6, 11))]
    assert [h for h, _ in pieces] == [header, header], header
    assert [f for _, frames in pieces for f in frames] == whole


@pytest.mark.timeout(600)
def test_image_folder_pieces_equal_one_pass(media, tmp_path: Path) -> None:
    """An image folder to a video OUT goes through the pieces too (each numbered and stamped from its first
    frame): the frames of the one-pass frame-folder output, with pieces and with shards."""
    import cv2

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, f in enumerate(clip_frames()[20:44]):
        cv2.imwrite(str(imgs / f"f{i}.png"), f[..., ::-1])
    args = ["--weights", str(media["weights"]), *OPTS, "--pix-fmt", "bgr0"]
    assert main(["restore", str(imgs), str(tmp_path / "one"), *args]) == 0
    one = [cv2.imread(str(p))[..., ::-1] for p in sorted((tmp_path / "one").glob("*.png"))]
    for name, extra in (("pieces.mkv", ["--piece", str(CHUNK)]), ("sharded.mkv", ["--shards", "2"])):
        assert main(["restore", str(imgs), str(tmp_path / name), *args, *extra]) == 0
        got = decoded(tmp_path / name)
        assert len(got) == len(one) == 24 and all(np.array_equal(a, b) for a, b in zip(got, one)), name


def test_concat_of_lossy_mkv_segments_with_b_frames(tmp_path: Path) -> None:
    """Matroska stores no dts, so a demuxed libx264 segment starts with packets without one: the joined file gets
    them rebuilt (B-frames decode before the frames they precede) and keeps every frame and its timestamp."""
    from vs_keep.shards import concat_segments
    from vs_keep.video import FrameSink

    frames = two_face_scene(n=30).frames
    segments = []
    for start in (0, 10, 20):
        seg = tmp_path / f"{start}.mkv"
        with FrameSink(seg, fps=25, codec="libx264", crf=30, preset="fast", first=start) as sink:
            for f in frames[start:start + 10]:
                sink.write(f)
        segments.append(str(seg))
    concat_segments(segments, tmp_path / "joined.mkv", Fraction(25))
    import av

    with av.open(str(tmp_path / "joined.mkv")) as c:
        assert [f.pts for f in c.decode(video=0)] == [40 * n for n in range(30)]  # 1/1000 s
