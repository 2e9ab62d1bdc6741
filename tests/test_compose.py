"""Film-grade compositing: the faces go back into the source in its own format and nothing else changes.

merge_into_clip() is tested directly on real photos with grain in every format film work uses (no model needed),
then keep() end to end with the small synthetic model on a few formats: same format out, every sample outside the
(dilated) paste squares equal to the input, samples inside changed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

vs = pytest.importorskip("vapoursynth")

from data.face_scenes import astronaut, grace_hopper, two_face_scene  # noqa: E402
from vs_keep.models.synthetic import write_synthetic_checkpoint  # noqa: E402

pytestmark = [pytest.mark.vapoursynth, pytest.mark.usefixtures("one_thread")]
core = vs.core
H, W = 144, 192

FORMATS = [
    vs.RGB24, vs.RGB27, vs.RGB30, vs.RGB48, vs.RGBH, vs.RGBS,
    vs.YUV420P8, vs.YUV420P10, vs.YUV420P16, vs.YUV422P10, vs.YUV444P8, vs.YUV444P12,
    vs.YUV420PS, vs.YUV422PH, vs.YUV444PS,
    vs.GRAY8, vs.GRAY16, vs.GRAYH, vs.GRAYS,
]


def grainy(img: np.ndarray, seed: int, sigma: float = 0.02) -> np.ndarray:
    """uint8 photo -> float32 RGB in [0, 1] with Gaussian film grain (every low bit of a 16-bit sample moves)."""
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float32) / 255 + rng.normal(0, sigma, img.shape).astype(np.float32), 0, 1)


def clip_of(frames: list[np.ndarray], fmt: int = vs.RGBS) -> vs.VideoNode:
    """A clip of float RGB frames converted to `fmt` (YUV/GRAY with BT.709; zimg's conversion = what a source gives)."""
    h, w = frames[0].shape[:2]
    blank = core.std.BlankClip(format=vs.RGBS, width=w, height=h, length=len(frames))

    def put(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][..., p])
        return out

    rgbs = blank.std.ModifyFrame(blank, put)
    target = core.get_video_format(fmt)
    if target.color_family == vs.RGB:
        return rgbs.resize.Point(format=fmt) if fmt != vs.RGBS else rgbs
    return rgbs.resize.Bicubic(format=fmt, matrix_s="709")


def planes(clip: vs.VideoNode, n: int = 0) -> list[np.ndarray]:
    with clip.get_frame(n) as f:
        return [np.array(f[p]) for p in range(f.format.num_planes)]


