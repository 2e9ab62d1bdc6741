"""The CUDA kernel text executed on the CPU: `cuda_sources()` compiled as C++ by g++ with a host harness
(tests/kernel_host.py), run on real photos through the same argument marshalling as the CuPy launch, and compared
with the torch twins; plus the self-check and its fallback fed with deliberately broken sources.

Bit for bit for the crop and paste kernels (both sides are the same sequence of rounded float32 operations and
round-to-nearest-even half/uint8 conversions). The flow warp repeats grid_sample's CUDA arithmetic; torch's CPU
grid_sample computes the same coordinates in a vectorised order, so it is compared with a float32 tolerance.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from data.face_scenes import astronaut, grace_hopper
from kernel_host import HostLaunch, NvrtcThenHost, compiler
from vs_keep.face.align import BORDER_RGB, alignment_matrix
from vs_keep.kernels import affine_crop, select
from vs_keep.kernels.crop import as_chw_view, sampling_matrices
from vs_keep.kernels.cupy_impl import affine_crop_cupy, flow_warp_cupy, paste_blend_cupy
from vs_keep.kernels.paste_blend import paste_blend_torch, paste_masks, plan_paste
from vs_keep.kernels.selfcheck import check_kernel
from vs_keep.kernels.sources import AFFINE_CROP, FLOW_WARP, PASTE_BLEND
from vs_keep.kernels.warp import flow_warp_torch

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(compiler() is None, reason="g++ is not installed (apt-get install g++)"),
    pytest.mark.timeout(300),
]

ASTRONAUT_LM = np.array([[204.0, 100.9], [247.1, 103.2], [225.7, 128.9], [201.3, 139.6], [245.7, 141.4]])
GRACE_LM = np.array([[220.5, 173.4], [308.5, 169.6], [269.1, 222.7], [234.0, 263.7], [306.9, 260.1]])


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> HostLaunch:
    return HostLaunch(workdir=tmp_path_factory.mktemp("kernels"))


def _as(frame: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(frame))
    return t if dtype == torch.uint8 else (t.to(torch.float32) / 255).to(dtype)


@pytest.mark.parametrize("in_dtype", [torch.uint8, torch.float16, torch.float32])
def test_affine_crop_kernel_is_bit_identical_to_its_twin(host: HostLaunch, in_dtype: torch.dtype) -> None:
    frame = _as(astronaut(), in_dtype)
    mats = np.stack([alignment_matrix(ASTRONAUT_LM, 256), alignment_matrix(ASTRONAUT_LM + [150, 300], 256)])  # 2nd cut by the border
    border = BORDER_RGB if in_dtype == torch.uint8 else tuple(v / 255 for v in BORDER_RGB)
    scale = 2 / 255 if in_dtype == torch.uint8 else 2.0
    coef = torch.from_numpy(sampling_matrices(mats, invert=True))
    fill = torch.tensor(border, dtype=torch.float32)
    for layout, src in (("hwc", frame), ("chw", frame.permute(2, 0, 1).contiguous())):
        for out_dtype in (torch.float32, torch.float16):
            got = affine_crop_cupy(as_chw_view(src, layout), coef, fill, 256, scale, -1.0, out_dtype, launch=host)
            ref = affine_crop(src, mats, 256, layout=layout, border=border, scale=scale, offset=-1.0, out_dtype=out_dtype)
            assert torch.equal(got, ref), f"{layout} {in_dtype}->{out_dtype}: max diff {(got.float() - ref.float()).abs().max()}"
    # plain crop (no scale/offset) takes the other branch of the kernel
    got = affine_crop_cupy(as_chw_view(frame, "hwc"), coef, fill, 64, 1.0, 0.0, torch.float32, launch=host)
    assert torch.equal(got, affine_crop(frame, mats, 64, border=border))


@pytest.mark.parametrize("canvas_dtype", [torch.uint8, torch.float16, torch.float32])
def test_paste_blend_kernel_is_bit_identical_to_its_twin(host: HostLaunch, canvas_dtype: torch.dtype) -> None:
    unit = 255.0 if canvas_dtype == torch.uint8 else 1.0
    face = torch.from_numpy(grace_hopper()).permute(2, 0, 1).to(torch.float32).div(255).contiguous()  # a real 512 face
    matrix = alignment_matrix(ASTRONAUT_LM, 512)
    for upscale, layout in ((1, "hwc"), (2, "chw")):
        frame = _as(astronaut(), canvas_dtype)
        if upscale == 2:
            frame = frame.repeat_interleave(2, 0).repeat_interleave(2, 1)
        canvas = frame if layout == "hwc" else frame.permute(2, 0, 1).contiguous()
        view = as_chw_view(canvas, layout)
        plan = plan_paste(matrix, 512, (view.shape[1], view.shape[2]), upscale)
        coef = torch.from_numpy(plan.coef)
        eroded, soft = paste_masks(plan, 512, coef)
        got, ref = canvas.clone(), canvas.clone()
        args = (coef, plan.box, eroded, soft, unit)
        paste_blend_cupy(as_chw_view(got, layout), face, *args, launch=host)
        paste_blend_torch(as_chw_view(ref, layout), face, *args)
        assert not torch.equal(got, canvas), "the paste changed nothing: the test would prove nothing"
        assert torch.equal(got, ref), f"upscale {upscale} {layout}: max diff {(got.float() - ref.float()).abs().max()}"


def test_public_entry_points_hand_the_cupy_twins_arguments_they_can_take(host: HostLaunch, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `kernels.affine_crop` / `paste_face` / `flow_warp` prepare for a kernel (coefficient rows, the fill
    expanded to one value per channel, a float32 face) goes to the CuPy twin unchanged on a GPU. Here the twins run
    through the host harness where the selection would pick CuPy: a stride-0 fill, a non-contiguous face or a
    reordered argument reads the wrong memory and the results leave the torch twins'."""
    import functools

    import vs_keep.kernels as kernels
    from vs_keep.kernels.selfcheck import TWINS

    g = torch.Generator().manual_seed(3)
    frame8, m = _as(astronaut(), torch.uint8), alignment_matrix(ASTRONAUT_LM + [250, 350], 128)  # 40 % outside
    frame, m96 = _as(astronaut(), torch.float32), alignment_matrix(ASTRONAUT_LM + [250, 350], 96)
    face = torch.rand(128, 128, 3, generator=g).permute(2, 0, 1)  # (C, S, S), not contiguous
    x, flow = torch.rand(1, 3, 40, 56, generator=g) * 2 - 1, (torch.rand(1, 2, 40, 56, generator=g) - 0.5) * 8

    def run() -> dict[str, torch.Tensor]:
        return {
            "crop uint8, RGB border": kernels.affine_crop(frame8, m, 128, border=BORDER_RGB, scale=2 / 255, offset=-1.0),
            "crop float, one border value": kernels.affine_crop(frame, m96, 96, border=0.25, out_dtype=torch.float16),
            "paste uint8": (lambda c: (kernels.paste_face(c, face, m, unit=255.0), c)[1])(frame8.clone()),
            "paste float chw": (lambda c: (kernels.paste_face(c, face, m, layout="chw"), c)[1])(
                frame.permute(2, 0, 1).contiguous()),
            "warp": kernels.flow_warp(x, flow),
        }

    want = run()
    launched: list[str] = []

    def counting(*args):  # type: ignore[no-untyped-def]
        launched.append(args[0])
        host(*args)

    monkeypatch.setattr(kernels, "use_cupy", lambda kernel, tensor, *dtypes: True)
    for name, (torch_impl, cupy_impl) in list(TWINS.items()):
        monkeypatch.setitem(TWINS, name, (torch_impl, functools.partial(cupy_impl, launch=counting)))
    got = run()
    assert sorted(set(launched)) == ["affine_crop", "flow_warp", "paste_blend"] and len(launched) == 5
    for what in want:
        assert got[what].dtype == want[what].dtype and got[what].shape == want[what].shape, what
        diff = float((got[what].float() - want[what].float()).abs().max())
        assert diff <= (4e-5 if what == "warp" else 0.0), f"{what}: max diff {diff}"


