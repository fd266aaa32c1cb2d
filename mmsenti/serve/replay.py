"""Replay a traffic file against a running server, open loop, recording every request.

    mmsenti serve replay traffic.jsonl --url http://127.0.0.1:8000 [--rate 300 | --recorded] [--seconds 30]

Each line of the file (:func:`mmsenti.serve_traffic.read_traffic`: ``{"text", "key"?, "ts", ...}``)
becomes one ``POST /v1/predict`` with ``{"items": [{"text"}], "key"?, "mode"?}`` (``mode`` from the
line, or ``--mode``), sent at its scheduled time whether or not earlier requests have answered:
``ts - ts[0]`` seconds after the start with ``--recorded`` (the default), or ``i / rate`` with
``--rate``. A slow server meets more load, not less. Bounded: at most ``--max-in-flight``
requests are outstanding; a request whose time comes when none is free is not sent and is counted
as ``dropped`` (as k6 counts dropped iterations), so the schedule never drifts; ``--seconds``
stops sending after that many seconds. Every request is recorded (``--save FILE``: JSONL): its
send offset, latency, status, the answering model and version, ``cached``, the lexicon path, the
server's own time (the ``Server-Timing`` header) and, from the file, ``key``, ``kind``, ``rank``.

The summary (printed as JSON by the command) gives rates, latency percentiles, statuses, the
cache layers' hit rates (overall and per traffic ``kind``), the server time of cached and computed
answers, the lexicon paths, the share of each answering model and, per key, whether it always met
the same model (A/B stickiness).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.io import atomic_writer


def _pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values, float), q)), 3) if len(values) else None


def _server_ms(header: str | None) -> float | None:
    if not header:
        return None
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if name == "app":
            for field in rest.split(";"):
                key, _, value = field.strip().partition("=")
                if key == "dur":
                    try:
                        return float(value)
                    except ValueError:
                        return None
    return None


def schedule(records: Sequence[dict[str, Any]], rate: float | None = None) -> np.ndarray:
    """Send offsets in seconds: ``i / rate``, or the recorded ``ts`` relative to the first."""
    if rate is not None:
        if rate <= 0:
            raise MmsentiError(f"--rate {rate}: give a positive request rate (req/s)")
        return np.arange(len(records), dtype=float) / float(rate)
    ts = np.asarray([float(r["ts"]) for r in records])
    return ts - ts[0]


async def replay_async(records: Sequence[dict[str, Any]], url: str, rate: float | None = None,
                       seconds: float | None = None, max_in_flight: int = 256, timeout: float = 10.0,
                       mode: str | None = None, headers: dict[str, str] | None = None
                       ) -> tuple[list[dict[str, Any]], float]:
    """Send ``records`` open loop (see the module docstring); one row per scheduled request, and the wall time."""
    import httpx

    if max_in_flight < 1:
        raise MmsentiError(f"--max-in-flight {max_in_flight}: allow at least one request in flight")
    endpoint = url.rstrip("/") + "/v1/predict"
    offsets = schedule(records, rate)
    if seconds is not None:
        keep = offsets < seconds
        records, offsets = [r for r, k in zip(records, keep) if k], offsets[keep]
    rows: list[dict[str, Any] | None] = [None] * len(records)
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    in_flight = 0
    async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=headers) as client:
        try:
            probe = await client.get(url.rstrip("/") + "/readyz")
        except httpx.HTTPError as err:
            raise MmsentiError(f"{url}: no server answers ({type(err).__name__}: {err}); start it with mmsenti serve") from None
        if probe.status_code != 200:
            raise MmsentiError(f"{url}/readyz answered {probe.status_code}: the server is not ready")

        async def send(i: int, record: dict[str, Any], offset: float, t0: float) -> None:
            nonlocal in_flight
            body: dict[str, Any] = {"items": [{"text": record["text"]}]}
            if record.get("key"):
                body["key"] = record["key"]
            if record.get("mode") or mode:
                body["mode"] = record.get("mode") or mode
            row = {"i": i, "offset_s": round(offset, 6), "key": record.get("key"), "kind": record.get("kind"),
                   "rank": record.get("rank")}
            sent = time.perf_counter()
            row["lag_ms"] = round((sent - t0 - offset) * 1000.0, 3)
            try:
                r = await client.post(endpoint, content=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                                      headers={"content-type": "application/json"})
                row["latency_ms"] = round((time.perf_counter() - sent) * 1000.0, 3)
                row["status"] = r.status_code
                row["server_ms"] = _server_ms(r.headers.get("server-timing"))
                if r.status_code == 200:
                    data = r.json()
                    item = data["items"][0]
                    row.update(model=data["model"], version=data["version"], score=item["score"],
                               polarity=item["polarity"], cached=item["cached"],
                               path=(item.get("lexicon") or {}).get("path", "model"))
                else:
                    row["error"] = (r.json().get("error") if r.headers.get("content-type", "").startswith("application/json")
                                    else r.text[:200])
            except httpx.HTTPError as err:
                row["latency_ms"] = round((time.perf_counter() - sent) * 1000.0, 3)
                row["status"] = 0
                row["error"] = f"{type(err).__name__}: {err}"
            finally:
                in_flight -= 1
            rows[i] = row

        tasks = []
        t0 = time.perf_counter()
        for i, (record, offset) in enumerate(zip(records, offsets)):
            await asyncio.sleep(max(0.0, t0 + offset - time.perf_counter()))  # 0: still let answers in
            if in_flight >= max_in_flight:
                rows[i] = {"i": i, "offset_s": round(float(offset), 6), "key": record.get("key"),
                           "kind": record.get("kind"), "rank": record.get("rank"), "status": None, "dropped": True}
                continue
            in_flight += 1
            tasks.append(asyncio.ensure_future(send(i, record, float(offset), t0)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return [r for r in rows if r is not None], wall


def summarize(rows: Sequence[dict[str, Any]], wall: float | None = None, offered_rate: float | None = None
              ) -> dict[str, Any]:
    """The figures of a replay (see the module docstring)."""
    sent = [r for r in rows if not r.get("dropped")]
    ok = [r for r in sent if r.get("status") == 200]
    lat = [r["latency_ms"] for r in ok]
    status = Counter(str(r.get("status")) for r in sent)
    cached = Counter(r.get("cached") or "none" for r in ok)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for r in ok:
        by_kind[r.get("kind") or "?"][r.get("cached") or "none"] += 1
    hits = [r["server_ms"] for r in ok if r.get("cached") and r.get("server_ms") is not None]
    misses = [r["server_ms"] for r in ok if not r.get("cached") and r.get("server_ms") is not None]
    models = Counter(r["model"] for r in ok)
    per_key: dict[str, set] = defaultdict(set)
    key_requests: Counter = Counter()
    for r in ok:
        if r.get("key"):
            per_key[r["key"]].add(r["model"])
            key_requests[r["key"]] += 1
    repeated = [k for k, n in key_requests.items() if n >= 2]
    sticky = sum(len(per_key[k]) == 1 for k in repeated)
    span = max((r["offset_s"] for r in rows), default=0.0)
    n_ok = len(ok)
    return {
        "scheduled": len(rows), "sent": len(sent), "dropped": len(rows) - len(sent), "answered_200": n_ok,
        "statuses": dict(status), "offered_rps": offered_rate or (round((len(rows) - 1) / span, 2) if span > 0 else None),
        "achieved_rps": round(n_ok / wall, 2) if wall else None, "wall_s": round(wall, 3) if wall else None,
        "latency_ms": {"p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99),
                       "max": round(max(lat), 3) if lat else None},
        "send_lag_ms_p99": _pct([r["lag_ms"] for r in sent if "lag_ms" in r], 99),
        "cached": dict(cached),
        "hit_rate": {layer: round(cached[layer] / n_ok, 4) for layer in ("exact", "near")} if n_ok else None,
        "hit_rate_by_kind": {k: {layer: round(c[layer] / sum(c.values()), 4) for layer in ("exact", "near")}
                             for k, c in sorted(by_kind.items())},
        "server_ms": {"cached_p50": _pct(hits, 50), "cached_p99": _pct(hits, 99), "computed_p50": _pct(misses, 50),
                      "computed_p99": _pct(misses, 99)},
        "paths": dict(Counter(r.get("path") for r in ok)),
        "models": {m: {"requests": c, "share": round(c / n_ok, 4)} for m, c in models.most_common()},
        "stickiness": {"keys": len(per_key), "keys_with_2_or_more": len(repeated),
                       "sticky_share": round(sticky / len(repeated), 6) if repeated else None},
    }


def replay(path: str | Path, url: str, rate: float | None = None, seconds: float | None = None,
           max_in_flight: int = 256, timeout: float = 10.0, mode: str | None = None, save: str | Path | None = None,
           limit: int | None = None) -> dict[str, Any]:
    """Replay the traffic file ``path`` against ``url``; the summary (and every row in ``save``, JSONL)."""
    from mmsenti.serve_traffic import read_traffic

    records = read_traffic(path)
    if limit is not None:
        records = records[:limit]
    rows, wall = asyncio.run(replay_async(records, url, rate=rate, seconds=seconds, max_in_flight=max_in_flight,
                                          timeout=timeout, mode=mode))
    summary = {"file": str(path), "url": url, "schedule": f"{rate:g} req/s" if rate else "recorded",
               **summarize(rows, wall, rate)}
    if save:
        with atomic_writer(Path(save), "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        summary["saved"] = str(save)
    return summary
