"""The answer cache: exact text and keys, model-version namespaces, LRU bounds and TTL, the guarded near layer,
the layered lookup, and the Redis backend against a real redis-server."""

from __future__ import annotations

import csv
import hashlib
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("vaderSentiment", reason="the near layer's guard needs the serve extra (vaderSentiment)")
pytest.importorskip("jieba", reason="the near layer's Chinese guard needs the serve extra (jieba)")

from mmsenti.cache.keys import DIGEST_SIZE, digest, exact_key, exact_text, model_namespace, namespace
from mmsenti.cache.layered import LayeredCache
from mmsenti.cache.lru import LRUCache, payload_bytes
from mmsenti.cache.near import NearCache, jaccard, near_text, shingles
from mmsenti.errors import MmsentiError
from mmsenti.lexicon.rules import Scorer

DATA = Path(__file__).parent / "data"
NS1, NS2 = namespace("minilm", "aaaaaaaaaaaa"), namespace("minilm", "bbbbbbbbbbbb")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(["finance_zh", "general_zh", "finance_en", "vader"])


def negation_pairs() -> list[dict]:
    with (DATA / "negation_pairs.tsv").open(encoding="utf-8") as fh:
        rows = [line for line in fh if not line.startswith("#")]
    return list(csv.DictReader(rows, delimiter="\t", quoting=csv.QUOTE_NONE))


def variant_groups() -> dict[str, list[tuple[str, str]]]:
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with (DATA / "variant_sets.tsv").open(encoding="utf-8") as fh:
        rows = [line for line in fh if not line.startswith("#")]
    for row in csv.DictReader(rows, delimiter="\t", quoting=csv.QUOTE_NONE):
        groups[row["group"]].append((row["kind"], row["text"].replace("\\t", "\t").replace("\\n", "\n")))
    return groups


# ---------------------------------------------------------------------------------------------- keys
def test_exact_text_is_the_models_own_input():
    assert exact_text("  the   movie\twas\ngreat ") == "the movie was great"            # rule none: white space only
    assert exact_text("GREAT") != exact_text("great")                                  # a cased model may differ
    assert exact_text("ＧＯＯＤ film") != exact_text("GOOD film")                       # no NFKC the model does not do
    assert exact_text("GREAT", lowercase=True) == "great"                              # an uncased tokenizer's case
    assert exact_text("I LOVED it!", "transcript") == exact_text("i loved  it", "transcript") == "i loved it"
    assert exact_text("ＧＯＯＤ film", "transcript") == "good film"                     # transcript is NFKC + lower
    with pytest.raises(MmsentiError, match="choose one of none, transcript"):
        exact_text("x", "lower")


def test_keys_blake2b_namespaced():
    key = exact_key("the movie was great", NS1)
    prefix, _, hexdigest = key.rpartition(":")
    assert prefix == NS1 == "minilm@aaaaaaaaaaaa/model" and len(hexdigest) == 2 * DIGEST_SIZE
    assert hexdigest == hashlib.blake2b(b"the movie was great", digest_size=16, key=NS1.encode(),
                                        person=b"mmsenti-exact1").hexdigest()
    assert exact_key(" the movie  was great", NS1) == key                              # same model input, same key
    assert exact_key("the movie was great!", NS1) != key
    assert digest("the movie was great", NS2) != hexdigest                             # the digest itself differs
    assert exact_key("x", namespace("m", "v", "x" * 100)).startswith("m@v/")           # long namespaces still key


def test_model_namespace_from_a_manifest():
    manifest = {"name": "sst2_minilm", "engine": "model.onnx", "files": {"model.onnx": {"sha256": "0123456789abcdef" * 4}}}
    assert model_namespace(manifest) == "sst2_minilm@0123456789ab/model"
    assert model_namespace(manifest, "override:finance_en@1") == "sst2_minilm@0123456789ab/override:finance_en@1"
    with pytest.raises(MmsentiError, match="re-export"):
        model_namespace({"name": "x", "engine": "model.onnx", "files": {}})
    with pytest.raises(MmsentiError, match="must not contain ':'"):
        namespace("a:b", "1")


# ---------------------------------------------------------------------------------------------- LRU
def test_lru_entry_bound_evicts_least_recently_used():
    lru = LRUCache(max_entries=2)
    lru.put("a", "1")
    lru.put("b", "2")
    assert lru.get("a") == "1"           # a is now the most recent
    lru.put("c", "3")                    # evicts b
    assert lru.keys() == ["a", "c"] and lru.get("b") is None
    s = lru.stats()
    assert (s["hits"], s["misses"], s["evictions"], s["entries"]) == (1, 1, 1, 2)


