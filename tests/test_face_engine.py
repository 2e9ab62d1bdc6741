"""The face engine (`restore_stream`, the CLI's linear pass) driving the real restoration models (small synthetic
KEEP and CodeFormer checkpoints) on a real-photo clip: official chunking with state reset per chunk, and the
per-frame CodeFormer alternative."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.face_scenes import astronaut
from engine_run import linear_pass, paste_alpha
from vs_keep.face import ModuleRestorer, create_detector, restorer_factory
from vs_keep.models import load
from vs_keep.models.synthetic import write_synthetic_checkpoint


def panning_clip(n: int, size: int = 160, step: float = 1.5) -> list[np.ndarray]:
    """`n` frames of size^2 sliding over the astronaut photo (her face ~90 px), sub-pixel steps."""
    import cv2

    img = astronaut()
    frames = []
    for i in range(n):
        m = np.float64([[1, 0, -(150 + step * i)], [0, 1, -(40 + 0.5 * step * i)]])
        frames.append(cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR))
    return frames


class Recording:
    """Factory wrapping a real restorer, keeping each call's input and output."""

    def __init__(self, inner: ModuleRestorer) -> None:
        self.inner, self.face_size = inner, inner.face_size
        self.calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def __call__(self, track_id: int):
        def restore(chunk: torch.Tensor) -> torch.Tensor:
            out = self.inner(chunk)
            self.calls.append((track_id, chunk.clone(), out.clone()))
            return out

        return restore


@pytest.fixture(scope="module")
def detector():
    return create_detector("mtcnn", "cpu", min_face_size=20.0)


@pytest.fixture(scope="module")
def keep_path(tmp_path_factory) -> str:
    torch.set_num_threads(2)
    return str(write_synthetic_checkpoint(tmp_path_factory.mktemp("keep") / "keep_small.pth", "keep", "small"))


def test_keep_engine_end_to_end_with_official_chunks(keep_path: str, detector) -> None:
    frames = panning_clip(5)
    factory = restorer_factory(load(keep_path))
    assert factory.restorer.info.kind == "keep" and factory.face_size == 128
    rec = Recording(factory.restorer)
    out = linear_pass(frames, rec, detector, chunk=3)
    assert len(out) == 5
    assert all(len(r.faces) == 1 for r in out), [len(r.faces) for r in out]
    # one clip per chunk: frames [0, 3) and [3, 5), one track
    assert [(t, len(x)) for t, x, _ in rec.calls] == [(0, 3), (0, 2)]
    for r, f in zip(out, frames):
        assert r.image.dtype == np.uint8 and r.image.shape == f.shape
        alpha = paste_alpha(f.shape, r.faces, 128)
        outside, inside = alpha == 0, alpha > 0.99
        assert np.array_equal(r.image[outside], f[outside])
        assert np.abs(r.image[inside].astype(int) - f[inside].astype(int)).mean() > 5  # the (random) net did act
    # The recurrent state restarts at each chunk: frame 3 is restored as the first frame of its own clip, and
    # differs from what a single 5-frame clip would give it.
    x_all = torch.cat([rec.calls[0][1], rec.calls[1][1]])
    alone = rec.inner(rec.calls[1][1][:1])
    assert torch.allclose(rec.calls[1][2][0], alone[0], atol=1e-5)
    continued = rec.inner(x_all)
    assert (continued[3] - rec.calls[1][2][0]).abs().max() > 1e-3


def test_codeformer_restores_frame_by_frame(tmp_path, detector) -> None:
    path = write_synthetic_checkpoint(tmp_path / "codeformer_small.pth", "codeformer", "small")
    factory = restorer_factory(load(path))
    assert factory.restorer.info.kind == "codeformer"
    frames = panning_clip(2)
    out = linear_pass(frames, factory, detector)
    assert len(out) == 2 and all(len(r.faces) == 1 for r in out)
    inside = paste_alpha(frames[0].shape, out[0].faces, 128) > 0.99
    assert np.abs(out[0].image[inside].astype(int) - frames[0][inside].astype(int)).mean() > 5
    # per-frame model: a frame's result does not depend on its neighbours
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    both = factory.restorer(x)
    assert torch.allclose(both[1], factory.restorer(x[1:2])[0], atol=1e-4)
