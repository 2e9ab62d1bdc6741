"""`vs-keep restore` to a video file is resumable: a run killed at any point (kill -9 from outside, SIGTERM) and
started again gives the frames of an uninterrupted run (ffv1: decoded frames identical, audio and timestamps kept);
pieces made with other options, or damaged on disk, are redone; a second run on the same OUT is refused.

Runs are real `python -m vs_keep restore` processes (one torch thread each, so their float32 arithmetic matches)
on a real-photo clip; kill points are found by watching the work folder (a piece record, the concat file)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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
from vs_keep.resume import plan_pieces, work_folder
from vs_keep.sequencer import Sequencer

pytestmark = pytest.mark.usefixtures("one_thread")
N, CHUNK, GAP, PIECE = 32, 4, 2, 8  # four pieces of two chunks
OPTS = ["--chunk", str(CHUNK), "--max-gap", str(GAP), "--codec", "ffv1", "--piece", str(PIECE), "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Background, then both faces for 8 frames (in pieces 1 and 2), then background; and the uninterrupted run."""
    d = tmp_path_factory.mktemp("resume")
    weights = write_synthetic_checkpoint(d / "keep_small.pth", "keep", "small")
    bg = two_face_scene(n=0, empty_head=1).frames[0]
    frames = [bg] * 12 + two_face_scene(n=8).frames + [bg] * 12
    src = write_video(d / "in.mp4", frames, fps=Fraction(30000, 1001), audio=True, options={"g": "10", "bf": "2"})
    ref = d / "ref.mkv"
    r = run(src, ref, weights)
    assert r.returncode == 0, r.stderr
    assert "resuming" not in r.stderr and not work_folder(ref).exists()
    return {"weights": weights, "video": src, "ref": ref, "digest": sha(src)}


