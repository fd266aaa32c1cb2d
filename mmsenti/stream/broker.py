"""A local Kafka-protocol broker for development and tests: ``mmsenti stream broker start|stop|status``.

PyPI, Debian and npm ship no Apache Kafka; the broker here is ``noida-db`` (MIT; a single binary in
its wheel, the ``stream`` extra) with only its Kafka service on. It keeps committed offsets,
reports correct high watermarks and honours ``read_committed`` (aborted and open transactions
stay hidden), which is what the job's exactly-once sink and the tests rely on — the same
behaviour as Apache Kafka, so the tests pass unchanged against a real cluster. Its one quirk seen
here: it deletes records with *old* Kafka timestamps at once, so producers stamp messages with the
current time (the default; the comment's event time is the ``ts`` field, not the Kafka timestamp).

The broker binds to 127.0.0.1 only. State lives in a data folder (default
``$TMPDIR/mmsenti-broker-<port>``): the broker's data, ``broker.log`` and ``broker.pid`` (JSON:
pid, host, port). ``start`` waits (bounded) until the broker answers a metadata request and
refuses a port that is already taken; ``stop`` ends only the process its pid file names.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mmsenti.errors import MmsentiError

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
PID_FILE = "broker.pid"
LOG_FILE = "broker.log"


def default_data_dir(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"mmsenti-broker-{port}"


def broker_binary() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("noida_db")
    if spec is None or not spec.submodule_search_locations:
        raise MmsentiError("the development broker is not installed: pip install -e '.[stream]' (noida-db)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "noida-db"
    if not binary.is_file():
        raise MmsentiError(f"{binary}: missing from the noida-db package; reinstall it (pip install --force-reinstall noida-db==0.2.3)")
    return binary


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _answers(bootstrap: str, timeout: float) -> bool:
    from mmsenti.stream.clients import KafkaSettings, kafka_client

    ck = kafka_client()
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient(KafkaSettings(bootstrap).librdkafka(**{"socket.timeout.ms": 1000})).list_topics(timeout=timeout)
    except ck.KafkaException:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid is not our broker
        return "noida-db" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True


@dataclass
class Broker:
    """A running (or stopped) local broker: ``bootstrap`` is what clients connect to."""

    port: int
    data_dir: Path
    pid: int | None = None
    host: str = HOST

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.pid is not None and _alive(self.pid)

    @classmethod
    def find(cls, port: int = DEFAULT_PORT, data_dir: str | Path | None = None) -> "Broker":
        """The broker whose pid file is in ``data_dir`` (pid None when there is none)."""
        folder = Path(data_dir) if data_dir else default_data_dir(port)
        pid_file = folder / PID_FILE
        with contextlib.suppress(OSError, ValueError, KeyError):
            info = json.loads(pid_file.read_text())
            return cls(int(info["port"]), folder, int(info["pid"]), info.get("host", HOST))
        return cls(port, folder)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.data_dir / LOG_FILE).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        kept = [line for line in text if "GLIBC" not in line]  # the binary's harmless libc notice
        return " | ".join(kept[-lines:])


def start(port: int = DEFAULT_PORT, data_dir: str | Path | None = None, wait_s: float = 20.0) -> Broker:
    """Start the broker in the background (its own session, so a Ctrl-C of the caller leaves it up)."""
    broker = Broker.find(port, data_dir)
    if broker.running:
        raise MmsentiError(f"a broker from {broker.data_dir} is already running (pid {broker.pid}, {broker.bootstrap}); "
                           f"stop it first: mmsenti stream broker stop --port {broker.port}")
    if not port_is_free(port):
        raise MmsentiError(f"port {port} on {HOST} is taken by another program; pick another: --port N "
                           f"(clients then use --bootstrap-servers {HOST}:N)")
    binary = broker_binary()
    broker = Broker(port, broker.data_dir)
    broker.data_dir.mkdir(parents=True, exist_ok=True)
    with open(broker.data_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen([str(binary), "start", "--only", "kafka", "--host", HOST, "--kafka-port", str(port),
                                 "--data-dir", str(broker.data_dir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    broker.pid = proc.pid
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MmsentiError(f"the broker exited at start (status {proc.returncode}): {broker.log_tail()}")
        if not port_is_free(port) and _answers(broker.bootstrap, timeout=1.0):
            (broker.data_dir / PID_FILE).write_text(json.dumps({"pid": proc.pid, "host": HOST, "port": port}))
            return broker
        time.sleep(0.1)
    _terminate(proc.pid)
    raise MmsentiError(f"the broker did not answer on {broker.bootstrap} within {wait_s:.0f} s (stopped it): {broker.log_tail()}")


def _terminate(pid: int, grace_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
            if done:
                return
        except ChildProcessError:
            if not _alive(pid):
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop(port: int = DEFAULT_PORT, data_dir: str | Path | None = None) -> Broker | None:
    """Stop the broker named by the pid file; None when none was running."""
    broker = Broker.find(port, data_dir)
    pid_file = broker.data_dir / PID_FILE
    if broker.pid is None:
        return None
    was_running = broker.running
    if was_running:
        _terminate(broker.pid)
    pid_file.unlink(missing_ok=True)
    return broker if was_running else None
