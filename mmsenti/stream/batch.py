"""Batch recomputation of the job's windows, and the per-window comparison the fault test makes.

:func:`recompute` reads the whole input topic (``read_committed``), admits each message with
:func:`mmsenti.stream.events.parse_comment`, puts every event in its window
(:func:`mmsenti.stream.windows.window_start`: no watermark, so nothing is late here), scores the
texts with the same runtime :class:`~mmsenti.runtime.Predictor` and builds each window's record
with :func:`mmsenti.stream.windows.window_result` — the maths the job uses, applied at rest.

:func:`compare` then checks the job's published windows against it, window by window: a window's
events are **lost** when the job counted fewer than the batch (after the job's late events for that
window are added back: late events are accounted, not lost) and **double-counted** when it counted
more, or published the same ``(product_id, window_start)`` twice. Counts are compared exactly;
scores (positives, 7-class histogram, mean score) to a tolerance — and only where they can agree:
a dynamically quantized INT8 engine scores a text differently in different batches (it takes the
activation range from the whole call), and the job's batches are not the batch's.

    mmsenti stream verify --in comments --out product_sentiment --late late_comments --model export/student_int8

``verify`` compares the windows the input's own watermark has closed (``--lateness``, as the job's):
run it once the job has caught up with its input.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmsenti.stream.clients import KafkaSettings, read_topic
from mmsenti.stream.events import Comment, parse_comment
from mmsenti.stream.windows import WindowAccumulator, is_late, window_result, window_start

SCORE_TOLERANCE = 1e-4  # |mean_score| difference allowed between the job and the batch


def admitted_events(payloads: Iterable[Any]) -> tuple[list[Comment], Counter]:
    """The valid comments of ``payloads`` and the malformed ones counted by reason."""
    comments, malformed = [], Counter()
    for payload in payloads:
        comment, reason = parse_comment(payload)
        if comment is None:
            malformed[reason] += 1
        else:
            comments.append(comment)
    return comments, malformed


def windows_of(comments: list[Comment], predictor, window_ms: int, version: str,
               batch_size: int = 64) -> dict[tuple[str, int], dict[str, Any]]:
    """Every (product_id, window_start) → its window record, scored by ``predictor``."""
    acc: dict[tuple[str, int], WindowAccumulator] = defaultdict(WindowAccumulator)
    order = sorted(range(len(comments)), key=lambda i: len(comments[i].text))  # as the job: similar lengths together
    for lo in range(0, len(order), batch_size):
        part = [comments[i] for i in order[lo:lo + batch_size]]
        pred = predictor.predict([c.text for c in part])
        for c, score, pol, cls in zip(part, pred["score"], pred["polarity"], pred["class_7"]):
            acc[(c.product_id, window_start(c.ts, window_ms))].add(float(score), pol, int(cls), version)
    return {key: window_result(key[0], key[1], key[1] + window_ms, a.polarity, a.class_7, a.versions, a.score_sum)
            for key, a in acc.items()}


def recompute(settings: KafkaSettings, topic: str, export_dir: str | Path, window_ms: int, threads: int = 1,
              lateness_ms: int | None = None) -> tuple[dict[tuple[str, int], dict[str, Any]], dict[str, Any]]:
    """The batch windows of everything in ``topic`` now, and facts about the input.

    ``lateness_ms``: keep only the windows the job can have closed — those the watermark of the
    whole input (its largest ``ts`` minus the lateness) has passed; the others are counted as open.
    """
    from mmsenti.runtime.predictor import Predictor

    payloads = [m.value() for m in read_topic(settings, topic)]
    comments, malformed = admitted_events(payloads)
    predictor = Predictor.load(export_dir, threads=threads)
    windows = windows_of(comments, predictor, window_ms, Path(export_dir).resolve().name)
    facts = {"messages": len(payloads), "events": len(comments), "malformed": sum(malformed.values()),
             "malformed_reasons": dict(malformed), "windows": len(windows)}
    if lateness_ms is not None and comments:
        watermark = max(c.ts for c in comments) - lateness_ms
        open_keys = [key for key in windows if not is_late(key[1], watermark, window_ms)]
        for key in open_keys:
            del windows[key]
        facts.update(watermark=watermark, open_windows=len(open_keys))
    return windows, facts


def compare(published: Iterable[Mapping[str, Any]], batch: Mapping[tuple[str, int], Mapping[str, Any]],
            late: Iterable[Mapping[str, Any]] = (), check_versions: bool = False,
            tolerance: float = SCORE_TOLERANCE) -> dict[str, Any]:
    """Per-window comparison of the job's records with the batch's (see the module docstring).

    ``counts_equal``: no event lost or double-counted in any window and no window published twice
    (the exactly-once check). ``scores_equal``: positives, 7-class histogram and mean score agree too
    (to ``tolerance``) — expected of an engine whose scores do not depend on the batch a text is
    scored in (fp32, static INT8), not of a dynamically quantized one (:func:`batch_dependent`).
    """
    seen: dict[tuple[str, int], Mapping[str, Any]] = {}
    duplicates = 0
    for record in published:
        key = (record["product_id"], int(record["window_start"]))
        duplicates += key in seen
        seen[key] = record
    late_per_window = Counter((e["product_id"], int(e["window_start"])) for e in late)
    lost = double = 0
    count_problems: list[dict[str, Any]] = []
    score_problems: list[dict[str, Any]] = []
    for key in sorted(set(batch) | set(seen)):
        want, got = batch.get(key), seen.get(key)
        want_n = want["count"] if want else 0
        got_n = (got["count"] if got else 0) + late_per_window.get(key, 0)
        lost += max(0, want_n - got_n)
        double += max(0, got_n - want_n)
        where = {"product_id": key[0], "window_start": key[1]}
        if want_n != got_n:
            count_problems.append({**where, "problems": [f"count {got_n} (with {late_per_window.get(key, 0)} late) vs batch {want_n}"]})
            continue
        if not (got and want) or late_per_window.get(key):
            continue
        problems = []
        if got["positives"] != want["positives"] or got["class_7_hist"] != want["class_7_hist"]:
            problems.append(f"positives/class_7 {got['positives']}/{got['class_7_hist']} vs {want['positives']}/{want['class_7_hist']}")
        if abs(got["mean_score"] - want["mean_score"]) > tolerance:
            problems.append(f"mean_score {got['mean_score']:.6f} vs {want['mean_score']:.6f}")
        if check_versions and got["model_versions"] != want["model_versions"]:
            problems.append(f"model_versions {got['model_versions']} vs {want['model_versions']}")
        if problems:
            score_problems.append({**where, "problems": problems})
    counts_equal = not count_problems and duplicates == 0
    return {"windows_batch": len(batch), "windows_published": len(seen), "duplicate_results": duplicates,
            "late_events": sum(late_per_window.values()), "lost_events": lost, "double_counted_events": double,
            "count_mismatched_windows": len(count_problems), "score_mismatched_windows": len(score_problems),
            "mismatches": (count_problems + score_problems)[:20], "counts_equal": counts_equal,
            "scores_equal": not score_problems, "equal": counts_equal and not score_problems}


def batch_dependent(export_dir: str | Path) -> bool:
    """Whether the engine's scores depend on the batch: dynamic INT8 quantizes activations per call,
    from the range of the whole batch (padding included), so a text's score moves with its batch-mates."""
    from mmsenti.runtime.manifest import read_manifest

    manifest = read_manifest(export_dir)
    quantization = manifest.get("quantization") or {}
    method = quantization.get("method") if isinstance(quantization, dict) else quantization
    return manifest.get("precision") == "int8" and method == "dynamic"
