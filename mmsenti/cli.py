"""``mmsenti``: the one command line for everything that is not training (training is ``train.py``).

    mmsenti data synth --out DIR [--scale mosi|small] [--format csd|mmsa]
    mmsenti data inspect PATH [--json] [--plot FILE.png]
    mmsenti data download mosi --dest datasets/mosi
    mmsenti info
    mmsenti serve EXPORT_DIR --port 8000
    mmsenti stream broker start | produce | run | consume | verify   (docs/streaming.md)

Each sub-command lives beside the code it drives; this file only wires the parsers. Problems the
user can fix print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from mmsenti.errors import MmsentiError

# each module defines add_commands(subparsers): data (download/inspect/synth), export (export/bench/
# report), media (extract/predict), serve (serve), stream (broker/produce/run/consume/verify)
COMMAND_MODULES = ("mmsenti.data.commands", "mmsenti.export.commands", "mmsenti.media.commands", "mmsenti.serve.commands",
                   "mmsenti.stream.commands")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except MmsentiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
