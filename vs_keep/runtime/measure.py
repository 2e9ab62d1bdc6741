"""Building blocks of `vs-keep bench`: synthetic models, the golden fixture, accuracy metrics, memory runs.

Kept apart from the CLI so tests and other tools can reuse them; nothing here prints.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "Accuracy",
    "accuracy",
    "build_synthetic_keep",
    "default_fixture",
    "peak_rss_mb",
    "streaming_memory_run",
    "tiny_keep_config",
]


def tiny_keep_config() -> Any:
    """A 32x32 KEEP with every code path (flow, gains, SFT at 16/32, CFA at 16/32): ~40 ms a frame on one core,
    for memory runs over thousands of frames."""
    from ..models.core import CoreConfig
    from ..models.keep import KeepConfig
    from ..models.vqgan import VQGANConfig

    vq = VQGANConfig(img_size=32, nf=32, ch_mult=(1, 2), res_blocks=1, attn_resolutions=(16,), emb_dim=32)
    core = CoreConfig(vqgan=vq, codebook_size=64, dim_embd=64, n_head=1, n_layers=1, dim_mlp=64, connect_list=(16, 32))
    return KeepConfig(core=core, kalman_heads=2, kalman_head_dim=8, kalman_layers=1, cross_fuse=(16, 32), cross_heads=1,
                      cross_head_dim=32, flow=dict(feature_channels=32, num_transformer_layers=1))


def build_synthetic_keep(size: str = "full") -> nn.Module:
    """KEEP with the fixtures' synthetic weights ("full" = official configuration, "small" = 128², "tiny" = 32²),
    built in memory (no 600 MB file round trip), eval mode, fp32 CPU."""
    from ..models.keep import KEEP, KeepConfig
    from ..models.synthetic import shapes_of, small_keep_config, synthetic_state_dict

    config = {"full": KeepConfig, "small": small_keep_config, "tiny": tiny_keep_config}[size]()
    with torch.device("meta"):
        model = KEEP(config=config)
    model.load_state_dict(synthetic_state_dict(shapes_of(model)), assign=True)
    return model.eval().requires_grad_(False)


def default_fixture() -> Path | None:
    """The golden KEEP fixture: $VS_KEEP_SHARED/fixtures, else ../shared/fixtures next to a source checkout."""
    candidates = []
    if os.environ.get("VS_KEEP_SHARED"):
        candidates.append(Path(os.environ["VS_KEEP_SHARED"]) / "fixtures" / "golden_keep_synth.pt")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "golden_keep_synth.pt")
    return next((p for p in candidates if p.exists()), None)


@dataclass(frozen=True)
class Accuracy:
    """Codebook-index agreement and output error of one run against a reference run (per frame)."""

    index_agreement: tuple[float, ...]
    output_rel_err: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "index_agreement": [round(a, 5) for a in self.index_agreement],
            "index_agreement_min": round(min(self.index_agreement), 5),
            "output_rel_err": [float(f"{e:.3g}") for e in self.output_rel_err],
            "output_rel_err_max": float(f"{max(self.output_rel_err):.3g}"),
        }


def accuracy(idx: Tensor, out: Tensor, ref_idx: Tensor, ref_out: Tensor) -> Accuracy:
    """idx (T, L) vs ref_idx (T, L); out (T, 3, S, S) vs ref_out: relative L2 error per frame."""
    agree = (idx.reshape(ref_idx.shape) == ref_idx).float().mean(dim=1)
    err = [float((o.float() - r).norm() / r.norm()) for o, r in zip(out, ref_out)]
    return Accuracy(tuple(float(a) for a in agree), tuple(err))


def peak_rss_mb() -> float:
    """Peak resident set size of this process's own address space so far, in MiB.

    Linux: VmHWM from /proc/self/status. Not getrusage's ru_maxrss: that survives execve, so a child started by a
    big parent reports at least the parent's RSS at fork time. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if os.uname().sysname == "Darwin" else peak / 1024


def streaming_memory_run(frames: int, *, size: int = 48, chunk: int = 20, fast: bool = True) -> dict[str, Any]:
    """Restore `frames` synthetic size² frames through the streaming aligned-mode engine with the tiny KEEP and
    report time and peak RSS (run each length in a fresh process to compare peaks)."""
    from ..aligned import restore_aligned
    from .cpu import optimize_cpu

    model = build_synthetic_keep("tiny")
    if fast:
        optimize_cpu(model)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size + 64, size + 64, 3), dtype=np.uint8)

    def source():  # frames made on the fly: the input side holds nothing either
        for i in range(frames):
            x, y = (3 * i) % 64, (2 * i) % 64
            yield base[y : y + size, x : x + size]

    start = time.perf_counter()
    checksum, count = 0, 0
    rss_after_first_chunk = None
    for out in restore_aligned(model, source(), chunk=chunk):
        checksum += int(out[0, 0, 0])
        count += 1
        if count == chunk:
            rss_after_first_chunk = peak_rss_mb()
    return {
        "frames": count,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_mb_after_first_chunk": round(rss_after_first_chunk or 0.0, 1),
        "checksum": checksum,
    }