def test_lru_byte_bound_by_hand():
    removed = []
    lru = LRUCache(max_entries=100, max_bytes=10, on_remove=lambda k, v: removed.append(k))
    assert lru.put("k1", "abc") and lru.bytes == 5                                     # 2 key bytes + 3 value bytes
    lru.put("k2", "abc")
    assert lru.bytes == 10 and len(lru) == 2
    lru.put("k3", "a")                                                                 # 13 bytes: k1 must go
    assert lru.keys() == ["k2", "k3"] and lru.bytes == 8 and removed == ["k1"]
    assert not lru.put("big", "x" * 20) and lru.stats()["rejected"] == 1 and "big" not in lru
    lru.put("k2", "abcdefgh")                                                          # replacing k2 frees its bytes first
    assert lru.bytes == 10 and lru.keys() == ["k2"] and lru.stats()["evictions"] == 2
    assert payload_bytes({"score": 1.5}) == len('{"score":1.5}') and payload_bytes("é") == 2


def test_lru_ttl_with_an_injected_clock():
    clock = Clock()
    lru = LRUCache(ttl_s=10, clock=clock)
    lru.put("a", 1)
    clock.now += 9.999
    assert lru.get("a") == 1
    clock.now += 0.001                                                                 # exactly ttl old: expired
    assert lru.get("a") is None and "a" not in lru and len(lru) == 0
    assert lru.stats()["expired"] == 1 and lru.stats()["misses"] == 1
    lru.put("a", 2)                                                                    # a re-put restarts the clock
    clock.now += 5
    assert lru.peek("a") == 2 and lru.stats()["hits"] == 1                             # peek counts nothing
    with pytest.raises(MmsentiError, match="ttl_s=0"):
        LRUCache(ttl_s=0)
    with pytest.raises(MmsentiError, match="both must be >= 1"):
        LRUCache(max_entries=0)


def test_lru_drop_prefix():
    lru = LRUCache()
    for k in (f"{NS1}:x", f"{NS1}:y", f"{NS2}:x"):
        lru.put(k, 1)
    assert lru.drop_prefix(f"{NS1}:") == 2 and lru.keys() == [f"{NS2}:x"]


# ---------------------------------------------------------------------------------------------- near
def test_near_text_and_jaccard():
    assert near_text("  GREAT movie!!! 😀 ") == "great movie"
    assert near_text("“这部 电影 很好看”！") == "这部电影很好看"
    assert near_text("Don’t") == "don't"
    assert shingles("abcd") == {"abc", "bcd"} and shingles("ab") == {"ab"} and shingles("") == frozenset()
    assert jaccard(frozenset("ab"), frozenset("bc")) == pytest.approx(1 / 3)


def test_near_guard_on_hand_written_pairs(scorer):
    near = NearCache(scorer, threshold=0.15)  # so low that every pair is a candidate: the guard alone must refuse
    pairs = [("the battery is good", "the battery is not good"),
             ("i like the new update", "i don't like the new update"),
             ("the plot is funny", "the plot is never funny"),
             ("the movie was great", "the movie was terrible"),
             ("the movie was good", "the movie was very good"),
             ("这部电影很好看", "这部电影不好看"),
             ("公司业绩超预期", "公司业绩不及预期"),
             ("这是利好", "这不是利好"),
             ("服务有改善", "服务没有改善"),
             ("这个消息算得上利好", "这个消息算不上利好")]
    for i, (a, b) in enumerate(pairs):
        ns = namespace("m", "1", f"pair{i}")
        near.put(a, {"text": a}, ns)
        assert near.get(b, ns) is None, (a, b)
        assert near.get(a.upper() + "!", ns) == {"text": a}                             # while the variant hits
    assert near.stats()["guard_rejects"] == len(pairs)


def test_negation_pair_set_never_served_across(scorer):
    """Target: 0 polarity-flipping hits on the >= 300-pair set (both directions), even at Jaccard >= 0.3."""
    pairs = negation_pairs()
    assert len(pairs) >= 300 and {p["lang"] for p in pairs} == {"en", "zh"}
    assert all(p["expected"] == "miss" for p in pairs)

    def served(guard: bool) -> int:
        near = NearCache(scorer, threshold=0.3, guard=guard)
        hits = 0
        for i, p in enumerate(pairs):
            for direction, (a, b) in enumerate(((p["sentence"], p["twin"]), (p["twin"], p["sentence"]))):
                ns = namespace("m", "1", f"{i}.{direction}")
                near.put(a, a, ns)
                hits += near.get(b, ns) is not None
        return hits

    assert served(guard=True) == 0
    assert served(guard=False) >= 300  # the pairs are near-duplicates: without the guard they would be served


def test_variant_sets_all_hit(scorer):
    """Target: 100% near hits on case / punctuation / white space / emoji variants, at the default threshold."""
    groups = variant_groups()
    cache = LayeredCache(LRUCache(), near=NearCache(scorer))
    for g, rows in groups.items():
        assert rows[0][0] == "base"
        cache.store(rows[0][1], NS1, {"group": g})
    layers = defaultdict(int)
    for g, rows in groups.items():
        kinds = {k for k, _ in rows}
        assert {"punct", "space", "emoji"} <= kinds
        for kind, text in rows[1:]:
            answer, layer = cache.lookup(text, NS1)
            assert answer == {"group": g}, (g, kind, text)
            layers[(kind, layer)] += 1
    assert layers[("case", "exact")] == 0 and layers[("emoji", "exact")] == 0  # the exact layer keeps case and emoji
    assert layers[("space", "exact")] > 0                                       # white space is the model's own folding
    assert sum(layers.values()) >= 400


