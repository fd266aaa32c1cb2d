"""The replayable traffic file: Zipf shape, determinism, variants and negation twins, reading it back."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mmsenti.errors import MmsentiError
from mmsenti.serve_traffic import (build_traffic, negation_twin, read_traffic, sst2_sentences, surface_variant,
                                   traffic_summary, write_traffic, zipf_weights)

SENTENCES = [f"sentence number {i} is a fine one" for i in range(1000)]


def test_zipf_weights_by_hand():
    w = zipf_weights(3, s=1.0)
    assert w == pytest.approx(np.array([1, 1 / 2, 1 / 3]) / (11 / 6))
    w = zipf_weights(1000, s=1.1)
    assert w.sum() == pytest.approx(1.0) and w[0] / w[1] == pytest.approx(2 ** 1.1) and w[0] / w[9] == pytest.approx(10 ** 1.1)
    with pytest.raises(MmsentiError, match="s > 0"):
        zipf_weights(10, s=0)


def test_stream_has_the_zipf_shape():
    records = build_traffic(SENTENCES, n=20_000, seed=3, s=1.1, unique=1000, variant_rate=0, negation_rate=0)
    counts = Counter(r["rank"] for r in records)
    w = zipf_weights(1000, 1.1)
    for k in (1, 10, 100):  # top-k share of requests vs the law's, within 1.5 points
        assert sum(counts[r] for r in range(1, k + 1)) / 20_000 == pytest.approx(w[:k].sum(), abs=0.015)
    assert counts[1] / counts[10] == pytest.approx(10 ** 1.1, rel=0.2)             # 12.6: the frequency ratio
    assert counts[1] / counts[2] == pytest.approx(2 ** 1.1, rel=0.1)
    summary = traffic_summary(records)
    assert summary["top_share"]["1"] == pytest.approx(w[0], abs=0.01) and summary["kinds"] == {"base": 20_000}
    assert summary["repeat_rate"] == pytest.approx(1 - summary["unique_texts"] / 20_000, abs=1e-4)
    # the same text always has the same rank (one sentence per rank)
    assert len({(r["rank"], r["text"]) for r in records}) == len({r["rank"] for r in records})


def test_file_is_a_pure_function_of_the_seed(tmp_path):
    a = write_traffic(tmp_path / "a.jsonl", n=3000, seed=7, sentences=SENTENCES)
    b = write_traffic(tmp_path / "b.jsonl", n=3000, seed=7, sentences=SENTENCES)
    c = write_traffic(tmp_path / "c.jsonl", n=3000, seed=8, sentences=SENTENCES)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    first = json.loads(a.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"text", "key", "ts", "rank", "kind"}


def test_variants_twins_keys_and_rate(tmp_path):
    sentences = [f"the film {i} is good" for i in range(200)]
    path = write_traffic(tmp_path / "t.jsonl", n=10_000, seed=1, sentences=sentences, unique=200,
                         variant_rate=0.3, negation_rate=0.1, rate=500.0, users=50)
    records = read_traffic(path)
    kinds = Counter(r["kind"] for r in records)
    assert kinds["negation"] / 10_000 == pytest.approx(0.1, abs=0.015)             # every sentence has a twin here
    variants = sum(kinds[k] for k in ("case", "punct", "space", "emoji"))
    assert variants / 10_000 == pytest.approx(0.3, abs=0.02) and min(kinds[k] for k in ("case", "punct", "space", "emoji")) > 500
    for r in records:
        if r["kind"] == "negation":
            assert " is not good" in r["text"]
        elif r["kind"] == "base":
            assert r["text"] in sentences
    assert len({r["key"] for r in records}) == 50
    ts = [r["ts"] for r in records]
    assert ts == sorted(ts) and (len(ts) - 1) / (ts[-1] - ts[0]) == pytest.approx(500, rel=0.05)


def test_negation_twin_rules():
    assert negation_twin("it 's not a good movie .") == "it 's a good movie ."
    assert negation_twin("the plot is never dull") == "the plot is dull"
    assert negation_twin("it does n't work") == "it does work"
    assert negation_twin("i ca n't recommend it") == "i can recommend it"
    assert negation_twin("the acting was superb") == "the acting was not superb"
    assert negation_twin("a triumph of style") is None


def test_surface_variants():
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert surface_variant("great fun .", "case", rng).lower() == "great fun ."
        assert surface_variant("great fun .", "punct", rng).rstrip("!. ") == "great fun"
        assert " ".join(surface_variant("great fun .", "space", rng).split()) == "great fun ."
        assert surface_variant("great fun .", "emoji", rng).startswith("great fun . ")
    with pytest.raises(MmsentiError, match="choose one of case, punct, space, emoji"):
        surface_variant("x", "typo", rng)


@pytest.mark.parametrize("line, phrase", [
    ("not json", "not a JSON object"),
    ('{"ts": 1}', "non-empty \\\"text\\\""),
    ('{"text": "x"}', "\\\"ts\\\" must be a number"),
    ('{"text": "x", "ts": 0.5}', "goes back in time"),
    ('{"text": "x", "ts": 2, "key": 5}', "\\\"key\\\" must be a string"),
])
def test_read_traffic_names_the_bad_line(tmp_path, line, phrase):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "ts": 1.0, "key": null}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(MmsentiError, match=phrase) as err:
        read_traffic(path)
    assert str(err.value).startswith(f"{path}:3: ")


def test_read_traffic_refuses_missing_and_empty(tmp_path):
    with pytest.raises(MmsentiError, match="no such traffic file"):
        read_traffic(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(MmsentiError, match="empty traffic file"):
        read_traffic(tmp_path / "empty.jsonl")
    with pytest.raises(MmsentiError, match="no SST-2 folder"):
        write_traffic(tmp_path / "x.jsonl", n=10, sst2_root=tmp_path / "nowhere")


def test_sst2_stream_and_the_near_guard_on_its_twins(shared_data, tmp_path):
    """The real stream (SST-2 train + dev); the near layer never serves a negation twin its original's answer."""
    pytest.importorskip("vaderSentiment", reason="the near layer's guard needs the serve extra")
    from mmsenti.cache.keys import namespace
    from mmsenti.cache.near import NearCache
    from mmsenti.lexicon.rules import Scorer

    pool = sst2_sentences(shared_data / "sst2")
    assert len(pool) > 30_000
    records = read_traffic(write_traffic(tmp_path / "sst2.jsonl", n=20_000, seed=0, sst2_root=shared_data / "sst2"))
    summary = traffic_summary(records)
    assert summary["requests"] == 20_000 and summary["repeat_rate"] > 0.6 and summary["kinds"]["negation"] > 100
    by_rank = {r["rank"]: r["text"] for r in records if r["kind"] == "base"}
    twins = {(by_rank[r["rank"]], r["text"]) for r in records if r["kind"] == "negation" and r["rank"] in by_rank}
    near = NearCache(Scorer(["vader"]), threshold=0.5)
    ns = namespace("m", "1")
    for original, twin in twins:
        near.put(original, original, ns)
    served = [(o, t) for o, t in twins if near.get(t, ns) is not None]
    assert served == [] and len(twins) > 50 and near.stats()["guard_rejects"] > 0.9 * len(twins)  # near, yet refused
