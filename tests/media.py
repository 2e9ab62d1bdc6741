"""Small real media files for tests, written with PyAV (video + optional AAC audio)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: Fraction | int = 25, audio: bool = True, crf: int = 10,
                options: dict[str, str] | None = None) -> Path:
    """Encode RGB uint8 frames with libx264 (yuv444p keeps colours near-lossless) and a 440 Hz AAC tone.
    options: extra x264 options (e.g. {"g": "10", "bf": "2"} for short GOPs with B-frames)."""
    import av

    path = Path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=Fraction(fps))
        v.width, v.height, v.pix_fmt = w, h, "yuv444p"
        v.options = {"crf": str(crf), "preset": "ultrafast", **(options or {})}
        a = None
        if audio:
            a = c.add_stream("aac", rate=48000)
            a.layout = "mono"
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            seconds = len(frames) / float(fps)
            n = int(48000 * seconds)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
            step = 1024
            for i in range(0, n, step):
                chunk = tone[i : i + step][None]
                fr = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                fr.sample_rate = 48000
                fr.pts = i
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path


def keep_scene(folder: Path, n: int) -> dict[str, Path]:
    """A small synthetic KEEP checkpoint ("weights") and an n-frame clip of two real faces without audio ("video")."""
    from data.face_scenes import two_face_scene
    from vs_keep.models.synthetic import write_synthetic_checkpoint

    return {
        "weights": write_synthetic_checkpoint(folder / "keep_small.pth", "keep", "small"),
        "video": write_video(folder / "scene.mp4", two_face_scene(n=n).frames, fps=25, audio=False),
    }


def probe(path: str | Path) -> dict:
    """Frame count (decoded), fps, size and audio stream count of a video file."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        info = {"frames": n, "fps": Fraction(v.average_rate), "size": (v.codec_context.width, v.codec_context.height)}
    with av.open(str(path)) as c:
        info["audio_streams"] = len(c.streams.audio)
        info["audio_packets"] = sum(1 for p in c.demux(*c.streams.audio) if p.size) if c.streams.audio else 0
    return info


def decoded_rgb(path: str | Path) -> list[np.ndarray]:
    """Every video frame of `path` as RGB uint8."""
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def assert_same_video(got: Path, want: Path, frames: int) -> None:
    """`got` decodes to `want`'s frames bit for bit, with its frame rate, video and audio timestamps."""
    import av

    a, b = decoded_rgb(got), decoded_rgb(want)
    assert len(a) == len(b) == frames
    for n, (x, y) in enumerate(zip(a, b)):
        assert np.array_equal(x, y), f"frame {n} differs"
    with av.open(str(got)) as g, av.open(str(want)) as w:
        assert g.streams.video[0].average_rate == w.streams.video[0].average_rate
        assert len(g.streams.audio) == len(w.streams.audio) == 1
        pts = lambda c, s: [p.pts for p in c.demux(s) if p.pts is not None]  # noqa: E731
        assert pts(g, g.streams.video[0]) == pts(w, w.streams.video[0])
        assert pts(g, g.streams.audio[0]) == pts(w, w.streams.audio[0])
