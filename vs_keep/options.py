"""Validators of the user options that the VapourSynth filter and the CLI share but the face engine does not see
(the engine's own options are checked by `engine.validate`). One function an option, raising `InputError` that
names it; the filter turns that into `vs.Error("keep: ...")`, the CLI into its one error line."""

from __future__ import annotations

from .errors import InputError

__all__ = ["SCENE_DETECT_MODES", "check_gray", "check_scene_detect"]

#: where a frame's scene cut (`_SceneChangePrev`) comes from: "auto" (the frame's props, else the cut detector
#: `vs_keep.scene.is_cut` on frames n-1 and n), "props" (props only), "off" (no cuts: chunk starts only)
SCENE_DETECT_MODES = ("auto", "props", "off")


def check_gray(gray: object) -> bool | str:
    """`gray` as given, once it is 'auto' (decided from three frames), True or False (forced)."""
    if not (gray is True or gray is False or gray == "auto"):
        raise InputError(f"gray must be 'auto', True or False, got {gray!r}")
    return gray  # type: ignore[return-value]


def check_scene_detect(mode: object, *, props: bool = True) -> str:
    """`scene_detect` as given, once it is one of SCENE_DETECT_MODES; "props" only where frames carry props
    (`props`: the filter's clips do, a file `vs-keep restore` decodes does not)."""
    modes = SCENE_DETECT_MODES if props else tuple(m for m in SCENE_DETECT_MODES if m != "props")
    if mode not in modes:
        why = ": 'props' reads VapourSynth frame props (_SceneChangePrev), which a decoded file does not carry"
        raise InputError(f"scene_detect must be one of {', '.join(map(repr, modes))}, got {mode!r}"
                         + (why if mode == "props" else ""))
    return mode  # type: ignore[return-value]
