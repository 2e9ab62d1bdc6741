"""The CUDA frame path, executed on CPU: frames as torch tensors go through the same engine functions
(detect_faces / align_face / paste_faces) the engine calls on CUDA, with the torch twins of the
CuPy kernels (which tests/test_kernel_harness.py proves equal to the kernel text). Compared with the OpenCV path
on real photos and a real (small synthetic) KEEP model.

Tolerances: the tensor path samples at exact positions where cv2's float warps round them to 1/32 pixel, resizes
with float weights where cv2 uses 11-bit fixed point for uint8, and sums in another order; on [0, 1] crops that
is below 5e-5, on uint8 frames one level where a value sits at a rounding boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.face_scenes import astronaut, grace_hopper
from vs_keep.errors import InputError
from vs_keep.face import FacePaste, align_face, alignment_matrix, create_detector, detect_faces, paste_faces
from vs_keep.geometry import paste_geometry
from vs_keep.kernels import plan_paste
from vs_keep.kernels.select import FRAMES_ENV_VAR, frame_device
from vs_keep.models.synthetic import write_synthetic_checkpoint

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(600)]

ASTRONAUT_LM = np.array([[204.0, 100.9], [247.1, 103.2], [225.7, 128.9], [201.3, 139.6], [245.7, 141.4]])
GRACE_LM = np.array([[220.5, 173.4], [308.5, 169.6], [269.1, 222.7], [234.0, 263.7], [306.9, 260.1]])


def test_frame_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FRAMES_ENV_VAR, raising=False)
    assert frame_device("cpu") is None and frame_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setenv(FRAMES_ENV_VAR, "host")
    assert frame_device("cuda") is None
    monkeypatch.setenv(FRAMES_ENV_VAR, "device")
    assert frame_device("cpu") == torch.device("cpu")
    monkeypatch.setenv(FRAMES_ENV_VAR, "gpu")
    with pytest.raises(InputError, match=FRAMES_ENV_VAR):
        frame_device("cpu")


def test_detection_on_tensor_frames_matches_cv2_path() -> None:
    det = create_detector("mtcnn", "cpu")
    for img in (astronaut(), grace_hopper()):
        host = detect_faces(det, img)
        dev = detect_faces(det, torch.from_numpy(img))
        assert len(host) == len(dev) >= 1
        for a, b in zip(host, dev):
            assert np.abs(a.landmarks - b.landmarks).max() < 1e-3 and np.abs(a.box - b.box).max() < 1e-3
            assert abs(a.score - b.score) < 1e-5


@pytest.mark.parametrize("antialias", [True, False])
def test_alignment_on_tensor_frames_matches_cv2_path(antialias: bool) -> None:
    for img, lm in ((astronaut(), ASTRONAUT_LM), (grace_hopper(), GRACE_LM)):
        for size in (512, 96):  # 96: shrinking, so the Gaussian prefilter runs
            m = alignment_matrix(lm, size)
            for frame in (img, img.astype(np.float32) / 255):
                host = align_face(frame, m, size, antialias=antialias)
                dev = align_face(torch.from_numpy(frame), m, size, antialias=antialias)
                assert isinstance(dev, torch.Tensor) and dev.dtype == torch.float32 and dev.shape == (size, size, 3)
                assert np.abs(dev.numpy() - host).max() < 5e-5
    outside = alignment_matrix(ASTRONAUT_LM + 3000, 64)
    assert np.array_equal(align_face(torch.from_numpy(astronaut()), outside, 64).numpy(), align_face(astronaut(), outside, 64))


def test_paste_geometry_is_one_implementation() -> None:
    m = alignment_matrix(GRACE_LM, 512)
    for up in (1, 2, 4):
        inv, side, box = paste_geometry(m, 512, up, (512 * up, 512 * up))
        plan = plan_paste(m, 512, (512 * up, 512 * up), up)
        assert plan.box == box and plan.side == side and np.array_equal(plan.inv, inv)


@pytest.mark.parametrize("upscale", [1, 2])
def test_paste_on_tensor_frames_matches_cv2_path(upscale: int) -> None:
    frame = astronaut()
    face = grace_hopper().astype(np.float32) / 255
    faces = [FacePaste(face, alignment_matrix(ASTRONAUT_LM, 512)), FacePaste(face[:, ::-1].copy(), alignment_matrix(ASTRONAUT_LM + [40, 15], 512))]
    dev_faces = [FacePaste(torch.from_numpy(f.image), f.matrix) for f in faces]
    for fr in (frame, frame.astype(np.float32) / 255):
        host = paste_faces(fr, faces, upscale=upscale)
        dev = paste_faces(torch.from_numpy(fr), dev_faces, upscale=upscale)
        assert isinstance(dev, torch.Tensor) and dev.dtype == torch.from_numpy(fr).dtype and dev.shape == host.shape
        diff = np.abs(dev.numpy().astype(np.float64) - host.astype(np.float64))
        if fr.dtype == np.uint8:
            assert diff.max() <= 1 and (diff > 0).mean() < (0.002 if upscale == 1 else 0.1)
        else:
            assert diff.max() < 1e-4


def test_random_access_engine_tensor_frames_match_host_frames(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the filter and `vs-keep restore` run (build_engine + restore_stream), frames kept as tensors vs numpy."""
    import cv2

    from vs_keep.engine import EngineOptions, build_engine
    from vs_keep.stream import restore_stream

    path = write_synthetic_checkpoint(tmp_path / "keep_small.pth", "keep", "small")
    img = astronaut()
    frames = [cv2.warpAffine(img, np.float64([[1, 0, -(150 + 1.5 * i)], [0, 1, -(40 + 0.7 * i)]]), (160, 160)) for i in range(4)]
    out = {}
    for mode in ("host", "device"):
        monkeypatch.setenv(FRAMES_ENV_VAR, mode)
        engine = build_engine(EngineOptions(weights=str(path), device="cpu", chunk=2, scene_reset=False, download=False))
        assert (engine.frame_device is None) == (mode == "host")
        out[mode] = list(restore_stream(engine, iter(frames), len(frames)))
        if mode == "device":  # each frame was copied to the device once, though detection, crops and paste all used it
            assert len(engine._device_frames._items) == len(frames)
        out[mode + "_layer"] = list(restore_stream(engine, iter(frames), len(frames), layer=True))
    for mode in ("host", "device"):  # faces as colour + alpha (issue 12): host arrays on both paths, = the paste
        for r, layer, f in zip(out[mode], out[mode + "_layer"], frames):
            assert isinstance(layer.image, np.ndarray) and isinstance(layer.alpha, np.ndarray) and layer.alpha.max() > 0.99
            a = layer.alpha[..., None]
            over = np.rint((f / 255.0 * (1 - a) + layer.image * a) * 255.0)
            assert np.abs(over - r.image).max() <= 1, mode  # paste_faces rounds once; the layer is float
    for a, b, f in zip(out["host"], out["device"], frames):
        assert isinstance(b.image, np.ndarray) and b.image.dtype == np.uint8 and len(a.faces) == len(b.faces) == 1
        diff = np.abs(a.image.astype(int) - b.image.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())
        assert np.abs(a.image.astype(int) - f.astype(int)).mean() > 1


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_asked_for_but_missing_is_an_error_naming_the_package() -> None:
    from vs_keep.runtime.backends import TensorRTBackend

    with pytest.raises(InputError, match=r"decoder='tensorrt' cannot run: TensorRT is not installed \(pip install tensorrt\)"):
        TensorRTBackend().decoder(torch.nn.Linear(1, 1))  # an error, never a silent run in PyTorch


