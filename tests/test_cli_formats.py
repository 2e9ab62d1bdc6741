"""`vs-keep restore` keeps what film work needs: pixel format and depth, the four colour tags, per-frame
timestamps (VFR stays VFR), and with a lossless codec every sample outside the faces, bit for bit."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.face_scenes import two_face_scene
from eval_clips import panning_frames
from vs_keep.models.synthetic import write_synthetic_checkpoint

av = pytest.importorskip("av")

PTS_MS = [0, 40, 90, 130]  # variable frame durations (40, 50, 40 ms)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "keep_small.pth", "keep", "small")


def grainy16(rgb: np.ndarray, seed: int) -> np.ndarray:
    """uint8 photo -> rgb48 with film grain (so every low bit of a 10-bit sample varies)."""
    rng = np.random.default_rng(seed)
    x = rgb.astype(np.float32) * 257 + rng.normal(0, 600, rgb.shape)
    return np.ascontiguousarray(np.clip(np.rint(x), 0, 65535).astype(np.uint16))


def write_10bit(path: Path, frames: list[np.ndarray], pts_ms: list[int]) -> Path:
    """FFV1 yuv420p10le in Matroska, BT.709 matrix/primaries/transfer, limited range, timestamps `pts_ms` (ms)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p10le"
        s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        ctx = s.codec_context
        ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc = 1, 1, 1, 1
        for f, t in zip(frames, pts_ms):
            fr = av.VideoFrame.from_ndarray(f, format="rgb48le").reformat(
                format="yuv420p10le", dst_colorspace=1, src_color_range=2, dst_color_range=1)
            fr.colorspace, fr.color_range, fr.color_primaries, fr.color_trc = 1, 1, 1, 1
            fr.pts, fr.time_base = t, Fraction(1, 1000)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def decoded(path: Path) -> list[dict]:
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            out.append({
                "fmt": f.format.name, "time": f.pts * f.time_base,
                "tags": (int(f.colorspace), int(f.color_range), int(f.color_primaries), int(f.color_trc)),
                "planes": [np.array(np.frombuffer(memoryview(p), "<u2").reshape(p.height, -1)[:, :p.width]) for p in f.planes],
            })
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vs_keep", "restore", *args, "--no-progress", "--device", "cpu"],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.timeout(900)
def test_10bit_vfr_bt709_comes_back_as_it_went_in(weights: Path, tmp_path: Path) -> None:
    frames = [grainy16(f, i) for i, f in enumerate(two_face_scene(n=len(PTS_MS)).frames)]
    src = write_10bit(tmp_path / "in.mkv", frames, PTS_MS)
    out = tmp_path / "out.mkv"
    r = cli(str(src), str(out), "--weights", str(weights), "--chunk", "4", "--codec", "ffv1")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = decoded(src), decoded(out)
    assert len(a) == len(b) == len(PTS_MS)
    assert [x["time"] for x in b] == [Fraction(t, 1000) for t in PTS_MS]  # VFR kept
    for x, y in zip(a, b):
        assert y["fmt"] == "yuv420p10le" and y["tags"] == x["tags"] == (1, 1, 1, 1)
    # faces restored; far from them (the right-hand background strip, chroma included) not one sample moved
    luma_in, luma_out = a[0]["planes"][0], b[0]["planes"][0]
    assert np.abs(luma_in.astype(int) - luma_out.astype(int))[50:110, 30:90].mean() > 2
    for p, (s, d) in enumerate(zip(a[0]["planes"], b[0]["planes"])):
        k = 1 if p == 0 else 2
        assert np.array_equal(s[200 // k:, :], d[200 // k:, :]), p  # below both faces
    changed = np.any([s != d for s, d in zip(a[1]["planes"][:1], b[1]["planes"][:1])], axis=0)
    assert 0.02 < changed.mean() < 0.5


@pytest.mark.timeout(600)
def test_face_free_10bit_is_bit_identical_through_ffv1(weights: Path, tmp_path: Path) -> None:
    frames = [grainy16(cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA), i)
              for i, f in enumerate(panning_frames(n=3, size=256, image="coffee", origin=(300, 100)))]
    video = write_10bit(tmp_path / "plain.mkv", frames, PTS_MS[:3])
    (tmp_path / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:00,100\nHello\n\n2\n00:00:00,100 --> 00:00:00,130\nagain\n")
    src = tmp_path / "plain_av.mkv"  # + FLAC audio and SRT subtitles (ffmpeg, streams copied)
    r = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-f", "lavfi", "-i", "sine=f=440:d=0.2", "-i",
                        str(tmp_path / "subs.srt"), "-map", "0", "-map", "1", "-map", "2", "-c:v", "copy", "-c:a", "flac",
                        "-c:s", "srt", str(src)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "plain_out.mkv"
    r = cli(str(src), str(out), "--weights", str(weights), "--codec", "ffv1")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = decoded(src), decoded(out)
    assert len(a) == len(b) == 3
    with av.open(str(src)) as c, av.open(str(out)) as d:
        assert (len(d.streams.audio), len(d.streams.subtitles)) == (1, 1)
        subs = [[bytes(p) for p in x.demux(x.streams.subtitles[0]) if p.size] for x in (c, d)]
        assert subs[0] == subs[1] and len(subs[0]) == 2
    for x, y in zip(a, b):
        assert y["fmt"] == x["fmt"] == "yuv420p10le" and y["time"] == x["time"] and y["tags"] == x["tags"]
        for s, d in zip(x["planes"], y["planes"]):
            assert np.array_equal(s, d)
    # --pix-fmt overrides; the tags stay
    out8 = tmp_path / "out8.mkv"
    r = cli(str(src), str(out8), "--weights", str(weights), "--codec", "ffv1", "--pix-fmt", "yuv420p", "--scene-detect", "off")
    assert r.returncode == 0, r.stderr[-3000:]
    with av.open(str(out8)) as c:
        f = next(c.decode(video=0))
        assert f.format.name == "yuv420p" and (int(f.colorspace), int(f.color_primaries), int(f.color_trc)) == (1, 1, 1)
    r = cli(str(src), str(tmp_path / "x.mp4"), "--weights", str(weights), "--codec", "libx264", "--pix-fmt", "rgb48le")
    assert r.returncode == 1 and "--codec libx264 cannot encode rgb48le" in r.stderr and "Traceback" not in r.stderr


def test_stream_access_flags_cuts_as_frames_arrive() -> None:
    """The CLI's linear pass decides cuts with the filter's detector on (n-1, n) as frames are decoded."""
    from vs_keep.stream import StreamAccess
    from vs_keep.scene import is_cut

    shot_a = panning_frames(n=3, size=128, image="astronaut")
    shot_b = panning_frames(n=3, size=128, image="coffee", origin=(100, 100))
    access = StreamAccess(iter(shot_a + shot_b), 6, is_cut)
    assert [access.scene_start(n) for n in range(6)] == [False, False, False, True, False, False]
    assert not StreamAccess(iter(shot_a + shot_b), 6).scene_start(3)  # no detector: no cut


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le", "yuv444p16le", "gbrp10le", "gbrpf32le", "gray", "gray16le",
                                     "nv12", "rgb24", "yuvj420p"])