def test_flow_warp_kernel_matches_grid_sample(host: HostLaunch) -> None:
    img = torch.from_numpy(astronaut()[64:192, 160:288]).permute(2, 0, 1).float().div(127.5).sub(1)[None]  # (1,3,128,128)
    ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    # a real-looking motion: rotation by 4 degrees about the centre plus a shift, reaching outside the image
    a = np.deg2rad(4.0)
    dx = (np.cos(a) - 1) * (xs - 64) - np.sin(a) * (ys - 64) + 3.3
    dy = np.sin(a) * (xs - 64) + (np.cos(a) - 1) * (ys - 64) - 5.7
    flow = torch.stack([dx, dy])[None].float()
    # float32: the source coordinate (up to 128 px, ulp 7.6e-6) may differ by a couple of ulps between the two
    # arithmetic orders, times the image's largest neighbour step (2 in [-1, 1] units): 4e-5. float16: that can
    # flip one rounding, one half ulp at |v| <= 1 (2^-11) plus the float32 part: 1e-3.
    for dtype, atol in ((torch.float32, 4e-5), (torch.float16, 1e-3)):
        got = flow_warp_cupy(img.to(dtype), flow, launch=host)
        ref = flow_warp_torch(img.to(dtype), flow)
        diff = (got.float() - ref.float()).abs().max()
        assert got.dtype == dtype and diff <= atol, f"{dtype}: {diff}"
    assert (got.float() != 0).float().mean() > 0.9