# ---- on a GPU (scripts/gpu-check.sh runs these) ------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_cupy = pytest.mark.skipif(
    not torch.cuda.is_available() or __import__("importlib").util.find_spec("cupy") is None, reason="needs CUDA and CuPy"
)


@pytest.mark.cuda
@needs_cupy
def test_cupy_kernels_pass_their_self_check_on_this_gpu() -> None:
    from vs_keep.kernels.cupy_impl import cupy_launch
    from vs_keep.kernels.selfcheck import check_kernel

    for name in ("flow_warp", "affine_crop", "paste_blend"):
        assert check_kernel(name, cupy_launch, "cuda") is None


@pytest.mark.cuda
@needs_cuda
def test_cuda_pipeline_keeps_frames_on_the_gpu_and_matches_the_host_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    monkeypatch.delenv(FRAMES_ENV_VAR, raising=False)
    path = write_synthetic_checkpoint(tmp_path / "keep_small.pth", "keep", "small")
    img = astronaut()
    frames = [cv2.warpAffine(img, np.float64([[1, 0, -(150 + 1.5 * i)], [0, 1, -(40 + 0.7 * i)]]), (160, 160)) for i in range(4)]
    from vs_keep.engine import EngineOptions, build_engine
    from vs_keep.stream import restore_stream

    out = {}
    for device in ("cpu", "cuda"):
        engine = build_engine(EngineOptions(weights=str(path), device=device, chunk=2, scene_reset=False, download=False))
        assert (engine.frame_device is not None) == (device == "cuda")
        out[device] = list(restore_stream(engine, iter(frames), len(frames)))
    for a, b in zip(out["cpu"], out["cuda"]):
        assert isinstance(b.image, np.ndarray) and len(a.faces) == len(b.faces) == 1
        diff = np.abs(a.image.astype(int) - b.image.astype(int))
        assert diff.max() <= 3 and diff.mean() < 0.1, (diff.max(), diff.mean())  # GPU fp32 convolutions: other sums
