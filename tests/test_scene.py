"""Built-in scene-cut detection: precision/recall on real cuts between real shots (with grain), hard negatives
within shots (fast pans, fades, flashes), and KEEP's state resetting at a cut that carries no props."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data.face_scenes import grace_hopper, two_face_scene
from eval_clips import panning_frames
from vs_keep.scene import cut_scores, is_cut

#: (skimage photo, window origin, pan step px/frame): real photos, each one shot
SHOTS = [("astronaut", (150, 40), 2), ("coffee", (100, 100), 6), ("chelsea", (50, 50), 4), ("rocket", (200, 100), 3),
         ("retina", (600, 600), 8), ("hubble_deep_field", (100, 100), 4), ("immunohistochemistry", (50, 50), 5),
         ("camera", (100, 100), 6), ("moon", (100, 100), 6), ("coins", (50, 50), 4), ("clock", (50, 50), 7),
         ("grass", (50, 50), 8), ("brick", (50, 50), 3), ("gravel", (50, 50), 5)]


def grain(frame: np.ndarray, rng: np.random.Generator, sigma: float = 6.0) -> np.ndarray:
    return np.clip(frame.astype(np.float32) + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def shots() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {name: [grain(f, rng) for f in panning_frames(n=8, size=160, image=name, step=step, origin=origin)]
            for name, origin, step in SHOTS}


def test_precision_and_recall_on_real_cuts(shots) -> None:
    """Every ordered pair of different shots joined end to start is a cut (182); every step inside a shot is not
    (98), nor are the hard cases: pans of 10 % of the width per frame, a 15 % fade, a flash."""
    rng = np.random.default_rng(1)
    cuts = [is_cut(a[-1], b[0]) for i, a in shots.items() for j, b in shots.items() if i != j]
    steps = [is_cut(x, y) for s in shots.values() for x, y in zip(s[:-1], s[1:])]
    hard = []
    for name, origin in (("astronaut", (100, 40)), ("coffee", (100, 100)), ("rocket", (100, 50))):
        fast = [grain(f, rng) for f in panning_frames(n=5, size=160, image=name, step=16, origin=origin)]
        hard += [is_cut(x, y) for x, y in zip(fast[:-1], fast[1:])]
        base = fast[0].astype(np.float32)
        hard.append(is_cut(fast[0], np.clip(base * 1.15, 0, 255).astype(np.uint8)))  # fade
        hard.append(is_cut(fast[0], np.clip(base * 1.6 + 20, 0, 255).astype(np.uint8)))  # flash
    tp, fn = sum(cuts), len(cuts) - sum(cuts)
    fp = sum(steps) + sum(hard)
    precision, recall = tp / max(tp + fp, 1), tp / len(cuts)
    print(f"scene cuts: {len(cuts)} cuts, {len(steps) + len(hard)} non-cuts: precision {precision:.3f}, recall {recall:.3f}")
    assert len(cuts) == 182 and recall == 1.0 and precision == 1.0, (tp, fp, fn)


def test_detector_is_a_pure_function(shots) -> None:
    a, b = shots["coffee"][3], shots["rocket"][0]
    first = cut_scores(a, b)
    assert all(cut_scores(a.copy(), b.copy()) == first for _ in range(3))
    assert is_cut(a.astype(np.float32) / 255, b.astype(np.float32) / 255) == is_cut(a, b)  # uint8 or float frames
    assert not is_cut(a, a)
    assert is_cut(a, cv2.resize(b, (100, 80)))  # a size change is a cut


def second_shot(n: int) -> list[np.ndarray]:
    """Another real shot with a face: Grace Hopper's portrait, 320x240 window panning 2 px a frame, with grain."""
    rng = np.random.default_rng(5)
    img = cv2.resize(grace_hopper(), (420, 420), interpolation=cv2.INTER_AREA)
    return [grain(np.ascontiguousarray(img[60 + i:300 + i, 40 + 2 * i:360 + 2 * i]), rng, 4.0) for i in range(n)]


vs = pytest.importorskip("vapoursynth")


def rgb_clip(frames: list[np.ndarray]):
    core = vs.core
    blank = core.std.BlankClip(format=vs.RGB24, width=frames[0].shape[1], height=frames[0].shape[0], length=len(frames))

    def put(n: int, f):
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][..., p])
        return out

    return blank.std.ModifyFrame(blank, put)


def test_scene_flags_props_win() -> None:
    from vs_keep.plugin.filter import scene_flags_clip

    a, b = two_face_scene(n=3).frames, second_shot(3)
    clip = rgb_clip(a + b)
    tiny = vs.core.std.BlankClip(clip, format=vs.GRAY8, width=1, height=1, keep=True)

    def flags(src: vs.VideoNode, mode: str) -> list[int]:
        return [int(f.props.get("_SceneChangePrev", 0)) for f in scene_flags_clip(tiny, src, mode).frames(close=True)]

    assert flags(clip, "auto") == [0, 0, 0, 1, 0, 0]
    assert flags(clip.std.SetFrameProps(_SceneChangePrev=0), "auto") == [0] * 6
    assert flags(clip, "props") == [0] * 6
    assert flags(clip[:4].std.SetFrameProps(_SceneChangePrev=1) + clip[4:], "props") == [1, 1, 1, 1, 0, 0]
    from vs_keep.errors import InputError
    from vs_keep.options import check_scene_detect

    with pytest.raises(InputError, match="scene_detect must be one of 'auto', 'props'"):  # keep() checks it once
        check_scene_detect("on")


@pytest.mark.vapoursynth
@pytest.mark.timeout(600)
def test_keep_state_resets_at_an_unmarked_cut(tmp_path, one_thread) -> None:
    """Two different real shots joined with no props: the frames after the cut are exactly what the second shot
    gives on its own (KEEP's state, tracks and landmark smoothing all start again at the cut)."""
    from vs_keep import keep
    from vs_keep.models.synthetic import write_synthetic_checkpoint

    w = str(write_synthetic_checkpoint(tmp_path / "keep_small.pth", "keep", "small"))
    a, b = two_face_scene(n=3).frames, second_shot(3)
    both = keep(rgb_clip(a + b), weights=w, chunk=20, device="cpu")
    alone = keep(rgb_clip(b), weights=w, chunk=20, device="cpu")
    for k in range(3):
        with both.get_frame(3 + k) as f, alone.get_frame(k) as g:
            assert f.props["KeepChunkStart"] == 3 and f.props["KeepFaces"] >= 1
            for p in range(3):
                assert np.array_equal(np.asarray(f[p]), np.asarray(g[p])), (k, p)
    with both.get_frame(1) as f:
        assert f.props["KeepChunkStart"] == 0 and f.props["KeepChunkEnd"] == 3
