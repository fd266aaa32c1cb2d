"""The comment event on the wire: one JSON object per Kafka message, and the one rule that admits it.

    {"comment_id": "c-1", "product_id": "p-7", "text": "love it", "ts": 1796115905123, "user_id": "u-3"}

``comment_id``, ``product_id`` (strings or integers; read as strings), ``text`` (a non-empty string)
and ``ts`` (event time: epoch **milliseconds**, a JSON integer) are required; ``user_id`` is optional.
Anything else goes to the dead-letter topic with the reason :func:`parse_comment` gives — the job,
the batch recomputation and the tests all admit events through this one function. Extra fields are
ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

REQUIRED_FIELDS = ("comment_id", "product_id", "text", "ts")
MAX_TS = 10**14  # epoch ms far beyond any real clock (year ~5138): larger integers are typos (µs, ns)


@dataclass(frozen=True)
class Comment:
    comment_id: str
    product_id: str
    text: str
    ts: int  # event time, epoch milliseconds
    user_id: str | None = None

    def to_json(self) -> bytes:
        """The wire form (compact JSON, UTF-8)."""
        obj: dict[str, Any] = {"comment_id": self.comment_id, "product_id": self.product_id, "text": self.text, "ts": self.ts}
        if self.user_id is not None:
            obj["user_id"] = self.user_id
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _identifier(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    value = str(value)
    return value if value.strip() else None


def parse_comment(payload: bytes | str | None) -> tuple[Comment | None, str | None]:
    """``(comment, None)`` for a valid message, ``(None, reason)`` for a malformed one.

    Reasons are one short line: ``bad JSON: ...``, ``not a JSON object``, ``missing field: text``,
    ``empty text``, ``bad field: ts must be epoch milliseconds (a non-negative integer)``, ...
    """
    if payload is None:
        return None, "empty message (no value)"
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            return None, f"bad JSON: not UTF-8 ({err.reason} at byte {err.start})"
    try:
        obj = json.loads(payload)
    except ValueError as err:  # json.JSONDecodeError; RecursionError is not expected from a message this size
        return None, f"bad JSON: {getattr(err, 'msg', str(err))} (char {getattr(err, 'pos', '?')})"
    if not isinstance(obj, dict):
        return None, f"not a JSON object (got {type(obj).__name__})"
    missing = [name for name in REQUIRED_FIELDS if obj.get(name) is None]
    if missing:
        return None, f"missing field: {', '.join(missing)}"
    text = obj["text"]
    if not isinstance(text, str):
        return None, f"bad field: text must be a string (got {type(text).__name__})"
    if not text.strip():
        return None, "empty text"
    ts = obj["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < MAX_TS:
        return None, f"bad field: ts must be epoch milliseconds (a non-negative integer), got {ts!r:.40}"
    comment_id, product_id = _identifier(obj, "comment_id"), _identifier(obj, "product_id")
    for name, value in (("comment_id", comment_id), ("product_id", product_id)):
        if value is None:
            return None, f"bad field: {name} must be a non-empty string or integer"
    user = obj.get("user_id")
    user_id = None if user is None else (_identifier(obj, "user_id") or str(user))
    return Comment(comment_id, product_id, text, ts, user_id), None
