"""Frame-level acoustic (prosody) features at 100 Hz, COVAREP-style.

Default extractor ``librosa_prosody`` (:class:`LibrosaProsody`), 43 features per 10 ms frame
(:data:`PROSODY_FEATURES`), frame ``k`` covering ``[k / 100, (k + 1) / 100]`` s with its analysis
window centred on that interval:

* pitch: F0 by probabilistic YIN (``librosa.pyin``, 65-500 Hz, 64 ms window, Viterbi smoothing at
  0.25-semitone resolution - 6x faster than the 0.1 default with median F0 within 0.05 semitone on
  the MOSI clip), as semitones above 27.5 Hz (eGeMAPS' convention; 0 when unvoiced), the voicing
  decision, pYIN's voiced probability and the F0 change from the previous frame;
* energy: RMS, loudness in dBFS (floored at -100) and its change;
* perturbation, *frame-level approximations* of the cycle-based Praat measures (no glottal cycle
  detection): ``jitter_local`` = ``|T0[t] - T0[t-1]| / mean(T0[t], T0[t-1])`` with ``T0 = 1 / F0``,
  and ``shimmer_local_db`` = ``|loudness[t] - loudness[t-1]|``, both over consecutive voiced frames
  (0 otherwise);
* spectrum (25 ms Hann window, 512-point FFT): zero-crossing rate, centroid, bandwidth, 85%
  roll-off (kHz), flatness, flux (L2 norm of the positive log-mel change), alpha ratio (dB energy
  50-1000 Hz over 1-5 kHz) and Hammarberg index (dB peak 0-2 kHz over 2-5 kHz), as in eGeMAPS;
* 13 MFCCs (40 mel bands) and their deltas.

A silent track (frame RMS never above -80 dBFS) returns all frames masked and a warning; the
training/prediction pipeline then treats audio as a missing modality.

Optional extractor ``egemaps`` (:class:`EgemapsLLD`): openSMILE's eGeMAPSv02 low-level descriptors
(25 features, 10 ms hop). The ``opensmile`` package is under audEERING's **non-commercial**
research licence, so it is never installed by default: ``pip install opensmile==2.6.0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.registry import check, lookup, register

from .features import FrameFeatures, frame_grid
from .io import SAMPLE_RATE, Audio

__all__ = [
    "AUDIO_RATE",
    "PROSODY_FEATURES",
    "EgemapsLLD",
    "LibrosaProsody",
    "build_audio_extractor",
]

AUDIO_RATE = 100  # frames per second (COVAREP's rate)
HOP = SAMPLE_RATE // AUDIO_RATE  # 160 samples
SILENCE_DB = -80.0  # a track whose loudest frame is below this is "silent"
LOUDNESS_FLOOR_DB = -100.0

PROSODY_FEATURES: tuple[str, ...] = (
    "f0_semitones", "voiced", "voicing_prob", "delta_f0_semitones", "jitter_local",
    "loudness_db", "rms", "delta_loudness_db", "shimmer_local_db",
    "zero_crossing_rate", "spectral_centroid_khz", "spectral_bandwidth_khz", "spectral_rolloff_khz",
    "spectral_flatness", "spectral_flux", "alpha_ratio_db", "hammarberg_index_db",
    *(f"mfcc_{i}" for i in range(13)), *(f"delta_mfcc_{i}" for i in range(13)),
)


class LibrosaProsody:
    """The default 43-d prosody extractor (see the module docstring)."""

    name = "librosa_prosody"
    version = "1"

    def __init__(self, fmin: float = 65.0, fmax: float = 500.0, pitch_resolution: float = 0.25,
                 pitch_frame_length: int = 1024, n_fft: int = 512, win_length: int = 400, n_mels: int = 40,
                 n_mfcc: int = 13):
        if n_mfcc != 13:
            raise MmsentiError("librosa_prosody: n_mfcc is fixed at 13 (its feature names list 13)")
        self.params = dict(fmin=float(fmin), fmax=float(fmax), pitch_resolution=float(pitch_resolution),
                           pitch_frame_length=int(pitch_frame_length), n_fft=int(n_fft), win_length=int(win_length),
                           n_mels=int(n_mels), n_mfcc=int(n_mfcc))

    @property
    def names(self) -> list[str]:
        return list(PROSODY_FEATURES)

    def spec(self) -> dict[str, Any]:
        import librosa

        return {"name": self.name, "version": self.version, "library": f"librosa {librosa.__version__}",
                "parameters": dict(self.params), "rate": AUDIO_RATE, "sample_rate": SAMPLE_RATE,
                "dim": len(PROSODY_FEATURES), "dimension names": self.names}

    def __call__(self, audio: Audio) -> FrameFeatures:
        import librosa

        if audio.sample_rate != SAMPLE_RATE:
            raise MmsentiError(f"librosa_prosody expects {SAMPLE_RATE} Hz audio, got {audio.sample_rate} Hz")
        p = self.params
        n = int(np.ceil(audio.duration * AUDIO_RATE))
        out = FrameFeatures(features=np.zeros((n, len(PROSODY_FEATURES)), np.float32), intervals=frame_grid(n, AUDIO_RATE),
                            mask=np.zeros(n, bool), names=self.names, rate=AUDIO_RATE, spec=self.spec(),
                            warnings=list(audio.warnings))
        if n == 0 or len(audio.samples) < HOP:
            out.warnings.append(f"audio too short ({audio.duration:.3f} s): no audio frames")
            out.stats.update(voiced_fraction=0.0, silent=True)
            return out
        # drop half a hop so that centred frame k sits at the middle of [k/100, (k+1)/100]
        y = audio.samples[HOP // 2:].astype(np.float32, copy=False)

        stft = librosa.stft(y, n_fft=p["n_fft"], hop_length=HOP, win_length=p["win_length"], center=True)
        power = _fit(np.abs(stft) ** 2, n)  # [F, n]
        rms = _fit(librosa.feature.rms(y=y, frame_length=p["win_length"], hop_length=HOP, center=True), n)[0]
        loud = np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), LOUDNESS_FLOOR_DB)
        if loud.max() < SILENCE_DB:
            out.warnings.append(f"silent audio (loudest frame {loud.max():.0f} dBFS < {SILENCE_DB:.0f}): audio masked")
            out.stats.update(voiced_fraction=0.0, silent=True, peak_dbfs=float(loud.max()))
            return out

        f0, voiced, vprob = librosa.pyin(y, fmin=p["fmin"], fmax=p["fmax"], sr=SAMPLE_RATE, frame_length=p["pitch_frame_length"],
                                         hop_length=HOP, resolution=p["pitch_resolution"], center=True)
        f0, voiced, vprob = (_fit(a[None], n)[0] for a in (f0, voiced.astype(np.float32), vprob))
        voiced = (voiced > 0.5) & np.isfinite(f0)
        semis = np.where(voiced, 12 * np.log2(np.where(voiced, f0, 27.5) / 27.5), 0.0)
        both = voiced & np.roll(voiced, 1)
        both[0] = False
        d_semis = np.where(both, semis - np.roll(semis, 1), 0.0)
        t0 = np.where(voiced, 1.0 / np.where(voiced, f0, 1.0), 0.0)
        t0_prev = np.roll(t0, 1)
        jitter = np.where(both, np.abs(t0 - t0_prev) / np.maximum((t0 + t0_prev) / 2, 1e-9), 0.0)
        d_loud = np.diff(loud, prepend=loud[0])
        shimmer = np.where(both, np.abs(d_loud), 0.0)

        freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=p["n_fft"])
        mag = np.sqrt(power)
        zcr = _fit(librosa.feature.zero_crossing_rate(y, frame_length=p["win_length"], hop_length=HOP, center=True), n)[0]
        centroid = librosa.feature.spectral_centroid(S=mag, freq=freqs)[0]
        bandwidth = librosa.feature.spectral_bandwidth(S=mag, freq=freqs, centroid=centroid[None])[0]
        rolloff = librosa.feature.spectral_rolloff(S=mag, freq=freqs, roll_percent=0.85)[0]
        flatness = librosa.feature.spectral_flatness(S=mag)[0]
        mel = librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=p["n_mels"])
        log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        flux = np.sqrt(np.sum(np.maximum(np.diff(log_mel, axis=1, prepend=log_mel[:, :1]), 0) ** 2, axis=0)) / p["n_mels"]
        low = power[(freqs >= 50) & (freqs < 1000)].sum(axis=0)
        high = power[(freqs >= 1000) & (freqs < 5000)].sum(axis=0)
        alpha = 10 * np.log10((low + 1e-12) / (high + 1e-12))
        peak_lo = power[freqs < 2000].max(axis=0)
        peak_hi = power[(freqs >= 2000) & (freqs < 5000)].max(axis=0)
        hammarberg = 10 * np.log10((peak_lo + 1e-12) / (peak_hi + 1e-12))
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=p["n_mfcc"])
        d_mfcc = librosa.feature.delta(mfcc, width=min(9, n - (1 - n % 2))) if n >= 3 else np.zeros_like(mfcc)

        cols = [semis, voiced, np.nan_to_num(vprob), d_semis, jitter, loud, rms, d_loud, shimmer, zcr,
                centroid / 1000, bandwidth / 1000, rolloff / 1000, flatness, flux, alpha, hammarberg]
        feats = np.concatenate([np.stack(cols, axis=1), mfcc.T, d_mfcc.T], axis=1).astype(np.float32)
        out.features = np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)
        out.mask[:] = True
        out.stats.update(voiced_fraction=float(voiced.mean()), silent=False,
                         f0_median_hz=float(np.median(f0[voiced])) if voiced.any() else None,
                         peak_dbfs=float(loud.max()))
        return out


class EgemapsLLD:
    """openSMILE eGeMAPSv02 low-level descriptors at 100 Hz (optional; non-commercial licence)."""

    name = "egemaps"
    version = "1"

    def __init__(self):
        try:
            import opensmile
        except ImportError as err:
            raise MmsentiError("audio extractor 'egemaps' needs openSMILE: pip install opensmile==2.6.0 "
                               "(audEERING research licence, non-commercial use only)") from err
        self._smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                      feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        self._version = opensmile.__version__
        self.params: dict[str, Any] = {"feature_set": "eGeMAPSv02", "feature_level": "LowLevelDescriptors"}

    @property
    def names(self) -> list[str]:
        return list(self._smile.feature_names)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "library": f"opensmile {self._version}",
                "parameters": dict(self.params), "rate": AUDIO_RATE, "sample_rate": SAMPLE_RATE,
                "dim": len(self.names), "dimension names": self.names}

    def __call__(self, audio: Audio) -> FrameFeatures:
        n = int(np.ceil(audio.duration * AUDIO_RATE))
        feats = np.zeros((n, len(self.names)), np.float32)
        out = FrameFeatures(features=feats, intervals=frame_grid(n, AUDIO_RATE), mask=np.zeros(n, bool),
                            names=self.names, rate=AUDIO_RATE, spec=self.spec(), warnings=list(audio.warnings))
        rms = np.sqrt(np.mean(audio.samples.astype(np.float64) ** 2)) if len(audio.samples) else 0.0
        if n == 0 or 20 * np.log10(max(rms, 1e-12)) < SILENCE_DB:
            out.warnings.append("silent or empty audio: audio masked")
            out.stats.update(silent=True)
            return out
        frame = self._smile.process_signal(audio.samples, SAMPLE_RATE)
        starts = frame.index.get_level_values("start").total_seconds().to_numpy()
        ends = frame.index.get_level_values("end").total_seconds().to_numpy()
        values = frame.to_numpy(np.float32)
        centre = (starts + ends) / 2
        idx = np.clip(np.searchsorted(centre, (np.arange(n) + 0.5) / AUDIO_RATE), 0, len(values) - 1)
        out.features = np.nan_to_num(values[idx])
        out.mask[:] = True
        out.stats.update(silent=False)
        return out


register("audio_extractor", "librosa_prosody")(LibrosaProsody)
register("audio_extractor", "librosa", "alias of librosa_prosody")(LibrosaProsody)
register("audio_extractor", "egemaps")(EgemapsLLD)


def build_audio_extractor(spec: str | dict[str, Any] = "librosa_prosody"):
    """An audio extractor from its name or from a :meth:`spec` dict (as stored in CSD metadata)."""
    if isinstance(spec, str):
        name, params = spec, {}
    else:
        name, params = spec.get("name", "librosa_prosody"), dict(spec.get("parameters") or {})
    cls = lookup("audio_extractor", check("audio_extractor", name, "--audio"))
    return cls(**params) if cls is LibrosaProsody else cls()


def _fit(a: np.ndarray, n: int) -> np.ndarray:
    """Trim or edge-pad the last axis to ``n`` frames."""
    if a.shape[-1] >= n:
        return a[..., :n]
    pad = [(0, 0)] * (a.ndim - 1) + [(0, n - a.shape[-1])]
    return np.pad(a, pad, mode="edge")
