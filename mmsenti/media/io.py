"""Decode media files: the audio track as 16 kHz mono float32, video frames as a grayscale stream.

Why two readers: WAV/FLAC (and other ``libsndfile`` formats) are read with ``soundfile``, which is
exact and fast; everything else (MP4/MKV/WebM/MOV/AVI and their audio tracks, MP3/M4A/...) goes
through PyAV, which bundles FFmpeg so no system codec is needed. Audio is downmixed to mono (mean
of the channels) and resampled to :data:`SAMPLE_RATE` whatever the source rate and channel count.

Video frames are *streamed* (:func:`iter_video_frames`) and never held whole: a 10-minute 30 fps
clip is ~1.5 GB of grayscale frames. Frames are yielded at most ``max_fps`` per second (a 60 fps
video gives every second frame), with their presentation time in seconds.

Every problem a user can fix raises :class:`MediaError` with the file name and what went wrong
(missing file, not a media file, corrupt/truncated, no audio/video stream, a still image - say a
PNG renamed ``.mp4``, which FFmpeg would otherwise decode as a one-frame video). A decode error part
way through a stream keeps what was decoded and adds a warning instead (a truncated download
still yields its first seconds).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsenti.errors import MmsentiError

__all__ = [
    "AUDIO_EXTENSIONS",
    "MEDIA_EXTENSIONS",
    "SAMPLE_RATE",
    "VIDEO_EXTENSIONS",
    "Audio",
    "MediaError",
    "MediaInfo",
    "iter_video_frames",
    "probe",
    "read_audio",
    "resample",
]

#: Sample rate every audio extractor works at.
SAMPLE_RATE = 16_000
#: Container formats decoded with PyAV (video and/or audio).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
#: Audio-only formats; WAV/FLAC/OGG go through soundfile, the rest through PyAV.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS
_SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg")


class MediaError(MmsentiError):
    """A media file cannot be used (message names the file and the problem)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}".replace("\n", " "))


@dataclass
class Audio:
    """Mono float32 samples at ``sample_rate`` plus what the source was."""

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int
    truncated: bool = False  # cut at max_seconds
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass
class MediaInfo:
    """What a file holds (from the container headers; no full decode)."""

    path: str
    has_video: bool
    has_audio: bool
    duration: float | None  # seconds, None when the container does not say
    fps: float | None = None
    width: int | None = None
    height: int | None = None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "file not found")
    if not path.is_file():
        raise MediaError(path, "not a file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")


def _open_container(path: Path):
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise MediaError(path, f"not a readable media file; corrupt, truncated or unsupported ({_short(err)})") from err
    if _is_still_image(container):
        codec = container.streams.video[0].codec_context.name if container.streams.video else container.format.name
        container.close()
        raise MediaError(path, f"holds a still image ({codec}), not a video or audio stream; "
                               "give a video (mp4/mkv/webm/mov/avi) or audio file")
    return container


def _is_still_image(container) -> bool:
    """FFmpeg's image demuxers (``png_pipe``, ``jpeg_pipe``, ``image2`` ...) read a picture as a
    one-frame "video"; whatever the file is named, that is not a video."""
    name = container.format.name or ""
    return name in ("image2", "image2pipe") or name.endswith("_pipe")


def probe(path: str | os.PathLike) -> MediaInfo:
    """Streams and duration of a media file, from its headers."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in _SOUNDFILE_EXTENSIONS:
        import soundfile as sf

        try:
            info = sf.info(str(path))
            return MediaInfo(str(path), has_video=False, has_audio=info.frames > 0, duration=info.duration)
        except (RuntimeError, sf.LibsndfileError):
            pass  # maybe a mislabeled container: let FFmpeg try
    with _open_container(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = float(container.duration) / 1e6 if container.duration else None
        info = MediaInfo(str(path), has_video=video is not None, has_audio=audio is not None, duration=duration)
        if video is not None:
            rate = video.average_rate or video.guessed_rate
            info.fps = float(rate) if rate else None
            info.width, info.height = video.codec_context.width, video.codec_context.height
        return info


def resample(samples: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float32 audio (soxr high quality, the resampler librosa uses)."""
    if source_rate == target_rate or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples.astype(np.float32, copy=False), source_rate, target_rate, quality="HQ").astype(np.float32)


