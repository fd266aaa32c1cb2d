"""``mmsenti search``: read a latency-aware search back (``hparams_search=mosi_nas``; docs/search.md).

    mmsenti search trials [--storage URL --study NAME --runs DIR]        # every trial: values, parameters, folder
    mmsenti search front  [--reference RUN_DIR] [--remeasure] [--out DIR]  # front.json + front.png (+ bench.json)
    mmsenti search export TRIAL [--precision int8] [--out DIR]          # a trial's best checkpoint → an engine
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DB = "logs/mosi_nas.db"
DEFAULT_STUDY = "mosi_nas"
DEFAULT_RUNS = "logs/mosi_nas"


def add_commands(sub: argparse._SubParsersAction) -> None:
    se = sub.add_parser("search", help="a latency-aware search (hparams_search=mosi_nas): trials, Pareto front, export by trial")
    ss = se.add_subparsers(dest="search_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", default=f"sqlite:///{DEFAULT_DB}", help=f"Optuna storage (default sqlite:///{DEFAULT_DB})")
        p.add_argument("--study", default=DEFAULT_STUDY, help=f"study name (default {DEFAULT_STUDY})")
        p.add_argument("--runs", default=DEFAULT_RUNS, help=f"the sweep's log folder, searched for run folders (default {DEFAULT_RUNS})")

    tr = ss.add_parser("trials", help="every stored trial: state, objective values, parameters, run folder")
    common(tr)
    tr.set_defaults(func=_trials)
    fr = ss.add_parser("front", help="the Pareto front as front.json + front.png, beside a reference run")
    common(fr)
    fr.add_argument("--reference", help="a run folder trained with the search's settings but the default architecture")
    fr.add_argument("--remeasure", action="store_true",
                    help="time the front's engines and the reference's again, side by side in one run (bench.json)")
    fr.add_argument("--out", default=None, help="output folder (default: the --runs folder)")
    fr.set_defaults(func=_front)
    ex = ss.add_parser("export", help="export a trial's best checkpoint (the same as mmsenti export on it)")
    common(ex)
    ex.add_argument("trial", type=int, help="the trial number (mmsenti search trials)")
    ex.add_argument("--precision", default="int8", choices=("fp32", "fp16", "int8"))
    ex.add_argument("--out", default=None, help="output folder (default export/<study>_trial<N>_<precision>)")
    ex.set_defaults(func=_export)


def _fmt(values) -> str:
    return "-" if values is None else ", ".join(f"{v:.4g}" for v in values)


def _trials(args: argparse.Namespace) -> int:
    from mmsenti.search.study import directions, load_study, pareto, study_trials

    study = load_study(args.storage, args.study)
    trials = study_trials(study, args.runs)
    front = set(pareto({t.number: t.values for t in trials if t.state == "COMPLETE" and t.values}, directions(study)))
    names = next((t.metrics["objectives"]["names"] for t in trials if t.metrics), None)
    print(f"study {args.study}: {len(trials)} trial(s); objectives {names or '?'} ({', '.join(directions(study))}); * = Pareto front")
    for t in trials:
        params = " ".join(f"{k}={v}" for k, v in t.params.items())
        print(f"{'*' if t.number in front else ' '} #{t.number:<3} {t.state:<8} [{_fmt(t.values)}]  {params}  "
              f"{t.run_dir or '(no run folder found)'}")
    return 0


def _front(args: argparse.Namespace) -> int:
    from mmsenti.search.study import front_report

    doc = front_report(args.storage, args.study, args.runs, args.out or args.runs, reference=args.reference,
                       remeasure=args.remeasure)
    out = Path(args.out or args.runs)
    print(f"wrote {out / 'front.json'}" + (f" and {doc['png']}" if doc.get("png") else "") +
          (f" and {out / 'bench.json'}" if args.remeasure else ""))
    print(f"{doc['completed']} completed of {doc['stored']} stored; front: " +
          ", ".join(f"#{n} [{_fmt(doc['front_values'][str(n)])}]" for n in doc["front"]))
    if "beats_reference" in doc:
        beats = doc["beats_reference"]
        ref = doc["reference"]["values"]
        print(f"reference [{_fmt(ref)}]: " + (", ".join(
            f"#{b['number']} dominates it" + (f" at {b['speedup']:.2f}x its speed" if "speedup" in b else "") for b in beats)
            if beats else "no front trial dominates it"))
    return 0


def _export(args: argparse.Namespace) -> int:
    from mmsenti.cli import build_parser
    from mmsenti.search.study import trial_run

    t = trial_run(args.storage, args.study, args.runs, args.trial)
    out = args.out or str(Path("export") / f"{args.study}_trial{args.trial}_{args.precision}")
    print(f"trial {t.number} [{_fmt(t.values)}]: {t.metrics['best_ckpt']} -> {out}")
    export_args = build_parser().parse_args(["export", t.metrics["best_ckpt"], "--precision", args.precision, "--out", out,
                                             "--overwrite"])
    return export_args.func(export_args)
