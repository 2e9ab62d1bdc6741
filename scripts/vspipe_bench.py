"""Time a linear vspipe pass of `keep()` for one or more source trees, taken in turns in the same run; JSON on stdout.

    .venv/bin/python scripts/vspipe_bench.py [--tree DIR ...] [--frames 24] [--rounds 3] [--threads 2]

Why: "the code got simpler" must not cost speed, and on a shared machine only times taken side by side, in turns,
can be compared. A tree is a checkout of vs-keep (`git worktree add /tmp/old <commit>`, then
`ln -s ../plugin /tmp/old/vs_keep/plugin` unless it is the installed checkout); each vspipe runs with the tree first
on PYTHONPATH, so the same venv runs that tree's code (checked: a pass whose engine or filter comes from elsewhere
stops the bench). Default: this checkout alone.

The clip: the tests' scene of two real faces (`tests/data/face_scenes.py`) at 1280x720, YUV420P10 (BT.709), made
inside the script from a .npy file, so no source plugin is needed; the model: the small synthetic KEEP (`chunk`
frames a chunk). The time is vspipe's own count for all frames ("Output N frames in S seconds").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the real-photo material the tests use

SCRIPT = """
from pathlib import Path

import numpy as np
import vapoursynth as vs
import vs_keep
import vs_keep.plugin
from vs_keep import keep

for module in (vs_keep, vs_keep.plugin):
    if not Path(module.__file__).resolve().is_relative_to({tree!r}):
        raise vs.Error(f"vspipe_bench: {{module.__name__}} comes from {{module.__file__}}, not {tree!r}")

core = vs.core
core.num_threads = {threads}
frames = np.load({frames!r}, mmap_mode="r")

def fill(n, f):
    out = f.copy()
    for p in range(3):
        np.copyto(np.asarray(out[p]), frames[n, ..., p])
    return out

n, h, w = frames.shape[:3]
blank = core.std.BlankClip(format=vs.RGB24, width=w, height=h, length=n, fpsnum=25, fpsden=1)
rgb = core.std.ModifyFrame(blank, blank, fill)
yuv = core.resize.Bicubic(rgb, format=vs.YUV420P10, matrix_s="709")
keep(yuv, weights={weights!r}, chunk={chunk}).set_output()
"""

_OUTPUT = re.compile(r"Output (\d+) frames in ([0-9.]+) seconds")


def commit_of(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def one_pass(tree: Path, vpy: Path, home: Path, frames: int) -> float:
    """Seconds vspipe reports for the whole clip with `tree`'s code (`vpy`: the script made for that tree)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "VS_KEEP_HOME": str(home)}
    vspipe = Path(sys.executable).parent / "vspipe"
    done = subprocess.run([str(vspipe), "-c", "y4m", str(vpy), "-"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=3600)
    match = _OUTPUT.search(done.stderr)
    if done.returncode != 0 or match is None or int(match.group(1)) != frames:
        raise SystemExit(f"vspipe_bench: {tree}: vspipe failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return float(match.group(2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", type=Path, help="a vs-keep checkout (repeat to compare); default: this one")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="core.num_threads")
    p.add_argument("--rounds", type=int, default=3, help="passes per tree, taken in turns")
    args = p.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [ROOT])]

    from data.face_scenes import two_face_scene
    from vs_keep.models.synthetic import write_synthetic_checkpoint
    from vs_keep.runtime.cpu_choice import cpu_kind

    with tempfile.TemporaryDirectory(prefix="vspipe-bench-") as tmp:
        d = Path(tmp)
        np.save(d / "frames.npy", np.stack(two_face_scene(n=args.frames, size=(720, 1280)).frames))
        weights = write_synthetic_checkpoint(d / "keep_small.pth", "keep", "small")
        scripts = {}
        for k, tree in enumerate(trees):
            scripts[tree] = d / f"tree{k}.vpy"
            scripts[tree].write_text(SCRIPT.format(tree=str(tree), threads=args.threads, frames=str(d / "frames.npy"),
                                                   weights=str(weights), chunk=args.chunk))
        seconds: dict[Path, list[float]] = {t: [] for t in trees}
        for _ in range(args.rounds):
            for tree in trees:
                seconds[tree].append(one_pass(tree, scripts[tree], d / "home", args.frames))
                print(f"vspipe_bench: {tree}: {seconds[tree][-1]:.2f} s", file=sys.stderr)
    report = {
        "cpu": cpu_kind(), "load_average_end": os.getloadavg(), "frames": args.frames, "size": [1280, 720],
        "format": "YUV420P10", "model": "synthetic KEEP small", "chunk": args.chunk, "threads": args.threads,
        "trees": [{"tree": str(t), "commit": commit_of(t), "seconds": s, "fps": [round(args.frames / x, 3) for x in s],
                   "best_s": min(s)} for t, s in seconds.items()],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