def read_audio(path: str | os.PathLike, max_seconds: float | None = None, sample_rate: int = SAMPLE_RATE) -> Audio:
    """The audio of ``path`` as mono float32 at ``sample_rate`` (WAV/FLAC via soundfile, else PyAV).

    Raises :class:`MediaError` when the file is unreadable or has no audio stream. ``max_seconds``
    cuts long inputs (``Audio.truncated`` is then set and a warning added).
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in _SOUNDFILE_EXTENSIONS:
        audio = _read_soundfile(path, max_seconds)
        if audio is not None:
            return _finish(audio, sample_rate, max_seconds)
    return _finish(_read_av_audio(path, max_seconds), sample_rate, max_seconds)


def _read_soundfile(path: Path, max_seconds: float | None) -> Audio | None:
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as fh:
            rate, channels = fh.samplerate, fh.channels
            frames = fh.frames if max_seconds is None else min(fh.frames, int(max_seconds * rate) + 1)
            data = fh.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError):
        return None  # not something libsndfile knows (or a mislabeled file): FFmpeg gets a go
    return Audio(samples=data.mean(axis=1), sample_rate=rate, source_rate=rate, source_channels=channels)


def _read_av_audio(path: Path, max_seconds: float | None) -> Audio:
    import av

    with _open_container(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        channels = int(getattr(stream.codec_context, "channels", 0) or len(stream.layout.channels))
        if rate <= 0:
            raise MediaError(path, "audio stream has no sample rate")
        # FFmpeg's own resampler does downmix + rate conversion to float mono in one pass
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        warnings: list[str] = []
        limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE) + 1
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += chunk.size
                if limit is not None and total >= limit:
                    break
            else:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as err:
            if not chunks:
                raise MediaError(path, f"audio stream could not be decoded ({_short(err)})") from err
            warnings.append(f"audio decoding stopped after {total / SAMPLE_RATE:.2f} s ({_short(err)}); file truncated?")
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return Audio(samples=samples, sample_rate=SAMPLE_RATE, source_rate=rate, source_channels=channels, warnings=warnings)


def _finish(audio: Audio, sample_rate: int, max_seconds: float | None) -> Audio:
    samples = resample(audio.samples, audio.sample_rate, sample_rate)
    truncated = False
    if max_seconds is not None and len(samples) > int(max_seconds * sample_rate):
        samples = samples[: int(max_seconds * sample_rate)]
        truncated = True
        audio.warnings.append(f"audio cut to the first {max_seconds:g} s (max_seconds)")
    bad = ~np.isfinite(samples)
    if bad.any():
        samples = np.where(bad, np.float32(0), samples)
        audio.warnings.append(f"{int(bad.sum())} non-finite audio samples set to 0")
    return Audio(samples=np.ascontiguousarray(samples, dtype=np.float32), sample_rate=sample_rate,
                 source_rate=audio.source_rate, source_channels=audio.source_channels, truncated=truncated,
                 warnings=audio.warnings)


@dataclass
class FrameStream:
    """What :func:`iter_video_frames` found, filled in while it runs."""

    fps: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int = 0
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)


def iter_video_frames(
    path: str | os.PathLike,
    max_fps: float = 30.0,
    max_seconds: float | None = None,
    state: FrameStream | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_seconds, gray uint8 [H, W])`` for the frames of the first video stream.

    At most ``max_fps`` frames per second are yielded (a frame is kept when at least
    ``1 / max_fps`` - 1 ms has passed since the last kept one, so variable frame rates work).
    Raises :class:`MediaError` for an unreadable file or one without a video stream; a decode
    error after some frames ends the stream with a warning in ``state``.
    """
    import av

    path = Path(path)
    _check_file(path)
    state = state if state is not None else FrameStream()
    container = _open_container(path)
    try:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-parallel decoding inside FFmpeg
        rate = stream.average_rate or stream.guessed_rate
        state.fps = float(rate) if rate else None
        state.width, state.height = stream.codec_context.width, stream.codec_context.height
        min_gap = 1.0 / max_fps - 1e-3 if max_fps else 0.0
        start = stream.start_time or 0  # times are relative to the stream's first frame
        last = -np.inf
        index = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and frame.time_base is not None:
                    t = max(0.0, float((frame.pts - start) * frame.time_base))
                else:
                    t = index / (state.fps or 30.0)
                index += 1
                if max_seconds is not None and t >= max_seconds:
                    state.truncated = True
                    state.warnings.append(f"video cut to the first {max_seconds:g} s (max_seconds)")
                    break
                if t - last < min_gap:
                    continue
                last = t
                state.frames += 1
                yield t, _gray(frame)
        except (av.error.FFmpegError, ValueError) as err:
            if state.frames == 0:
                raise MediaError(path, f"video stream could not be decoded ({_short(err)})") from err
            state.warnings.append(f"video decoding stopped after {state.frames} frames ({_short(err)}); file truncated?")
    finally:
        container.close()


#: Limited-range ("MPEG", 16-235) luma to full-range gray, as FFmpeg's own gray conversion does.
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
_LUMA_FIRST = ("yuv", "nv12", "nv21")


def _gray(frame) -> np.ndarray:
    """Grayscale ``uint8 [H, W]`` of a decoded frame.

    For YUV formats the luma plane *is* the gray image: reading it directly (plus a 256-entry
    lookup for limited-range video) is ~10x faster than a swscale conversion and gives the same
    values (+-1).
    """
    fmt = frame.format.name
    if fmt.startswith(_LUMA_FIRST) and not fmt.endswith(("le", "be")):  # 8-bit layouts only
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
        full_range = fmt.startswith("yuvj") or int(getattr(frame, "color_range", 0) or 0) == 2
        return luma.copy() if full_range else _LIMITED_TO_FULL[luma]
    return frame.to_ndarray(format="gray")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] if text else type(exc).__name__