def gray_clip(a: np.ndarray) -> vs.VideoNode:
    blank = core.std.BlankClip(format=vs.GRAYS, width=a.shape[1], height=a.shape[0], length=1)

    def put(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        np.copyto(np.asarray(out[0]), a)
        return out

    return blank.std.ModifyFrame(blank, put)


def stacked(layer: np.ndarray, alpha: np.ndarray) -> vs.VideoNode:
    """The filter's face layer: R, G, B and alpha stacked vertically in one GRAYS frame (frames.layer_clip)."""
    return gray_clip(np.concatenate([layer[..., 0], layer[..., 1], layer[..., 2], alpha], axis=0))


def reach(mask: np.ndarray, fmt: vs.VideoFormat, plane: int, grow: int) -> np.ndarray:
    """Samples of `plane` whose luma footprint, dilated by `grow` px, meets `mask` (what merging may change)."""
    m = cv2.dilate(mask.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
    if plane == 0 or fmt.color_family != vs.YUV:
        return m
    sy, sx = 1 << fmt.subsampling_h, 1 << fmt.subsampling_w
    h, w = m.shape[0] // sy, m.shape[1] // sx
    return m[: h * sy, : w * sx].reshape(h, sy, w, sx).any(axis=(1, 3))


def soft_disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    """A paste-like alpha: 1 inside, soft edge, exactly 0 beyond r."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.hypot(xx - cx, yy - cy)
    return np.clip((r - d) / (0.3 * r), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    src = cv2.resize(astronaut()[0:360, 60:540], (W, H), interpolation=cv2.INTER_AREA)
    face = cv2.resize(grace_hopper()[40:400, 60:540], (W, H), interpolation=cv2.INTER_AREA)
    return {"src": grainy(src, 1), "layer": grainy(face, 2), "alpha": soft_disk(H, W, 90, 60, 40)}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: core.get_video_format(f).name)
def test_merge_into_clip_touches_only_the_alpha(fmt: int, photos) -> None:
    from vs_keep.planes import GRAY_WEIGHTS
    from vs_keep.plugin.frames import merge_into_clip, working_clip

    src = clip_of([photos["src"]], fmt)
    work = working_clip(src, gray=False)
    assert work.rgb.format.id in (vs.RGB24, vs.RGBS) and work.gray == (src.format.color_family == vs.GRAY)
    alpha = photos["alpha"]
    out = merge_into_clip(work, stacked(photos["layer"], alpha))
    assert out.format.id == fmt and (out.width, out.height) == (W, H)
    got, want = planes(out), planes(src)
    f = src.format
    for p, (g, s) in enumerate(zip(got, want)):
        outside = ~reach(alpha > 0, f, p, grow=2)
        assert outside.mean() > 0.5
        assert np.array_equal(g[outside], s[outside]), (f.name, p, np.abs(g.astype(float) - s.astype(float))[outside].max())
        inside = ~reach(alpha < 1, f, p, grow=2)  # alpha 1 over the whole footprint
        changed = (g != s)[inside].mean()
        assert changed > 0.9, (f.name, p, changed)
    # where alpha is 1 the result is the layer in the source's format: zimg's conversion at full resolution, chroma
    # box-averaged over each sample's footprint (one code / fp16 step); gray material gets the official bgr2gray luma
    top = photos["layer"]
    if f.color_family == vs.GRAY:
        top = np.repeat((top @ np.float32(GRAY_WEIGHTS))[..., None], 3, axis=2)
    full_res = core.query_video_format(f.color_family, f.sample_type, f.bits_per_sample, 0, 0).id
    ref = planes(clip_of([top], full_res))
    full = alpha >= 1
    tol = 1.01 if f.sample_type == vs.INTEGER else 2e-3
    for p, (g, r) in enumerate(zip(got, ref)):
        if g.shape != r.shape:
            sy, sx = r.shape[0] // g.shape[0], r.shape[1] // g.shape[1]
            r = r.astype(np.float64).reshape(g.shape[0], sy, g.shape[1], sx).mean(axis=(1, 3))
        core_ = ~reach(~full, f, p, grow=1)
        assert np.abs(g.astype(np.float64) - r.astype(np.float64))[core_].max() <= tol, (f.name, p)


@pytest.mark.parametrize("fmt", [vs.RGB48, vs.YUV420P10, vs.YUV422PH, vs.GRAY16], ids=lambda f: core.get_video_format(f).name)
def test_zero_alpha_gives_the_input_bit_for_bit(fmt: int, photos) -> None:
    from vs_keep.plugin.frames import merge_into_clip, working_clip

    src = clip_of([photos["src"]], fmt)
    out = merge_into_clip(working_clip(src, gray=False), stacked(photos["layer"], np.zeros((H, W), np.float32)))
    for g, s in zip(planes(out), planes(src)):
        assert np.array_equal(g, s)


def test_gray_auto_on_flat_chroma_keeps_chroma(photos) -> None:
    """A black-and-white scan delivered as YUV 4:2:0 10-bit: gray='auto' detects it (official is_gray), the model
    sees the replicated luma, chroma planes come back untouched everywhere, luma changes in the face."""
    from vs_keep.planes import is_gray
    from vs_keep.plugin.frames import merge_into_clip, working_clip

    mono = np.repeat(photos["src"].mean(axis=2, keepdims=True), 3, axis=2)
    src = clip_of([mono], vs.YUV420P10)
    work = working_clip(src)  # gray="auto"
    assert work.gray
    rgb = planes(work.rgb)
    assert np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[1], rgb[2])
    assert not working_clip(clip_of([photos["src"]], vs.YUV420P10)).gray  # colour photo: not gray
    assert is_gray(np.repeat(astronaut()[..., :1], 3, axis=2)) and not is_gray(astronaut())
    out = merge_into_clip(work, stacked(photos["layer"], photos["alpha"]))
    got, want = planes(out), planes(src)
    assert out.format.id == vs.YUV420P10
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])
    assert (got[0] != want[0])[photos["alpha"] >= 1].mean() > 0.9
    outside = ~reach(photos["alpha"] > 0, src.format, 0, grow=0)
    assert np.array_equal(got[0][outside], want[0][outside])


# ---------------------------------------------------------------------------------------------- keep() end to end

N = 3


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("compose") / "keep_small.pth", "keep", "small")


@pytest.fixture(scope="module")
def scene() -> list[np.ndarray]:
    return [grainy(f, 10 + i) for i, f in enumerate(two_face_scene(n=N).frames)]


def paste_squares(props, size: tuple[int, int], grow: int) -> np.ndarray:
    """Union of the boxes pasting can change (paste.face_region from the KeepLandmarks prop), dilated by `grow`."""
    from vs_keep.face import FacePaste, alignment_matrix
    from vs_keep.face.paste import face_region

    m = np.zeros(size, bool)
    lms = np.asarray(props["KeepLandmarks"], np.float64).reshape(-1, 5, 2)
    for lm in lms:
        face = FacePaste(np.zeros((512, 512, 3), np.float32), alignment_matrix(lm, 512))
        x0, y0, x1, y1 = face_region(face, size)
        m[max(y0 - grow, 0):y1 + grow, max(x0 - grow, 0):x1 + grow] = True
    return m


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fmt", [vs.RGB48, vs.RGB30, vs.YUV420P10, vs.YUV444PS, vs.RGBH, vs.GRAY8],
                         ids=lambda f: core.get_video_format(f).name)
def test_keep_restores_faces_and_nothing_else(fmt: int, weights, scene) -> None:
    from vs_keep import keep

    src = clip_of(scene, fmt)
    out = keep(src, weights=str(weights), chunk=N, device="cpu")
    assert out.format.id == fmt and out.num_frames == N
    n = 1
    with out.get_frame(n) as f:
        props = dict(f.props)
        got = [np.array(f[p]) for p in range(f.format.num_planes)]
    assert props["KeepFaces"] == 2
    want = planes(src, n)
    squares = paste_squares(props, (240, 320), grow=0)
    for p, (g, s) in enumerate(zip(got, want)):
        outside = ~reach(squares, src.format, p, grow=2)
        assert np.array_equal(g[outside], s[outside]), (src.format.name, p)
        inside = ~reach(~squares, src.format, p, grow=24)  # well inside the squares: the restored faces
        assert (g != s)[inside].mean() > 0.5, (src.format.name, p)
    if fmt == vs.RGB48:
        mask = keep(src, weights=str(weights), chunk=N, device="cpu", mask_out=True)
        assert mask.format.id == vs.GRAYS and (mask.width, mask.height) == (320, 240)
        a = planes(mask, n)[0]
        assert a.min() == 0.0 and a.max() == 1.0 and not a[~squares].any()
        changed = np.any([g != s for g, s in zip(got, want)], axis=0)
        assert not changed[a == 0].any() and changed[a == 1].mean() > 0.9
