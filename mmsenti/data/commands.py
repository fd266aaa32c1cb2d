"""``mmsenti data ...`` sub-commands: ``synth``, ``inspect``, ``download``.

    mmsenti data synth --out DIR [--scale mosi|small|medium|sims] [--seed N] [--format csd|mmsa|mosei|sims]
    mmsenti data inspect PATH [--json] [--plot FILE.png|DIR] [--mode aligned|unaligned] [--encoding utf-8]
    mmsenti data download mosi|mosei [--dest datasets/<name>] [--features words,covarep,facet,labels]

Heavy imports (h5py, matplotlib, rich) happen inside the commands so ``mmsenti --help`` stays fast.
Problems the user can fix raise :class:`~mmsenti.errors.MmsentiError` (one ``error:`` line, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmsenti.argtypes import http_url, positive_float
from mmsenti.errors import MmsentiError

__all__ = ["add_commands", "add_data_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` with its sub-commands to the ``mmsenti`` parser's sub-parsers (``cli.COMMAND_MODULES`` hook)."""
    data = sub.add_parser("data", help="write, inspect and download data sets",
                          description="Write, inspect and download data sets (see datasets/README.md).")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="{synth,inspect,download}")

    synth = dsub.add_parser(
        "synth", help="write a synthetic CMU-MOSI-, CMU-MOSEI- or CH-SIMS-shaped data set",
        description="Write the synthetic CMU-MOSI (real SDK file format, planted multimodal signal): "
                    "4 .csd files + folds.json (--format csd) or an MMSA-style unaligned_50.pkl (--format mmsa); "
                    "--format mosei: the same in CMU-MOSEI's SDK layout (7-value labels, SDK fold ids); "
                    "--format sims: CH-SIMS's label.csv (Chinese text, label_T/A/V) + features/ as `mmsenti extract` "
                    "writes them.")
    synth.add_argument("--out", required=True, type=Path, help="output folder (created)")
    synth.add_argument("--scale", choices=SYNTH_SCALES, default=None,
                       help="csd/mmsa: mosi = 93 videos / 2,199 segments (default), small = 12 videos x 10 segments; "
                            "mosei: medium = 215 videos / 1,500 segments (default), small; "
                            "sims: sims = 2,281 clips (default), small = 40 clips")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, identical files (default 0)")
    synth.add_argument("--format", choices=("csd", "mmsa", "mosei", "sims"), default="csd", dest="fmt",
                       help="csd: SDK computational sequences (default); mmsa: MMSA processed pickle; "
                            "mosei: CMU-MOSEI SDK layout; sims: CH-SIMS label.csv + extracted features")
    synth.set_defaults(func=_synth)

    insp = dsub.add_parser(
        "inspect", help="counts, label histogram, feature statistics, NaN/inf, missing data",
        description="Summarise a data set: a folder of CMU-MOSI .csd files, one .csd file, an MMSA pickle "
                    "or a label.csv. Prints tables, or one JSON object with --json.")
    insp.add_argument("path", type=Path, metavar="PATH", help="CSD folder, .csd file, MMSA .pkl or label.csv")
    insp.add_argument("--json", action="store_true", help="print one JSON object (per-dimension arrays included)")
    insp.add_argument("--plot", type=Path, metavar="FILE.png",
                      help="also draw the label histogram per split to this file (an existing folder: "
                           "<folder>/<name>_labels.png); nothing is drawn without it")
    insp.add_argument("--mode", choices=("aligned", "unaligned"), default="aligned",
                      help="CSD folders: word-aligned rows (default) or frames at their own rate")
    insp.add_argument("--encoding", default="utf-8",
                      help="label.csv: its text encoding (default utf-8; e.g. latin-1, cp1252)")
    insp.set_defaults(func=_inspect)

    dl = dsub.add_parser(
        "download", help="download CMU-MOSI / CMU-MOSEI computational sequences (CMU Multimodal SDK recipe)",
        description="Download CMU-MOSI or CMU-MOSEI .csd files from the CMU Multimodal SDK's server: resumable, "
                    "retried, validated before they are put in place; files already present and valid are skipped.")
    dl.add_argument("dataset", choices=("mosi", "mosei"), help="data set: mosi (CMU-MOSI) or mosei (CMU-MOSEI)")
    dl.add_argument("--dest", type=Path, default=None, help="folder (default datasets/<data set>)")
    dl.add_argument("--features", default="words,covarep,facet,labels",
                    help="comma-separated: words, covarep, facet, labels (default: all four), "
                         "or mosi: phonemes, glove, opensmile, opensmile_eb10, openface; "
                         "mosei: phonemes, glove, opensmile, openface, labels_sentiment, labels_emotions")
    dl.add_argument("--mirror", metavar="URL", type=http_url, help="base URL holding the files flat (<URL>/<file name>)")
    dl.add_argument("--retries", type=int, default=3, help="retries per file after a transient failure (default 3)")
    dl.add_argument("--timeout", type=positive_float, default=30.0, help="seconds to wait for the server (default 30)")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    dl.set_defaults(func=_download)


