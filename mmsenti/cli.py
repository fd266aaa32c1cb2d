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
    import platform

    import lightning
    import torch
    import transformers

    from mmsenti import registry
    from mmsenti.models import sentiment_model  # noqa: F401  (registers components)

    print(f"mmsenti {__import__('mmsenti').__version__} | python {platform.python_version()} | torch {torch.__version__} | "
          f"lightning {lightning.__version__} | transformers {transformers.__version__} | threads {torch.get_num_threads()}")
    for kind in ("sequence_encoder", "fusion"):
        print(f"{kind}: {', '.join(registry.available(kind))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmsenti", description="Fast multimodal sentiment analysis research tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions and registered components")
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
