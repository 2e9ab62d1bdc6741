"""CodeFormer (single-image face restoration): the shared core with AdaIN and a fidelity weight w.

`module(images, w=0.5, adain=True)` restores (B,3,S,S) RGB in [-1,1] like the official inference script
(w = --fidelity_weight; w = 0 skips every SFT fusion). `module.restore_with_codes(...)` also returns the logits
and the LQ latent, which the tests compare with the official fixture.
"""

from __future__ import annotations

from torch import Tensor

from .core import CodeTransformerCore, adain as adain_fn, core_config_from_state_dict
from .info import ModelInfo

__all__ = ["CodeFormer", "KEY_MARKERS", "build", "convert", "detect"]

KEY_MARKERS = ("quantize.embedding.weight", "position_emb", "ft_layers.0.self_attn.in_proj_weight", "idx_pred_layer.1.weight")


class CodeFormer(CodeTransformerCore):
    """Official CodeFormer inference on the shared core."""

    info = ModelInfo("codeformer", recurrent=False, takes_fidelity=True)

    def restore_with_codes(self, images: Tensor, w: float = 0.5, adain: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (output (B,3,S,S), logits (B,L,n_codes), lq latent (B,emb,s,s))."""
        lq, feats = self.encode(images)
        logits = self.code_logits(lq)
        _, quant = self.lookup(logits)
        if adain:
            quant = adain_fn(quant, lq)

        def fuse(res: int, y: Tensor) -> Tensor:
            return self.fuse_convs_dict[str(res)](feats[res], y, w) if w > 0 else y

        return self.decode(quant, fuse), logits, lq

    def forward(self, images: Tensor, w: float = 0.5, adain: bool = True) -> Tensor:
        return self.restore_with_codes(images, w=w, adain=adain)[0]


# ---- registry protocol -------------------------------------------------------------------------------------------


def detect(sd: dict[str, Tensor]) -> bool:
    return all(k in sd for k in KEY_MARKERS) and not any(k.startswith("kalman_filter.") for k in sd)


def convert(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return sd


def build(sd: dict[str, Tensor]) -> CodeFormer:
    return CodeFormer(config=core_config_from_state_dict(sd))
