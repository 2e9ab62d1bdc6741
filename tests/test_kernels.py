"""Kernels: torch references against cv2 / scipy / the face helper on CPU; CuPy twins against them on CUDA."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from vs_keep.errors import InputError
from vs_keep.face.align import BORDER_RGB, alignment_matrix
from vs_keep.face.paste import FacePaste, paste_faces
from vs_keep.kernels import affine_crop, flow_warp, paste_face
from vs_keep.kernels.blur import erode, gaussian_blur
from vs_keep.kernels.select import ENV_VAR, kernel_mode, use_cupy
from vs_keep.kernels.warp import flow_warp_torch

LANDMARKS = np.array([[150, 120], [210, 125], [180, 160], [155, 200], [205, 203]], np.float32)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A smooth 300x400 RGB float frame in [0, 1] (bicubic upsampled noise: realistic gradients)."""
    base = np.random.default_rng(0).random((30, 40, 3)).astype(np.float32)
    return np.clip(cv2.resize(base, (400, 300), interpolation=cv2.INTER_CUBIC), 0, 1)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    base = np.random.default_rng(1).random((16, 16, 3)).astype(np.float32)
    return np.clip(cv2.resize(base, (128, 128), interpolation=cv2.INTER_CUBIC), 0, 1)


def exact_bilinear(img: np.ndarray, matrix: np.ndarray, size: int, border: tuple[float, ...]) -> np.ndarray:
    """float64 bilinear warp with constant border, independent of our code (scipy grid-constant)."""
    inv = cv2.invertAffineTransform(matrix.astype(np.float64))
    u, v = np.meshgrid(np.arange(size), np.arange(size))
    sx = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    sy = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    return np.stack(
        [ndimage.map_coordinates(img[..., c].astype(np.float64), [sy, sx], order=1, mode="grid-constant", cval=border[c]) for c in range(3)],
        -1,
    )


# ---- flow warp ------------------------------------------------------------------------------------------------


def test_flow_warp_matches_manual_bilinear() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, generator=g) * 2 - 1
    flow = (torch.rand(2, 2, 20, 24, generator=g) - 0.5) * 12  # reaches outside the image
    out = flow_warp(x, flow)
    xd, fd = x.double().numpy(), flow.double().numpy()
    ys, xs = np.mgrid[0:20, 0:24]
    for n in range(2):
        for c in range(3):
            ref = ndimage.map_coordinates(xd[n, c], [ys + fd[n, 1], xs + fd[n, 0]], order=1, mode="grid-constant", cval=0.0)
            assert np.abs(out[n, c].numpy() - ref).max() < 1e-5
    assert (flow_warp(x, torch.zeros_like(flow)) - x).abs().max() < 1e-5  # up to coordinate normalisation
    half = flow_warp(x.half(), flow)
    assert half.dtype == torch.float16 and (half.float() - out).abs().max() < 2e-3


def test_flow_warp_rejects_bad_shapes() -> None:
    with pytest.raises(InputError, match="flow must be"):
        flow_warp(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, 2))


# ---- affine crop ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [(0, 0), (-160, -130)], ids=["inside", "mostly-outside"])
def test_affine_crop_matches_cv2_and_exact_bilinear(frame: np.ndarray, shift: tuple[int, int]) -> None:
    img8 = np.clip(np.rint(frame * 255), 0, 255).astype(np.uint8)
    m = alignment_matrix(LANDMARKS + np.array(shift, np.float32), 128)
    crop = affine_crop(torch.from_numpy(img8), m, 128, border=BORDER_RGB)[0].permute(1, 2, 0).numpy()
    cv = cv2.warpAffine(img8.astype(np.float32), m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB)
    exact = exact_bilinear(img8, m, 128, BORDER_RGB)
    # float32 sample positions at ~400 px: ~1e-3 of a grey level
    assert np.abs(crop - exact).max() < 5e-3
    assert np.abs(crop - cv).max() < 5e-3
    if shift != (0, 0):
        assert (np.abs(crop - np.array(BORDER_RGB, np.float32)).max(axis=2) == 0).mean() > 0.3  # pure border area