def args(src: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vs_keep", "restore", str(src), str(out), "--weights", str(weights), *OPTS, *extra]


def run(src: Path, out: Path, weights: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(args(src, out, weights, *extra), capture_output=True, text=True, timeout=600, env=ENV)


@contextlib.contextmanager
def killed_at_exit(media, out: Path, *extra: str) -> Iterator[subprocess.Popen]:
    """A `vs-keep restore` run in a child process, SIGKILLed (no cleanup of any kind runs) when the block ends."""
    proc = subprocess.Popen(args(media["video"], out, media["weights"], *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        yield proc
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records(work: Path) -> list[Path]:
    return sorted(p for p in work.glob("*.json") if p.name != "manifest.json") if work.is_dir() else []


def wait_for(pred, proc: subprocess.Popen, timeout: float = 300) -> bool:
    """Poll until pred() holds (True) or the process ended first (False)."""
    end = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < end, "timed out waiting for the run to get there"
        time.sleep(0.01)
    return True


def assert_same_video(got: Path, want: Path) -> None:
    check_same_video(got, want, N)


def assert_resumed(r: subprocess.CompletedProcess, out: Path, media, frames_done: int | None) -> None:
    assert r.returncode == 0, r.stderr
    line = f"resuming: {frames_done} of {N} frames done"
    assert (line in r.stderr) if frames_done else ("resuming" not in r.stderr), r.stderr
    assert_same_video(out, media["ref"])
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # work folder and temporary files gone
    assert sha(media["video"]) == media["digest"]  # the input only read


def test_pieces_are_whole_chunks() -> None:
    pieces = plan_pieces(N, Sequencer(chunk=CHUNK, max_gap=GAP), piece=PIECE)
    assert [(s.start, s.stop) for g in pieces for s in g] == [(0, 8), (8, 16), (16, 24), (24, 32)]
    two = plan_pieces(100, Sequencer(chunk=20, max_gap=10), shards=2, piece=50)  # shards of 40 and 60 frames, pieces <= 40 frames
    assert [[(s.start, s.stop) for s in g] for g in two] == [[(0, 40)], [(40, 80), (80, 100)]]
    assert (two[1][0].lo, two[1][0].hi) == (0, 100)  # each piece's detection context


@pytest.mark.timeout(600)
def test_pieces_equal_one_pass(media, tmp_path: Path) -> None:
    """The uninterrupted piecewise run gives the frames of the one linear pass (frame-folder output)."""
    out = tmp_path / "frames"
    assert main(["restore", str(media["video"]), str(out), "--weights", str(media["weights"]), *OPTS]) == 0
    import cv2

    one = [cv2.imread(str(p))[..., ::-1] for p in sorted(out.glob("*.png"))]
    pieces = decoded(media["ref"])
    assert len(one) == N and all(np.array_equal(a, b) for a, b in zip(one, pieces))


@pytest.mark.timeout(600)
def test_kill_early_and_a_second_run_is_refused(media, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    work = work_folder(out)
    with killed_at_exit(media, out) as proc:
        assert wait_for(lambda: (work / "manifest.json").exists(), proc)
        proc.send_signal(signal.SIGSTOP)  # holds its lock, frozen
        second = run(media["video"], out, media["weights"])
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines() == [
            f"vs-keep restore: {out}: another vs-keep run is writing it (lock {work / 'lock'} is held); wait for it "
            "to finish or stop it first"]
        assert (work / "manifest.json").exists()  # the refused run left the first one's folder alone
    assert not out.exists()
    assert_resumed(run(media["video"], out, media["weights"]), out, media, None)


@pytest.mark.timeout(600)
def test_kill_mid_piece(media, tmp_path: Path) -> None:
    """kill -9 while the second piece is being written: the first is kept, the second redone."""
    out = tmp_path / "out.mkv"
    work = work_folder(out)
    with killed_at_exit(media, out) as proc:
        assert wait_for(lambda: records(work) and any(".partial" in p.name for p in work.iterdir()), proc)
    done = len(records(work))
    assert not out.exists() and 1 <= done < N // PIECE
    assert_resumed(run(media["video"], out, media["weights"]), out, media, PIECE * done)


@pytest.mark.timeout(600)
def test_kill_during_concatenation_then_damaged_pieces_are_redone(media, tmp_path: Path) -> None:
    """kill -9 once the joined file is being written (all pieces done); then one piece gets a flipped byte and
    another is cut short: the rerun redoes exactly those two."""
    out = tmp_path / "out.mkv"
    work = work_folder(out)
    # the join takes milliseconds, too short to catch from outside on a busy machine: the child kills itself right
    # after it (the joined file complete under its temporary name, not yet renamed to OUT)
    kill_after_join = (
        "import os, signal, sys\n"
        "import vs_keep.resume as resume\n"
        "from vs_keep.cli import main\n"
        "join = resume.concat_segments\n"
        "def join_then_die(*a, **k):\n"
        "    join(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "resume.concat_segments = join_then_die\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cli = args(media["video"], out, media["weights"])
    done = subprocess.run([sys.executable, "-c", kill_after_join, *cli[3:]], capture_output=True, text=True,
                          timeout=600, env=ENV)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (work / "concat.partial.mkv").exists()
    assert not out.exists() and len(records(work)) == N // PIECE
    pieces = sorted(work.glob("*-*-*.mkv"))
    data = bytearray(pieces[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    pieces[1].write_bytes(bytes(data))
    pieces[2].write_bytes(pieces[2].read_bytes()[:-100])
    assert_resumed(run(media["video"], out, media["weights"]), out, media, N - 2 * PIECE)


@pytest.mark.timeout(600)
def test_sigterm_keeps_pieces_that_other_options_do_not_reuse(media, tmp_path: Path) -> None:
    """SIGTERM after the first piece: it is kept and reported; a rerun with another frame-changing option
    (--max-gap) does not mix it in."""
    out = tmp_path / "out.mkv"
    work = work_folder(out)
    proc = subprocess.Popen(args(media["video"], out, media["weights"], "--max-gap", "3"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)  # the last --max-gap wins
    try:
        assert wait_for(lambda: bool(records(work)), proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert lines[-1] == f"vs-keep restore: terminated (SIGTERM); nothing written to {out}"
    kept = PIECE * len(records(work))
    assert lines[-2] == (f"vs-keep: kept {kept} of {N} finished frames in {work}: run the same command again to "
                         "resume (--restart starts over)")
    assert not out.exists() and len(records(work)) >= 1
    assert_resumed(run(media["video"], out, media["weights"]), out, media, None)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 600 kB tmpfs (room for the first piece only), grown by `remount` inside the test; needs mount rights."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.timeout(600)
def test_disk_full_keeps_pieces(media, small_disk: Path) -> None:
    out = small_disk / "out.mkv"
    work = work_folder(out)
    r = run(media["video"], out, media["weights"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"vs-keep restore: {work}: the disk is full ({PIECE} of {N} frames finished and kept); "
                           "the job needs about "), r.stderr
    assert last.endswith("free space and run the same command again to resume")
    assert not out.exists() and len(records(work)) == 1 and not list(work.glob("*partial*"))
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    assert_resumed(run(media["video"], out, media["weights"]), out, media, PIECE)
