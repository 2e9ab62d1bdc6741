"""Run by tests/test_plugin_async.py in a subprocess (so a hang is killed by the test's timeout, not left behind):
what a previewer does to the filter.

    python async_requests.py OUT.json VIDEO WEIGHTS CHUNK THREADS SLEEP

1. The linear reference: the same filter asked frame by frame in order on one thread (what vspipe does). Since
   issue 12 the filter merges the faces into the source in its own format (plugin/frames.py), so the engine's
   RGB paste is no longer the reference.
2. Through vsjetengine, like vs-preview: a managed environment, the .vpy loaded with `load_script`, every frame
   requested at once with `get_frame_async` (core.num_threads = THREADS; upstream = the PyAV source behind a
   Python ModifyFrame that sleeps SLEEP seconds per frame), then the environment disposed, the script reloaded in
   a fresh one and every frame requested again in reverse order.
Writes sha256 digests of every output frame of the three passes to OUT.json.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np

SCRIPT = """
import time
import vapoursynth as vs
from vs_keep import keep
from vs_keep.plugin import source

core = vs.core
core.num_threads = {threads}
src = source(r"{video}")

def slow(n, f):  # a heavy upstream: a Python filter that takes its time
    time.sleep({sleep})
    return f.copy()

heavy = src.std.ModifyFrame(src, slow)
keep(heavy, weights=r"{weights}", chunk={chunk}, device="cpu").set_output(0)
"""


def digest(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


def previewer_pass(path: Path, reverse: bool, linear: bool = False) -> list[str]:
    """One load -> request every frame at once -> dispose cycle; digests in frame order. linear: one frame at a
    time in order instead (what vspipe does), the reference."""
    from vsengine.policy import GlobalStore, Policy
    from vsengine.vpy import load_script

    global _POLICY
    if _POLICY is None:
        _POLICY = Policy(GlobalStore())
        _POLICY.register()
    env = _POLICY.new_environment()
    try:
        load_script(str(path), env).result()
        with env.use():
            node = env.outputs[0].clip if hasattr(env.outputs[0], "clip") else env.outputs[0]
            order = list(range(node.num_frames))[:: -1 if reverse else 1]
            out = {}
            if linear:
                for n in order:
                    with node.get_frame(n) as f:
                        out[n] = digest(np.stack([np.asarray(f[p]) for p in range(3)], axis=-1))
                futures = None
            else:
                futures = {n: node.get_frame_async(n) for n in order}  # all in flight at once, like a playback buffer
                for n, fut in futures.items():
                    with fut.result() as f:
                        out[n] = digest(np.stack([np.asarray(f[p]) for p in range(3)], axis=-1))
            del node, futures
        return [out[n] for n in sorted(out)]
    finally:
        env.dispose()
        gc.collect()


_POLICY = None


def main() -> None:
    out, video, weights, chunk, threads, sleep = sys.argv[1:7]
    vpy = Path(out).with_suffix(".vpy")
    vpy.write_text(textwrap.dedent(SCRIPT.format(video=video, weights=weights, chunk=int(chunk), threads=int(threads), sleep=float(sleep))))
    ref = Path(out).with_name("linear.vpy")  # the same script on one thread, asked frame by frame in order
    ref.write_text(textwrap.dedent(SCRIPT.format(video=video, weights=weights, chunk=int(chunk), threads=1, sleep=0.0)))
    result = {
        "linear": previewer_pass(ref, reverse=False, linear=True),
        "first": previewer_pass(vpy, reverse=False),
        "reloaded": previewer_pass(vpy, reverse=True),
    }
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
