"""The restorer's controls, through the filter and the CLI: one composer (the same frames from `keep()` and
`vs-keep restore`), strength=, max_face=, select= and bg_clip=, and one clear error per bad value.

A 10-bit 4:2:0 FFV1 file with two faces (BT.709, limited range) is the input of both front ends; the filter reads
the very same planes (put into a YUV420P10 clip), so their outputs can be compared bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

vs = pytest.importorskip("vapoursynth")
av = pytest.importorskip("av")

from data.face_scenes import two_face_scene  # noqa: E402
from test_cli_formats import decoded, grainy16, write_10bit  # noqa: E402
from vs_keep.models.synthetic import write_synthetic_checkpoint  # noqa: E402

pytestmark = [pytest.mark.vapoursynth, pytest.mark.usefixtures("one_thread")]
core = vs.core
N = 3
PTS = [0, 40, 80]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("w") / "keep_small.pth", "keep", "small")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = [grainy16(f, i) for i, f in enumerate(two_face_scene(n=N).frames)]
    return write_10bit(tmp_path_factory.mktemp("src") / "in.mkv", frames, PTS)


@pytest.fixture(scope="module")
def background(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for a user's upscaled clip: the scene at 2x (Lanczos), 10-bit FFV1 like the source."""
    frames = [grainy16(cv2.resize(f, (640, 480), interpolation=cv2.INTER_LANCZOS4), 9 + i)
              for i, f in enumerate(two_face_scene(n=N).frames)]
    return write_10bit(tmp_path_factory.mktemp("bg") / "bg.mkv", frames, PTS)


def clip_of(path: Path) -> vs.VideoNode:
    """The decoded planes of `path` as a YUV420P10 clip tagged like the file (BT.709, limited range)."""
    frames = [x["planes"] for x in decoded(path)]
    h, w = frames[0][0].shape
    blank = core.std.BlankClip(format=vs.YUV420P10, width=w, height=h, length=len(frames))

    def put(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][p])
        out.props["_Matrix"], out.props["_Range"] = 1, 0
        return out

    return blank.std.ModifyFrame(blank, put)


def planes(clip: vs.VideoNode, n: int) -> list[np.ndarray]:
    with clip.get_frame(n) as f:
        return [np.array(f[p]) for p in range(f.format.num_planes)]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the filter side runs with one torch thread too (fp32 parity)
    return subprocess.run([sys.executable, "-m", "vs_keep", "restore", *args, "--no-progress", "--device", "cpu"],
                          capture_output=True, text=True, timeout=900, env=env)


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.timeout(900)
def test_filter_and_cli_give_the_same_frames(weights: Path, source: Path, background: Path, tmp_path: Path) -> None:
    """One composer: keep() and `vs-keep restore --codec ffv1` on the same 10-bit 4:2:0 planes, bit for bit; also
    with strength=0.6, and with upscale=2 over the user's background (bg_clip= / --background)."""
    from vs_keep import keep

    src = clip_of(source)
    variants = [((), {}), (("--strength", "0.6"), dict(strength=0.6)),
                (("--upscale", "2", "--background", str(background)), dict(upscale=2, bg_clip=clip_of(background)))]
    for i, (extra, kw) in enumerate(variants):
        out = tmp_path / f"out{i}.mkv"
        r = cli(str(source), str(out), "--weights", str(weights), "--chunk", str(N), "--codec", "ffv1", *extra)
        assert r.returncode == 0, r.stderr[-3000:]
        filt = keep(src, weights=str(weights), chunk=N, device="cpu", **kw)
        got = [x["planes"] for x in decoded(out)]
        assert len(got) == N
        for n in range(N):
            mine = planes(filt, n)
            assert mine[0].dtype == np.uint16 and same(mine, got[n]), (extra, n)
            with filt.get_frame(n) as f:
                assert f.props["KeepFaces"] == 2
        if not kw:
            assert not same(planes(filt, 1), planes(src, 1))  # faces were restored


