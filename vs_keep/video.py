"""Streaming video/image-folder input and output with PyAV (imported lazily), RGB uint8 frames.

Inputs: a video file (any container PyAV/ffmpeg reads) or a folder of images (sorted by name). Outputs: a video file
(libx264 by default, frame rate and time base of the input kept, audio streams copied) or a folder of PNGs.
Frames stream through; nothing holds the whole video.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class SourceInfo:
    width: int
    height: int
    fps: Fraction
    frames: int | None  # best estimate; None when unknown
    time_base: Fraction | None = None


def _read_image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"cannot read image {path}")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 65535.0 * 255.0).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img[..., ::-1])  # BGR -> RGB


class FrameSource:
    """Iterate RGB uint8 frames of a video file or an image folder."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"input not found: {self.path}")
        self._files: list[Path] | None = None
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise InputError(f"input folder {self.path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            h, w = _read_image(self._files[0]).shape[:2]
            self.info = SourceInfo(width=w, height=h, fps=Fraction(25), frames=len(self._files))
        else:
            import av

            try:
                with av.open(str(self.path)) as c:
                    if not c.streams.video:
                        raise InputError(f"{self.path} has no video stream")
                    s = c.streams.video[0]
                    fps = s.average_rate or s.guessed_rate or Fraction(25)
                    self.info = SourceInfo(
                        width=s.codec_context.width,
                        height=s.codec_context.height,
                        fps=Fraction(fps),
                        frames=s.frames or None,
                        time_base=s.time_base,
                    )
            except av.error.FFmpegError as exc:
                raise InputError(f"cannot open {self.path} as a video: {exc}") from None

    def count_frames(self) -> int:
        """Exact number of frames: files in a folder, or video packets (demuxed, not decoded)."""
        if self._files is not None:
            return len(self._files)
        import av

        with av.open(str(self.path)) as c:
            n = sum(1 for p in c.demux(c.streams.video[0]) if p.pts is not None)
        self.info.frames = n
        return n

    @property
    def is_folder(self) -> bool:
        return self._files is not None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._files is not None:
            for f in self._files:
                yield _read_image(f)
            return
        import av

        with av.open(str(self.path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in c.decode(stream):
                yield frame.to_ndarray(format="rgb24")


class FrameSink:
    """Write RGB uint8 frames to a video file (libx264 etc.) or to a folder of numbered PNGs.

    With `audio_from`, audio streams of that file are copied (packets remuxed, not re-encoded).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: Fraction = Fraction(25),
        codec: str = "libx264",
        crf: int = 18,
        preset: str = "medium",
        audio_from: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps, self.codec, self.crf, self.preset = Fraction(fps), codec, crf, preset
        self.audio_from = Path(audio_from) if audio_from else None
        self.count = 0
        self._container = None
        self._stream = None
        self.is_folder = self.path.suffix == "" or self.path.is_dir()
        if self.is_folder:
            self.path.mkdir(parents=True, exist_ok=True)

    def _open(self, width: int, height: int) -> None:
        import av

        self._container = av.open(str(self.path), mode="w")
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = width, height
        even = width % 2 == 0 and height % 2 == 0
        stream.pix_fmt = "yuv420p" if even else "yuv444p"
        if self.codec in ("libx264", "libx265"):
            stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream
        if self.audio_from is not None:
            self._copy_audio_streams()

    def _copy_audio_streams(self) -> None:
        import av

        src = av.open(str(self.audio_from))
        pairs = []
        for s in src.streams.audio:
            try:
                out = self._container.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError) as exc:
                log.warning("audio stream %d not copied: %s", s.index, exc)
                continue
            pairs.append((s, out))
        if not pairs:
            src.close()
            return
        # Audio packets are remuxed up front; the muxer interleaves them with video by timestamp.
        by_index = {s.index: out for s, out in pairs}
        for packet in src.demux([s for s, _ in pairs]):
            if packet.dts is None:  # demuxer flush packets
                continue
            packet.stream = by_index[packet.stream.index]
            self._container.mux(packet)
        src.close()

    def write(self, rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f"frames must be HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
        if self.is_folder:
            import cv2

            cv2.imwrite(str(self.path / f"{self.count:06d}.png"), np.ascontiguousarray(rgb[..., ::-1]))
        else:
            import av

            if self._container is None:
                self._open(rgb.shape[1], rgb.shape[0])
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None

    def __enter__(self) -> "FrameSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