#: Every ``--scale`` any ``--format`` takes (which go with which: :data:`mmsenti.data.synthetic.WRITERS`).
SYNTH_SCALES = ("mosi", "small", "medium", "sims")
#: ``--format`` -> the data set whose writer it runs.
_SYNTH_DATASET = {"csd": "mosi", "mmsa": "mosi", "mosei": "mosei", "sims": "sims"}

#: The name the first ``mmsenti.cli`` called; kept so either wiring works.
add_data_commands = add_commands


def _synth(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise MmsentiError(f"--seed must be >= 0, got {args.seed}")
    if args.out.exists() and not args.out.is_dir():
        raise MmsentiError(f"{args.out}: exists and is not a folder")
    from .folds import SPLITS
    from .synthetic import WRITERS

    _, scales, default = WRITERS[_SYNTH_DATASET[args.fmt]]
    if args.scale is None:
        args.scale = default
    elif args.scale not in scales:
        raise MmsentiError(f"--scale {args.scale} does not go with --format {args.fmt}; choose {' or '.join(scales)}")
    if args.fmt in ("mosei", "sims"):
        return _synth_mosei_sims(args)
    if args.fmt == "csd":
        from .mosi import load_mosi_csd
        from .synthetic import FILES, write_synthetic_mosi

        out = write_synthetic_mosi(args.out, scale=args.scale, seed=args.seed)
        data = load_mosi_csd(out, mode="aligned", cache_dir=False, files={k: None for k in ("words", "audio", "vision")})
        rep = data.report
        print(f"wrote synthetic CMU-MOSI (scale {args.scale}, seed {args.seed}) to {out}:")
        for name in [*FILES.values(), "folds.json"]:
            print(f"  {name}")
        counts = ", ".join(f"{s} {rep['videos'][s]} videos / {rep['segments'][s]} segments" for s in SPLITS)
        print(f"  {counts}")
        return 0

    from .ids import video_of
    from .mmsa import load_mmsa_pickle
    from .synthetic import write_synthetic_mmsa

    path = write_synthetic_mmsa(args.out, scale=args.scale, seed=args.seed)
    data = load_mmsa_pickle(path)
    print(f"wrote synthetic CMU-MOSI (scale {args.scale}, seed {args.seed}) as an MMSA pickle: {path}")
    videos = {s: len({video_of(x["id"]) for x in data.splits[s]}) for s in SPLITS}
    counts = ", ".join(f"{s} {videos[s]} videos / {len(data.splits[s])} segments" for s in SPLITS)
    print(f"  {counts}")
    print(f"  audio [N, 50, {data.audio_dim}], vision [N, 50, {data.vision_dim}] zero-padded, with *_lengths")
    return 0


def _synth_mosei_sims(args: argparse.Namespace) -> int:
    from .folds import SPLITS
    from .synthetic import write_synthetic

    out = write_synthetic(args.fmt, args.out, scale=args.scale, seed=args.seed)
    if args.fmt == "mosei":
        from .mosei import load_mosei_csd
        from .synthetic import MOSEI_FILES

        data = load_mosei_csd(out, mode="unaligned", cache_dir=False, files={k: None for k in ("words", "audio", "vision")})
        names, title = [*MOSEI_FILES.values(), "folds.json"], "CMU-MOSEI"
    else:
        from .sims import load_sims
        from .synthetic import FILES, SIMS_FEATURES_DIR

        data = load_sims(out, cache_dir=False, features=None)
        names = ["label.csv", *(f"{SIMS_FEATURES_DIR}/{FILES[k]}" for k in ("audio", "vision", "labels")),
                 f"{SIMS_FEATURES_DIR}/folds.json"]
        title = "CH-SIMS"
    rep = data.report
    print(f"wrote synthetic {title} (scale {args.scale}, seed {args.seed}) to {out}:")
    for name in names:
        print(f"  {name}")
    unit = "segments" if args.fmt == "mosei" else "clips"
    print("  " + ", ".join(f"{s} {rep['videos'][s]} videos / {rep['segments'][s]} {unit}" for s in SPLITS))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .inspect.plot import plot_labels
    from .inspect.render import render_text
    from .inspect.stats import inspect_path, to_jsonable

    info = inspect_path(args.path, mode=args.mode, encoding=args.encoding)
    plot = None
    if args.plot is not None:
        plot = plot_labels(info, args.plot)
    if args.json:
        out = to_jsonable(info)
        if plot is not None:
            out["plot"] = str(plot)
        print(json.dumps(out, allow_nan=False, separators=(",", ":")))
    else:
        render_text(info)
        if plot is not None:
            print(f"label histogram: {plot}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .download import RECIPES, download_dataset

    features = [f.strip() for f in args.features.split(",") if f.strip()]
    if not features:
        raise MmsentiError("--features is empty; give e.g. words,covarep,facet,labels")
    if args.retries < 0:
        raise MmsentiError(f"--retries must be >= 0, got {args.retries}")
    dest = args.dest if args.dest is not None else Path(RECIPES[args.dataset].dest)
    results = download_dataset(args.dataset, dest, features, mirror=args.mirror, retries=args.retries,
                               timeout=args.timeout, progress=not args.no_progress and sys.stderr.isatty())
    fetched = sum(r.status != "present" for r in results)
    print(f"{dest}: {len(results)} file(s) ready ({fetched} downloaded, {len(results) - fetched} already present)")
    return 0
