"""Frame-by-frame reading and writing of videos (PyAV) and image folders, always as RGB uint8 arrays.

Evaluation and degradation must not hold whole clips in memory, so readers are generators and writers take one
frame at a time. PyAV is imported inside functions: the engine must stay importable without it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = Fraction(25)


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows before decoding: size, rate and (when the container says so) the frame count."""

    width: int
    height: int
    fps: Fraction
    frames: int | None


def _natural_key(path: Path) -> list:
    # "frame10.png" must sort after "frame9.png": image sequences are rarely zero-padded consistently.
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural order."""
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not files:
        raise InputError(
            f"{folder}: folder holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a video or a frame folder"
        )
    return files


def _read_image(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{path}: not a readable image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and frame count of a video file or image folder, without decoding the whole clip."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = list_images(path)
        first = _read_image(files[0])
        return VideoInfo(width=first.shape[1], height=first.shape[0], fps=DEFAULT_FPS, frames=len(files))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        first = _read_image(path)
        return VideoInfo(width=first.shape[1], height=first.shape[0], fps=DEFAULT_FPS, frames=1)
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
            frames = int(stream.frames) or None
            return VideoInfo(width=stream.width, height=stream.height, fps=Fraction(rate), frames=frames)
    except av.FFmpegError as exc:
        raise InputError(f"{path}: cannot open as a video ({exc})") from exc


def iter_frames(path: str | Path, *, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of a video file, image folder or single image as HxWx3 RGB uint8."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        files = list_images(path) if path.is_dir() else [path]
        for i, file in enumerate(files):
            if max_frames is not None and i >= max_frames:
                return
            yield _read_image(file)
        return
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise InputError(f"{path}: cannot open as a video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decoding is bit-exact whatever the threading
        for i, frame in enumerate(container.decode(stream)):
            if max_frames is not None and i >= max_frames:
                return
            yield frame.to_ndarray(format="rgb24")


class FrameWriter:
    """Writes RGB uint8 frames losslessly and reproducibly: a PNG folder, or a lossless video by suffix.

    `.mkv` gets FFV1, `.mp4`/`.mov` lossless libx264rgb (qp 0). Encoders run single-threaded and muxers in
    bit-exact mode so the same frames always give the same bytes (no random UIDs, no version-dependent threads).
    """

    def __init__(self, path: str | Path, *, fps: Fraction = DEFAULT_FPS) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.count = 0
        self._container = None
        self._stream = None
        suffix = self.path.suffix.lower()
        if suffix in (".mkv", ".mp4", ".mov"):
            self.kind = "video"
        elif suffix == "":
            self.kind = "folder"
        else:
            raise InputError(f"{self.path}: output must be a folder (no suffix) or end in .mkv, .mp4 or .mov")

    def _open_video(self, width: int, height: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), "w")
        container.flags |= av.container.Flags.bitexact.value
        if self.path.suffix.lower() == ".mkv":
            stream = container.add_stream("ffv1", rate=self.fps)
            stream.pix_fmt = "bgr0"
        else:
            stream = container.add_stream("libx264rgb", rate=self.fps, options={"qp": "0", "preset": "medium"})
            stream.pix_fmt = "rgb24"
        stream.width, stream.height = width, height
        stream.thread_count = 1
        stream.codec_context.flags |= av.codec.context.Flags.bitexact.value
        self._container, self._stream = container, stream

    def write(self, frame: np.ndarray) -> None:
        """Append one HxWx3 RGB uint8 frame."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"frame must be HxWx3 uint8 RGB, got {frame.shape} {frame.dtype}")
        if self.kind == "folder":
            import cv2

            self.path.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(self.path / f"{self.count:06d}.png"), np.ascontiguousarray(frame[:, :, ::-1]))
        else:
            import av

            if self._container is None:
                self._open_video(frame.shape[1], frame.shape[0])
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.count
            vf.time_base = 1 / self.fps
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
