"""Streaming video/image-folder input and output, always as HxWx3 RGB uint8 frames (the one I/O module).

Restoration (`vs-keep restore`), evaluation and degradation must not hold whole clips in memory, so readers are
generators and writers take one frame at a time. PyAV and OpenCV are imported inside functions: the engine must
stay importable without them.

Inputs: a video file (any container PyAV/ffmpeg reads), a folder of images (natural order: frame9 before frame10)
or a single image. Outputs: a folder of numbered PNGs, or a video file, either lossy for delivery (libx264 by
default, audio copied from the source) or lossless and byte-reproducible for test material (`lossless=True`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = Fraction(25)  # image folders carry no rate
LOSSLESS_SUFFIXES = (".mkv", ".mp4", ".mov")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows before decoding: size, rate and (when the container says so) the frame count."""

    width: int
    height: int
    fps: Fraction
    frames: int | None  # best estimate; None when unknown
    time_base: Fraction | None = None


# ---------------------------------------------------------------------------------------------------- images


def _natural_key(path: Path) -> list:
    # "frame10.png" must sort after "frame9.png": image sequences are rarely zero-padded consistently.
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def list_images(folder: PathLike) -> list[Path]:
    """Image files of a folder in natural order."""
    folder = Path(folder)
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not files:
        raise InputError(
            f"{folder}: folder holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a video or a frame folder"
        )
    return files


def read_image(path: PathLike) -> np.ndarray:
    """One image file as RGB uint8: 16-bit scaled (rounded) to 8-bit, gray replicated to 3 channels, alpha dropped."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: not a readable image")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 65535.0 * 255.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"{path}: {img.dtype} pixels are not supported; convert the frames to 8- or 16-bit images")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img[..., ::-1])  # BGR -> RGB


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _exists(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}; pass a video file, an image or a folder of images")
    return path


# ---------------------------------------------------------------------------------------------------- reading


def probe(path: PathLike) -> VideoInfo:
    """Size, frame rate and frame count of a video file, image folder or single image, without decoding the clip."""
    path = _exists(path)
    if path.is_dir() or _is_image_file(path):
        files = list_images(path) if path.is_dir() else [path]
        h, w = read_image(files[0]).shape[:2]
        return VideoInfo(width=w, height=h, fps=DEFAULT_FPS, frames=len(files))
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
            return VideoInfo(
                width=stream.codec_context.width, height=stream.codec_context.height, fps=Fraction(rate),
                frames=int(stream.frames) or None, time_base=stream.time_base,
            )
    except av.FFmpegError as exc:
        raise InputError(f"{path}: cannot open as a video ({exc})") from None


def iter_frames(
    path: PathLike, *, max_frames: int | None = None, start: int = 0, start_pts: int | None = None
) -> Iterator[np.ndarray]:
    """Yield the frames of a video file, image folder or single image as HxWx3 RGB uint8.

    start: index of the first frame (frame-accurate: decoding begins at the keyframe at or before it and the
    frames before it are dropped by timestamp). start_pts: its timestamp from `FrameSource.timestamps()`, which
    saves demuxing the file again."""
    path = _exists(path)
    if path.is_dir() or _is_image_file(path):
        files = list_images(path) if path.is_dir() else [path]
        for file in files[start:][:max_frames]:
            yield read_image(file)
        return
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise InputError(f"{path}: cannot open as a video ({exc})") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decoding is bit-exact whatever the threading
        frames = container.decode(stream)
        if start:
            frames = _decode_from(container, stream, _timestamps(path)[start] if start_pts is None else start_pts)
        for i, frame in enumerate(frames):
            if max_frames is not None and i >= max_frames:
                return
            yield frame.to_ndarray(format="rgb24")


def _timestamps(path: Path) -> list[int]:
    """Sorted pts of the video packets: the i-th is frame i's once decoded (one frame per timestamped packet)."""
    import av

    with av.open(str(path)) as c:
        return sorted(p.pts for p in c.demux(c.streams.video[0]) if p.pts is not None)


