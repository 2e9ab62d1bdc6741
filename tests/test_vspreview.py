"""vs-preview itself, headless (issue 11, item 4): it opens a script with the restored clip as output 1, plays it
(playback keeps one get_frame_async per CPU in flight) across a chunk boundary, and the filter keeps delivering
frames. Needs vspreview 0.20.1 (with vsjetpack<2), Xvfb and xdotool (skipped without them) and Qt's xcb libraries
(without them the test fails within seconds, naming them; `.ci/run` installs all of it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("vapoursynth")
if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
    pytest.skip("the GUI stack is missing: Xvfb and xdotool (apt-get install xvfb xdotool)", allow_module_level=True)
VSPREVIEW = Path(sys.executable).parent / "vspreview"
if not VSPREVIEW.exists():
    pytest.skip("vspreview is not installed (pip install 'vspreview==0.20.1' 'vsjetpack<2')", allow_module_level=True)

from data.face_scenes import two_face_scene  # noqa: E402
from media import write_video  # noqa: E402
from vs_keep.models.synthetic import write_synthetic_checkpoint  # noqa: E402

pytestmark = pytest.mark.vapoursynth
N, CHUNK = 24, 6

SCRIPT = """
import vapoursynth as vs
from vs_keep import keep
from vs_keep.plugin import source

core = vs.core
clip = source(r"{video}")
restored = keep(clip, weights=r"{weights}", chunk={chunk}, device="cpu")

def shown(n, f, log=r"{log}"):  # which restored frames reached vs-preview
    with open(log, "a") as fh:
        fh.write(f"{{n}} {{f.props['KeepFaces']}}\\n")
    return f

clip.set_output(0)
restored.std.ModifyFrame(restored, shown).set_output(1)
"""


def _xdo(display: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True, timeout=30)


#: Debian packages of Qt's xcb platform plugin that Xvfb and xdotool do not bring (found by trying on Debian 12;
#: the list .ci/run installs)
QT_XCB_PACKAGES = ("libegl1 libfontconfig1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 "
                   "libxcb-render-util0 libxcb-render0 libxcb-shape0 libxcb-util1 libxcb-xkb1 libxkbcommon-x11-0")


def _wait(pred, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if process is not None and process.poll() is not None:  # it died: say so now, not after the timeout
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            pytest.fail(f"vs-preview exited with {process.returncode} before: {what}\n{tail}")
        time.sleep(1)
    pytest.fail(f"vs-preview: {what} within {timeout:.0f} s (hung?)")


def _check_qt_starts(env: dict[str, str]) -> None:
    """Qt's xcb platform plugin loads on the display (seconds), or one clear failure naming what to install."""
    for _ in range(20):  # Xvfb takes a moment to accept connections
        if _xdo(env["DISPLAY"], "getdisplaygeometry").returncode == 0:
            break
        time.sleep(0.5)
    code = "from PyQt6.QtWidgets import QApplication; QApplication(['check'])"
    r = subprocess.run([sys.executable, "-c", code], env={**env, "QT_QPA_PLATFORM": "xcb"}, capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        lines = [line for line in r.stderr.splitlines() if line.strip()][-3:]
        pytest.fail(f"Qt cannot load its xcb platform plugin ({' / '.join(lines)}); "
                    f"apt-get install {QT_XCB_PACKAGES} (what .ci/run installs)")


@pytest.mark.timeout(600)
def test_vspreview_plays_the_restored_output_across_chunks(tmp_path: Path) -> None:
    weights = write_synthetic_checkpoint(tmp_path / "keep_small.pth", "keep", "small")
    video = write_video(tmp_path / "scene.mp4", two_face_scene(n=N).frames, fps=25, audio=False)
    log = tmp_path / "shown.txt"
    vpy = tmp_path / "preview.vpy"
    vpy.write_text(textwrap.dedent(SCRIPT.format(video=video, weights=weights, chunk=CHUNK, log=log)))
    display = f":{100 + os.getpid() % 500}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # importing cv2 (opencv-python) points QT_QPA_PLATFORM_PLUGIN_PATH at its own Qt 5 plugins: not for PyQt6
    env = {**{k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM_PLUGIN_PATH"}, "DISPLAY": display, "OMP_NUM_THREADS": "1"}
    preview_log = tmp_path / "vspreview.log"
    preview = None
    try:
        _check_qt_starts(env)
        preview = subprocess.Popen([str(VSPREVIEW), str(vpy)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                   stderr=open(preview_log, "w"))

        def window() -> str | None:
            r = _xdo(display, "search", "--onlyvisible", "--name", "VSPreview")
            return r.stdout.split()[0] if r.returncode == 0 and r.stdout.split() else None

        _wait(lambda: window() is not None, 300, "no window", preview, preview_log)  # evaluates the script, renders frame 0
        win = window()
        assert win is not None
        _xdo(display, "windowfocus", "--sync", win)  # no window manager: focus it ourselves, keys go to the focus
        _xdo(display, "mousemove", "--window", win, "300", "150", "click", "1")

        def shown() -> list[int]:
            return [int(line.split()[0]) for line in log.read_text().split("\n") if line.strip()] if log.exists() else []

        _xdo(display, "key", "2")  # output 1: the restored clip
        for n in range(1, CHUNK + 2):  # step into the second chunk: each step is a synchronous seek
            _xdo(display, "key", "Right")
            _wait(lambda n=n: n in shown(), 300, f"frame {n} not shown", preview, preview_log)
        _xdo(display, "key", "space")  # playback: a get_frame_async per CPU in flight
        _wait(lambda: max(shown()) >= CHUNK + 5, 300, f"playback did not reach frame {CHUNK + 5}", preview, preview_log)
        _xdo(display, "key", "space")
        assert preview.poll() is None, preview_log.read_text()[-2000:]
        faces = [int(line.split()[1]) for line in log.read_text().split("\n") if line.strip()]
        assert max(faces) >= 1  # the restored output, with faces pasted
    finally:
        if preview is not None:
            preview.kill()
            preview.wait(timeout=30)
        xvfb.kill()
        xvfb.wait(timeout=30)