def test_pixels_merge_into_frame_in_the_frame_format(pix_fmt: str) -> None:
    """vs_keep.pixels.merge_into_frame (the CLI's merge) on a real photo with grain: same pixel format, tags and pts; no
    sample changes where the (area-resampled) alpha is 0; the face region takes the layer."""
    from vs_keep.pixels import merge_into_frame, to_rgb

    photo = grainy16(cv2.resize(two_face_scene(n=1).frames[0], (96, 72), interpolation=cv2.INTER_AREA), 3)
    frame = av.VideoFrame.from_ndarray(photo, format="rgb48le").reformat(
        format=pix_fmt, dst_colorspace=1, src_color_range=2, dst_color_range=2 if pix_fmt.startswith(("gbr", "rgb", "yuvj")) else 1)
    frame.colorspace, frame.color_primaries, frame.color_trc, frame.pts = 1, 1, 1, 7
    frame.time_base = Fraction(1, 1000)
    rgb = to_rgb(frame)
    deep = pix_fmt not in ("yuv420p", "gray", "nv12", "rgb24", "yuvj420p")
    assert rgb.shape == (72, 96, 3) and rgb.dtype == (np.float32 if deep else np.uint8)
    if not deep:
        rgb = rgb.astype(np.float32) / 255
    ref = photo.astype(np.float32) / 65535
    if pix_fmt.startswith("gray"):  # luma on R, G, B
        ref = np.repeat(ref @ np.float32([0.2126, 0.7152, 0.0722]), 3).reshape(ref.shape)
    assert np.abs(rgb - ref).mean() < 0.02  # the same picture
    layer = 1.0 - rgb  # something clearly different
    alpha = np.zeros((72, 96), np.float32)
    alpha[20:50, 30:70] = 1.0
    alpha[18:20, 30:70] = 0.5
    out = merge_into_frame(frame, layer, alpha)
    assert out.format.name == frame.format.name and out.pts == 7 and int(out.colorspace) == 1
    planar = out.reformat(format="gbrp16le" if frame.format.is_rgb else None) if pix_fmt in ("rgb24", "nv12") else out
    src = frame.reformat(format=planar.format.name) if planar is not out else frame
    def row_bytes(f, i: int) -> np.ndarray:  # the plane's samples as bytes, line padding cut off
        p = f.planes[i]
        comps = [c for c in f.format.components if c.plane == i]
        width = p.width * len(comps) * ((comps[0].bits + 7) // 8)
        return np.frombuffer(memoryview(p), np.uint8).reshape(p.height, -1)[:, :width]

    for i in range(len(src.planes)):
        a, b = row_bytes(src, i), row_bytes(planar, i)
        h = a.shape[0]
        sy = 72 // h
        assert np.array_equal(a[: 16 // sy], b[: 16 // sy]) and np.array_equal(a[52 // sy:], b[52 // sy:]), (pix_fmt, i)
        assert (a[24 // sy: 46 // sy] != b[24 // sy: 46 // sy]).mean() > 0.1, (pix_fmt, i)
    assert merge_into_frame(frame, layer, np.zeros_like(alpha)) is frame
    up = merge_into_frame(frame, None, None, upscale=2)
    assert up.format.name == pix_fmt and (up.width, up.height) == (192, 144) and up.pts == 7
