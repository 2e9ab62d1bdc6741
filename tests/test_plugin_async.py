"""What previewers do to the filter (issue 11): every frame requested at once with get_frame_async, through
vsjetengine's load -> dispose -> reload, behind a slow Python upstream, at core.num_threads 1, 2 and 8. Each run is
a subprocess under a timeout: a deadlock (every worker parked in a callback) fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

vs = pytest.importorskip("vapoursynth")
pytest.importorskip("vsengine", reason="vsjetengine is in the test extra (pip install vsjetengine)")

from data.face_scenes import two_face_scene  # noqa: E402
from media import write_video  # noqa: E402
from vs_keep.models.synthetic import write_synthetic_checkpoint  # noqa: E402

pytestmark = pytest.mark.vapoursynth
RUNNER = Path(__file__).with_name("async_requests.py")
N, CHUNK = 8, 4  # the reproduction: 8 frames, keep(src, chunk=4)
HANG = 420  # seconds; a healthy run takes well under a minute even on a busy 2-core machine


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("async")
    return {
        "weights": write_synthetic_checkpoint(d / "keep_small.pth", "keep", "small"),
        "video": write_video(d / "scene.mp4", two_face_scene(n=N).frames, fps=25, audio=False),
    }


@pytest.mark.timeout(HANG + 60)
@pytest.mark.parametrize("threads", [1, 2, 8])
def test_all_frames_at_once_through_vsjetengine_equal_linear_pass(media, tmp_path: Path, threads: int) -> None:
    out = tmp_path / "digests.json"
    cmd = [sys.executable, str(RUNNER), str(out), str(media["video"]), str(media["weights"]), str(CHUNK), str(threads), "0.05"]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=HANG, env=_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"deadlock: {N} async requests at num_threads={threads} did not finish in {HANG} s")
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    got = json.loads(out.read_text())
    assert len(got["linear"]) == N
    assert got["first"] == got["linear"], "async requests differ from the CLI's linear pass"
    assert got["reloaded"] == got["linear"], "after dispose + reload the frames differ"


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    tests = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), tests) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