def _decode_from(container, stream, pts: int) -> Iterator:
    """Decoded frames from the one with timestamp `pts` on: seek to the keyframe at or before it, drop the frames
    before it. A container whose index lands after `pts` is decoded from its first frame instead."""
    for seek_to in (pts, None):
        if seek_to is None:
            container.seek(stream.start_time or 0, backward=True, any_frame=False, stream=stream)
        else:
            container.seek(seek_to, backward=True, any_frame=False, stream=stream)
        frames = container.decode(stream)
        first = next(frames, None)
        if first is None or first.pts is None:
            break
        if first.pts > pts:
            continue
        if first.pts == pts:
            yield first
        for frame in frames:
            if frame.pts is None:
                raise InputError(f"{container.name}: frame without timestamp after a seek; decode from the start")
            if frame.pts >= pts:
                yield frame
        return
    raise InputError(f"{container.name}: cannot seek to timestamp {pts}; remux the file (ffmpeg -c copy) to repair its index")


class FrameSource:
    """A clip to iterate more than once: `info` up front, exact `count_frames()`, RGB uint8 frames on iteration."""

    def __init__(self, path: PathLike) -> None:
        self.path = _exists(path)
        self.info = probe(self.path)

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    def count_frames(self) -> int:
        """Exact number of frames: images in a folder, or video packets (demuxed, not decoded)."""
        return len(self.timestamps())

    def timestamps(self) -> list[int]:
        """Presentation timestamp of every frame in display order (video packets demuxed, not decoded; an image
        folder's frame numbers): `iter_frames(start=i, start_pts=timestamps()[i])` seeks to frame i."""
        if self.path.is_dir() or _is_image_file(self.path):
            return list(range(self.info.frames))
        stamps = _timestamps(self.path)
        self.info = dataclasses.replace(self.info, frames=len(stamps))
        return stamps

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter_frames(self.path)


# ---------------------------------------------------------------------------------------------------- writing


class FrameSink:
    """Write RGB uint8 frames to a folder of numbered PNGs (path without suffix, or an existing folder) or a video.

    Lossy (default): `codec` (libx264) at `crf`/`preset`, yuv420p, or yuv444p when a side is odd; with
    `audio_from`, the audio streams of that file are copied (packets remuxed, not re-encoded).
    `lossless=True`: the suffix picks the codec (`.mkv` FFV1, `.mp4`/`.mov` libx264rgb qp 0); encoder single-threaded
    and encoder and muxer in bit-exact mode, so the same frames always give the same bytes (no random UIDs, no
    thread-count-dependent output). `codec`, `crf` and `preset` do not apply then.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        fps: Fraction = DEFAULT_FPS,
        codec: str = "libx264",
        crf: int = 18,
        preset: str = "medium",
        audio_from: PathLike | None = None,
        lossless: bool = False,
    ) -> None:
        self.path = Path(path)
        self.fps, self.codec, self.crf, self.preset = Fraction(fps), codec, crf, preset
        self.audio_from = Path(audio_from) if audio_from else None
        self.lossless = lossless
        self.count = 0
        self._container = None
        self._stream = None
        self.is_folder = self.path.suffix == "" or self.path.is_dir()
        if not self.is_folder and lossless and self.path.suffix.lower() not in LOSSLESS_SUFFIXES:
            raise InputError(f"{self.path}: lossless output must be a folder (no suffix) or end in "
                             f"{', '.join(LOSSLESS_SUFFIXES)}")
        if self.is_folder:
            self.path.mkdir(parents=True, exist_ok=True)

    def _open(self, width: int, height: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), mode="w")
        if self.lossless:
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
        else:
            stream = container.add_stream(self.codec, rate=self.fps)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            if self.codec in ("libx264", "libx265"):
                stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._container, self._stream = container, stream
        if self.audio_from is not None:
            self._copy_audio_streams()

    def _copy_audio_streams(self) -> None:
        copy_audio(self._container, self.audio_from)

    def write(self, rgb: np.ndarray) -> None:
        """Append one HxWx3 RGB uint8 frame."""
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
            frame.pts = self.count
            frame.time_base = 1 / self.fps
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy_audio(container, source: PathLike) -> None:
    """Copy the audio streams of `source` into the open output `container` (packets remuxed, not re-encoded)."""
    import av

    with av.open(str(source)) as src:
        pairs = []
        for s in src.streams.audio:
            try:
                out = container.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError) as exc:
                log.warning("audio stream %d not copied: %s", s.index, exc)
                continue
            pairs.append((s, out))
        if not pairs:
            return
        # Audio packets are remuxed up front; the muxer interleaves them with video by timestamp.
        by_index = {s.index: out for s, out in pairs}
        for packet in src.demux([s for s, _ in pairs]):
            if packet.dts is None:  # demuxer flush packets
                continue
            packet.stream = by_index[packet.stream.index]
            container.mux(packet)
