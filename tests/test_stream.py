"""Streaming (issue 14): window/lateness/alert maths, the admission rule, hot model swaps, the broker
wrapper and client round trip, and the Flink job end to end — dead letters, out-of-order and late
events, reversal alerts, a hot model update, a kill + restore compared with the batch recomputation.

The pure-Python tests run everywhere. The broker tests need the ``stream`` extra (``noida-db``,
``confluent-kafka``); the Flink tests also need the Flink runtime (``make stream-venv``). A broker is
started per module on a free 127.0.0.1 port and always stopped. Nothing here depends on a quirk of
the development broker: the topics are fresh per test, reads are ``read_committed`` and bounded by
the end offsets, so the same tests pass against Apache Kafka.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from mmsenti.errors import MmsentiError
from mmsenti.stream.events import Comment, parse_comment
from mmsenti.stream.windows import (
    CLASSES_7, ReversalTracker, Watermark, WindowAccumulator, alerts_for, is_late, parse_duration, reversal_alert,
    window_result, window_start)

ROOT = Path(__file__).resolve().parents[1]
W = 2000  # window (ms) of the Flink tests
L = 500  # lateness (ms)
TEXTS = ["i love it", "works great", "a wonderful gift", "truly excellent quality", "best purchase this year",
         "five stars , would buy again", "fantastic value", "my kids adore it", "so happy with this", "perfect fit",
         "beautiful and sturdy", "exceeded my hopes", "very comfortable", "a delight to use", "highly recommended",
         "it broke in a day", "a waste of money", "terrible quality", "never buying again", "arrived damaged",
         "awful smell", "the worst product", "cheap and flimsy", "stopped working", "poor customer service",
         "does not fit at all", "returned it at once", "completely useless", "very disappointing", "too loud and slow",
         "it is okay", "nothing special", "average at best", "as described", "fine for the price", "meh",
         "could be better", "not bad", "decent enough", "it does the job"]


# ============================================================================ pure Python: maths and rules
def scored(product: str, ts: int, score: float) -> dict:
    return {"product_id": product, "ts": ts, "score": score}


def batch_by_hand(events: list[dict], size: int) -> dict:
    """The shared maths over a hand-made scored event list (polarity/class by the one rule)."""
    from mmsenti.text import class_7, polarity

    acc: dict = {}
    for e in events:
        key = (e["product_id"], window_start(e["ts"], size))
        acc.setdefault(key, WindowAccumulator()).add(e["score"], polarity(e["score"]), class_7(e["score"]), "1")
    return {k: window_result(k[0], k[1], k[1] + size, a.polarity, a.class_7, a.versions, a.score_sum) for k, a in acc.items()}


def test_window_assignment_and_positive_rate_on_a_hand_made_event_list():
    events = [scored("a", 0, 2.4), scored("a", 4999, -0.6), scored("a", 1200, 0.0), scored("a", 5000, 1.0),
              scored("b", 3000, -2.6), scored("b", 9999, 0.4), scored("a", 12_345, -3.5)]
    out = batch_by_hand(events, 5000)
    assert sorted(out) == [("a", 0), ("a", 5000), ("a", 10_000), ("b", 0), ("b", 5000)]
    a0 = out[("a", 0)]
    assert (a0["window_start"], a0["window_end"], a0["count"]) == (0, 5000, 3)  # 4999 is in [0, 5000), 5000 is not
    assert a0["positives"] == 1 and a0["negatives"] == 1  # exactly 0 is neutral: counted, neither positive nor negative
    assert a0["positive_rate"] == pytest.approx(1 / 3)
    assert a0["mean_score"] == pytest.approx((2.4 - 0.6 + 0.0) / 3)
    assert a0["class_7_hist"] == [0, 0, 1, 1, 0, 1, 0]  # classes -3..3: round(-0.6) = -1, 0, round(2.4) = 2
    assert out[("a", 10_000)]["class_7_hist"] == [1, 0, 0, 0, 0, 0, 0]  # -3.5 clipped to -3
    assert out[("b", 0)]["positive_rate"] == 0.0 and out[("b", 5000)]["positive_rate"] == 1.0
    assert CLASSES_7 == (-3, -2, -1, 0, 1, 2, 3)
    # Flink's rule for any start: [start, start + size) holds ts, and starts are multiples of the size
    for ts in (0, 1, 4999, 5000, 1_796_115_905_123):
        assert window_start(ts, 5000) <= ts < window_start(ts, 5000) + 5000 and window_start(ts, 5000) % 5000 == 0


def test_window_result_refuses_inconsistent_counters_and_picks_the_majority_version():
    r = window_result("p", 0, 10, {"positive": 2, "negative": 1}, {1: 2, -1: 1}, {"1": 1, "2": 2}, 0.5)
    assert r["model_version"] == "2" and r["model_versions"] == {"1": 1, "2": 2}
    tie = window_result("p", 0, 10, {"positive": 2}, {1: 2}, {"9": 1, "10": 1}, 1.0)
    assert tie["model_version"] == "10"  # a tie goes to the newer version, numeric order (10 > 9)
    with pytest.raises(ValueError, match="counters disagree"):
        window_result("p", 0, 10, {"positive": 2}, {1: 1}, {"1": 2}, 1.0)
    with pytest.raises(ValueError, match="at least one event"):
        window_result("p", 0, 10, {}, {}, {}, 0.0)


def test_watermark_and_lateness_rule():
    wm = Watermark(lateness=1000)
    assert not is_late(100, None, 5000)  # before the first watermark nothing is late
    for ts in (1000, 4500, 5200):
        wm.observe(ts)
    assert wm.value == 4200
    assert not is_late(4900, wm.value, 5000)  # out of order by 300 ms < lateness: window [0, 5000) still open
    wm.observe(5998)
    assert wm.value == 4998 and not is_late(10, wm.value, 5000)  # fires at end - 1 = 4999
    wm.observe(5999)
    assert wm.value == 4999 and is_late(4999, wm.value, 5000) and is_late(0, wm.value, 5000)
    assert not is_late(5000, wm.value, 5000)  # the next window is open
    wm.observe(100)  # an old event never moves the watermark back
    assert wm.value == 4999


def test_reversal_alert_rule():
    def res(start, count, positives):
        return {"product_id": "p", "window_start": start, "window_end": start + 5, "count": count,
                "positive_rate": positives / count, "model_version": "1"}

    prev, cur = res(0, 20, 16), res(5, 20, 6)  # 0.8 -> 0.3
    alert = reversal_alert(prev, cur, threshold=0.3, min_count=20)
    assert alert["direction"] == "drop" and alert["change"] == pytest.approx(-0.5)
    assert alert["previous_window_start"] == 0 and alert["window_start"] == 5
    assert reversal_alert(prev, cur, threshold=0.5, min_count=20) is None  # |change| must exceed the threshold
    assert reversal_alert(prev, res(5, 19, 0), threshold=0.3, min_count=20) is None  # too few events
    assert reversal_alert(None, cur, 0.3, 20) is None
    # a window below min_count neither alerts nor resets the comparison
    stream = [res(0, 20, 18), res(5, 3, 0), res(10, 25, 5), res(15, 30, 6), res(20, 40, 36)]
    tracker = ReversalTracker(threshold=0.3, min_count=20)
    fired = [a for a in map(tracker.update, stream) if a]
    assert [(a["previous_window_start"], a["window_start"], a["direction"]) for a in fired] == [(0, 10, "drop"), (15, 20, "rise")]
    assert alerts_for(reversed(stream), 0.3, 20) == fired  # any order in, window order per product


def test_parse_comment_admits_valid_events_and_names_each_problem():
    ok, reason = parse_comment(b'{"comment_id": 7, "product_id": "p1", "text": "nice", "ts": 1796115905123, "extra": 1}')
    assert reason is None and ok == Comment("7", "p1", "nice", 1796115905123)
    assert parse_comment(ok.to_json())[0] == ok  # the wire form round-trips
    cases = {b"{not json": "bad JSON", b"[1, 2]": "not a JSON object", b'"text"': "not a JSON object",
             b'{"comment_id": "c", "product_id": "p", "ts": 1}': "missing field: text",
             b'{"product_id": "p", "text": "x"}': "missing field: comment_id, ts",
             b'{"comment_id": "c", "product_id": "p", "text": "  \\n ", "ts": 1}': "empty text",
             b'{"comment_id": "c", "product_id": "p", "text": 3, "ts": 1}': "text must be a string",
             b'{"comment_id": "c", "product_id": "p", "text": "x", "ts": "noon"}': "ts must be epoch milliseconds",
             b'{"comment_id": "c", "product_id": "p", "text": "x", "ts": 1.5}': "ts must be epoch milliseconds",
             b'{"comment_id": "c", "product_id": "p", "text": "x", "ts": true}': "ts must be epoch milliseconds",
             b'{"comment_id": "c", "product_id": "", "text": "x", "ts": 1}': "product_id must be",
             b"\xff\xfe": "not UTF-8", None: "empty message"}
    for payload, expected in cases.items():
        comment, reason = parse_comment(payload)
        assert comment is None and expected in reason, (payload, reason)
        assert "\n" not in reason


def test_parse_duration():
    assert [parse_duration(x) for x in ("5s", "500ms", "1m", "2", 3, "1.5s", "1h")] == [5000, 500, 60_000, 2000, 3000, 1500, 3_600_000]
    for bad in ("5 parsecs", "-1s", "", "0.0005s"):
        with pytest.raises(MmsentiError, match="--window"):
            parse_duration(bad, "--window")


def test_kafka_settings_render_security_for_both_clients(monkeypatch):
    from mmsenti.stream.clients import KafkaSettings

    plain = KafkaSettings("b1:9092,b2:9092")
    assert plain.librdkafka() == {"bootstrap.servers": "b1:9092,b2:9092", "security.protocol": "PLAINTEXT"}
    sasl = KafkaSettings("b1:9093", "SASL_SSL", "SCRAM-SHA-512", "svc", 'p"w', "/etc/ca.pem", {"client.dns.lookup": "use_all_dns_ips"})
    rd = sasl.librdkafka(**{"group.id": "g"})
    assert rd["sasl.mechanism"] == "SCRAM-SHA-512" and rd["sasl.username"] == "svc" and rd["ssl.ca.location"] == "/etc/ca.pem"
    java = sasl.java_properties()
    assert java["sasl.jaas.config"] == 'org.apache.kafka.common.security.scram.ScramLoginModule required username="svc" password="p\\"w";'
    assert java["ssl.truststore.type"] == "PEM" and java["client.dns.lookup"] == "use_all_dns_ips"
    assert "p\"w" not in " ".join(sasl.to_cli())  # the password never goes on a command line
    with pytest.raises(MmsentiError, match="--sasl-mechanism"):
        KafkaSettings("b:1", "SASL_SSL")
    with pytest.raises(MmsentiError, match="MMSENTI_KAFKA_PASSWORD"):
        KafkaSettings("b:1", "SASL_PLAINTEXT", "PLAIN", "user", None)


def test_start_gateway_relaunches_a_refusing_jvm_and_then_names_the_failure(monkeypatch, capsys):
    """PyFlink keeps a half-made gateway in a module global: a refused first connection must drop it
    (closed) and launch again; after the last try, one clear error."""
    import sys
    import types

    from mmsenti.stream.job import start_gateway

    closed = []

    class Half:
        def close(self):
            closed.append(self)

    fake = types.ModuleType("pyflink.java_gateway")
    fake._gateway = None
    outcomes = [ConnectionRefusedError("[Errno 111] Connection refused"), "gateway"]

    def get_gateway():
        fake._gateway = Half()  # set before the first call into the JVM, as PyFlink does
        result = outcomes.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    fake.get_gateway = get_gateway
    monkeypatch.setitem(sys.modules, "pyflink", types.ModuleType("pyflink"))
    monkeypatch.setitem(sys.modules, "pyflink.java_gateway", fake)
    sys.modules["pyflink"].java_gateway = fake
    assert start_gateway(attempts=3, wait_s=0) == "gateway"
    assert len(closed) == 1 and "starting it again (1/2)" in capsys.readouterr().err

    outcomes[:] = [ConnectionRefusedError("refused")] * 2
    with pytest.raises(MmsentiError, match=r"did not start in 2 tries \(ConnectionRefusedError: refused\).*java -version"):
        start_gateway(attempts=2, wait_s=0)
    assert fake._gateway is None and len(closed) == 3


def test_job_sql_and_flink_configuration(tmp_path):
    from mmsenti.stream.clients import KafkaSettings
    from mmsenti.stream.job import (JobConfig, _interval, flink_configuration, latest_checkpoint, sink_ddl, source_ddl,
                                    window_query_sql)

    assert _interval(5000) == "INTERVAL '0 00:00:05.000' DAY TO SECOND(3)"
    assert _interval(90_061_001) == "INTERVAL '1 01:01:01.001' DAY TO SECOND(3)"
    cfg = JobConfig(KafkaSettings("k:9092"), model="m", model_repo=None, model_name=None, in_topic="in", window_ms=5000,
                    lateness_ms=1500, until_end=True, checkpoint_dir=str(tmp_path))
    src = source_ddl(cfg)
    assert "WATERMARK FOR rowtime AS rowtime - INTERVAL '0 00:00:01.500' DAY TO SECOND(3)" in src
    assert "'scan.bounded.mode' = 'latest-offset'" in src and "'properties.bootstrap.servers' = 'k:9092'" in src
    sink = sink_ddl(cfg, "out_sink", "o")
    assert "'sink.delivery-guarantee' = 'exactly-once'" in sink and "'sink.transactional-id-prefix' = 'mmsenti-in-to-product_sentiment-out_sink'" in sink
    assert "TUMBLE(TABLE scored, DESCRIPTOR(rowtime), INTERVAL '0 00:00:05.000' DAY TO SECOND(3))" in window_query_sql(cfg)
    conf = flink_configuration(cfg, None)
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == "RETAIN_ON_CANCELLATION"
    assert conf["execution.checkpointing.dir"] == tmp_path.resolve().as_uri() and "execution.state-recovery.path" not in conf
    # restore: the newest checkpoint that completed (has _metadata), across job ids
    assert latest_checkpoint(str(tmp_path)) is None
    for job, n, done in (("j1", 3, True), ("j2", 1, True), ("j2", 2, False)):
        (tmp_path / job / f"chk-{n}").mkdir(parents=True)
        if done:
            (tmp_path / job / f"chk-{n}" / "_metadata").write_bytes(b"x")
            time.sleep(0.02)
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "j2" / "chk-1")
    assert flink_configuration(cfg, str(tmp_path / "j2" / "chk-1"))["execution.state-recovery.path"].endswith("/j2/chk-1")
    upsert = JobConfig(KafkaSettings("k:9092"), model="m", model_repo=None, model_name=None, delivery="at-least-once")
    assert "transactional" not in sink_ddl(upsert, "out_sink", "o") and "'key.fields' = 'k'" in sink_ddl(upsert, "out_sink", "o")
    cluster = JobConfig(KafkaSettings("k:9092"), model="m", model_repo=None, model_name=None, target="cluster")
    with pytest.raises(MmsentiError, match="--checkpoint-dir"):
        flink_configuration(cluster, None)
    cluster.checkpoint_dir = "s3://bucket/chk"
    conf = flink_configuration(cluster, None)
    assert conf["execution.checkpointing.dir"] == "s3://bucket/chk" and "python.executable" not in conf
    assert latest_checkpoint("s3://bucket/chk") is None  # remote storage: restore with flink run -s


def test_model_repository_versions(tmp_path):
    from mmsenti.runtime.repository import latest_version, versions

    model = tmp_path / "sentiment"
    assert versions(model) == [] and latest_version(model) is None
    for name, complete in (("1", True), ("2", True), ("10", True), ("11", False), (".12-staging", True), ("_13", True)):
        (model / name).mkdir(parents=True)
        if complete:
            (model / name / "manifest.json").write_text("{}")
    assert versions(model) == ["1", "2", "10"]  # numeric order; incomplete and staging folders ignored
    assert latest_version(model) == "10"


def test_compare_counts_lost_double_counted_and_late_per_window():
    from mmsenti.stream.batch import compare

    def rec(p, start, count, positives=0):
        return {"product_id": p, "window_start": start, "count": count, "positives": positives, "class_7_hist": [0] * 7,
                "mean_score": 0.0, "model_versions": {"1": count}}

    batch = {("a", 0): rec("a", 0, 5), ("a", 10): rec("a", 10, 4), ("b", 0): rec("b", 0, 3)}
    same = compare([rec("a", 0, 5), rec("a", 10, 4), rec("b", 0, 3)], batch)
    assert same["equal"] and same["lost_events"] == same["double_counted_events"] == 0
    bad = compare([rec("a", 0, 5), rec("a", 0, 5), rec("a", 10, 6), rec("b", 0, 2)], batch,
                  late=[{"product_id": "b", "window_start": 0}])
    assert bad["duplicate_results"] == 1 and bad["double_counted_events"] == 2 and bad["lost_events"] == 0
    assert bad["late_events"] == 1 and bad["count_mismatched_windows"] == 1  # b@0: 2 published + 1 late = the batch's 3
    assert not bad["counts_equal"] and bad["scores_equal"]
    lost = compare([rec("a", 0, 5)], batch)
    assert lost["lost_events"] == 7 and not lost["equal"]
    drift = compare([rec("a", 0, 5, positives=1), rec("a", 10, 4), rec("b", 0, 3)], batch)
    assert drift["counts_equal"] and not drift["scores_equal"] and drift["score_mismatched_windows"] == 1


# ============================================================================ scoring with a real export
@pytest.fixture(scope="module")
def varied_export(tiny_model, tmp_path_factory) -> Path:
    """The shared tiny model with its head rescaled so the test texts' scores spread around 0 (an
    untrained head gives every text nearly the same score): half of TEXTS score positive."""
    import torch

    from mmsenti.export.pipeline import ExportOptions, export_model
    from mmsenti.export.wrapper import eager_predictor

    model = copy.deepcopy(tiny_model)
    raw = 3.0 * np.arctanh(np.clip(eager_predictor(model, variant="text_only").predict(TEXTS)["score"] / 3.0, -0.999, 0.999))
    scale = 1.5 / max(float(np.std(raw)), 1e-6)
    with torch.no_grad():
        last = model.head[-1]
        last.weight.mul_(scale)
        last.bias.copy_((last.bias - float(np.median(raw))) * scale)
    out = tmp_path_factory.mktemp("stream_export") / "varied"
    export_model(model, out, ExportOptions(variant="text_only", metrics=False), source={"checkpoint": None})
    return out


@pytest.fixture(scope="module")
def polarity_of(varied_export) -> dict[str, str]:
    from mmsenti.runtime.predictor import Predictor

    pred = Predictor.load(varied_export, threads=1).predict(TEXTS)
    return dict(zip(TEXTS, pred["polarity"]))


def _repo_with(export: Path, root: Path, versions: list[str]) -> Path:
    for v in versions:
        shutil.copytree(export, root / "sentiment" / v)
    return root


def test_score_payloads_admits_flags_late_and_keeps_input_order(varied_export, polarity_of):
    from mmsenti.runtime.predictor import Predictor
    from mmsenti.stream.scoring import COLUMNS, HotPredictor, ModelSource, score_payloads

    hot = HotPredictor(ModelSource.from_args(str(varied_export), None, None))
    msgs = [Comment("1", "a", TEXTS[0], 10_000).to_json(), b"{oops", Comment("2", "b", TEXTS[20], 1_000).to_json(),
            Comment("3", "a", TEXTS[35], 12_500).to_json()]
    out = score_payloads(hot, msgs, [None, None, 10_500, 10_500], window_ms=5000, chunk=2)
    assert set(out) == set(COLUMNS)
    assert out["status"] == ["ok", "malformed", "late", "ok"]  # message 2's window [0, 5000) closed at watermark 10,500
    assert out["reason"][1].startswith("bad JSON") and out["score"][1] is None
    assert out["event_window"] == [10_000, None, 0, 10_000] and out["watermark_ms"] == [None, None, 10_500, 10_500]
    direct = Predictor.load(varied_export, threads=1).predict([TEXTS[0], TEXTS[20], TEXTS[35]])
    np.testing.assert_allclose([out["score"][i] for i in (0, 2, 3)], direct["score"], atol=1e-5)
    assert [out["polarity"][i] for i in (0, 2, 3)] == [polarity_of[t] for t in (TEXTS[0], TEXTS[20], TEXTS[35])]
    assert out["model_version"][0] == "varied" and out["comment_id"][3] == "3"


def test_hot_predictor_swaps_to_newer_versions_and_skips_a_broken_one(varied_export, tmp_path):
    from mmsenti.stream.scoring import HotPredictor, ModelSource

    repo = _repo_with(varied_export, tmp_path, ["1"])
    messages = []
    hot = HotPredictor(ModelSource.from_args(None, str(repo), "sentiment"), poll_s=3600, log=messages.append)
    try:
        assert hot.version == "1" and not hot.check_now()
        broken = repo / "sentiment" / "2"
        shutil.copytree(varied_export, broken)
        (broken / "model.onnx").write_bytes(b"not an onnx graph")
        assert not hot.check_now() and hot.version == "1"  # the old model keeps scoring
        assert len(messages) == 1 and "version 2" in messages[0] and "still scoring with 1" in messages[0]
        assert not hot.check_now() and len(messages) == 1  # reported once, not retried
        shutil.copytree(varied_export, repo / "sentiment" / "10")
        before = hot.current
        assert hot.check_now() and hot.version == "10"
        assert before[0] == "1" and before[1] is not hot.current[1]  # a batch holding the old pair keeps it
        assert hot.swaps[-1]["version"] == "10" and hot.swaps[-1]["load_s"] >= 0
    finally:
        hot.close()
    with pytest.raises(MmsentiError, match="exactly one of --model"):
        ModelSource.from_args(str(varied_export), str(repo), "sentiment")
    with pytest.raises(MmsentiError, match="no manifest.json"):
        ModelSource.from_args(str(tmp_path / "nowhere"), None, None)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from mmsenti.cli import main

    assert main(["stream", "run", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model") and "\n" not in err
    assert main(["stream", "run", "--model-repo", str(tmp_path / "nope"), "--model-name", "m"]) == 2
    assert "model repository" in capsys.readouterr().err


# ============================================================================ broker + clients
@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    """A development broker on a free 127.0.0.1 port for this module; always stopped."""
    pytest.importorskip("confluent_kafka", reason="the stream extra is not installed: pip install -e '.[stream]'")
    from mmsenti.stream import broker
    from mmsenti.stream.clients import KafkaSettings

    try:
        broker.broker_binary()
    except MmsentiError as err:
        pytest.skip(str(err))
    running = broker.start(broker.free_port(), tmp_path_factory.mktemp("broker"))
    try:
        yield KafkaSettings(running.bootstrap)
    finally:
        broker.stop(running.port, running.data_dir)
        assert not running.running


def fresh_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_broker_refuses_a_taken_port_and_stops_only_its_own_process(kafka, tmp_path):
    from mmsenti.stream import broker

    port = int(kafka.bootstrap_servers.rsplit(":", 1)[1])
    with pytest.raises(MmsentiError, match=f"port {port} on 127.0.0.1 is taken"):
        broker.start(port, tmp_path / "other")
    assert broker.stop(port, tmp_path / "other") is None  # nothing of ours runs there
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / broker.PID_FILE).write_text(json.dumps({"pid": os.getpid(), "port": 1}))  # not a broker
    assert broker.stop(1, tmp_path / "stale") is None


def test_produce_and_read_committed_round_trip(kafka):
    from mmsenti.stream.clients import read_json, read_topic
    from mmsenti.stream.produce import produce

    topic = fresh_topic("roundtrip")
    t0 = time.time()
    stats = produce(kafka, topic, TEXTS[:5], rate=400, count=60, products=3, malformed_every=20, transactional=True)
    assert stats.sent == 60 and stats.malformed == 3 and stats.errors == 0
    payloads = [m.value() for m in read_topic(kafka, topic)]
    assert len(payloads) == 60
    events = [c for c, _ in map(parse_comment, payloads) if c]
    assert len(events) == 57 and {e.product_id for e in events} <= {"p000", "p001", "p002"}
    assert all(t0 * 1000 - 1000 <= e.ts <= time.time() * 1000 for e in events)  # stamped with the current time
    assert len({e.comment_id for e in events}) == 57
    with pytest.raises(MmsentiError, match="does not exist"):
        read_json(kafka, fresh_topic("absent"))


# ============================================================================ the Flink job
def _flink_python() -> str:
    from mmsenti.stream.commands import flink_python

    try:
        return flink_python()
    except MmsentiError as err:
        pytest.skip(str(err))


class Job:
    """The job in its own session (:class:`mmsenti.stream.commands.JobProcess`); kill() ends its whole tree."""

    def __init__(self, settings, log: Path, *args: str):
        from mmsenti.stream.commands import JobProcess

        self.process = JobProcess(["--bootstrap-servers", settings.bootstrap_servers, *args], log)
        self.proc = self.process.proc

    def kill(self, sig=signal.SIGKILL) -> None:
        self.process.stop(sig)

    def tail(self, n: int = 3000) -> str:
        return self.process.tail(n)


def wait_for(predicate, timeout: float, what: str, job: Job | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if job is not None and job.proc.poll() is not None:
            pytest.fail(f"the job exited ({job.proc.returncode}) while waiting for {what}: {job.tail()}")
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f"; job log: {job.tail()}" if job else ""))


def send(settings, topic: str, messages: list) -> None:
    from mmsenti.stream.clients import kafka_client

    producer = kafka_client().Producer(settings.librdkafka(**{"linger.ms": 0}))
    for m in messages:
        value = m.to_json() if isinstance(m, Comment) else m
        producer.produce(topic, value, m.product_id.encode() if isinstance(m, Comment) else None)
    assert producer.flush(10) == 0


def committed_offset(settings, group: str, topic: str) -> int:
    from mmsenti.stream.clients import kafka_client

    ck = kafka_client()
    consumer = ck.Consumer(settings.librdkafka(**{"group.id": group, "enable.auto.commit": False}))
    try:
        return max(0, consumer.committed([ck.TopicPartition(topic, 0)], timeout=5)[0].offset)
    finally:
        consumer.close()


def windows_published(settings, topic: str) -> dict[tuple[str, int], dict]:
    from mmsenti.stream.clients import read_json

    return {(r["product_id"], r["window_start"]): r for r in read_json(settings, topic, idle_s=0.3)}


@pytest.fixture(scope="module")
def scenario(kafka, varied_export, polarity_of, tmp_path_factory):
    """One run of the job over a scripted stream (event time is the script's, not the clock's):

    window 0 (product a): 6 positive texts and one more sent out of order (within the lateness);
    window 1: 6 negative texts (a reversal); product b: 3 events per window (below the alert's
    minimum); 3 malformed messages; once window 0's result is out, a late event for it; then a new
    model version is dropped into the watched repository while product c streams over several
    windows; finally an event far ahead closes every window.
    """
    _flink_python()
    work = tmp_path_factory.mktemp("scenario")
    repo = _repo_with(varied_export, work / "repo", ["1"])
    topics = {name: fresh_topic(f"sc-{name}") for name in ("in", "out", "alerts", "late", "dlq")}
    from mmsenti.stream.clients import ensure_topics

    ensure_topics(kafka, list(topics.values()))
    pos = [t for t in TEXTS if polarity_of[t] == "positive"]
    neg = [t for t in TEXTS if polarity_of[t] == "negative"]
    base = (int(time.time() * 1000) // W + 1) * W
    job = Job(kafka, work / "job.log", "--model-repo", str(repo), "--model-name", "sentiment", "--reload-every", "0.5s",
              "--in", topics["in"], "--out", topics["out"], "--alerts", topics["alerts"], "--late", topics["late"],
              "--dlq", topics["dlq"], "--window", f"{W}ms", "--lateness", f"{L}ms", "--alert-threshold", "0.5",
              "--alert-min-count", "5", "--checkpoint-interval", "500ms", "--checkpoint-dir", str(work / "chk"),
              "--start", "earliest", "--bundle-ms", "50")
    facts: dict = {"topics": topics, "base": base, "repo": repo, "work": work}
    try:
        cid = iter(range(10_000))
        w0 = [Comment(f"a{next(cid)}", "a", pos[i], base + 100 + 200 * i) for i in range(6)]
        w0 += [Comment(f"b{next(cid)}", "b", TEXTS[30 + i], base + 150 + 300 * i) for i in range(3)]
        ahead = Comment(f"a{next(cid)}", "a", neg[0], base + W + 200)  # window 1, moves the watermark to base + W - 300
        out_of_order = Comment("ooo", "a", pos[6], base + W - 100)  # window 0, 300 ms behind: within the lateness
        w1 = [Comment(f"a{next(cid)}", "a", neg[1 + i], base + W + 300 + 200 * i) for i in range(5)]
        w1 += [Comment(f"b{next(cid)}", "b", TEXTS[33 + i], base + W + 250 + 300 * i) for i in range(3)]
        malformed = [b'{"comment_id": "x1", "product_id": "a", "text": "fine", "ts": ', b'{"comment_id": "x2", "product_id": "a", "ts": 1}',
                     json.dumps({"comment_id": "x3", "product_id": "a", "text": " ", "ts": base}).encode()]
        closer = Comment(f"a{next(cid)}", "a", neg[7], base + 2 * W + 600)  # watermark base + 2W + 100: windows 0, 1 fire
        send(kafka, topics["in"], [*w0, ahead, out_of_order, *malformed, *w1, closer])
        wait_for(lambda: ("a", base) in windows_published(kafka, topics["out"]), 180, "window 0's result", job)
        late = Comment("late-1", "a", pos[7], base + 500)  # window 0 has fired: late
        send(kafka, topics["in"], [late])
        # hot update while product c streams: c's window 3 is scored (and published) before version 2
        # exists; version 2 then appears complete (renamed into place, like an export) and c goes on
        c_events = [Comment(f"c{i}", "c", pos[i % len(pos)], base + 3 * W + 400 * i) for i in range(34)]
        send(kafka, topics["in"], c_events[:13])  # event 12 (3W + 4800) closes window 3
        wait_for(lambda: ("c", base + 3 * W) in windows_published(kafka, topics["out"]), 120, "c's first window", job)
        shutil.copytree(varied_export, repo / "sentiment" / ".2-staging")
        os.rename(repo / "sentiment" / ".2-staging", repo / "sentiment" / "2")
        for event in c_events[13:]:
            send(kafka, topics["in"], [event])
            time.sleep(0.35)
        final = Comment("z", "z", neg[0], base + 20 * W)
        send(kafka, topics["in"], [final])
        last_c = window_start(c_events[-1].ts, W)
        wait_for(lambda: ("c", last_c) in windows_published(kafka, topics["out"]), 120, "c's last window", job)
        facts.update(sent=[*w0, ahead, out_of_order, *w1, closer, late, *c_events, final], malformed=malformed, late=late,
                     w0=w0, w1=w1, c_events=c_events, out_of_order=out_of_order)
    except BaseException:
        job.kill()
        raise
    job.kill()
    facts["job_log"] = job.tail(20_000)
    from mmsenti.stream.clients import read_json

    facts["out"] = read_json(kafka, topics["out"])
    facts["alerts"] = read_json(kafka, topics["alerts"])
    facts["late_records"] = read_json(kafka, topics["late"])
    facts["dlq"] = read_json(kafka, topics["dlq"])
    return facts


@pytest.mark.slow
def test_job_malformed_messages_go_to_the_dead_letter_topic_with_their_reason(scenario):
    dlq = scenario["dlq"]
    assert len(dlq) == 3  # counted: one record each, and the job carried on (later windows exist)
    reasons = sorted(d["reason"] for d in dlq)
    assert reasons[0].startswith("bad JSON") and reasons[1] == "empty text" and reasons[2] == "missing field: text"
    assert {d["payload"].encode() for d in dlq} == set(scenario["malformed"]) and all(d["topic"] == scenario["topics"]["in"] for d in dlq)
    assert len({(d["partition"], d["offset"]) for d in dlq}) == 3


@pytest.mark.slow
def test_job_windows_equal_the_batch_recomputation(scenario, kafka, varied_export):
    from mmsenti.stream.batch import compare, recompute

    base = scenario["base"]
    out = {(r["product_id"], r["window_start"]): r for r in scenario["out"]}
    assert len(out) == len(scenario["out"])  # each window published once
    a0 = out[("a", base)]
    assert a0["count"] == 7 and a0["positive_rate"] == 1.0  # the out-of-order event landed in window 0
    assert out[("a", base + W)]["count"] == 6 and out[("a", base + W)]["positive_rate"] == 0.0
    assert out[("b", base)]["count"] == 3 and out[("b", base)]["window_end"] == base + W
    batch, facts = recompute(kafka, scenario["topics"]["in"], varied_export, W)
    assert facts["malformed"] == 3 and facts["events"] == len(scenario["sent"])
    del batch[("z", base + 20 * W)]  # the closing event's window never closes
    report = compare(scenario["out"], batch, scenario["late_records"])
    assert report["equal"], report
    assert report["lost_events"] == 0 and report["double_counted_events"] == 0 and report["late_events"] == 1


@pytest.mark.slow
def test_job_counts_a_late_event_instead_of_dropping_it(scenario):
    late = scenario["late_records"]
    assert len(late) == 1
    record, event = late[0], scenario["late"]
    assert record["comment_id"] == event.comment_id and record["ts"] == event.ts
    assert record["window_start"] == scenario["base"] and record["watermark"] >= scenario["base"] + W - 1
    assert record["polarity"] == "positive" and math.isfinite(record["score"])  # scored, not lost


@pytest.mark.slow
def test_job_alerts_on_a_reversal_with_the_shared_rule(scenario):
    alerts = scenario["alerts"]
    assert [(a["product_id"], a["window_start"], a["direction"]) for a in alerts] == [("a", scenario["base"] + W, "drop")]
    assert alerts[0]["change"] == pytest.approx(-1.0) and alerts[0]["previous_window_start"] == scenario["base"]
    assert alerts == alerts_for(scenario["out"], threshold=0.5, min_count=5)  # b's windows are below the minimum


@pytest.mark.slow
def test_job_picks_up_a_new_model_version_without_restarting(scenario):
    c = sorted((r for r in scenario["out"] if r["product_id"] == "c"), key=lambda r: r["window_start"])
    assert sum(r["count"] for r in c) == len(scenario["c_events"])  # none lost across the swap
    versions = [r["model_version"] for r in c]
    assert versions[0] == "1" and versions[-1] == "2", versions
    first_new = versions.index("2")
    assert all(v == "2" for v in versions[first_new:])  # never back to the old version
    assert all(set(r["model_versions"]) <= {"1", "2"} and sum(r["model_versions"].values()) == r["count"] for r in c)
    a0 = [r for r in scenario["out"] if r["product_id"] == "a" and r["window_start"] == scenario["base"]][0]
    assert a0["model_versions"] == {"1": 7}
    assert scenario["job_log"].count("restoring") == 0  # one run, no restart


@pytest.mark.slow
def test_fault_kill_mid_stream_then_restore_equals_the_batch(kafka, varied_export, tmp_path):
    """Kill -9 the job (its whole process tree) while the stream flows; restart from the last
    checkpoint; the windows published (read_committed) equal the batch recomputation: 0 lost, 0
    double-counted, per window."""
    import threading

    from mmsenti.stream.batch import compare, recompute
    from mmsenti.stream.clients import ensure_topics, read_json
    from mmsenti.stream.produce import produce

    _flink_python()
    topics = {name: fresh_topic(f"ft-{name}") for name in ("in", "out", "alerts", "late", "dlq")}
    ensure_topics(kafka, list(topics.values()))
    window = 1000
    args = ["--model", str(varied_export), "--in", topics["in"], "--out", topics["out"], "--alerts", topics["alerts"],
            "--late", topics["late"], "--dlq", topics["dlq"], "--window", f"{window}ms", "--lateness", "200ms",
            "--checkpoint-interval", "500ms", "--checkpoint-dir", str(tmp_path / "chk"), "--bundle-ms", "50"]
    first = Job(kafka, tmp_path / "run1.log", *args)
    stats: dict = {}
    rest = threading.Thread(target=lambda: stats.update(p=produce(kafka, topics["in"], TEXTS, rate=40, count=440, products=4, seed=1)))
    try:
        produce(kafka, topics["in"], TEXTS, rate=200, count=40, products=4)
        # the job runs once its consumer group committed offsets (it does so at each checkpoint)
        group = f"mmsenti-{topics['in']}-to-{topics['out']}"
        wait_for(lambda: committed_offset(kafka, group, topics["in"]) > 0, 150, "the job's first checkpoint", first)
        rest.start()  # the stream flows on; kill once windows are out (a few checkpoints later)
        wait_for(lambda: len(windows_published(kafka, topics["out"])) >= 8, 120, "the first windows", first)
        assert rest.is_alive(), "the producer finished before the kill: not mid-stream"
        published_before_kill = len(windows_published(kafka, topics["out"]))
    finally:
        first.kill()  # SIGKILL to the whole tree: no clean shutdown, no final checkpoint
    rest.join(timeout=60)
    assert stats["p"].sent == 440
    closer = Comment("closer", "zz", TEXTS[0], int(time.time() * 1000) + 60_000)  # fires every window before it
    send(kafka, topics["in"], [closer])
    batch, facts = recompute(kafka, topics["in"], varied_export, window)
    del batch[("zz", window_start(closer.ts, window))]
    assert facts["events"] == 481
    second = Job(kafka, tmp_path / "run2.log", *args)  # the same command: it restores the newest checkpoint
    try:
        wait_for(lambda: set(windows_published(kafka, topics["out"])) >= set(batch), 240, "every window", second)
        time.sleep(2)  # anything published twice would be visible by now
    finally:
        second.kill(signal.SIGTERM)
    log = second.tail(10**7)  # the whole log: its first line says what it restored
    assert "restoring" in log, log[-3000:]  # it resumed from the killed run's checkpoint
    report = compare(read_json(kafka, topics["out"]), batch, read_json(kafka, topics["late"]), check_versions=True)
    print("fault test:", json.dumps({"published_before_kill": published_before_kill,
                                     **{k: v for k, v in report.items() if k != "mismatches"}}))
    assert report["lost_events"] == 0 and report["double_counted_events"] == 0 and report["duplicate_results"] == 0, report
    assert report["equal"] and report["late_events"] == 0, report
