"""Seamless chunks: a chunk's restoration run primed on the frames before it (`overlap=k`).

The official script restores every chunk cold: KEEP's recurrent state starts at the chunk's first frame, so the
restored face jumps at every chunk boundary. With `overlap=k` the run of chunk [start, stop) starts k frames
earlier (never before the clip start or the last scene start: a cut still resets), the restorer steps through
those priming frames and their outputs are discarded. Output n then depends on the frames [run_start, stop) plus
the detections around them: still a bounded window, so random access, seeks and sharding stay exact, and a seek
costs at most chunk + k steps per face. Where a run starts is `vs_keep.sequencer.Sequencer.run_start`, the one
rule every caller (engine, VapourSynth graph, linear pass, shards) uses.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputError
from .plan import Segment

__all__ = ["check_overlap", "primed_segments"]


def check_overlap(overlap: object) -> int:
    """`overlap` as a validated frame count (>= 0)."""
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0:
        raise InputError(f"overlap must be an integer >= 0 (frames of priming before each chunk), got {overlap!r}")
    return overlap


def primed_segments(segments: Sequence[Segment], start: int) -> list[tuple[Segment, int]]:
    """Segments planned over a run [run_start, stop) that reach the chunk (frames >= start), each with its number
    of priming frames (frames before `start`, whose outputs are discarded). Segments only in the priming part
    are dropped: they have nothing to output."""
    out = []
    for seg in segments:
        prime = int((seg.frames < start).sum())
        if prime < len(seg.frames):
            out.append((seg, prime))
    return out