def test_affine_crop_layouts_dtypes_and_normalisation(frame: np.ndarray) -> None:
    img8 = np.clip(np.rint(frame * 255), 0, 255).astype(np.uint8)
    ms = np.stack([alignment_matrix(LANDMARKS, 64), alignment_matrix(LANDMARKS + 7.5, 64)])
    hwc = torch.from_numpy(img8)
    chw_view = hwc.permute(2, 0, 1)  # strided view, not a copy
    planar = chw_view.float().contiguous()
    a = affine_crop(hwc, ms, 64, border=BORDER_RGB, scale=2 / 255, offset=-1.0)
    b = affine_crop(chw_view, ms, 64, layout="chw", border=BORDER_RGB, scale=2 / 255, offset=-1.0)
    c = affine_crop(planar, ms, 64, layout="chw", border=BORDER_RGB, scale=2 / 255, offset=-1.0)
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, b) and torch.equal(a, c)
    plain = affine_crop(hwc, ms, 64, border=BORDER_RGB)
    assert torch.allclose(a, plain * (2 / 255) - 1, atol=1e-6)
    assert -1.0 <= float(a.min()) and float(a.max()) <= 1.0
    half = affine_crop(hwc, ms, 64, border=BORDER_RGB, out_dtype=torch.float16)
    assert half.dtype == torch.float16 and (half.float() - plain).abs().max() <= 0.25  # fp16 ulp at 255
    assert affine_crop(hwc, ms[:0], 64).shape == (0, 3, 64, 64)
    with pytest.raises(InputError, match="border"):
        affine_crop(hwc, ms, 64, border=(1.0, 2.0))


# ---- blur / erode (mask building blocks) ----------------------------------------------------------------------


def test_blur_and_erode_match_cv2() -> None:
    x = np.random.default_rng(2).random((3, 50, 60)).astype(np.float32)
    for sigma, border, cv_border in [(1.3, "reflect", cv2.BORDER_REFLECT), (0.7, "reflect101", cv2.BORDER_DEFAULT), (6.0, "reflect", cv2.BORDER_REFLECT)]:
        ours = gaussian_blur(torch.from_numpy(x), sigma=sigma, border=border).numpy()
        ref = cv2.GaussianBlur(x.transpose(1, 2, 0), (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv_border).transpose(2, 0, 1)
        assert np.abs(ours - ref).max() < 1e-6
    for k in (3, 7, 21):
        ours = gaussian_blur(torch.from_numpy(x[0]), ksize=k, sigma=0.0).numpy()
        assert np.abs(ours - cv2.GaussianBlur(x[0], (k, k), 0)).max() < 1e-6
    for k in (0, 2, 4, 5):
        kernel = np.ones((k, k), np.uint8) if k > 0 else np.ones((3, 3), np.uint8)
        assert np.array_equal(erode(torch.from_numpy(x[0]), k).numpy(), cv2.erode(x[0], kernel))


# ---- paste ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,scale", [(128, 1.0), (512, 0.25)], ids=["enlarge", "shrink-antialiased"])
def test_paste_matches_face_helper(frame: np.ndarray, face: np.ndarray, size: int, scale: float) -> None:
    img = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1) if size != 128 else face
    m = alignment_matrix(LANDMARKS * scale + 40, size)
    img8 = np.clip(np.rint(frame * 255), 0, 255).astype(np.uint8)
    for canvas0, unit in ((frame, 1.0), (img8, 255.0)):
        ref = paste_faces(canvas0, [FacePaste(img, m)])  # helper defaults: anti-aliasing on, non-exact
        canvas = torch.from_numpy(canvas0.copy())
        plan = paste_face(canvas, torch.from_numpy(img.transpose(2, 0, 1).copy()), m, unit=unit)
        diff = np.abs(canvas.numpy().astype(np.float64) - ref.astype(np.float64))
        x0, y0, x1, y1 = plan.box
        outside = np.ones(diff.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert diff[outside].max() == 0  # nothing outside the face box changes
        if unit == 1.0:
            assert diff.max() < 1e-4
        else:  # uint8: a rounding boundary may flip a level
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
        assert np.abs(canvas.numpy().astype(np.float64) - canvas0).max() > 0.1 * unit  # the face really landed


def test_paste_chw_layout_and_parse_mask(frame: np.ndarray, face: np.ndarray) -> None:
    m = alignment_matrix(LANDMARKS, 128)
    parse = np.zeros((128, 128), np.float32)
    parse[32:96, 32:96] = 1.0
    ref = paste_faces(frame, [FacePaste(face, m, parse)])
    canvas = torch.from_numpy(frame.transpose(2, 0, 1).copy())
    paste_face(canvas, torch.from_numpy(face.transpose(2, 0, 1).copy()), m, layout="chw", parse_mask=torch.from_numpy(parse))
    # the helper warps the parse mask with cv2's 1/32-pixel bilinear; masks agree to a few 1e-3 at their edges
    assert np.abs(canvas.numpy().transpose(1, 2, 0) - ref).max() < 2e-2


# ---- selection ------------------------------------------------------------------------------------------------


def test_selection_env(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(1, 3, 4, 4)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert kernel_mode() == "torch"  # the CuPy twins are opt-in: never measured on a real GPU
    monkeypatch.setenv(ENV_VAR, "cupy")
    assert use_cupy("flow_warp", x) is False  # CPU tensors always use torch
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(InputError, match=ENV_VAR):
        use_cupy("flow_warp", x)


# ---- CuPy twins (CUDA only) -----------------------------------------------------------------------------------

needs_cupy = pytest.mark.skipif(
    not torch.cuda.is_available() or __import__("importlib").util.find_spec("cupy") is None, reason="needs CUDA and CuPy"
)


@pytest.mark.cuda
@needs_cupy
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cupy_flow_warp_matches_torch(dtype: torch.dtype) -> None:
    from vs_keep.kernels.cupy_impl import flow_warp_cupy

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, 64, 80, generator=g) * 2 - 1).cuda().to(dtype)
    flow = ((torch.rand(2, 2, 64, 80, generator=g) - 0.5) * 20).cuda()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # runs on the caller's current stream
        ours = flow_warp_cupy(x, flow)
    stream.synchronize()
    ref = flow_warp_torch(x, flow)
    tol = 1e-5 if dtype == torch.float32 else 1e-3
    assert ours.dtype == dtype and (ours.float() - ref.float()).abs().max() < tol


