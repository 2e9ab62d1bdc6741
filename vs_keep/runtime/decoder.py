"""KEEP's codebook decoder (`KEEP.decode_codes`: code indices -> quantizer lookup -> generator with SFT and
cross-frame attention (CFA), the per-frame half of `KEEP.step` that runs after the transformer) as an exportable
graph with a fixed signature.

Why a separate graph: the generator (368 GFLOP of the ~1 TFLOP per 512² frame) plus SFT is the biggest stage and
has fixed shapes, which makes it the part worth handing to TensorRT / OpenVINO. Its inputs are the code
indices, the encoder features of the frame at the SFT resolutions and the CFA memory of the previous frame;
`has_memory` (0 at a chunk's first frame, 1 after) selects CFA or pass-through with an exact `where`, so one static
graph serves every frame. Outputs: the raw restored frame and the new CFA memory.

`DecoderSpec` names the graph's inputs/outputs and their shapes for a given model, so the ONNX exporter, the
TensorRT builder and the runners agree on one order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["CodebookDecoder", "DecoderSpec", "decoder_spec"]


@dataclass(frozen=True)
class DecoderSpec:
    """Graph signature of a model's decoder for batch size `batch`."""

    batch: int
    tokens: int
    face_size: int
    feats: tuple[tuple[int, int], ...]  # (resolution, channels) of the SFT inputs, model order
    memory: tuple[tuple[int, int], ...]  # (resolution, channels) of the CFA memories

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("idx", *(f"enc_{r}" for r, _ in self.feats), *(f"mem_{r}" for r, _ in self.memory), "has_memory")

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("out", *(f"new_mem_{r}" for r, _ in self.memory))

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        b = self.batch
        shapes: dict[str, tuple[int, ...]] = {"idx": (b, self.tokens)}
        shapes.update({f"enc_{r}": (b, c, r, r) for r, c in self.feats})
        shapes.update({f"mem_{r}": (b, c, r, r) for r, c in self.memory})
        shapes["has_memory"] = (1,)
        return shapes

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"out": (self.batch, 3, self.face_size, self.face_size)}
        shapes.update({f"new_mem_{r}": (self.batch, c, r, r) for r, c in self.memory})
        return shapes

    def feeds(self, idx: Tensor, feats: dict[int, Tensor], memory: dict[int, Tensor] | None) -> dict[str, Tensor]:
        """A `DecoderFn` call's arguments as the graph's inputs by name, on `idx`'s device: zero memories and
        has_memory = 0 without CFA memory (a chunk's first frame)."""
        dev = idx.device
        out = {"idx": idx, **{f"enc_{r}": feats[r] for r, _ in self.feats}}
        for r, c in self.memory:
            out[f"mem_{r}"] = memory[r] if memory else torch.zeros((self.batch, c, r, r), device=dev)
        out["has_memory"] = torch.tensor([1.0 if memory else 0.0], device=dev)
        return out

    def example_inputs(self, device: torch.device | str = "cpu", seed: int = 0, n_codes: int | None = None) -> tuple[Tensor, ...]:
        """Deterministic inputs in the graph's order (random codes, features ~N(0,1), has_memory = 1)."""
        g = torch.Generator().manual_seed(seed)
        shapes = self.input_shapes()
        idx = torch.randint(0, n_codes or 2, shapes["idx"], generator=g)
        rest = [torch.randn(shapes[n], generator=g) for n in self.input_names[1:-1]]
        return tuple(t.to(device) for t in (idx, *rest, torch.ones(1)))


def decoder_spec(model: nn.Module) -> DecoderSpec:
    """Signature (batch 1) for a loaded KEEP module (CodeFormer-style cores without `cross_fuse` get no memory
    inputs)."""
    v = model.config.vqgan
    channels = {r: v.nf * m for r, m in zip((v.img_size // 2**i for i in range(len(v.ch_mult))), v.ch_mult)}
    cross = tuple(getattr(model, "cross_fuse_list", ()))
    return DecoderSpec(
        batch=1,
        tokens=int(model.latent_side) ** 2,
        face_size=int(model.face_size),
        feats=tuple((r, channels[r]) for r in model.connect_list),
        memory=tuple((r, channels[r]) for r in cross),
    )


class CodebookDecoder(nn.Module):
    """Export wrapper: positional tensors in `DecoderSpec.input_names` order -> outputs in `output_names` order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.spec = decoder_spec(model)

    def forward(self, idx: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        nf, nm = len(self.spec.feats), len(self.spec.memory)
        feats = {r: t for (r, _), t in zip(self.spec.feats, tensors[:nf])}
        memory = {r: t for (r, _), t in zip(self.spec.memory, tensors[nf : nf + nm])}
        has_memory = tensors[nf + nm]
        out, new_memory = self.model.decode_codes(idx, feats, memory, has_memory=has_memory)
        return (out, *(new_memory[r] for r, _ in self.spec.memory))
