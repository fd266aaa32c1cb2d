"""The streaming job on Apache Flink: comments in, per-product sentiment windows out, exactly once.

    mmsenti stream run --model export/student_int8 --in comments --out product_sentiment --window 5s --lateness 1s
    python -m mmsenti.stream.job ...                          # the same job, in a Python with PyFlink
    flink run --python mmsenti/stream/job.py --pyFiles mmsenti ... --target cluster --bootstrap-servers ...  (docs/streaming.md)

Dataflow (PyFlink Table API + SQL, a DataStream tail)::

    Kafka --in (raw JSON)      rowtime = the message's ts (epoch ms; the Kafka timestamp when it has none),
        │                      WATERMARK rowtime - lateness (per partition, in the source)
        ▼
    score_comments(payload, CURRENT_WATERMARK(rowtime))      one vectorised pandas UDF per Arrow batch:
        │   admit (events.parse_comment) · late? (windows.is_late) · Predictor.predict (hot-swapped)
        ├── malformed ──▶ --dlq      {"reason", "payload", "topic", "partition", "offset"}
        ├── late ───────▶ --late     the event, scored, with its window and the watermark that closed it
        └── ok ─▶ TUMBLE(rowtime, --window) per product_id: COLLECT(polarity), COLLECT(class_7),
                  COLLECT(model_version), SUM(score)
                     ▼  windows.window_result (Python)
                  --out      one record per (product_id, window_start), message key "product_id|window_start"
                     ▼  key_by product_id, windows.reversal_alert over keyed state (the last window with >= min count)
                  --alerts

Guarantees: checkpoints every ``--checkpoint-interval`` (exactly-once mode) into
``--checkpoint-dir``, kept after the job stops; a new run restores the newest completed checkpoint
found there (``--fresh`` ignores them), so a killed job resumes where its last checkpoint was. The
four sinks are transactional Kafka sinks (``--delivery exactly-once``, the default): a
``read_committed`` consumer sees each window exactly once, after the checkpoint that covers it
completes; ``--delivery at-least-once`` publishes at once instead, and a replay after a failure
rewrites the same ``product_id|window_start`` keys (an idempotent upsert for a compacting reader).

Imports PyFlink only inside :func:`run`: the argument parser and SQL builders work without it.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (`flink run --python mmsenti/stream/job.py`): the checkout on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmsenti.errors import MmsentiError  # noqa: E402
from mmsenti.stream.clients import KafkaSettings  # noqa: E402
from mmsenti.stream.windows import parse_duration  # noqa: E402

DELIVERIES = ("exactly-once", "at-least-once")
TARGETS = ("local", "cluster")
CONNECTOR_JARS = ("flink-connector-kafka.jar", "kafka-clients.jar")
UDF_COLUMNS = (  # scoring.COLUMNS with their SQL types (the UDF's ROW result)
    ("status", "STRING"), ("reason", "STRING"), ("comment_id", "STRING"), ("product_id", "STRING"),
    ("user_id", "STRING"), ("ts_ms", "BIGINT"), ("event_window", "BIGINT"), ("watermark_ms", "BIGINT"),
    ("score", "DOUBLE"), ("polarity", "STRING"), ("class_7", "INT"), ("model_version", "STRING"))


@dataclass
class JobConfig:
    kafka: KafkaSettings
    model: str | None
    model_repo: str | None
    model_name: str | None
    in_topic: str = "comments"
    out_topic: str = "product_sentiment"
    alerts_topic: str = "sentiment_alerts"
    late_topic: str = "late_comments"
    dlq_topic: str = "comments_dlq"
    window_ms: int = 5000
    lateness_ms: int = 1000
    idle_timeout_ms: int = 5000
    alert_threshold: float = 0.3
    alert_min_count: int = 20
    checkpoint_interval_ms: int = 1000
    checkpoint_dir: str | None = None
    fresh: bool = False
    delivery: str = "exactly-once"
    until_end: bool = False
    start: str = "group"  # where a run without a checkpoint starts: group (committed offsets, else earliest) | earliest | latest
    parallelism: int = 1
    threads: int = 1
    batch_size: int = 256
    bundle_ms: int = 100
    reload_every_s: float = 5.0
    job_name: str | None = None
    target: str = "local"
    jars: list[str] = field(default_factory=list)
    topic_partitions: int = 1

    @property
    def name(self) -> str:
        return self.job_name or f"mmsenti-{self.in_topic}-to-{self.out_topic}"

    @property
    def checkpoints(self) -> str:
        """The checkpoint folder (a URI on a cluster: s3://, hdfs://, file:// of a shared disk)."""
        if self.checkpoint_dir:
            return self.checkpoint_dir
        if self.target == "cluster":
            raise MmsentiError("--target cluster needs --checkpoint-dir on storage every task manager reaches (s3://, hdfs://, ...)")
        return str(Path(tempfile.gettempdir()) / "mmsenti-stream" / self.name / "checkpoints")

    @property
    def output_topics(self) -> list[str]:
        return [self.out_topic, self.alerts_topic, self.late_topic, self.dlq_topic]


# ============================================================================ arguments
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's flags (``mmsenti stream run`` and ``python -m mmsenti.stream.job`` share them)."""
    m = parser.add_argument_group("model (the runtime Predictor; hot-swapped from a watched repository)")
    m.add_argument("--model", help="an export folder (manifest.json + engine + tokenizer)")
    m.add_argument("--model-repo", help="a model repository DIR/<name>/<version>/: the newest version scores, new ones are picked up live")
    m.add_argument("--model-name", help="the model's folder under --model-repo")
    m.add_argument("--reload-every", default="5s", help="how often --model-repo is checked for a newer version (default 5s)")
    m.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per scoring worker (default 1)")
    t = parser.add_argument_group("topics")
    t.add_argument("--in", dest="in_topic", default="comments")
    t.add_argument("--out", dest="out_topic", default="product_sentiment")
    t.add_argument("--alerts", dest="alerts_topic", default="sentiment_alerts")
    t.add_argument("--late", dest="late_topic", default="late_comments")
    t.add_argument("--dlq", dest="dlq_topic", default="comments_dlq", help="dead-letter topic for malformed messages")
    t.add_argument("--partitions", dest="topic_partitions", type=int, default=1,
                   help="partitions of topics this job creates when missing (default 1)")
    w = parser.add_argument_group("windows and alerts")
    w.add_argument("--window", default="5s", help="tumbling window length (default 5s)")
    w.add_argument("--lateness", default="1s", help="bounded out-of-orderness of event time (default 1s)")
    w.add_argument("--idle-timeout", default="5s", help="a partition without messages this long stops holding the watermark back (0: never)")
    w.add_argument("--alert-threshold", type=float, default=0.3, help="positive-rate change that raises an alert (default 0.3)")
    w.add_argument("--alert-min-count", type=int, default=20, help="events both windows need before they are compared (default 20)")
    g = parser.add_argument_group("execution")
    g.add_argument("--checkpoint-interval", default="1s")
    g.add_argument("--checkpoint-dir", help="where checkpoints are kept (default $TMPDIR/mmsenti-stream/<job>/checkpoints)")
    g.add_argument("--fresh", action="store_true", help="ignore existing checkpoints (start from --start offsets)")
    g.add_argument("--delivery", choices=DELIVERIES, default="exactly-once")
    g.add_argument("--start", choices=("group", "earliest", "latest"), default="group",
                   help="where a run without a checkpoint starts reading (default: the job's committed offsets, else earliest)")
    g.add_argument("--until-end", action="store_true",
                   help="stop at the input's end offsets at the start and finish every window (a run without a checkpoint)")
    g.add_argument("--parallelism", type=int, default=1)
    g.add_argument("--batch-size", type=int, default=256, help="most messages per scoring call (Arrow batch)")
    g.add_argument("--bundle-ms", type=int, default=100, help="longest a scoring batch waits to fill (ms)")
    g.add_argument("--job-name", help="the Flink job name, consumer group and transactional-id prefix (default mmsenti-IN-to-OUT)")
    g.add_argument("--target", choices=TARGETS, default="local",
                   help="local: a MiniCluster in this process; cluster: submitted by `flink run` (docs/streaming.md)")
    g.add_argument("--jar", dest="jars", action="append", default=[],
                   help="jar for pipeline.jars (default with --target cluster: the Kafka connector jars of the installed PyFlink)")
    KafkaSettings.add_arguments(parser)


def config_from_args(args: argparse.Namespace) -> JobConfig:
    cfg = JobConfig(
        kafka=KafkaSettings.from_args(args), model=args.model, model_repo=args.model_repo, model_name=args.model_name,
        in_topic=args.in_topic, out_topic=args.out_topic, alerts_topic=args.alerts_topic, late_topic=args.late_topic,
        dlq_topic=args.dlq_topic, window_ms=parse_duration(args.window, "--window"),
        lateness_ms=parse_duration(args.lateness, "--lateness"), idle_timeout_ms=parse_duration(args.idle_timeout, "--idle-timeout"),
        alert_threshold=args.alert_threshold, alert_min_count=args.alert_min_count,
        checkpoint_interval_ms=parse_duration(args.checkpoint_interval, "--checkpoint-interval"),
        checkpoint_dir=args.checkpoint_dir, fresh=args.fresh, delivery=args.delivery, until_end=args.until_end,
        start=args.start, parallelism=args.parallelism, threads=args.threads, batch_size=args.batch_size,
        bundle_ms=args.bundle_ms, reload_every_s=parse_duration(args.reload_every, "--reload-every") / 1000,
        job_name=args.job_name, target=args.target, jars=list(args.jars), topic_partitions=args.topic_partitions)
    validate(cfg)
    return cfg


def validate(cfg: JobConfig) -> None:
    from mmsenti.stream.scoring import ModelSource

    ModelSource.from_args(cfg.model, cfg.model_repo, cfg.model_name)  # one line when the model is missing
    if cfg.window_ms <= 0:
        raise MmsentiError("--window must be positive (e.g. 5s)")
    if cfg.checkpoint_interval_ms < 100:
        raise MmsentiError("--checkpoint-interval must be at least 100ms")
    if not 0 <= cfg.alert_threshold <= 1:
        raise MmsentiError(f"--alert-threshold {cfg.alert_threshold}: a change of positive rate, between 0 and 1")
    for flag, value in (("--parallelism", cfg.parallelism), ("--batch-size", cfg.batch_size), ("--bundle-ms", cfg.bundle_ms),
                        ("--threads", cfg.threads), ("--alert-min-count", cfg.alert_min_count), ("--partitions", cfg.topic_partitions)):
        if value < 1:
            raise MmsentiError(f"{flag} must be at least 1")
    topics = cfg.output_topics
    if cfg.in_topic in topics or len(set(topics)) != len(topics):
        raise MmsentiError(f"topics must differ: --in {cfg.in_topic}, --out/--alerts/--late/--dlq {', '.join(topics)}")


# ============================================================================ checkpoints
def latest_checkpoint(checkpoint_dir: str) -> str | None:
    """The newest *completed* checkpoint (``.../<job-id>/chk-N`` with ``_metadata``) under a local folder."""
    root = Path(checkpoint_dir.removeprefix("file://"))
    if "://" in checkpoint_dir and not checkpoint_dir.startswith("file://"):
        return None  # remote storage: restore with `flink run -s <path>` (docs/streaming.md)
    done = [p for p in root.glob("*/chk-*") if (p / "_metadata").is_file()]
    if not done:
        return None
    return str(max(done, key=lambda p: ((p / "_metadata").stat().st_mtime, int(p.name.split("-")[1]))))


def _uri(path: str) -> str:
    return path if "://" in path else Path(path).resolve().as_uri()


# ============================================================================ SQL
def _interval(ms: int) -> str:
    """A SQL day-time interval literal of ``ms`` milliseconds (any length)."""
    seconds, millis = divmod(int(ms), 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}' DAY TO SECOND(3)"


def _with(options: dict[str, str]) -> str:
    return ",\n  ".join(f"'{k}' = '{str(v).replace(chr(39), chr(39) * 2)}'" for k, v in options.items())


def _kafka_properties(cfg: JobConfig) -> dict[str, str]:
    return {f"properties.{k}": v for k, v in cfg.kafka.java_properties().items()}


def source_ddl(cfg: JobConfig, table: str = "comments_src") -> str:
    options = {"connector": "kafka", "topic": cfg.in_topic, **_kafka_properties(cfg), "properties.group.id": cfg.name,
               "properties.isolation.level": "read_committed", "format": "raw",
               "scan.startup.mode": {"group": "group-offsets", "earliest": "earliest-offset", "latest": "latest-offset"}[cfg.start],
               "properties.auto.offset.reset": "latest" if cfg.start == "latest" else "earliest"}
    if cfg.until_end:
        options["scan.bounded.mode"] = "latest-offset"
    return f"""CREATE TABLE {table} (
  payload STRING,
  kafka_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
  kafka_partition INT METADATA FROM 'partition' VIRTUAL,
  kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  rowtime AS COALESCE(TO_TIMESTAMP_LTZ(TRY_CAST(JSON_VALUE(payload, '$.ts') AS BIGINT), 3), kafka_ts),
  WATERMARK FOR rowtime AS rowtime - {_interval(cfg.lateness_ms)}
) WITH (
  {_with(options)}
)"""


def sink_ddl(cfg: JobConfig, table: str, topic: str) -> str:
    """A keyed Kafka sink taking ``(k, v)`` strings as the message key and value, as they are."""
    options = {"connector": "kafka", "topic": topic, **_kafka_properties(cfg), "key.format": "raw", "key.fields": "k",
               "value.format": "raw", "value.fields-include": "EXCEPT_KEY", "sink.delivery-guarantee": cfg.delivery}
    if cfg.delivery == "exactly-once":
        # the prefix is stable across restarts: a restored job aborts what its killed predecessor left open
        options["sink.transactional-id-prefix"] = f"{cfg.name}-{table}"
        options["properties.transaction.timeout.ms"] = "900000"  # a real broker's default maximum (15 min)
    return f"CREATE TABLE {table} (k STRING, v STRING) WITH (\n  {_with(options)}\n)"


def scored_view_sql(source: str = "comments_src") -> str:
    fields = ", ".join(f"r.{name} AS {name}" for name, _ in UDF_COLUMNS)
    return f"""CREATE TEMPORARY VIEW scored AS
SELECT rowtime, payload, kafka_partition, kafka_offset, {fields}
FROM (SELECT rowtime, payload, kafka_partition, kafka_offset, score_comments(payload, CURRENT_WATERMARK(rowtime)) AS r
      FROM {source})"""


def dlq_insert_sql(cfg: JobConfig, sink: str = "dlq_sink") -> str:
    topic = cfg.in_topic.replace("'", "''")
    return f"""INSERT INTO {sink}
SELECT CAST(kafka_partition AS STRING) || ':' || CAST(kafka_offset AS STRING),
       JSON_OBJECT('reason' VALUE reason, 'payload' VALUE payload, 'topic' VALUE '{topic}',
                   'partition' VALUE kafka_partition, 'offset' VALUE kafka_offset)
FROM scored WHERE status = 'malformed'"""


def late_insert_sql(sink: str = "late_sink") -> str:
    return f"""INSERT INTO {sink}
SELECT product_id,
       JSON_OBJECT('comment_id' VALUE comment_id, 'product_id' VALUE product_id, 'user_id' VALUE user_id,
                   'ts' VALUE ts_ms, 'window_start' VALUE event_window, 'watermark' VALUE watermark_ms,
                   'score' VALUE score, 'polarity' VALUE polarity, 'class_7' VALUE class_7,
                   'model_version' VALUE model_version)
FROM scored WHERE status = 'late'"""


def window_query_sql(cfg: JobConfig) -> str:
    return f"""SELECT product_id, window_start, window_end,
       COLLECT(polarity) AS polarities, COLLECT(class_7) AS classes, COLLECT(model_version) AS versions,
       SUM(score) AS score_sum
FROM TABLE(TUMBLE(TABLE scored, DESCRIPTOR(rowtime), {_interval(cfg.window_ms)}))
WHERE status = 'ok'
GROUP BY product_id, window_start, window_end"""


def flink_configuration(cfg: JobConfig, restore_from: str | None) -> dict[str, str]:
    conf = {
        "execution.checkpointing.interval": f"{cfg.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": _uri(cfg.checkpoints),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        "parallelism.default": str(cfg.parallelism),
        "pipeline.name": cfg.name,
        "table.local-time-zone": "UTC",  # window_start/end are UTC wall times, converted to epoch ms below
        "python.fn-execution.bundle.time": str(cfg.bundle_ms),
        "python.fn-execution.bundle.size": str(max(cfg.batch_size, 1000)),
        "python.fn-execution.arrow.batch.size": str(cfg.batch_size),
        "python.metric.enabled": "true",
        # a partition without messages for this long stops holding the watermark back
        "table.exec.source.idle-timeout": f"{cfg.idle_timeout_ms} ms" if cfg.idle_timeout_ms else "0 ms",
    }
    if cfg.target == "local":
        conf["python.executable"] = sys.executable
        conf["python.client.executable"] = sys.executable
        conf["rest.bind-address"] = "127.0.0.1"
        conf["rest.address"] = "127.0.0.1"
        conf["taskmanager.host"] = "127.0.0.1"
        conf["jobmanager.bind-host"] = "127.0.0.1"
        conf["taskmanager.bind-host"] = "127.0.0.1"
    # local: the connector jars already sit on PyFlink's classpath (its lib/ folder); listing them in
    # pipeline.jars as well loads the Kafka classes twice (ClassCastException). A cluster gets them here.
    jars = list(cfg.jars) or (default_connector_jars() if cfg.target == "cluster" else [])
    if jars:
        conf["pipeline.jars"] = ";".join(_uri(j) for j in jars)
    if restore_from:
        conf["execution.state-recovery.path"] = _uri(restore_from)
    return conf


def default_connector_jars() -> list[str]:
    """The Kafka connector jars PyFlink's lib folder holds (shigawire-apache-flink-libraries)."""
    try:
        import pyflink
    except ModuleNotFoundError:
        return []
    lib = Path(pyflink.__file__).parent / "lib"
    return [str(lib / j) for j in CONNECTOR_JARS if (lib / j).is_file()]


# ============================================================================ Python steps of the job
def _epoch_ms(value: Any) -> int:
    """A Flink TIMESTAMP(3) (naive UTC datetime, the session zone is UTC) → epoch ms."""
    if isinstance(value, dt.datetime):
        return calendar.timegm(value.utctimetuple()) * 1000 + value.microsecond // 1000
    return int(value)


def format_window(row) -> Any:
    """One Flink window row → ``Row(product_id, k, v)`` with the published JSON (windows.window_result)."""
    from pyflink.common import Row

    from mmsenti.stream.windows import window_result

    product_id, start, end = row[0], _epoch_ms(row[1]), _epoch_ms(row[2])
    result = window_result(product_id, start, end, dict(row[3]), {int(k): v for k, v in dict(row[4]).items()},
                           dict(row[5]), float(row[6] or 0.0))
    return Row(product_id, f"{product_id}|{start}", json.dumps(result, separators=(",", ":")))


def start_gateway(attempts: int = 3, wait_s: float = 3.0) -> Any:
    """PyFlink's JVM gateway, started with retries: on a loaded machine the freshly launched JVM can
    refuse py4j's first connection (seen right after a kill -9 restart). A failed try drops the
    half-made gateway (PyFlink keeps it in a module global and would hand it out again) and launches
    a new JVM; the last failure is one clear error."""
    from pyflink import java_gateway

    for attempt in range(1, attempts + 1):
        try:
            return java_gateway.get_gateway()
        except Exception as exc:  # noqa: BLE001  (py4j's network errors, ConnectionRefusedError, RuntimeError)
            broken, java_gateway._gateway = java_gateway._gateway, None
            if broken is not None:
                try:
                    broken.close()
                except Exception:  # noqa: BLE001
                    pass
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if attempt == attempts:
                raise MmsentiError(f"the Flink JVM gateway did not start in {attempts} tries ({reason}); check `java -version` "
                                   "(OpenJDK 11/17) and FLINK_HOME, and that the machine is not out of memory") from exc
            print(f"[mmsenti stream] the Flink JVM gateway did not answer ({reason}); starting it again "
                  f"({attempt}/{attempts - 1}) in {wait_s:.0f} s", file=sys.stderr, flush=True)
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def run(cfg: JobConfig) -> None:
    """Build the job and execute it (blocks until it ends: ``--until-end``, a failure, or a kill)."""
    import pandas as pd
    from pyflink.common import Configuration, Row, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import ValueStateDescriptor
    from pyflink.table import DataTypes, StreamTableEnvironment
    from pyflink.table.udf import ScalarFunction, udf

    from mmsenti.stream.clients import ensure_topics
    from mmsenti.stream.scoring import COLUMNS, HotPredictor, ModelSource, score_payloads
    from mmsenti.stream.windows import reversal_alert

    if cfg.target == "local":
        ensure_topics(cfg.kafka, [cfg.in_topic, *cfg.output_topics], partitions=cfg.topic_partitions)
    # Python workers as their own processes (as on a cluster), not PyFlink's local "loopback" mode that
    # runs them in this process behind a gRPC server listening on every interface
    os.environ.setdefault("_python_worker_execution_mode", "process")
    restore = None if cfg.fresh else latest_checkpoint(cfg.checkpoints)
    if restore and cfg.until_end:
        raise MmsentiError(f"--until-end applies to a run that starts afresh, not to one restoring {restore} (its checkpoint "
                           "holds the unbounded reader's offsets); drop --until-end, or add --fresh")
    start_gateway()  # Configuration() below is the first call into the JVM
    conf = Configuration()
    for key, value in flink_configuration(cfg, restore).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    t_env = StreamTableEnvironment.create(env)
    print(f"[mmsenti stream] job {cfg.name}: {cfg.in_topic} -> {', '.join(cfg.output_topics)}; window {cfg.window_ms} ms, "
          f"lateness {cfg.lateness_ms} ms, {cfg.delivery}; checkpoints {cfg.checkpoints}"
          + (f"; restoring {restore}" if restore else "; no checkpoint to restore"), file=sys.stderr, flush=True)

    model_args = (cfg.model, cfg.model_repo, cfg.model_name)
    window_ms, threads, reload_s = cfg.window_ms, cfg.threads, cfg.reload_every_s
    assert tuple(name for name, _ in UDF_COLUMNS) == COLUMNS  # the ROW type below mirrors score_payloads

    class ScoreComments(ScalarFunction):
        """The vectorised scorer: one pandas batch of raw messages in, one ROW per message out."""

        def open(self, function_context):
            self.hot = HotPredictor(ModelSource.from_args(*model_args), threads=threads, poll_s=reload_s)
            group = function_context.get_metric_group()
            self.counters = {s: group.counter(f"mmsenti_{s}") for s in ("ok", "late", "malformed")}

        def eval(self, payloads: pd.Series, watermarks: pd.Series):
            marks = [None if pd.isna(w) else int(pd.Timestamp(w).value // 1_000_000) for w in watermarks]
            out = score_payloads(self.hot, payloads.tolist(), marks, window_ms)
            for status in out["status"]:
                self.counters[status].inc()
            frame = pd.DataFrame(out, columns=list(COLUMNS))
            return frame

        def close(self):
            self.hot.close()

    sql_types = {"STRING": DataTypes.STRING(), "BIGINT": DataTypes.BIGINT(), "DOUBLE": DataTypes.DOUBLE(), "INT": DataTypes.INT()}
    score = udf(ScoreComments(), result_type=DataTypes.ROW([DataTypes.FIELD(n, sql_types[t]) for n, t in UDF_COLUMNS]),
                func_type="pandas")
    t_env.create_temporary_function("score_comments", score)

    t_env.execute_sql(source_ddl(cfg))
    sinks = {"out_sink": cfg.out_topic, "alerts_sink": cfg.alerts_topic, "late_sink": cfg.late_topic, "dlq_sink": cfg.dlq_topic}
    for table, topic in sinks.items():
        t_env.execute_sql(sink_ddl(cfg, table, topic))
    t_env.execute_sql(scored_view_sql())

    statements = t_env.create_statement_set()
    statements.add_insert_sql(dlq_insert_sql(cfg))
    statements.add_insert_sql(late_insert_sql())

    threshold, min_count = cfg.alert_threshold, cfg.alert_min_count
    keyed_row = Types.ROW_NAMED(["product_id", "k", "v"], [Types.STRING(), Types.STRING(), Types.STRING()])
    kv_row = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])

    class Reversals(KeyedProcessFunction):
        """Per product: the last window with >= min count events (keyed state), compared by reversal_alert."""

        def open(self, runtime_context: RuntimeContext):
            self.last = runtime_context.get_state(ValueStateDescriptor("last_window", Types.STRING()))

        def process_element(self, value, ctx):
            current = json.loads(value[2])
            if current["count"] < min_count:
                return
            previous = self.last.value()
            alert = reversal_alert(None if previous is None else json.loads(previous), current, threshold, min_count)
            self.last.update(value[2])
            if alert is not None:
                yield Row(f"{alert['product_id']}|{alert['window_start']}", json.dumps(alert, separators=(",", ":")))

    windows = t_env.to_data_stream(t_env.sql_query(window_query_sql(cfg))).map(format_window, output_type=keyed_row)
    results = windows.map(lambda r: Row(r[1], r[2]), output_type=kv_row)
    alerts = windows.key_by(lambda r: r[0], key_type=Types.STRING()).process(Reversals(), output_type=kv_row)
    statements.add_insert("out_sink", t_env.from_data_stream(results))
    statements.add_insert("alerts_sink", t_env.from_data_stream(alerts))
    statements.attach_as_datastream()
    t0 = time.time()
    if cfg.target == "cluster":
        env.execute(cfg.name)  # `flink run` owns the job from here (flink cancel / flink stop)
    else:
        _run_until_done_or_stopped(env.execute_async(cfg.name))
    print(f"[mmsenti stream] job {cfg.name} finished after {time.time() - t0:.1f} s", file=sys.stderr, flush=True)


def _run_until_done_or_stopped(client) -> None:
    """Wait for a local job; Ctrl-C or SIGTERM cancel it (its checkpoints are kept: the next run resumes).

    A blocking ``execute()`` would sit inside a py4j call that Ctrl-C cannot interrupt.
    """
    import signal

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    result = client.get_job_execution_result()
    try:
        while not result.done():
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("[mmsenti stream] stopping: cancelling the job (its last checkpoint is kept)", file=sys.stderr, flush=True)
        client.cancel().result()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    result.result()  # raises the job's failure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmsenti.stream.job", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(config_from_args(args))
    except MmsentiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the next run resumes from the last checkpoint)", file=sys.stderr, flush=True)
        # a signal to the job's process group stops its JVM too: py4j's exit-time calls to it would each log a
        # connection-refused traceback (32 KB of them after a SIGTERM in CI), none of it news
        import logging

        logging.disable(logging.CRITICAL)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
