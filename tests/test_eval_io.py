"""vs_keep.video, the one I/O module of restore, eval and degrade: image folders, lossless and lossy writing."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from eval_clips import panning_frames

from vs_keep.errors import InputError
from vs_keep.video import FrameSink, FrameSource, iter_frames, list_images, probe


def test_image_folder_natural_order_and_pixel_formats(tmp_path: Path) -> None:
    frames = panning_frames(4, 32)
    names = ["frame10.png", "frame9.png", "Frame2.png", "frame1.png"]  # natural: 1, 2, 9, 10
    for name, f in zip(names, frames):
        cv2.imwrite(str(tmp_path / name), f[:, :, ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["frame1.png", "Frame2.png", "frame9.png", "frame10.png"]
    got = list(iter_frames(tmp_path))
    for want, frame in zip([frames[3], frames[2], frames[1], frames[0]], got):
        np.testing.assert_array_equal(frame, want)
    source = FrameSource(tmp_path)
    assert not source.is_video and source.count_frames() == 4 and source.info.fps == 25
    assert (source.info.width, source.info.height) == (32, 32)
    assert len(list(iter_frames(tmp_path, max_frames=2))) == 2

    rgb = frames[0]
    gray = rgb[:, :, 1]
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb[:, :, ::-1], np.full(gray.shape, 7, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[:, :, ::-1].astype(np.uint16) * 257)
    single = {name: list(iter_frames(tmp_path / name)) for name in ("gray.png", "rgba.png", "deep.png")}
    np.testing.assert_array_equal(single["gray.png"][0], np.dstack([gray] * 3))
    np.testing.assert_array_equal(single["rgba.png"][0], rgb)
    np.testing.assert_array_equal(single["deep.png"][0], rgb)
    assert probe(tmp_path / "deep.png").frames == 1


def test_lossless_is_exact_and_reproducible(tmp_path: Path) -> None:
    frames = [f[:, :45] for f in panning_frames(3, 45)]  # odd sides
    digests = []
    for name in ("a.mkv", "b.mkv", "a.mp4", "b.mp4"):
        with FrameSink(tmp_path / name, fps=Fraction(30), lossless=True) as sink:
            for f in frames:
                sink.write(f)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
        for want, got in zip(frames, iter_frames(tmp_path / name), strict=True):
            np.testing.assert_array_equal(got, want)
        assert probe(tmp_path / name).fps == 30
    assert digests[0] == digests[1] and digests[2] == digests[3]
    with pytest.raises(InputError, match="lossless output"):
        FrameSink(tmp_path / "x.avi", lossless=True)


def test_lossy_odd_size_uses_yuv444(tmp_path: Path) -> None:
    frames = [f[:31, :45] for f in panning_frames(3, 45)]
    with FrameSink(tmp_path / "odd.mp4", fps=Fraction(24000, 1001), crf=0) as sink:
        for f in frames:
            sink.write(f)
    with av.open(str(tmp_path / "odd.mp4")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
    source = FrameSource(tmp_path / "odd.mp4")
    assert source.is_video and source.count_frames() == 3
    assert source.info.fps == Fraction(24000, 1001) and (source.info.width, source.info.height) == (45, 31)
    decoded = list(iter_frames(source.path))
    assert len(decoded) == 3 and np.abs(decoded[1].astype(int) - frames[1]).mean() < 1.5


def test_frame_folder_write_error_is_raised(tmp_path: Path) -> None:
    """A PNG that cannot be written (here: a full device) raises, so a frame folder is never committed with
    truncated frames (cv2.imwrite reports success on a full disk)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "000000.png").symlink_to("/dev/full")
    with pytest.raises(OSError) as err, FrameSink(folder, fps=25) as sink:
        sink.write(np.zeros((8, 8, 3), np.uint8))
    assert err.value.errno == 28  # ENOSPC
