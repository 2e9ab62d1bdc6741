"""The VapourSynth filter: determinism under any request pattern, vspipe -> ffmpeg/x264, formats and errors."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

vs = pytest.importorskip("vapoursynth")

from data.face_scenes import two_face_scene  # noqa: E402
from media import keep_scene, write_video  # noqa: E402
from threaded_requests import request_concurrently  # noqa: E402
from vs_keep.models.synthetic import write_synthetic_checkpoint  # noqa: E402

pytestmark = pytest.mark.vapoursynth
ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "plugin" / "templates" / "keep_vspipe.vpy"
VSPIPE = Path(sys.executable).parent / "vspipe"
N, CHUNK = 14, 6


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("plugin")
    odd = write_video(d / "odd.mp4", [f[:63, :127] for f in two_face_scene(n=4).frames], fps=25, audio=False)
    return {**keep_scene(d, N), "odd": odd}


def rgb_of(frame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)], axis=-1)


def restored_clip(media: dict[str, Path], **kw):
    from vs_keep import keep
    from vs_keep.plugin import source

    return keep(source(media["video"]), weights=str(media["weights"]), chunk=CHUNK, **kw)


def vspipe(media: dict[str, Path], *extra: str, threads: int | None = None, video: str = "video", timeout: int = 600) -> bytes:
    cmd = [str(VSPIPE), "-c", "y4m", str(TEMPLATE), "-a", f"input={media[video]}", "-a", f"weights={media['weights']}",
           "-a", f"chunk={CHUNK}", *extra]
    if threads:
        cmd += ["-a", f"threads={threads}"]
    r = subprocess.run(cmd + ["-"], capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return r.stdout


def test_parallel_random_requests_equal_linear_pass(media) -> None:
    core = vs.core
    core.num_threads = 8
    linear_clip = restored_clip(media)
    linear = []
    for n in range(N):
        with linear_clip.get_frame(n) as f:
            linear.append((rgb_of(f).copy(), dict(f.props)))
    clip = restored_clip(media)  # a fresh filter: empty caches
    order = [13, 2, 7, 7, 0, 12, 5, 1, 6, 11, 3, 9, 4, 10, 8, 0, 13, 6]  # backward, repeated, wrapped
    random.Random(3).shuffle(order)

    def request(n: int) -> tuple:
        with clip.get_frame(n) as f:
            return rgb_of(f).copy(), dict(f.props)

    got = request_concurrently(request, order, threads=8)
    for n in range(N):
        assert np.array_equal(got[n][0], linear[n][0]), n
        assert got[n][1] == linear[n][1]
    props = linear[7][1]
    assert props["KeepChunkStart"] == 6 and props["KeepChunkEnd"] == 12
    assert [linear[n][1]["KeepFaces"] for n in range(6)] == [2] * 6  # both faces wholly inside the frame
    assert len(props["KeepLandmarks"]) == 10 * props["KeepFaces"]
    # restored where the faces are pasted, and not one bit changed anywhere else
    from vs_keep.plugin import source

    with source(media["video"]).get_frame(7) as f:
        changed = np.any(linear[7][0] != rgb_of(f), axis=-1)
    with restored_clip(media, mask_out=True).get_frame(7) as f:
        pasted = np.asarray(f[0]) > 0
    assert changed.sum() > 5000 and not (changed & ~pasted).any()


def test_vspipe_thread_counts_are_bit_identical(media) -> None:
    baseline = vspipe(media, threads=1)
    assert baseline.startswith(b"YUV4MPEG2")
    assert baseline.count(b"FRAME") == N
    for threads in (2, 8, 16):
        assert vspipe(media, threads=threads) == baseline, f"threads={threads}"


def test_vspipe_into_ffmpeg_and_x264(media, tmp_path: Path) -> None:
    if not shutil.which("ffmpeg") or not shutil.which("x264"):
        pytest.fail("ffmpeg and x264 are required (.ci/run installs them: apt-get install ffmpeg x264)")
    base = f"'{VSPIPE}' -c y4m '{TEMPLATE}' -a input='{media['video']}' -a weights='{media['weights']}' -a chunk={CHUNK} -"
    r = subprocess.run(f"set -o pipefail; {base} | ffmpeg -v error -i - -f null -", shell=True, executable="/bin/bash",
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    out = tmp_path / "out.264"
    r = subprocess.run(f"set -o pipefail; {base} | x264 --demuxer y4m --preset ultrafast -o '{out}' -", shell=True,
                       executable="/bin/bash", capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert out.stat().st_size > 1000


def test_odd_size_through_vspipe(media) -> None:
    """An odd-sized clip goes out as 4:4:4; no face is found in this crop, so every frame is the source's own
    conversion, bit for bit."""
    from vs_keep.plugin import source

    data = vspipe(media, video="odd")
    header, _, body = data.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 C444 W127 H63")
    frames, pos, size = [], 0, 3 * 127 * 63
    while pos < len(body):
        assert body.startswith(b"FRAME", pos)
        pos = body.index(b"\n", pos) + 1
        frames.append(body[pos : pos + size])
        pos += size
    assert len(frames) == 4 and all(len(f) == size for f in frames)
    want = source(media["odd"]).resize.Bicubic(format=vs.YUV444P8, matrix_s="709")
    for n, got in enumerate(frames):
        with want.get_frame(n) as f:
            assert got == b"".join(np.asarray(f[p]).tobytes() for p in range(3)), n


def test_formats_round_trip(media) -> None:
    from vs_keep import keep
    from vs_keep.plugin import source

    src = source(media["video"])
    rgbs = src.resize.Point(format=vs.RGBS)
    out = keep(rgbs, weights=str(media["weights"]), chunk=CHUNK)
    assert out.format.id == vs.RGBS and out.num_frames == N
    ref = keep(src, weights=str(media["weights"]), chunk=CHUNK)
    with out.get_frame(3) as f, ref.get_frame(3) as g:
        a, b = rgb_of(f), rgb_of(g).astype(np.float32) / 255
        assert np.abs(a - b).mean() < 2 / 255  # float path = uint8 path up to quantisation
    yuv = src.resize.Bicubic(format=vs.YUV420P8, matrix_s="709")
    out = keep(yuv, weights=str(media["weights"]), chunk=CHUNK)
    assert out.format.id == vs.YUV420P8 and (out.width, out.height) == (320, 240)
    with out.get_frame(0) as f:
        assert f.props["_Matrix"] == 1
    up = keep(src, weights=str(media["weights"]), chunk=CHUNK, upscale=2)
    assert (up.width, up.height) == (640, 480)
    with up.get_frame(1) as f:
        assert f.width == 640


def test_clear_errors(media, tmp_path: Path) -> None:
    from vs_keep import keep
    from vs_keep.plugin import source

    core = vs.core
    w = str(media["weights"])
    src = source(media["video"])
    yuv = core.std.BlankClip(format=vs.YUV420P8, width=64, height=64, length=2)
    with pytest.raises(vs.Error, match="keep: .*matrix_in_s"):
        keep(yuv, weights=w)
    with pytest.raises(vs.Error, match="keep: gray must be 'auto', True or False"):
        keep(src, weights=w, gray="yes")
    with pytest.raises(vs.Error, match="keep: scene_detect must be one of 'auto', 'props'"):
        keep(src, weights=w, scene_detect="histogram")
    with pytest.raises(vs.Error, match="keep: chunk must be"):
        keep(src, weights=w, chunk=0)
    with pytest.raises(vs.Error, match="keep: faces must be"):
        keep(src, weights=w, faces="some")
    with pytest.raises(vs.Error, match="keep: decoder must be one of auto, torch"):
        keep(src, weights=w, decoder="trt")
    with pytest.raises(vs.Error, match="keep: decoder='tensorrt' needs CUDA"):
        keep(src, weights=w, device="cpu", decoder="tensorrt")
    with pytest.raises(vs.Error, match="keep: .*does not exist"):
        keep(src, weights=str(tmp_path / "missing.pth"))
    cf = write_synthetic_checkpoint(tmp_path / "cf.pth", "codeformer", "small")
    with pytest.raises(vs.Error, match="keep: .*'codeformer' model"):
        keep(src, weights=str(cf))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(vs.Error, match="keep: .*not a PyTorch checkpoint"):
        keep(src, weights=str(bad))
    with pytest.raises(vs.Error, match="keep: clip must be"):
        keep("not a clip", weights=w)


def test_codeformer_per_frame(media, tmp_path: Path) -> None:
    from vs_keep import keep
    from vs_keep.plugin import source

    cf = write_synthetic_checkpoint(tmp_path / "cf.pth", "codeformer", "small")
    src = source(media["video"])
    out = keep(src, weights=str(cf), model="codeformer", fidelity=0.7)
    with out.get_frame(5) as f, src.get_frame(5) as g:
        assert f.props["KeepFaces"] == 2  # both faces wholly inside the frame
        assert np.any(rgb_of(f) != rgb_of(g), axis=-1).sum() > 5000
