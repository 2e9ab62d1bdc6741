"""Every CUDA kernel source compiles with NVRTC for every GPU generation we support (no GPU needed).

NVRTC comes from NVIDIA's nvidia-cuda-nvrtc wheel (a torch dependency) through `cuda-bindings` (test extra); the
test skips, saying why, only when that library cannot be loaded.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from nvrtc_compile import ARCHITECTURES, KernelCompileError, NvrtcUnavailable, compile_cubin, load_nvrtc
from vs_keep.kernels import cuda_sources
from vs_keep.kernels.sources import PASTE_BLEND, PRELUDE, kernel_source, name_expression


@pytest.fixture(scope="module")
def nvrtc() -> object:
    try:
        return load_nvrtc()
    except NvrtcUnavailable as exc:
        pytest.skip(f"NVRTC cannot be loaded here: {exc}")


def test_sources_list_every_instantiation_the_dispatcher_requests() -> None:
    """The name expressions cover each dtype combination kernels/__init__ lets through to CuPy."""
    sources = {name: (src, exprs) for name, src, exprs in cuda_sources()}
    assert set(sources) == {"flow_warp", "affine_crop", "paste_blend"}
    floats, anything = (torch.float32, torch.float16), (torch.float32, torch.float16, torch.uint8)
    want = {
        "flow_warp": {name_expression("flow_warp", t) for t in floats},
        "affine_crop": {name_expression("affine_crop", i, o) for i, o in itertools.product(anything, floats)},
        "paste_blend": {name_expression("paste_blend", t) for t in anything},
    }
    for name, (src, exprs) in sources.items():
        assert set(exprs) == want[name] and len(exprs) == len(set(exprs))
        assert f"__global__ void {name}(" in src and src.startswith(PRELUDE)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_kernel_compiles_with_nvrtc(nvrtc: object, arch: str) -> None:
    for name, src, exprs in cuda_sources():
        cubin, lowered = compile_cubin(src, exprs, arch, name=f"{name}.cu")
        assert cubin[:4] == b"\x7fELF", f"{name} for {arch}: NVRTC returned no ELF cubin"
        assert set(lowered) == set(exprs) and all(sym.startswith("_Z") for sym in lowered.values())


def test_broken_source_is_a_compile_error_with_the_log(nvrtc: object) -> None:
    broken = kernel_source("paste_blend", body=PASTE_BLEND.replace("const float e = eroded[idx]", "float e = eroded[idx"))
    with pytest.raises(KernelCompileError, match=r"paste_blend\.cu.*sm_80(.|\n)*error"):
        compile_cubin(broken.source, broken.name_expressions, "sm_80", name="paste_blend.cu")