@pytest.mark.cuda
@needs_cupy
@pytest.mark.parametrize("src_dtype", [torch.uint8, torch.float16, torch.float32])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
def test_cupy_affine_crop_matches_torch(
    frame: np.ndarray, src_dtype: torch.dtype, out_dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vs_keep.kernels.cupy_impl import affine_crop_cupy
    from vs_keep.kernels.crop import sampling_matrices

    ms = np.stack([alignment_matrix(LANDMARKS, 128), alignment_matrix(LANDMARKS - 150, 128)])
    src = torch.from_numpy(frame * 255).cuda()
    src = src.round().to(torch.uint8) if src_dtype == torch.uint8 else src.to(src_dtype)
    coef = torch.from_numpy(sampling_matrices(ms, invert=True)).cuda()
    fill = torch.tensor(BORDER_RGB, dtype=torch.float32).cuda()
    ours = affine_crop_cupy(src.permute(2, 0, 1), coef, fill, 128, 2 / 255, -1.0, out_dtype)
    monkeypatch.setenv(ENV_VAR, "torch")
    ref = affine_crop(src, ms, 128, border=BORDER_RGB, scale=2 / 255, offset=-1.0, out_dtype=out_dtype)
    tol = 1e-6 if out_dtype == torch.float32 else 1e-3
    assert (ours.float() - ref.float()).abs().max() <= tol


@pytest.mark.cuda
@needs_cupy
@pytest.mark.parametrize("canvas_dtype", [torch.uint8, torch.float16, torch.float32])
def test_cupy_paste_matches_torch(frame: np.ndarray, face: np.ndarray, canvas_dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    m = alignment_matrix(LANDMARKS, 128)
    unit = 255.0 if canvas_dtype == torch.uint8 else 1.0
    base = torch.from_numpy(frame * unit)
    base = base.round().to(torch.uint8) if canvas_dtype == torch.uint8 else base.to(canvas_dtype)
    face_t = torch.from_numpy(face.transpose(2, 0, 1).copy())
    outs = {}
    for mode in ("cupy", "torch"):
        monkeypatch.setenv(ENV_VAR, mode)
        canvas = base.clone().cuda()
        paste_face(canvas, face_t.cuda(), m, unit=unit)
        outs[mode] = canvas.float().cpu()
    tol = 1.0 if canvas_dtype == torch.uint8 else (1e-6 if canvas_dtype == torch.float32 else 1e-3)
    assert (outs["cupy"] - outs["torch"]).abs().max() <= tol
