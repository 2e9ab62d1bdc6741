"""PSNR/SSIM agree with scikit-image on real photos; LPIPS loads its weight layouts; ArcFace ONNX path works.

The ArcFace crop's similarity fit is `face.align.estimate_similarity`, tested in test_face_align.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vs_keep.evaluation import metrics


def _real_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Real photos against real-looking distortions: noise, JPEG, blur+shift."""
    import cv2

    rng = np.random.default_rng(7)
    pairs = []
    for name, crop in (("astronaut", np.s_[40:232, 120:312]), ("chelsea", np.s_[:200, 100:300]),
                       ("coffee", np.s_[100:356, 200:456])):
        img = np.ascontiguousarray(getattr(skimage.data, name)()[crop])
        noisy = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 30])
        jpeg = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
        blurred = np.roll(cv2.GaussianBlur(img, (0, 0), 1.5), 1, axis=1)
        pairs += [(img, noisy), (img, jpeg), (img, blurred)]
    return pairs


def test_psnr_ssim_match_skimage_rgb() -> None:
    for ref, out in _real_pairs():
        a, b = metrics.prepare(ref), metrics.prepare(out)
        want_psnr = peak_signal_noise_ratio(ref, out, data_range=255)
        want_ssim = structural_similarity(ref, out, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                          data_range=255, channel_axis=-1)
        assert abs(metrics.psnr(a, b) - want_psnr) < 1e-3
        assert abs(metrics.ssim(a, b) - want_ssim) < 1e-4
        assert 10 < want_psnr < 45 and 0.2 < want_ssim < 0.999  # real, non-trivial distortions


def test_y_channel_and_crop_border_match_skimage() -> None:
    ref, out = _real_pairs()[1]
    crop = 4
    ry = rgb2ycbcr(ref)[crop:-crop, crop:-crop, 0]
    oy = rgb2ycbcr(out)[crop:-crop, crop:-crop, 0]
    a = metrics.prepare(ref, crop_border=crop, y_channel=True)
    b = metrics.prepare(out, crop_border=crop, y_channel=True)
    assert a.shape == (ref.shape[0] - 8, ref.shape[1] - 8, 1)
    assert abs(metrics.psnr(a, b) - peak_signal_noise_ratio(ry, oy, data_range=255)) < 1e-3
    want = structural_similarity(ry, oy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255)
    assert abs(metrics.ssim(a, b) - want) < 1e-4


def test_identical_frames_cap_psnr() -> None:
    ref = _real_pairs()[0][0]
    a = metrics.prepare(ref)
    assert metrics.psnr(a, a) == metrics.PSNR_CAP_DB
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def _random_vgg_file(tmp_path: Path) -> Path:
    """torchvision's VGG-16 `features.<i>` layout with random (He-scaled) weights; real values need a download."""
    import torch

    g = torch.Generator().manual_seed(0)
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    widths = (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    state = {}
    for n, idx in enumerate(convs):
        cin, cout = widths[n], widths[n + 1]
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        state[f"features.{idx}.bias"] = torch.zeros(cout)
    path = tmp_path / "vgg16-features.pth"
    torch.save(state, path)
    return path


def _lin_file(tmp_path: Path) -> Path:
    import torch

    g = torch.Generator().manual_seed(1)
    widths = (64, 128, 256, 512, 512)
    state = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(widths)}
    path = tmp_path / "lin.pth"
    torch.save(state, path)
    return path


def test_lpips_layouts_and_behaviour(tmp_path: Path) -> None:
    import torch

    from vs_keep.errors import CheckpointError
    from vs_keep.evaluation.lpips import Lpips, load_lpips

    torch.set_num_threads(2)
    vgg, lin = _random_vgg_file(tmp_path), _lin_file(tmp_path)
    metric = Lpips([vgg, lin])
    ref = np.ascontiguousarray(skimage.data.astronaut()[60:124, 150:214])
    rng = np.random.default_rng(0)
    mild = np.clip(ref + rng.normal(0, 4, ref.shape), 0, 255).astype(np.uint8)
    strong = np.clip(ref + rng.normal(0, 30, ref.shape), 0, 255).astype(np.uint8)
    assert metric(ref, ref) == pytest.approx(0.0, abs=1e-9)
    d_mild, d_strong = metric(ref, mild), metric(ref, strong)
    assert 0 < d_mild < d_strong
    # The same weights as one LPIPS-package-style state dict (net.slice<k>.<i>.*) give the same number.
    tv = torch.load(vgg, weights_only=True)
    slices = {1: range(0, 4), 2: range(4, 9), 3: range(9, 16), 4: range(16, 23), 5: range(23, 30)}
    full = {f"net.slice{s}.{k.split('.')[1]}.{k.split('.')[2]}": v for k, v in tv.items()
            for s, idx in slices.items() if int(k.split(".")[1]) in idx}
    full.update(torch.load(lin, weights_only=True))
    torch.save(full, tmp_path / "lpips_full.pth")
    assert Lpips([tmp_path / "lpips_full.pth"])(ref, strong) == pytest.approx(d_strong, rel=1e-5)
    # Missing pieces: a clear error for given files, a skip reason when none are given.
    with pytest.raises(CheckpointError, match="LPIPS linear layers missing"):
        Lpips([vgg], discover=False)
    with pytest.raises(CheckpointError, match="VGG-16 convolution weights missing"):
        Lpips([lin], discover=False)
    metric_none, reason = load_lpips(None)
    if metric_none is None:
        assert "--lpips-weights" in reason


def _tiny_arcface_onnx(path: Path) -> Path:
    """A small real ONNX embedding net with ArcFace's interface (1x3x112x112 -> 16-d)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (16, 3, 8, 8)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], strides=[8, 8]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["embedding"]),
    ]
    graph = helper.make_graph(nodes, "tiny_arcface",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 112, 112])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_arcface_onnx_identity(tmp_path: Path) -> None:
    from vs_keep.errors import WeightsNotFoundError
    from vs_keep.evaluation.identity import ArcFaceOnnx, cosine

    model = ArcFaceOnnx(_tiny_arcface_onnx(tmp_path / "tiny.onnx"))
    img = np.ascontiguousarray(skimage.data.astronaut())
    # Eileen Collins' eye/nose/mouth positions in astronaut.png (image-left eye first).
    lm = np.array([[200, 112], [242, 110], [222, 132], [205, 152], [240, 150]], np.float32)
    same = cosine(model.embed(img, lm), model.embed(img.copy(), lm))
    other = cosine(model.embed(img, lm), model.embed(skimage.data.chelsea()[:512, :512].copy(), lm))
    assert same == pytest.approx(1.0, abs=1e-9)
    assert other < 0.9999
    with pytest.raises(WeightsNotFoundError, match="--arcface"):
        ArcFaceOnnx(tmp_path / "missing.onnx")
