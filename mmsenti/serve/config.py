"""Server settings: one pydantic model for every knob of ``mmsenti serve`` (limits included).

The CLI fills it from its flags; ``--workers N`` passes it to each uvicorn worker process as JSON
in the :data:`SETTINGS_ENV` environment variable (uvicorn's workers import an app factory, they
cannot receive Python objects). Every field is checked here, so a bad combination fails before a
port is bound, in one line naming the flag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmsenti.errors import MmsentiError
from mmsenti.lexicon.hybrid import MODES

SETTINGS_ENV = "MMSENTI_SERVE_SETTINGS"
# the lexicons --mode / --near-cache load when --lexicon is not given: the shipped domain ones first (they win on a
# shared term), then VADER's general English one
DEFAULT_LEXICONS = ("finance_en", "finance_zh", "general_zh", "vader")


class Limits(BaseModel):
    """What one request may carry; anything beyond is refused with a 4xx naming the field.

    The frame *width* is not a setting: it is the served model's feature dimension (its manifest).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_items: int = Field(64, ge=1, description="items per request (--max-items)")
    max_text_chars: int = Field(5000, ge=1, description="characters per text, before normalisation (--max-text-chars)")
    max_frames: int = Field(1024, ge=1, le=4096, description="audio/vision frames per item (--max-frames; the engine's "
                                                             "position table holds 4096)")
    max_body_bytes: int = Field(16 << 20, ge=1024, description="request body size (--max-body-mb)")


class CacheSettings(BaseModel):
    """The answer cache (:mod:`mmsenti.cache`): exact layer on by default, near layer and Redis opt-in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="the exact layer (--no-cache turns every layer off)")
    max_entries: int = Field(100_000, ge=1, description="exact-layer entries (--cache-size)")
    max_mb: float = Field(64.0, gt=0, description="exact-layer payload MiB (--cache-mb)")
    ttl_s: float | None = Field(3600.0, gt=0, description="entry lifetime in seconds, None = until evicted (--cache-ttl)")
    near: bool = Field(False, description="the near-duplicate layer (--near-cache)")
    near_threshold: float = Field(0.8, gt=0, le=1, description="its Jaccard similarity threshold (--near-threshold)")
    redis_url: str | None = Field(None, description="a shared exact layer for several workers (--redis URL)")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * (1 << 20))


class ServeSettings(BaseModel):
    """Everything ``mmsenti serve`` was asked for (see ``mmsenti serve --help`` for each flag)."""

    model_config = ConfigDict(extra="forbid")

    export: str | None = None  # EXPORT_DIR served at start (under `name`)
    name: str | None = None  # default: the manifest's name
    model_repo: str | None = None  # DIR/<name>/<version>/ folders, watched
    poll_s: float = Field(2.0, gt=0)  # model-repo poll period
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)  # ONNX Runtime intra-op threads per model
    max_batch: int = Field(32, ge=1)  # items per engine call; 1 = no batching
    max_wait_ms: float = Field(2.0, ge=0)  # how long the oldest queued item waits for batch-mates
    queue_size: int = Field(256, ge=1)  # queued items per model beyond which requests get 429
    max_queue_ms: float = Field(0.0, ge=0)  # queued work (items x engine time per item) beyond which requests get 429; 0 = off
    limits: Limits = Field(default_factory=Limits)
    drain_s: float = Field(30.0, ge=0)  # graceful shutdown: how long in-flight requests may take to finish
    access_log: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    handle_sighup: bool = False  # reload models on SIGHUP (the CLI turns it on; tests and embedders leave it off)
    gc_freeze: bool = True  # freeze the startup heap and make young GC collections rarer (tail latency)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    mode: str = "model"  # the hybrid mode of requests that name none (mmsenti.lexicon.hybrid.MODES)
    lexicons: list[str] | None = None  # shipped names or files (--lexicon); None: DEFAULT_LEXICONS when needed
    blend_weight: float = Field(0.5, ge=0, le=1)  # blend: weight of the lexicon score (--blend-weight)
    override_confident: float | None = Field(None, gt=0, lt=1)  # override: |compound| that also answers (--override-confident)
    shadow_queue: int = Field(256, ge=1)  # shadow requests waiting for the candidate beyond which they are dropped

    @model_validator(mode="after")
    def _check(self) -> "ServeSettings":
        if self.export is None and self.model_repo is None:
            raise ValueError("give an EXPORT_DIR to serve or --model-repo DIR to watch")
        if self.limits.max_items > self.queue_size:
            raise ValueError(f"--max-items {self.limits.max_items} is larger than --queue-size {self.queue_size}: "
                             "such a request could never be queued")
        if self.name is not None and not _valid_name(self.name):
            raise ValueError(f"--name {self.name!r}: use letters, digits, '-', '_' or '.'")
        if self.mode not in MODES:
            raise ValueError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.lexicons is not None and not [x for x in self.lexicons if x.strip()]:
            raise ValueError("--lexicon: give shipped lexicon names or files, comma-separated (e.g. finance_en,vader)")
        return self

    @property
    def needs_lexicons(self) -> bool:
        """Lexicons load at start when a mode or the near-cache guard needs them, or when --lexicon names some."""
        return self.lexicons is not None or self.mode != "model" or (self.cache.enabled and self.cache.near)

    def lexicon_specs(self) -> list[str]:
        return [x.strip() for x in self.lexicons if x.strip()] if self.lexicons is not None else list(DEFAULT_LEXICONS)

    @classmethod
    def build(cls, **values) -> "ServeSettings":
        """Like the constructor, but a bad value is one :class:`MmsentiError` line naming it."""
        try:
            return cls(**values)
        except ValidationError as err:
            raise MmsentiError(f"serve settings: {validation_message(err, root='')}") from None

    def to_env(self) -> dict[str, str]:
        return {SETTINGS_ENV: self.model_dump_json()}

    @classmethod
    def from_env(cls) -> "ServeSettings":
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise MmsentiError(f"{SETTINGS_ENV} is not set; start workers with `mmsenti serve`")
        try:
            return cls(**json.loads(raw))
        except (ValueError, ValidationError) as err:
            raise MmsentiError(f"{SETTINGS_ENV}: {err}") from None

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    def export_path(self) -> Path | None:
        return Path(self.export) if self.export else None


def _valid_name(name: str) -> bool:
    return bool(name) and len(name) <= 128 and all(c.isalnum() or c in "-_." for c in name)


def error_path(loc: tuple, root: str = "body") -> str:
    """A pydantic location ``('items', 3, 'audio', 2, 5)`` as ``items[3].audio[2][5]`` (``root`` when empty)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or root


def validation_message(err: ValidationError, root: str = "body") -> str:
    """The first problem of a pydantic error, as ``field: message`` (one line)."""
    first = err.errors(include_url=False)[0]
    loc = tuple(p for p in first.get("loc", ()) if p not in ("body",))
    msg = first["msg"].removeprefix("Value error, ")
    path = error_path(loc, root)
    more = len(err.errors()) - 1
    return (f"{path}: {msg}" if path else msg) + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