@pytest.mark.timeout(600)
def test_strength_mixes_inside_the_alpha_only(weights: Path, source: Path) -> None:
    from vs_keep import keep

    src = clip_of(source)
    assert keep(src, weights=str(weights), strength=0) is src  # the input itself: no model is loaded
    full = keep(src, weights=str(weights), chunk=N, device="cpu")
    half = keep(src, weights=str(weights), chunk=N, device="cpu", strength=0.5)
    alpha = keep(src, weights=str(weights), chunk=N, device="cpu", strength=0.5, mask_out=True)
    n = 1
    s, f, h = (planes(c, n)[0].astype(np.float64) for c in (src, full, half))
    a = planes(alpha, n)[0]
    assert a.max() == 0.5
    assert np.array_equal(h[a == 0], s[a == 0])  # outside the faces: the input, bit for bit
    inside = a == 0.5
    assert inside.mean() > 0.02
    assert np.abs(h - (s + 0.5 * (f - s)))[inside].max() <= 1.0  # the mix (one code of rounding)


@pytest.mark.timeout(600)
def test_select_mask_and_max_face_choose_the_faces(weights: Path, source: Path) -> None:
    from vs_keep import keep

    src = clip_of(source)
    w, h = src.width, src.height
    zero = core.std.BlankClip(src, format=vs.GRAY8, color=0)
    out = keep(src, weights=str(weights), chunk=N, device="cpu", select=zero)
    for n in range(N):
        assert same(planes(out, n), planes(src, n))  # an all-zero mask: the input, bit for bit
    left = core.std.StackHorizontal([core.std.BlankClip(zero, width=w // 2, color=255),
                                     core.std.BlankClip(zero, width=w - w // 2, color=0)])
    out = keep(src, weights=str(weights), chunk=N, device="cpu", select=left)
    with out.get_frame(1) as f:
        assert f.props["KeepFaces"] == 1 and np.asarray(f.props["KeepLandmarks"])[0::2].max() < w / 2  # the left face
    assert h == 240
    big = keep(src, weights=str(weights), chunk=N, device="cpu", max_face=30)  # both faces are larger
    for n in range(N):
        assert same(planes(big, n), planes(src, n))


@pytest.mark.timeout(600)
def test_bg_clip_is_the_upscaled_background(weights: Path, source: Path) -> None:
    from vs_keep import keep

    src = clip_of(source)
    bg = src.resize.Spline36(src.width * 2, src.height * 2)
    out = keep(src, weights=str(weights), chunk=N, device="cpu", upscale=2, bg_clip=bg)
    alpha = keep(src, weights=str(weights), chunk=N, device="cpu", upscale=2, mask_out=True)
    assert (out.width, out.height, out.format.id) == (bg.width, bg.height, bg.format.id)
    a = planes(alpha, 1)[0]
    got, want = planes(out, 1), planes(bg, 1)
    untouched = cv2.resize((a == 0).astype(np.uint8), (bg.width // 2, bg.height // 2), interpolation=cv2.INTER_AREA) == 1
    assert np.array_equal(got[0][a == 0], want[0][a == 0]) and (got[0] != want[0])[a == 1].mean() > 0.5
    assert np.array_equal(got[1][untouched], want[1][untouched])


def test_bad_values_give_one_error_naming_the_option(weights: Path, source: Path) -> None:
    from vs_keep import keep

    src = clip_of(source)
    gray = core.std.BlankClip(src, format=vs.GRAY8)
    cases = [
        (dict(strength=1.5), "strength must be a number in [0, 1]"),
        (dict(strength="half"), "strength must be a number in [0, 1]"),
        (dict(max_face=10), "max_face must be a box side in px >= min_face=20"),
        (dict(select=src), "select must be a GRAY mask clip"),
        (dict(select=gray.resize.Point(64, 64)), "select is 64x64, 3 frames; it must match the clip"),
        (dict(select=gray[:2]), "select is 320x240, 2 frames"),
        (dict(bg_clip=src), "bg_clip is the background of upscale > 1"),
        (dict(upscale=2, bg_clip=src), "bg_clip is 320x240, 3 frames; with upscale=2 it must be 640x480"),
        (dict(upscale=2, bg_clip=src.resize.Point(640, 480, format=vs.YUV420P16)), "bg_clip is YUV420P16, the clip YUV420P10"),
    ]
    for kw, message in cases:
        with pytest.raises(vs.Error) as e:
            keep(src, weights=str(weights), device="cpu", download=False, **kw)
        text = str(e.value)
        assert text.startswith("keep: ") and message in text and "\n" not in text, (kw, text)


@pytest.mark.timeout(600)
def test_cli_controls_and_their_errors(weights: Path, source: Path, tmp_path: Path) -> None:
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((240, 320), np.uint8))
    base = [str(source), "--weights", str(weights), "--chunk", str(N), "--codec", "ffv1"]
    want = [x["planes"] for x in decoded(source)]
    for extra in (["--select-mask", str(black)], ["--strength", "0"], ["--max-face", "30"]):
        out = tmp_path / "o.mkv"
        r = cli(base[0], str(out), *base[1:], *extra)
        assert r.returncode == 0, r.stderr[-3000:]
        assert all(same(g["planes"], w) for g, w in zip(decoded(out), want, strict=True)), extra  # the input back
        out.unlink()
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((10, 10), np.uint8))
    cases = [
        (["--strength", "1.5"], "--strength must be a number in [0, 1]"),
        (["--max-face", "10"], "--max-face must be a box side in px >= min_face=20"),
        (["--select-mask", str(tmp_path / "none.png")], "--select-mask"),
        (["--select-mask", str(small)], "is 10x10, the input 320x240: make the mask the input's size"),
        (["--background", str(source)], "--background is the background of --upscale"),
        (["--background", str(source), "--upscale", "2"], "with --upscale 2 it must be 640x480"),
    ]
    for extra, message in cases:
        r = cli(base[0], str(tmp_path / "x.mkv"), *base[1:], *extra)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr and len(lines) == 1, (extra, r.stderr)
        assert not (tmp_path / "x.mkv").exists()


@pytest.mark.timeout(900)
def test_a_video_of_masks_selects_per_frame_before_tracking(weights: Path, source: Path, tmp_path: Path) -> None:
    """The left face is let through on frames 0 and 2 only. With max_gap=0 frame 1 is the input bit for bit (the
    track restarts after the gap); by default the tracker bridges frame 1 like a missed detection. The CLI reading
    a mask video gives the filter's frames."""
    from vs_keep import keep

    src = clip_of(source)
    masks = [np.zeros((240, 320), np.uint8) for _ in range(N)]
    masks[0][:, :160] = masks[2][:, :160] = 255
    video = tmp_path / "masks.mkv"
    with av.open(str(video), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "gray"
        for m in masks:
            for p in s.encode(av.VideoFrame.from_ndarray(m, format="gray")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    blank = core.std.BlankClip(src, format=vs.GRAY8)

    def put(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        np.copyto(np.asarray(out[0]), masks[n])
        return out

    select = blank.std.ModifyFrame(blank, put)
    strict = keep(src, weights=str(weights), chunk=N, device="cpu", select=select, max_gap=0)
    bridged = keep(src, weights=str(weights), chunk=N, device="cpu", select=select)
    assert same(planes(strict, 1), planes(src, 1))
    for n in (0, 2):
        with strict.get_frame(n) as f:
            assert f.props["KeepFaces"] == 1 and not same(planes(strict, n), planes(src, n))
    with bridged.get_frame(1) as f:
        assert f.props["KeepFaces"] == 1 and np.atleast_1d(f.props["KeepDetected"]).tolist() == [0]  # bridged
    out = tmp_path / "sel.mkv"
    r = cli(str(source), str(out), "--weights", str(weights), "--chunk", str(N), "--codec", "ffv1",
            "--select-mask", str(video), "--max-gap", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    for n, got in enumerate(decoded(out)):
        assert same(got["planes"], planes(strict, n)), n


def test_mask_video_frames_in_any_order(tmp_path: Path) -> None:
    """`--select-mask` video: frame n's mask whatever was read before it (forward, back past the window, far
    ahead), so a piece or shard starting late reads the same masks as one pass."""
    from vs_keep.select_mask import WINDOW, MaskFrames

    count = WINDOW + 20
    masks = [np.zeros((16, 32), np.uint8) for _ in range(count)]
    for n, m in enumerate(masks):
        m[n % 16, (n // 16) % 32] = 255  # one lit sample, a different one on every frame
    video = tmp_path / "masks.mkv"
    with av.open(str(video), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 32, 16, "gray"
        for m in masks:
            for p in s.encode(av.VideoFrame.from_ndarray(m, format="gray")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    read = MaskFrames(video).check(32, 16, count)
    for n in (5, 3, count - 1, 0, WINDOW + 1, 1, 2, count - 2):
        assert np.array_equal(read(n), masks[n] > 0), n