def test_self_check_passes_for_the_shipped_sources(host: HostLaunch) -> None:
    for name in ("flow_warp", "affine_crop", "paste_blend"):
        assert check_kernel(name, host, "cpu") is None


WRONG = {  # compile everywhere, compute something else
    "affine_crop": AFFINE_CROP.replace("lerp_rn(v00, v01, fx)", "lerp_rn(v01, v00, fx)"),
    "paste_blend": PASTE_BLEND.replace("__fsub_rn(1.0f, a)", "__fsub_rn(1.0f, e)"),
    "flow_warp": FLOW_WARP.replace("* (W - 1)", "* (W - 2)"),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_kernel_fails_the_self_check_once_and_falls_back(tmp_path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    class Counting(HostLaunch):
        def __call__(self, *args):  # type: ignore[no-untyped-def]
            calls.append(args[1])
            super().__call__(*args)

    select.reset_self_checks()
    try:
        with caplog.at_level(logging.WARNING, logger="vs_keep.kernels.select"):
            assert not select.kernel_ok(name, "cpu", launch=Counting({name: WRONG[name]}, workdir=tmp_path))
            n = len(calls)
            assert not select.kernel_ok(name, "cpu", launch=Counting({name: WRONG[name]}, workdir=tmp_path))
        assert len(calls) == n, "the verdict is cached: the kernel is not checked again"
        warnings = [r for r in caplog.records if "failed its self-check" in r.getMessage()]
        assert len(warnings) == 1 and name in warnings[0].getMessage() and "torch twin" in warnings[0].getMessage()
        assert "differ" in select.self_check_failures()[(name, "cpu")] or "difference" in select.self_check_failures()[(name, "cpu")]
    finally:
        select.reset_self_checks()


def test_nvrtc_compile_error_falls_back(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-bindings (test extra) provides NVRTC")
    broken = {"paste_blend": PASTE_BLEND.replace("const float old = load_f(canvas, o);", "const float old = load_f(canvas, o)")}
    select.reset_self_checks()
    try:
        with caplog.at_level(logging.WARNING, logger="vs_keep.kernels.select"):
            assert not select.kernel_ok("paste_blend", "cpu", launch=NvrtcThenHost(broken, workdir=tmp_path))
        reason = select.self_check_failures()[("paste_blend", "cpu")]
        assert reason.startswith("KernelCompileError: NVRTC could not compile paste_blend.cu") and "error" in reason
        assert sum("failed its self-check" in r.getMessage() for r in caplog.records) == 1
        # the good source through the same path passes, and other kernels are unaffected by the failure
        assert select.kernel_ok("affine_crop", "cpu", launch=NvrtcThenHost(workdir=tmp_path))
    finally:
        select.reset_self_checks()
