"""``mmsenti``: the one command line for everything that is not training (training is ``train.py``).

    mmsenti data synth --out DIR [--scale mosi|small] [--format csd|mmsa]
    mmsenti data inspect PATH [--json] [--plot FILE.png]
    mmsenti data download mosi --dest datasets/mosi
    mmsenti info
    mmsenti serve EXPORT_DIR --port 8000
    mmsenti stream broker start | produce | run | consume | verify   (docs/streaming.md)
    mmsenti search trials | front | export TRIAL                     (docs/search.md)

Each sub-command lives beside the code it drives; this file only wires the parsers. Problems the
user can fix print one ``error:`` line and exit with status 2: an :class:`~mmsenti.errors.MmsentiError`,
and any well-known input failure that escaped (a missing, unreadable or damaged file, not UTF-8, not
JSON: :func:`~mmsenti.errors.describe_input_error`). Anything else is a bug: its traceback prints,
with a line saying so (exit 1). ``mmsenti --debug ...`` (or ``MMSENTI_DEBUG=1``) re-raises every
error, so the full traceback prints.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from mmsenti.errors import DEBUG_ENV, MmsentiError, debug_requested, describe_input_error, internal_error_line

# each module defines add_commands(subparsers): data (download/inspect/synth), export (export/bench/
# report), media (extract/predict), serve (serve), stream (broker/produce/run/consume/verify), search (trials/front/export)
COMMAND_MODULES = ("mmsenti.data.commands", "mmsenti.export.commands", "mmsenti.media.commands", "mmsenti.serve.commands",
                   "mmsenti.stream.commands", "mmsenti.search.commands")


def _info(args: argparse.Namespace) -> int:
    """Versions, and every kind of the one registry with its names (``--json``: with descriptions)."""
    import importlib.metadata as md
    import json
    import platform

    from mmsenti import registry

    versions = {"mmsenti": __import__("mmsenti").__version__, "python": platform.python_version()}
    for dist in ("torch", "lightning", "transformers", "onnxruntime", "fastapi", "apache-flink"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    table = registry.describe()
    if args.json:
        print(json.dumps({"versions": versions, "registry": table}, indent=1))
        return 0
    print(" | ".join(f"{k} {v}" for k, v in versions.items()))
    width = max(len(k) for k in table)
    for kind, names in table.items():
        print(f"{kind:<{width}}  {', '.join(names) or '(none)'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmsenti", description="Fast multimodal sentiment analysis research tools.")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of any error (also {DEBUG_ENV}=1; allowed anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions and every registered kind (encoders, fusions, sources, extractors, ...)")
    info.add_argument("--json", action="store_true", help="machine-readable, with a description of each name")
    info.set_defaults(func=_info)

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # only the feature module itself (or its package) may be absent; a missing dependency
            # inside it is a real error
            if not (err.name == module_name or module_name.startswith(f"{err.name}.")):
                raise
            continue  # that feature area is not part of this installation
        module.add_commands(sub)
    return parser


def _split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``--debug`` may come anywhere (``mmsenti predict ... --debug``): take it out before parsing."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    return [a for i, a in enumerate(argv) if not (i < end and a == "--debug")], debug


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The values given on the command line, by flag: what an error that names no file is traced to."""
    return {("--" + k.replace("_", "-")) if not k.startswith("-") else k: v for k, v in vars(args).items()
            if k not in ("func", "debug") and not k.endswith("command") and v is not None and not isinstance(v, bool)}


def main(argv: Sequence[str] | None = None) -> int:
    argv, debug_flag = _split_debug(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = debug_requested(debug_flag or args.debug)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except MmsentiError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if debug:
            raise
        message = describe_input_error(err, _inputs(args))
        if message is None:  # not an input problem: a bug, whose traceback is what a report needs
            traceback.print_exc()
            print(internal_error_line(err), file=sys.stderr)
            return 1
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
