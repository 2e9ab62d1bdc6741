"""Kernels section of `vs-keep bench`: crop and paste of one 512 face from / into a 1080p uint8 frame, with the
torch kernels and, on CUDA where CuPy is installed, the CuPy kernels too."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .common import bench_fn, round_sig

__all__ = ["kernels_section"]


def kernels_section(repeats: int, device: str = "cpu") -> dict[str, Any]:
    """Milliseconds per crop / paste on `device` for each kernel set (`VS_KEEP_KERNELS`), keyed `<op>_<kernels>`;
    the plain `<op>` key is the fastest set."""
    import numpy as np
    import torch

    from ..face.align import BORDER_RGB, alignment_matrix
    from ..kernels import affine_crop, paste_face
    from ..kernels.select import cupy_available

    frame = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)).to(device)
    m = alignment_matrix(np.array([[900, 500], [1000, 502], [950, 560], [910, 620], [990, 622]], np.float32), 512)
    face = torch.rand(3, 512, 512, device=device)

    def sync(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        return run

    out = {}
    modes = ("torch", "cupy") if device.startswith("cuda") and cupy_available() else ("torch",)
    before = os.environ.get("VS_KEEP_KERNELS")
    try:
        for mode in modes:
            os.environ["VS_KEEP_KERNELS"] = mode
            crop = sync(lambda: affine_crop(frame, m, 512, border=BORDER_RGB, scale=2 / 255, offset=-1.0))
            paste = sync(lambda: paste_face(frame.clone(), face, m, unit=255.0))
            out[f"crop_512_from_1080p_ms_{mode}"] = round_sig(1000 * bench_fn(crop, repeats))
            out[f"paste_512_into_1080p_ms_{mode}"] = round_sig(1000 * bench_fn(paste, repeats))
    finally:
        if before is None:
            os.environ.pop("VS_KEEP_KERNELS", None)
        else:
            os.environ["VS_KEEP_KERNELS"] = before
    for op in ("crop_512_from_1080p_ms", "paste_512_into_1080p_ms"):
        out[op] = min(out[f"{op}_{mode}"] for mode in modes)
    return out
