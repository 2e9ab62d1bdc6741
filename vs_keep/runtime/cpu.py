"""CPU fast path: cheaper convolutions and fewer memory passes, applied to a loaded model in place.

Why: on CPU the network is ~75 % 3x3 convolutions at 64²-512² (≈1 TFLOP per 512² frame) and ~20 % memory-bound
element-wise work (GroupNorm, swish as sigmoid·x, residual adds). The rewrites keep fp32 and the same graph:

- Which kernel each convolution shape uses is a fixed rule per ISA class (`runtime.cpu_choice`): oneDNN (the
  reference op), or one of the two below. The Winograd rule is right on AVX2-class cores and wrong on AVX-512
  Xeons, where oneDNN's direct convolutions beat the rewrites (`optimize_cpu(model, NAMED["winograd"])` is that
  rule everywhere).
- 3x3 stride-1 convolutions may use NNPACK's Winograd F(6x6,3x3) transform (about 5x fewer multiplies). It
  rounds differently: relative error ~4e-6 per layer instead of ~6e-7 (measured against float64); the benchmark
  reports what that does to codebook indices and outputs.
- Smaller 3x3 and all 1x1 stride-1 convolutions run as one GEMM (im2col), which beats oneDNN's per-call weight
  reorder at 16²/32².
- VQGAN ResBlocks use the fused SiLU in place and an in-place residual add (swish = x·sigmoid(x) = SiLU).
`tune_malloc` (process-wide; `vs-keep restore` applies it, hosts opt in) removes the page-fault cost of fresh activations.

Nothing here changes parameters or state-dict keys: modules only get a subclass with a different `forward`
(`optimize_cpu`), and `restore_reference` undoes it. The rewrites run only for fp32 CPU tensors without autograd;
anything else (CUDA, autocast, training) takes the original code path.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vqgan import ResBlock
from .cpu_choice import KernelRule, active_rule, conv_kernel

log = logging.getLogger(__name__)

__all__ = [
    "FastConv2d", "FastResBlock", "nnpack_available", "optimize_cpu", "restore_reference", "tune_malloc",
]

_NNPACK_STATE: dict[str, bool] = {}


def nnpack_available() -> bool:
    """Whether NNPACK can run here (x86 with AVX2, or ARM). The first call also initialises it: NNPACK entry points
    fail until `torch._nnpack_available()` has run once in the process."""
    if "ok" not in _NNPACK_STATE:
        try:
            _NNPACK_STATE["ok"] = bool(torch._nnpack_available())
        except (AttributeError, RuntimeError):
            _NNPACK_STATE["ok"] = False
    return _NNPACK_STATE["ok"]


def _plain_fp32_cpu(x: Tensor, weight: Tensor) -> bool:
    """Eager fp32 CPU inference: the only case the rewrites handle (not tracing/exporting, autocast or autograd)."""
    return (
        x.device.type == "cpu"
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


class FastConv2d(nn.Conv2d):
    """nn.Conv2d whose fp32 CPU forward may use Winograd (NNPACK) or one GEMM; same parameters and keys.

    The kernel follows `kernel_rule` (one of `runtime.cpu_choice.NAMED`), or with None (the engine's default) the
    rule of this CPU's ISA class: a fixed table either way, no timing decides pixels.
    """

    kernel_rule: KernelRule | None = None

    def _plain(self) -> bool:
        return (self.groups == 1 and self.dilation == (1, 1) and self.stride == (1, 1) and self.padding_mode == "zeros"
                and self.kernel_size[0] == self.kernel_size[1] and self.padding[0] == self.padding[1])

    def rule(self) -> KernelRule:
        """The rule this module follows (read per call: VS_KEEP_CPU_KERNELS may change between calls)."""
        return active_rule() if self.kernel_rule is None else self.kernel_rule

    def _kind(self, x: Tensor) -> str:
        kind = conv_kernel(self.rule(), self.kernel_size[0], self.padding[0], min(x.shape[-2:]), self._plain(),
                           nnpack_available())
        if kind == "winograd" and tuple(x.shape[1:]) in self.__dict__.get("_nnpack_refused", ()):
            return "default"
        return kind

    def _run(self, kind: str, x: Tensor) -> Tensor:
        if kind == "winograd":
            bias = self.bias if self.bias is not None else x.new_zeros(self.out_channels)
            try:
                return torch._nnpack_spatial_convolution(x.contiguous(), self.weight, bias, [1, 1])
            except RuntimeError as exc:  # NNPACK refuses some shapes: oneDNN for this shape from now on
                log.debug("NNPACK failed for %s on %s (%s); using oneDNN", self, tuple(x.shape), exc)
                self.__dict__.setdefault("_nnpack_refused", set()).add(tuple(x.shape[1:]))
                return super().forward(x)
        n, c, h, w = x.shape
        if kind == "gemm1x1":
            out = torch.matmul(self.weight.view(self.out_channels, c), x.reshape(n, c, h * w))
        elif kind == "im2col":
            out = torch.matmul(self.weight.view(self.out_channels, c * 9), F.unfold(x, 3, padding=1))
        else:
            return super().forward(x)
        if self.bias is not None:
            out.add_(self.bias.view(1, -1, 1))
        return out.view(n, self.out_channels, h, w)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or not _plain_fp32_cpu(x, self.weight):
            return super().forward(x)
        return self._run(self._kind(x), x)


class FastResBlock(ResBlock):
    """VQGAN ResBlock with SiLU in place of x·sigmoid(x) and in-place adds (ulp-level differences only)."""

    def forward(self, x: Tensor) -> Tensor:
        if not _plain_fp32_cpu(x, self.conv1.weight):
            return super().forward(x)
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        return h.add_(x if self.conv_out is None else self.conv_out(x))  # a + b == b + a exactly in IEEE


def optimize_cpu(model: nn.Module, rule: KernelRule | None = None, *, fused_swish: bool = True) -> nn.Module:
    """Rewrite `model`'s convolutions and ResBlocks in place for fp32 CPU inference; returns the same object.

    rule: the convolutions' kernel rule, one of `runtime.cpu_choice.NAMED` (the bench pins each in turn); None (the
    engine): this CPU's class rule. fused_swish: SiLU + in-place residual in VQGAN ResBlocks. The rewrites are
    subclasses sharing the original parameters, so the state dict, `.to()` and the CUDA path are untouched. Call
    `restore_reference(model)` to get the reference op order back.
    """
    for module in model.modules():
        if type(module) in (nn.Conv2d, FastConv2d):
            module.__class__ = FastConv2d
            module.kernel_rule = rule
        elif type(module) is ResBlock and fused_swish:
            module.__class__ = FastResBlock
    return model


def restore_reference(model: nn.Module) -> nn.Module:
    """Undo `optimize_cpu` (back to the reference classes, hence the reference numerics)."""
    for module in model.modules():
        if type(module) is FastConv2d:
            module.__class__ = nn.Conv2d
            for attr in ("kernel_rule", "_nnpack_refused"):
                module.__dict__.pop(attr, None)
        elif type(module) is FastResBlock:
            module.__class__ = ResBlock
    return model


def is_optimized(model: nn.Module) -> bool:
    return any(type(m) in (FastConv2d, FastResBlock) for m in model.modules())


# ---- process settings ------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(enabled: bool = True) -> bool:
    """Keep freed large blocks in glibc's heap instead of returning them to the OS (process-wide).

    Why: every activation of a 512² face (16-64 MB) is a fresh mmap by default, so each op first page-faults its
    output into existence: measured ~0.85 M page faults and 2.5 s of kernel time per encoder pass on 2 cores,
    ~1.3x of the whole pass. With a 1 GiB mmap threshold and a 2 GiB trim threshold the memory is reused; peak RSS
    stays flat (it does not grow with video length, see `vs-keep bench`), it is just not handed back between frames.
    Returns False where glibc's mallopt is not available. `enabled=False` restores glibc-like thresholds (128 KiB).
    The engine applies it on CPU only with `EngineOptions.tune_malloc` (set by `vs-keep restore` for its own
    process) or VS_KEEP_TUNE_MALLOC=1 (hosts such as vspipe). Measured under vspipe: 1.17x faster, peak RSS +11 %.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mmap_threshold, trim_threshold = ((1 << 30), (1 << 31) - 1) if enabled else (128 * 1024, 128 * 1024)
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
