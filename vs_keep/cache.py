"""One cache root for everything vs-keep writes at run time: weights, exported graphs, engines.

`$VS_KEEP_HOME` if set, else the platform's user cache folder (`~/.cache/vs-keep` on Linux). Inside it:
`weights/` (downloaded checkpoints), `onnx/` (exported graphs), `trt/` (TensorRT engines). Nothing in it
decides pixels (the fp32 kernels follow a rule shipped in `vs_keep.runtime.cpu_choice`). `$VS_KEEP_CACHE`, the old name of the engine cache, is
still read as an alias of `$VS_KEEP_HOME` (with a warning once per process) and will go away.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["ENV_HOME", "LEGACY_ENV", "folder", "home"]

log = logging.getLogger(__name__)

ENV_HOME = "VS_KEEP_HOME"
LEGACY_ENV = "VS_KEEP_CACHE"
_WARNED: set[str] = set()


def home(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: `override` (e.g. a `--cache-dir` option), else $VS_KEEP_HOME, else $VS_KEEP_CACHE (alias,
    warns), else the user cache folder. Not created here."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    if os.environ.get(LEGACY_ENV):
        if LEGACY_ENV not in _WARNED:
            _WARNED.add(LEGACY_ENV)
            log.warning("%s is deprecated: set %s instead (same folder; weights now go to its weights/ subfolder)",
                        LEGACY_ENV, ENV_HOME)
        return Path(os.environ[LEGACY_ENV]).expanduser()
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("vs-keep", appauthor=False))
    except ImportError:
        return Path.home() / ".cache" / "vs-keep"


def folder(kind: str, override: str | os.PathLike[str] | None = None) -> Path:
    """`home(override) / kind` for kind in weights, onnx, trt (not created here)."""
    if kind not in ("weights", "onnx", "trt"):
        raise ValueError(f"unknown cache folder {kind!r}")
    return home(override) / kind
