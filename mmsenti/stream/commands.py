"""``mmsenti stream``: broker, producer, the Flink job, consumer and the batch check.

    mmsenti stream broker start|stop|status [--port 9092]
    mmsenti stream produce --from ../shared/data/sst2/dev.tsv --rate 2000 --products 50 --topic comments
    mmsenti stream run --model export/student_int8 --in comments --out product_sentiment --window 5s --lateness 1s
    mmsenti stream consume product_sentiment
    mmsenti stream verify --in comments --out product_sentiment --model export/student_int8 --window 5s

``run`` starts the job in a Python that has PyFlink: this one if it has it, else ``--flink-python``,
``$MMSENTI_FLINK_PYTHON`` or the repository's ``.venv-stream`` (``make stream-venv``; PyFlink pins
numpy < 2.2, so it lives beside the main environment, importing mmsenti from this checkout).
Only the standard library is imported here until a command runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from mmsenti.errors import MmsentiError

REPO = Path(__file__).resolve().parents[2]
FLINK_PYTHON_ENV = "MMSENTI_FLINK_PYTHON"
STREAM_VENV_PYTHON = REPO / ".venv-stream" / "bin" / "python"


def flink_python(explicit: str | None = None) -> str:
    """The interpreter the job runs in (see the module docstring for the order)."""
    for candidate, what in ((explicit, "--flink-python"), (os.environ.get(FLINK_PYTHON_ENV), f"${FLINK_PYTHON_ENV}")):
        if candidate:
            if not Path(candidate).is_file():
                raise MmsentiError(f"{what} {candidate}: no such interpreter")
            return candidate
    if importlib.util.find_spec("pyflink") is not None:
        return sys.executable
    if STREAM_VENV_PYTHON.is_file():
        return str(STREAM_VENV_PYTHON)
    raise MmsentiError("PyFlink is not installed: make stream-venv (creates .venv-stream), or point "
                       f"${FLINK_PYTHON_ENV} at a Python with apache-flink==2.0.0 and the Kafka connector jars")


def job_command(argv: list[str], python: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run the job with ``argv`` (mmsenti importable from this checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return [flink_python(python), "-m", "mmsenti.stream.job", *argv], env


class JobProcess:
    """``mmsenti stream run ARGV`` as a child in its own session (tests, benchmarks): :meth:`stop` ends
    the whole tree — the job's Python, its JVM and the Python workers the JVM started."""

    def __init__(self, argv: list[str], log: str | Path, python: str | None = None):
        import subprocess

        command, env = job_command(argv, python)
        self.log = Path(log)
        self._handle = open(self.log, "ab")
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self._handle,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int | None = None, timeout: float = 60.0) -> int | None:
        """Signal the whole session (default SIGKILL: no clean shutdown) and reap it."""
        import signal

        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if sig is None else sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except Exception:  # noqa: BLE001  (a SIGTERM ignored: end it for sure)
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        if not self._handle.closed:
            self._handle.close()
        return self.proc.returncode

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# ============================================================================ handlers
def _broker(args: argparse.Namespace) -> int:
    from mmsenti.stream import broker

    if args.action == "start":
        b = broker.start(args.port, args.data_dir, wait_s=args.wait)
        print(f"broker up: {b.bootstrap} (pid {b.pid}, data {b.data_dir}); stop it with: mmsenti stream broker stop --port {b.port}")
    elif args.action == "stop":
        b = broker.stop(args.port, args.data_dir)
        print(f"broker on port {b.port} stopped (pid {b.pid})" if b else f"no broker was running on port {args.port}")
    else:
        b = broker.Broker.find(args.port, args.data_dir)
        state = {"running": b.running, "bootstrap": b.bootstrap, "pid": b.pid if b.running else None, "data_dir": str(b.data_dir)}
        print(json.dumps(state))
        return 0 if b.running else 1
    return 0


def _produce(args: argparse.Namespace) -> int:
    from mmsenti.stream.clients import KafkaSettings
    from mmsenti.stream.produce import load_texts, produce

    stats = produce(KafkaSettings.from_args(args), args.topic, load_texts(args.source), args.rate, count=args.count,
                    seconds=args.seconds, products=args.products, partitions=args.partitions, disorder_ms=args.disorder,
                    malformed_every=args.malformed_every, seed=args.seed, transactional=args.transactional)
    print(json.dumps(stats.to_dict()))
    return 0


def flags_of(args: argparse.Namespace, parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> list[str]:
    """The command-line flags that reproduce ``args`` (the values that differ from the defaults)."""
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in skip or action.dest == "help":
            continue
        value, flag = getattr(args, action.dest), action.option_strings[-1]
        if value == action.default:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from mmsenti.stream.job import config_from_args

    config_from_args(args)  # bad flags fail here, in one line, before a JVM starts
    command, env = job_command(flags_of(args, parser, skip=("flink_python",)), args.flink_python)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)  # the job takes this process over: Ctrl-C and kill reach it directly
    return 0  # not reached


