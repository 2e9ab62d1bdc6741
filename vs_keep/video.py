"""Streaming video/image-folder input and output (the one I/O module): HxWx3 RGB uint8 frames, or decoded frames
in the source's own pixel format (`decode`, `FrameSink.write`) so a restore keeps format, depth, colour tags
and timestamps.

Restoration (`vs-keep restore`), evaluation and degradation must not hold whole clips in memory, so readers are
generators and writers take one frame at a time. PyAV and OpenCV are imported inside functions: the engine must
stay importable without them.

Inputs: a video file (any container PyAV/ffmpeg reads), a folder of images (natural order: frame9 before frame10)
or a single image. Outputs: a folder of numbered PNGs, or a video file, either for delivery (libx264 by default;
with `like=` the source's pixel format, colour tags and time base; audio and subtitles copied from the source)
or lossless and byte-reproducible for test material (`lossless=True`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .atomic import is_folder_output
from .errors import InputError

__all__ = [
    "DEFAULT_FPS", "IMAGE_SUFFIXES", "LOSSLESS_SUFFIXES", "FrameSink", "FrameSource", "StreamFormat", "VideoInfo",
    "copy_audio", "decode", "iter_frames", "list_images", "probe", "read_frames", "read_image", "stream_format",
]

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


def _images(path: Path) -> list[Path] | None:
    """The image files of a folder (natural order) or a single image; None for a video file."""
    if path.is_dir():
        return list_images(path)
    return [path] if path.suffix.lower() in IMAGE_SUFFIXES else None


def _exists(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}; pass a video file, an image or a folder of images")
    return path


# ---------------------------------------------------------------------------------------------------- reading


def probe(path: PathLike) -> VideoInfo:
    """Size, frame rate and frame count of a video file, image folder or single image, without decoding the clip."""
    path = _exists(path)
    if (files := _images(path)) is not None:
        h, w = read_image(files[0]).shape[:2]
        return VideoInfo(width=w, height=h, fps=DEFAULT_FPS, frames=len(files))
    container, stream = _open_video(path)
    with container:
        rate = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
        return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, fps=Fraction(rate),
                         frames=int(stream.frames) or None)


def _open_video(path: PathLike) -> tuple:
    """The open container of a video file and its first video stream; InputError when it is not a video."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise InputError(f"{path}: cannot open as a video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: no video stream")
    return container, container.streams.video[0]


def read_frames(
    path: PathLike, *, start: int = 0, start_pts: int | None = None, max_frames: int | None = None
) -> Iterator:
    """Yield the frames of a video file as PyAV decodes them (av.VideoFrame: own pixel format, timestamps, colour
    tags), or those of an image folder or single image as HxWx3 RGB uint8.

    start: index of the first frame (frame-accurate: decoding begins at the keyframe at or before it and the
    frames before it are dropped by timestamp). start_pts: its timestamp from `FrameSource.timestamps()`, which
    saves demuxing the file again."""
    if (files := _images(_exists(path))) is not None:
        return (read_image(file) for file in files[start:][:max_frames])
    return decode(path, start=start, start_pts=start_pts, max_frames=max_frames)


def iter_frames(
    path: PathLike, *, max_frames: int | None = None, start: int = 0, start_pts: int | None = None
) -> Iterator[np.ndarray]:
    """`read_frames` as HxWx3 RGB uint8 (a video frame converted by PyAV)."""
    for frame in read_frames(path, start=start, start_pts=start_pts, max_frames=max_frames):
        yield frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="rgb24")


