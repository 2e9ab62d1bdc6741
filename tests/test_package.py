"""The engine package imports without VapourSynth or CuPy being pulled in."""

import subprocess
import sys


def test_import_does_not_pull_vapoursynth_or_cupy() -> None:
    code = (
        "import sys, vs_keep, vs_keep.models, vs_keep.cli; "
        "bad = [m for m in ('vapoursynth', 'cupy', 'tensorrt') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "vs_keep", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "restore" in out.stdout and "download" in out.stdout