def _consume(args: argparse.Namespace) -> int:
    from mmsenti.stream.clients import KafkaSettings
    from mmsenti.stream.consume import print_records, records

    pairs = records(KafkaSettings.from_args(args), args.topic, follow=args.follow, committed=not args.uncommitted,
                    max_messages=args.max, max_s=args.timeout, from_beginning=not args.new)
    try:
        print_records(pairs, latest_per_key=args.latest_per_key, count_only=args.count, with_key=args.with_key)
    except KeyboardInterrupt:
        pass
    return 0


def _verify(args: argparse.Namespace) -> int:
    from mmsenti.stream.batch import batch_dependent, compare, recompute
    from mmsenti.stream.clients import KafkaSettings, read_json
    from mmsenti.stream.windows import parse_duration

    settings = KafkaSettings.from_args(args)
    batch, facts = recompute(settings, args.in_topic, args.model, parse_duration(args.window, "--window"),
                             lateness_ms=parse_duration(args.lateness, "--lateness"))
    late = read_json(settings, args.late_topic) if args.late_topic else []
    report = compare(read_json(settings, args.out_topic), batch, late, check_versions=args.check_versions)
    report["scores_batch_dependent"] = batch_dependent(args.model)  # dynamic INT8: scores differ by batch, counts must not
    print(json.dumps({"input": facts, **report}, indent=2))
    return 0 if report["counts_equal"] and (report["scores_equal"] or report["scores_batch_dependent"]) else 1


# ============================================================================ parsers
def add_commands(sub: argparse._SubParsersAction) -> None:
    from mmsenti.stream.clients import KafkaSettings

    stream = sub.add_parser("stream", help="real-time sentiment over Kafka with Apache Flink (docs/streaming.md)",
                            description=__doc__.split("\n\n")[0])
    ssub = stream.add_subparsers(dest="stream_command", required=True)

    b = ssub.add_parser("broker", help="a local Kafka-protocol broker (noida-db) on 127.0.0.1 for development")
    b.add_argument("action", choices=("start", "stop", "status"))
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--data-dir", help="broker data, log and pid file (default $TMPDIR/mmsenti-broker-PORT)")
    b.add_argument("--wait", type=float, default=20.0, help="seconds start waits for the broker to answer")
    b.set_defaults(func=_broker)

    p = ssub.add_parser("produce", help="send comment events at a steady rate")
    p.add_argument("--from", dest="source", help="SST-2 .tsv or a text file, one comment per line (default: built-in texts)")
    p.add_argument("--topic", default="comments")
    p.add_argument("--rate", type=float, default=100.0, help="messages per second")
    p.add_argument("--count", type=int, help="send this many messages")
    p.add_argument("--seconds", type=float, help="send for this long (neither --count nor --seconds: until Ctrl-C)")
    p.add_argument("--products", type=int, default=50)
    p.add_argument("--partitions", type=int, default=1, help="partitions when the topic is created here")
    p.add_argument("--disorder", type=int, default=0, metavar="MS", help="move each ts back by up to MS at random")
    p.add_argument("--malformed-every", type=int, default=0, metavar="N", help="every N-th message malformed (dead-letter test)")
    p.add_argument("--transactional", action="store_true", help="one Kafka transaction per burst")
    p.add_argument("--seed", type=int, default=0)
    KafkaSettings.add_arguments(p)
    p.set_defaults(func=_produce)

    r = ssub.add_parser("run", help="the Flink job: score, window per product, alert (runs until stopped)")
    from mmsenti.stream.job import add_arguments as add_job_arguments

    add_job_arguments(r)
    r.add_argument("--flink-python", help=f"interpreter with PyFlink (default: this one, ${FLINK_PYTHON_ENV}, .venv-stream)")
    r.set_defaults(func=lambda a: _run(a, r))

    c = ssub.add_parser("consume", help="print a topic's records as JSON lines (read_committed)")
    c.add_argument("topic")
    c.add_argument("--follow", "-f", action="store_true", help="keep reading new records")
    c.add_argument("--new", action="store_true", help="only records arriving from now on")
    c.add_argument("--max", type=int, default=0, help="stop after this many records")
    c.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds")
    c.add_argument("--uncommitted", action="store_true", help="read_uncommitted: also open/aborted transactions' records")
    c.add_argument("--latest-per-key", action="store_true", help="the last record of each key (compacted view)")
    c.add_argument("--with-key", action="store_true", help='print {"key": ..., "value": ...}')
    c.add_argument("--count", action="store_true", help="print only the number of records")
    KafkaSettings.add_arguments(c)
    c.set_defaults(func=_consume)

    v = ssub.add_parser("verify", help="recompute the windows from the input topic and compare with the job's, per window")
    v.add_argument("--in", dest="in_topic", default="comments")
    v.add_argument("--out", dest="out_topic", default="product_sentiment")
    v.add_argument("--late", dest="late_topic", default="late_comments", help="late-events topic ('' to ignore)")
    v.add_argument("--model", required=True, help="the export the job scored with")
    v.add_argument("--window", default="5s")
    v.add_argument("--lateness", default="1s", help="the job's --lateness: windows the input's watermark has not closed are left out")
    v.add_argument("--check-versions", action="store_true", help="also require equal model_versions (a fixed --model run)")
    KafkaSettings.add_arguments(v)
    v.set_defaults(func=_verify)