def _timestamps(path: Path) -> list[int]:
    """Sorted pts of the video packets: the i-th is frame i's once decoded (one frame per timestamped packet).
    One demux per file version and process: the gray probe, the piece planner and every piece of a `--background`
    seek in the same files."""
    st = path.stat()
    return list(_demuxed_timestamps(str(path.resolve()), st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _demuxed_timestamps(path: str, size: int, mtime_ns: int) -> tuple[int, ...]:
    import av

    with av.open(path) as c:
        return tuple(sorted(p.pts for p in c.demux(c.streams.video[0]) if p.pts is not None))


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


def decode(path: PathLike, *, start: int = 0, start_pts: int | None = None, max_frames: int | None = None) -> Iterator:
    """Yield the frames of a video file as PyAV decodes them (own pixel format, timestamps, colour tags).

    start: index of the first frame (frame-accurate: decoding begins at the keyframe at or before it and the
    frames before it are dropped by timestamp); start_pts: its timestamp from `FrameSource.timestamps()`."""
    container, stream = _open_video(path)
    with container:
        stream.thread_type = "AUTO"  # decoding is bit-exact whatever the threading
        frames = container.decode(stream)
        if start:
            frames = _decode_from(container, stream, _timestamps(Path(path))[start] if start_pts is None else start_pts)
        for i, frame in enumerate(frames):
            if max_frames is not None and i >= max_frames:
                return
            yield frame


@dataclass(frozen=True)
class StreamFormat:
    """What an output keeps of its source video: pixel format, the four colour tags and the time base."""

    pix_fmt: str
    colorspace: int
    color_range: int
    color_primaries: int
    color_trc: int
    time_base: Fraction | None


def stream_format(path: PathLike) -> StreamFormat:
    """The source's format from its first decoded frame (decoders fill tags the container lacks)."""
    frames = decode(path)
    frame = next(frames, None)
    frames.close()  # closes the container now, not at garbage collection
    if frame is None:
        raise InputError(f"{path}: the video stream holds no decodable frame")
    return StreamFormat(
        pix_fmt=frame.format.name, colorspace=int(frame.colorspace), color_range=int(frame.color_range),
        color_primaries=int(frame.color_primaries), color_trc=int(frame.color_trc),
        time_base=Fraction(frame.time_base) if frame.time_base else None,
    )


class FrameSource:
    """A clip to read more than once (`read_frames(source.path)`): `info` up front, exact `count_frames()`."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.info = probe(self.path)

    @property
    def is_video(self) -> bool:
        return not self.path.is_dir() and self.path.suffix.lower() not in IMAGE_SUFFIXES

    def count_frames(self) -> int:
        """Exact number of frames: images in a folder, or frames decoded from the video (packet counts miss
        frames a decoder adds or drops, e.g. repeated fields or a truncated tail)."""
        if not self.is_video:
            return self.info.frames
        n = sum(1 for _ in decode(self.path))
        self.info = dataclasses.replace(self.info, frames=n)
        return n

    def timestamps(self) -> list[int]:
        """Presentation timestamp of every frame in display order (video packets demuxed, not decoded; an image
        folder's frame numbers): `iter_frames(start=i, start_pts=timestamps()[i])` seeks to frame i."""
        if not self.is_video:
            return list(range(self.info.frames))
        stamps = _timestamps(self.path)
        self.info = dataclasses.replace(self.info, frames=len(stamps))
        return stamps


# ---------------------------------------------------------------------------------------------------- writing


class FrameSink:
    """Write frames (RGB uint8 or decoded) to a folder of numbered PNGs (`atomic.is_folder_output`) or a video.

    Delivery (default): `codec` (libx264) at `crf`/`preset`; with `like` (the source's `StreamFormat`) the
    source's pixel format (or `pix_fmt`), colour tags and time base, and a decoded frame keeps its pts
    (variable frame rates stay variable); without, yuv420p (yuv444p when a side is odd). With `audio_from`, the
    audio and subtitle streams of that file are copied (packets remuxed, not re-encoded).
    `lossless=True`: the suffix picks the codec (`.mkv` FFV1, `.mp4`/`.mov` libx264rgb qp 0); encoder single-threaded
    and encoder and muxer in bit-exact mode, so the same frames always give the same bytes (no random UIDs, no
    thread-count-dependent output). `codec`, `crf` and `preset` do not apply then. `first`: the index of the first
    frame written (a segment of a longer clip, `vs_keep.shards`): frames without timestamps are stamped and PNGs
    numbered from it.
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
        like: StreamFormat | None = None,
        pix_fmt: str | None = None,
        first: int = 0,
    ) -> None:
        self.path = Path(path)
        self.fps, self.codec, self.crf, self.preset = Fraction(fps), codec, crf, preset
        self.audio_from = Path(audio_from) if audio_from else None
        self.lossless = lossless
        self.like, self.pix_fmt = like, pix_fmt
        self.first, self.count = first, 0
        self._container = None
        self._stream = None
        self.is_folder = is_folder_output(self.path)
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
            try:
                stream = container.add_stream(self.codec, rate=self.fps)
            except (ValueError, av.FFmpegError) as exc:
                container.close()
                raise InputError(f"--codec {self.codec}: no such video encoder in this ffmpeg ({exc})") from None
            stream.width, stream.height = width, height
            stream.pix_fmt = self._output_pix_fmt(stream, width, height)
            if self.like is not None:
                ctx = stream.codec_context
                ctx.colorspace, ctx.color_range = self.like.colorspace, self.like.color_range
                ctx.color_primaries, ctx.color_trc = self.like.color_primaries, self.like.color_trc
                if self.like.time_base:
                    stream.time_base = ctx.time_base = self.like.time_base
            if self.codec in ("libx264", "libx265"):
                stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._container, self._stream = container, stream
        if self.audio_from is not None:
            copy_audio(container, self.audio_from)

    def _output_pix_fmt(self, stream, width: int, height: int) -> str:
        """`pix_fmt`, else the source's when the encoder takes it, else yuv420p (yuv444p for odd sizes)."""
        supported = [f.name for f in (stream.codec_context.codec.video_formats or [])]
        wanted = self.pix_fmt or (self.like.pix_fmt if self.like is not None else None)
        if wanted is None:
            return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        if supported and wanted not in supported:
            flag = "--pix-fmt" if self.pix_fmt else "the input's pixel format; pass --pix-fmt"
            raise InputError(f"--codec {self.codec} cannot encode {wanted} ({flag} with one of: {' '.join(supported)})")
        return wanted

    def write(self, frame) -> None:
        """Append one frame: HxWx3 RGB uint8, or a decoded av.VideoFrame (its pts and time base kept when it has
        them; a frame folder stores it as 8- or 16-bit RGB PNG after its depth)."""
        import av

        if isinstance(frame, np.ndarray):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise InputError(f"frames must be HxWx3 uint8 RGB, got {frame.dtype} {frame.shape}")
            if not self.is_folder:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if self.is_folder:
            if not isinstance(frame, np.ndarray):
                frame = frame.to_ndarray(format="rgb48le" if frame.format.components[0].bits > 8 else "rgb24")
            import cv2

            png = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))[1]  # imwrite ignores a full disk
            (self.path / f"{self.first + self.count:06d}.png").write_bytes(png.tobytes())
        else:
            if self._container is None:
                self._open(frame.width, frame.height)
            if frame.pts is None:
                frame.pts, frame.time_base = self.first + self.count, 1 / self.fps
            self._encode(frame)
        self.count += 1

    def _encode(self, frame) -> None:
        """Encode one frame, converted to the stream's pixel format (with the source's matrix and range)."""
        stream = self._stream
        if self.like is not None and frame.format.name != stream.pix_fmt:  # else PyAV converts as it always did
            from .pixels import convert

            frame = convert(frame, stream.pix_fmt, self.like)
        for packet in stream.encode(frame):
            self._container.mux(packet)

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
    """Copy the audio and subtitle streams of `source` into the open output `container` (packets remuxed, not
    re-encoded; a stream the output container cannot hold is skipped with a warning)."""
    import av

    with av.open(str(source)) as src:
        pairs = []
        for s in [*src.streams.audio, *src.streams.subtitles]:
            try:
                out = container.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError) as exc:
                log.warning("%s stream %d not copied: %s", s.type, s.index, exc)
                continue
            pairs.append((s, out))
        if not pairs:
            return
        # Audio/subtitle packets are remuxed up front; the muxer interleaves them with video by timestamp.
        by_index = {s.index: out for s, out in pairs}
        for packet in src.demux([s for s, _ in pairs]):
            if packet.dts is None:  # demuxer flush packets
                continue
            packet.stream = by_index[packet.stream.index]
            container.mux(packet)