def test_emoji_guard_for_a_model_that_reads_emoji(scorer):
    near = NearCache(scorer, emoji_guard=True)
    near.put("great movie", 1, NS1)
    assert near.get("great movie 😡", NS1) is None and near.get("GREAT movie!", NS1) == 1


def test_near_eviction_and_ttl_keep_the_index_in_step(scorer):
    clock = Clock()
    near = NearCache(scorer, max_entries=2, ttl_s=10, clock=clock)
    near.put("the first sentence here", 1, NS1)
    near.put("the second sentence here", 2, NS1)
    near.put("the third sentence here", 3, NS1)                 # evicts the first
    assert near.get("The first sentence here!", NS1) is None
    assert near.get("The third sentence here!", NS1) == 3
    assert len(near._buckets) <= 2 * near.bands                 # the evicted entry's buckets are gone
    clock.now += 10
    assert near.get("the third sentence here", NS1) is None and near.stats()["expired"] >= 1
    assert near.get("x", NS2) is None                           # another namespace never sees these
    with pytest.raises(MmsentiError, match="threshold=0"):
        NearCache(scorer, threshold=0)


# ---------------------------------------------------------------------------------------------- layered
def test_model_version_keying_a_swap_never_serves_old_answers(scorer):
    cache = LayeredCache(LRUCache(), near=NearCache(scorer))
    cache.store("the movie was great", NS1, {"score": 2.0, "model": "v1"})
    assert cache.lookup("the movie was great", NS1) == ({"score": 2.0, "model": "v1"}, "exact")
    assert cache.lookup("The movie was great!", NS1) == ({"score": 2.0, "model": "v1"}, "near")
    assert cache.lookup("the movie was great", NS2) == (None, None)                    # the swapped-in model
    assert cache.lookup("The movie was great!", NS2) == (None, None)
    assert cache.lookup("the movie was great", namespace("minilm", "aaaaaaaaaaaa", "override:x@1")) == (None, None)
    assert cache.drop_namespace(NS1) == {"exact": 1, "near": 1}
    assert cache.lookup("the movie was great", NS1) == (None, None)
    s = cache.stats()
    assert s["exact"]["hits"] == 1 and s["near"]["hits"] == 1 and s["exact"]["misses"] == 5


def test_layered_rule_must_match_the_near_layer(scorer):
    with pytest.raises(MmsentiError, match="build the NearCache with rule="):
        LayeredCache(near=NearCache(scorer, rule="none"), rule="transcript")


# ---------------------------------------------------------------------------------------------- redis
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    pytest.importorskip("redis", reason="the redis client is part of the serve extra")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail(f"redis-server on port {port} did not answer within 5 s")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_redis_shared_between_workers(redis_url):
    from mmsenti.cache.redis_backend import RedisCache

    worker_a = LayeredCache(LRUCache(), redis=RedisCache(redis_url, ttl_s=60))
    worker_b = LayeredCache(LRUCache(), redis=RedisCache(redis_url, ttl_s=60))
    answer = {"score": -1.25, "polarity": "negative", "path": "model"}
    worker_a.store("not worth the money", NS1, answer)
    assert worker_b.lookup("not  worth the money", NS1) == (answer, "exact")          # from Redis...
    assert worker_b.exact.stats()["entries"] == 1                                      # ...copied into b's LRU
    assert worker_b.redis.stats()["hits"] == 1
    assert worker_b.lookup("not worth the money", NS2) == (None, None)                 # namespaced in Redis too
    key = worker_a.redis.prefix + worker_a.key("not worth the money", NS1)
    assert 0 < worker_a.redis.client.ttl(key) <= 60                                    # Redis expires it itself
    worker_a.store("another one", NS1, answer)
    worker_a.store("another one", NS2, answer)
    assert worker_a.drop_namespace(NS1) == {"exact": 2, "redis": 2}
    assert RedisCache(redis_url).get(worker_a.key("another one", NS2)) is not None     # the other namespace stays


def test_redis_down_is_a_counted_miss_not_an_error():
    pytest.importorskip("redis", reason="the redis client is part of the serve extra")
    from mmsenti.cache.redis_backend import RedisCache

    dead = RedisCache(f"redis://127.0.0.1:{_free_port()}/0", timeout_s=0.05)
    cache = LayeredCache(LRUCache(), redis=dead)
    cache.store("fine", NS1, {"score": 1})                                             # no exception
    assert cache.lookup("fine", NS1) == ({"score": 1}, "exact")                        # the LRU still answers
    assert cache.lookup("other", NS1) == (None, None)
    assert dead.stats()["errors"] == 2 and not dead.ping()
    with pytest.raises(MmsentiError, match="redis url"):
        RedisCache("http://nowhere")
