"""Kafka connection settings (one set for the Python clients and the Flink job) and small client helpers.

:class:`KafkaSettings` holds the bootstrap servers and the security settings of a real cluster
(``--security-protocol SASL_SSL --sasl-mechanism SCRAM-SHA-512 --sasl-username U`` with the
password from ``$MMSENTI_KAFKA_PASSWORD``, ``--ssl-ca FILE``) and renders them twice: for
librdkafka (``confluent-kafka``: producer, consumer, benchmark, batch recomputation) and for the
Java client inside Flink's Kafka connector (``properties.*`` of the SQL tables, with the JAAS line
built from the user name and password). ``--kafka-property KEY=VALUE`` passes anything else to the
Java side as given.

The helpers import ``confluent_kafka`` when called, so the rest of ``mmsenti`` works without the
``stream`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mmsenti.errors import MmsentiError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PASSWORD_ENV = "MMSENTI_KAFKA_PASSWORD"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_JAAS_MODULE = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}


def kafka_client():
    """``confluent_kafka``, or one line saying how to install it."""
    try:
        import confluent_kafka
    except ModuleNotFoundError as err:
        raise MmsentiError("the Kafka client is not installed: pip install -e '.[stream]' (confluent-kafka)") from err
    return confluent_kafka


@dataclass
class KafkaSettings:
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca: str | None = None
    java_properties_extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.security_protocol not in PROTOCOLS:
            raise MmsentiError(f"--security-protocol {self.security_protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in MECHANISMS:
                raise MmsentiError(f"--security-protocol {self.security_protocol} needs --sasl-mechanism, one of {', '.join(MECHANISMS)}")
            if not self.sasl_username or self.sasl_password is None:
                raise MmsentiError(f"SASL needs --sasl-username and the password in ${PASSWORD_ENV}")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("Kafka connection (a real cluster: docs/streaming.md)")
        g.add_argument("--bootstrap-servers", default=os.environ.get("MMSENTI_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP),
                       help=f"host:port[,host:port] (default $MMSENTI_KAFKA_BOOTSTRAP or {DEFAULT_BOOTSTRAP})")
        g.add_argument("--security-protocol", default="PLAINTEXT", choices=PROTOCOLS)
        g.add_argument("--sasl-mechanism", choices=MECHANISMS)
        g.add_argument("--sasl-username")
        g.add_argument("--ssl-ca", help="CA certificate file (PEM) that signed the brokers' certificates")
        g.add_argument("--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                       help="extra Java client property for the Flink job's Kafka source and sinks (repeatable)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "KafkaSettings":
        extra = {}
        for item in getattr(args, "kafka_property", []) or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise MmsentiError(f"--kafka-property {item!r}: write KEY=VALUE")
            extra[key.strip()] = value
        return cls(args.bootstrap_servers, args.security_protocol, args.sasl_mechanism, args.sasl_username,
                   os.environ.get(PASSWORD_ENV) if args.sasl_username else None, args.ssl_ca, extra)

    def to_cli(self) -> list[str]:
        """These settings as command-line flags (the password stays in the environment)."""
        flags = ["--bootstrap-servers", self.bootstrap_servers, "--security-protocol", self.security_protocol]
        for flag, value in (("--sasl-mechanism", self.sasl_mechanism), ("--sasl-username", self.sasl_username),
                            ("--ssl-ca", self.ssl_ca)):
            if value:
                flags += [flag, value]
        for key, value in self.java_properties_extra.items():
            flags += ["--kafka-property", f"{key}={value}"]
        return flags

    def librdkafka(self, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                         "sasl.password": self.sasl_password})
        if self.ssl_ca:
            conf["ssl.ca.location"] = self.ssl_ca
        conf.update(extra)
        return conf

    def java_properties(self) -> dict[str, str]:
        props = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            user, password = json.dumps(self.sasl_username), json.dumps(self.sasl_password or "")
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = f"{_JAAS_MODULE[self.sasl_mechanism]} required username={user} password={password};"
        if self.ssl_ca:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = self.ssl_ca
        props.update(self.java_properties_extra)
        return props


def ensure_topics(settings: KafkaSettings, topics: list[str], partitions: int = 1, replication: int = 1,
                  timeout: float = 20.0) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    ck = kafka_client()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.librdkafka())
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except ck.KafkaException as err:
        raise MmsentiError(f"Kafka at {settings.bootstrap_servers} did not answer ({err.args[0]}); start one: mmsenti stream broker start") from err
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([NewTopic(t, partitions, replication) for t in wanted], operation_timeout=timeout)
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
        except ck.KafkaException as err:
            if err.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise MmsentiError(f"could not create topic {topic!r}: {err.args[0].str()}") from err
    return wanted


def end_offsets(settings: KafkaSettings, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """The high watermark of every partition of ``topic``."""
    ck = kafka_client()
    consumer = ck.Consumer(settings.librdkafka(**{"group.id": "mmsenti-offsets", "enable.auto.commit": False}))
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            raise MmsentiError(f"topic {topic!r} does not exist at {settings.bootstrap_servers}")
        return {p: consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=timeout)[1] for p in meta.partitions}
    finally:
        consumer.close()


def read_topic(settings: KafkaSettings, topic: str, committed: bool = True, idle_s: float = 2.0,
               max_s: float = 60.0, follow: bool = False, from_beginning: bool = True) -> Iterator[Any]:
    """The messages of ``topic`` (``confluent_kafka.Message``), read with ``read_committed`` by default.

    Bounded (``follow=False``): stops once every partition reached the offsets it had at the start
    (the last stable offset for ``read_committed``) and nothing arrived for ``idle_s``, or after
    ``max_s``. ``follow=True`` reads until interrupted (or ``max_s``, when given).
    """
    ck = kafka_client()
    conf = settings.librdkafka(**{
        "group.id": f"mmsenti-read-{os.getpid()}-{time.monotonic_ns()}", "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "isolation.level": "read_committed" if committed else "read_uncommitted",
        "enable.partition.eof": True, "session.timeout.ms": 6000})
    consumer = ck.Consumer(conf)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise MmsentiError(f"topic {topic!r} does not exist at {settings.bootstrap_servers}")
        parts = [ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING if from_beginning else ck.OFFSET_END) for p in meta.partitions]
        consumer.assign(parts)  # no group join: faster, and nothing to rebalance
        at_eof: set[int] = set()
        deadline = None if (follow and max_s <= 0) else time.monotonic() + max_s
        last_message = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if not follow and len(at_eof) == len(parts) and time.monotonic() - last_message > idle_s:
                    return
                continue
            if msg.error():
                if msg.error().code() == ck.KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition())
                    continue
                raise MmsentiError(f"reading {topic!r}: {msg.error().str()}")
            at_eof.discard(msg.partition())
            last_message = time.monotonic()
            yield msg
    finally:
        consumer.close()


def read_json(settings: KafkaSettings, topic: str, **kw) -> list[dict[str, Any]]:
    """Every message value of ``topic`` as parsed JSON (bounded read; see :func:`read_topic`)."""
    return [json.loads(m.value()) for m in read_topic(settings, topic, **kw)]
