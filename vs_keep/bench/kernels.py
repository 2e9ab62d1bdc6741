"""Kernels section of `vs-keep bench`: crop and paste of one 512 face from / into a 1080p uint8 frame, with the
torch kernels on CPU and, on CUDA, the torch and CuPy kernels."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .common import bench_fn, round_sig

__all__ = ["kernels_cpu", "kernels_cuda"]


def kernels_cpu(repeats: int) -> dict[str, Any]:
    """Torch-kernel crop and paste of one 512 face from a 1080p uint8 frame (the GPU path's reference kernels)."""
    import numpy as np
    import torch

    from ..face.align import BORDER_RGB, alignment_matrix
    from ..kernels import affine_crop, paste_face

    frame = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    lm = np.array([[900, 500], [1000, 502], [950, 560], [910, 620], [990, 622]], np.float32)
    m = alignment_matrix(lm, 512)
    face = torch.rand(3, 512, 512)
    crop_s = bench_fn(lambda: affine_crop(frame, m, 512, border=BORDER_RGB, scale=2 / 255, offset=-1.0), repeats)
    paste_s = bench_fn(lambda: paste_face(frame.clone(), face, m, unit=255.0), repeats)
    return {"crop_512_from_1080p_ms": round_sig(crop_s * 1000), "paste_512_into_1080p_ms": round_sig(paste_s * 1000)}



def kernels_cuda(repeats: int, device: str = "cuda") -> dict[str, Any]:
    import numpy as np
    import torch

    from ..face.align import BORDER_RGB, alignment_matrix
    from ..kernels import affine_crop, paste_face

    frame = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)).to(device)
    m = alignment_matrix(np.array([[900, 500], [1000, 502], [950, 560], [910, 620], [990, 622]], np.float32), 512)
    face = torch.rand(3, 512, 512, device=device)

    def sync(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        return run

    from ..kernels.select import cupy_available

    out = {}
    modes = ("torch", "cupy") if cupy_available() else ("torch",)
    for mode in modes:
        os.environ["VS_KEEP_KERNELS"] = mode
        out[f"crop_512_from_1080p_ms_{mode}"] = round_sig(1000 * bench_fn(sync(lambda: affine_crop(frame, m, 512, border=BORDER_RGB)), repeats))
        out[f"paste_512_into_1080p_ms_{mode}"] = round_sig(1000 * bench_fn(sync(lambda: paste_face(frame.clone(), face, m, unit=255.0)), repeats))
    os.environ.pop("VS_KEEP_KERNELS", None)
    for op in ("crop_512_from_1080p_ms", "paste_512_into_1080p_ms"):
        out[op] = min(out[f"{op}_{mode}"] for mode in modes)
    return out


