"""A replayable traffic file for the server: a Zipf-repeated comment stream built from SST-2 sentences.

Real comment streams repeat: a few sentences ("how long does the battery last") come back constantly
and most are rare. :func:`write_traffic` draws ``n`` requests over ``unique`` SST-2 sentences with
Zipf weights ``p(rank k) ∝ k^-s`` (``s = 1.1`` by default), and rewrites some of them the way
users do, so the cache layers each have something to find:

* ``variant_rate`` of requests are a surface variant of their sentence: ``case`` (upper, title,
  first letter), ``punct`` (``!``, ``!!!``, ``...``, trailing `` .`` dropped), ``space`` (doubled,
  padded) or ``emoji`` (one appended) — the exact layer misses most (``case``, ``punct``, ``emoji``
  change the model's input; ``space`` does not), the near layer should hit all;
* ``negation_rate`` of requests are the sentence's **negation twin** (:func:`negation_twin`:
  ``not`` / ``n't`` / ``never`` removed, or ``not`` put after the first ``is/are/was/were``), which
  no cache layer may serve from the original's answer.

Each JSONL line is ``{"text", "key", "ts", "rank", "kind"}``: ``key`` a user id (uniform over
``users``, for A/B stickiness), ``ts`` seconds from the start (Poisson arrivals at ``rate`` req/s,
for an open-loop replay at the recorded rate), ``rank`` the sentence's Zipf rank (1 = most
frequent), ``kind`` ``base`` | ``case`` | ``punct`` | ``space`` | ``emoji`` | ``negation``. A
replayer sends ``text`` and ``key``; the rest is for the benchmark's bookkeeping. The file is a
pure function of its arguments (``seed`` fixes every draw).

:func:`read_traffic` reads a file back (any JSONL with ``text`` and ``ts``, ``key`` optional),
refusing a bad line with its number.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsenti.errors import MmsentiError
from mmsenti.io import atomic_writer

DEFAULT_SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"  # ../shared beside the repo
KINDS = ("base", "case", "punct", "space", "emoji", "negation")
VARIANTS = ("case", "punct", "space", "emoji")
EMOJI = ("😀", "👍", "😍", "🔥", "🎬", "😡", "😢", "🙄", "❤️", "🍿")
COPULAS = ("is", "are", "was", "were")
_NOT_FORMS = {"ca": "can", "wo": "will", "sha": "shall"}  # SST-2's "ca n't" / "wo n't" without the n't


def zipf_weights(n_items: int, s: float = 1.1) -> np.ndarray:
    """``p(k) ∝ k^-s`` for ranks ``k = 1..n_items`` (a finite Zipf law), summing to 1."""
    if n_items < 1 or s <= 0:
        raise MmsentiError(f"zipf over {n_items} items with s={s}: need >= 1 item and s > 0")
    w = np.arange(1, n_items + 1, dtype=np.float64) ** -float(s)
    return w / w.sum()


def negation_twin(sentence: str) -> str | None:
    """The sentence with its polarity flipped by negation (SST-2's tokenised style), or None when no rule applies."""
    tokens = sentence.split()
    for neg in ("not", "never"):
        if neg in tokens:
            i = tokens.index(neg)
            return " ".join(tokens[:i] + tokens[i + 1:]) or None
    if "n't" in tokens:
        i = tokens.index("n't")
        head = tokens[:i]
        if head and head[-1] in _NOT_FORMS:
            head = head[:-1] + [_NOT_FORMS[head[-1]]]
        return " ".join(head + tokens[i + 1:]) or None
    for i, tok in enumerate(tokens):
        if tok in COPULAS:
            return " ".join(tokens[:i + 1] + ["not"] + tokens[i + 1:])
    return None


def surface_variant(sentence: str, kind: str, rng: np.random.Generator) -> str:
    """``sentence`` rewritten by one surface change of ``kind`` (``case`` | ``punct`` | ``space`` | ``emoji``)."""
    if kind == "case":
        pick = int(rng.integers(3))
        return sentence.upper() if pick == 0 else sentence.title() if pick == 1 else sentence[:1].upper() + sentence[1:]
    if kind == "punct":
        pick = int(rng.integers(4))
        if pick == 3 and sentence.endswith(" ."):
            return sentence[:-2]
        return sentence.rstrip(" .") + ("!", "!!!", "...", " !")[pick]
    if kind == "space":
        pick = int(rng.integers(3))
        return ("  " + sentence + " ", sentence.replace(" ", "  "), sentence + "   ")[pick]
    if kind == "emoji":
        return f"{sentence} {EMOJI[int(rng.integers(len(EMOJI)))]}"
    raise MmsentiError(f"surface variant kind {kind!r}; choose one of {', '.join(VARIANTS)}")


def sst2_sentences(root: str | Path = DEFAULT_SST2, min_words: int = 4) -> list[str]:
    """Distinct sentences of SST-2 ``train.tsv`` + ``dev.tsv`` with at least ``min_words`` words, in file order."""
    from mmsenti.data.sst2 import FILES, read_tsv

    root = Path(root)
    if not root.is_dir():
        raise MmsentiError(f"{root}: no SST-2 folder; pass sst2_root=<folder with train.tsv and dev.tsv> (GLUE layout)")
    seen: dict[str, None] = {}
    for split in ("train", "dev"):
        for sample in read_tsv(root / FILES[split], split):
            if len(sample["text"].split()) >= min_words:
                seen.setdefault(sample["text"], None)
    return list(seen)


def build_traffic(sentences: Sequence[str], n: int = 20_000, seed: int = 0, s: float = 1.1, unique: int | None = 5000,
                  variant_rate: float = 0.2, negation_rate: float = 0.05, rate: float = 200.0, users: int = 1000
                  ) -> list[dict[str, Any]]:
    """The request records (see the module docstring) over ``unique`` of ``sentences`` (a seeded choice)."""
    if n < 1:
        raise MmsentiError(f"traffic of n={n} requests: ask for at least one")
    if not 0 <= variant_rate <= 1 or not 0 <= negation_rate <= 1 or variant_rate + negation_rate > 1:
        raise MmsentiError(f"variant_rate={variant_rate}, negation_rate={negation_rate}: each in [0, 1], together <= 1")
    if rate <= 0 or users < 1:
        raise MmsentiError(f"rate={rate} req/s, users={users}: both must be positive")
    pool = list(dict.fromkeys(sentences))
    if not pool:
        raise MmsentiError("traffic needs at least one sentence")
    rng = np.random.default_rng(seed)
    size = len(pool) if unique is None else min(int(unique), len(pool))
    chosen = [pool[i] for i in rng.permutation(len(pool))[:size]]  # chosen[k - 1] has Zipf rank k
    ranks = rng.choice(size, size=n, p=zipf_weights(size, s)) + 1
    roll = rng.random(n)
    kinds = rng.integers(len(VARIANTS), size=n)
    user_ids = rng.integers(users, size=n)
    ts = np.cumsum(rng.exponential(1.0 / rate, size=n))
    twins: dict[int, str | None] = {}
    records = []
    for i in range(n):
        rank = int(ranks[i])
        text, kind = chosen[rank - 1], "base"
        if roll[i] < negation_rate:
            if rank not in twins:
                twins[rank] = negation_twin(text)
            if twins[rank] is not None:
                text, kind = twins[rank], "negation"
        elif roll[i] < negation_rate + variant_rate:
            kind = VARIANTS[int(kinds[i])]
            text = surface_variant(text, kind, rng)
        records.append({"text": text, "key": f"user{int(user_ids[i]):05d}", "ts": round(float(ts[i]), 6),
                        "rank": rank, "kind": kind})
    return records


def write_traffic(path: str | Path, n: int = 20_000, seed: int = 0, sst2_root: str | Path = DEFAULT_SST2,
                  sentences: Sequence[str] | None = None, **options: Any) -> Path:
    """Write a traffic file (JSONL) of ``n`` requests; ``options`` as :func:`build_traffic` (``s``, ``unique``, ``rate``...).

    ``sentences`` replaces the SST-2 pool (then ``sst2_root`` is not read).
    """
    pool = list(sentences) if sentences is not None else sst2_sentences(sst2_root)
    records = build_traffic(pool, n=n, seed=seed, **options)
    path = Path(path)
    with atomic_writer(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    return path


def read_traffic(path: str | Path) -> list[dict[str, Any]]:
    """The records of a traffic file; a bad line (not JSON, no text, ts missing or going back) names its line."""
    path = Path(path)
    if not path.is_file():
        raise MmsentiError(f"{path}: no such traffic file (write one with mmsenti.serve_traffic.write_traffic)")
    records: list[dict[str, Any]] = []
    last_ts = -math.inf
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise MmsentiError(f"{where}: not a JSON object ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
                raise MmsentiError(f"{where}: each line needs a non-empty \"text\" string")
            ts = record.get("ts")
            if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
                raise MmsentiError(f"{where}: \"ts\" must be a number of seconds, got {ts!r}")
            if ts < last_ts:
                raise MmsentiError(f"{where}: ts {ts} goes back in time (previous {last_ts}); sort the file by ts")
            key = record.get("key")
            if key is not None and not isinstance(key, str):
                raise MmsentiError(f"{where}: \"key\" must be a string or absent, got {key!r}")
            last_ts = ts
            records.append(record)
    if not records:
        raise MmsentiError(f"{path}: empty traffic file")
    return records


def traffic_summary(records: Sequence[dict[str, Any]], top: Sequence[int] = (1, 10, 100)) -> dict[str, Any]:
    """Shape of a stream: requests, distinct texts, repeat rate (the ideal exact-cache hit rate), top-k shares, kinds."""
    n = len(records)
    texts = Counter(r["text"] for r in records)
    ranked = [c for _, c in texts.most_common()]
    duration = records[-1]["ts"] - records[0]["ts"] if n > 1 else 0.0
    return {
        "requests": n,
        "unique_texts": len(texts),
        "repeat_rate": round(1 - len(texts) / n, 4) if n else 0.0,
        "top_share": {str(k): round(sum(ranked[:k]) / n, 4) for k in top},
        "kinds": dict(Counter(r.get("kind", "base") for r in records)),
        "keys": len({r.get("key") for r in records}),
        "rate": round((n - 1) / duration, 2) if duration > 0 else None,
    }
