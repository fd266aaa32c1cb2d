"""A stored search read back: trials with their run folders, the Pareto front, a reference, export by trial.

The sweeper keeps each trial's parameters and objective values in the Optuna storage (sqlite); the run
itself (checkpoints, engine, ``metrics.json``) is a Hydra job folder. A run records the values it returned
(``metrics.json["objectives"]``, written by :func:`mmsenti.training.tasks.optimized_value`), so a trial is
matched to its folder by equal values *and* by its parameters being among the job's overrides
(``.hydra/overrides.yaml``) — exact, whatever the job numbering of a resumed sweep.

:func:`front_report` writes ``front.json`` (every trial: number, state, values, parameters, run folder,
engine; the Pareto front; the reference run and which front trials beat it) and ``front.png``. With
``remeasure=True`` the front's engines and the reference's are timed again *side by side in one run*
(the one harness, interleaved): per-trial latencies come from different moments of a long sweep on a
shared machine, so the claim "faster than the reference" is made on the re-measured figures. The
re-measurement is itself bench JSON (``bench.json``): ``mmsenti report --pareto`` draws it beside the other
engines.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsenti.errors import MmsentiError
from mmsenti.io import write_json_atomic

FRONT_SCHEMA = "mmsenti.search_front/1"
LATENCY_HINT = "p50_ms"  # an objective whose name ends so is a latency: re-measured, reported as a speed-up


@dataclass
class TrialRun:
    number: int
    state: str
    values: list[float] | None
    params: dict[str, Any]
    run_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def engine(self) -> Path | None:
        """The first engine the trial's run exported (what its engine objectives describe)."""
        return first_engine(self.metrics)


def first_engine(metrics: dict[str, Any]) -> Path | None:
    manifests = (metrics.get("export") or {}).get("manifests") or {}
    return Path(next(iter(manifests.values()))).parent if manifests else None


def load_study(storage: str, study_name: str):
    """The Optuna study, or one line naming what exists in that storage."""
    import optuna

    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
        raise MmsentiError(f"--storage {storage}: no such database; run the search first "
                           "(python train.py experiment=mosi_fusion hparams_search=mosi_nas)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=storage)]
        raise MmsentiError(f"--study {study_name}: not in {storage}; studies there: {', '.join(names) or 'none'}") from None


def run_records(root: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every run folder under ``root`` whose ``metrics.json`` records objectives (newest first)."""
    root = Path(root)
    if not root.is_dir():
        raise MmsentiError(f"--runs {root}: no such folder (the sweep's log folder, e.g. logs/mosi_nas)")
    found = []
    for path in root.rglob("metrics.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("objectives"), dict):
            found.append((path.parent, data))
    return sorted(found, key=lambda item: item[0].stat().st_mtime, reverse=True)


def _overrides(run_dir: Path) -> set[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return set()
    from omegaconf import OmegaConf

    return {str(x) for x in OmegaConf.load(path)}


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12) for x, y in zip(a, b))


def study_trials(study, runs_root: str | Path) -> list[TrialRun]:
    """The study's trials, each with its run folder when one matches (values and parameters)."""
    records = run_records(runs_root)
    used: set[Path] = set()
    out = []
    for t in study.trials:
        tr = TrialRun(t.number, t.state.name, list(t.values) if t.values is not None else None, dict(t.params))
        if tr.values is not None:
            wanted = {f"{k}={v}" for k, v in tr.params.items()}
            for run_dir, data in records:
                if run_dir in used or not _same(list(data["objectives"].get("values") or []), tr.values):
                    continue
                if wanted <= _overrides(run_dir):
                    tr.run_dir, tr.metrics = run_dir, data
                    used.add(run_dir)
                    break
        out.append(tr)
    return out


def directions(study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def dominates(a: list[float], b: list[float], dirs: list[str]) -> bool:
    """``a`` no worse than ``b`` in every objective and better in at least one."""
    sign = [1.0 if d == "minimize" else -1.0 for d in dirs]
    no_worse = all(s * x <= s * y for s, x, y in zip(sign, a, b))
    return no_worse and any(s * x < s * y for s, x, y in zip(sign, a, b))


def pareto(points: dict[int, list[float]], dirs: list[str]) -> list[int]:
    return sorted(n for n, v in points.items() if not any(dominates(w, v, dirs) for m, w in points.items() if m != n))


def front_report(storage: str, study_name: str, runs_root: str | Path, out: str | Path,
                 reference: str | Path | None = None, remeasure: bool = False) -> dict[str, Any]:
    """Write ``front.json`` and ``front.png`` (and ``bench.json`` with ``remeasure``) into ``out``; returns the JSON."""
    study = load_study(storage, study_name)
    trials = study_trials(study, runs_root)
    dirs = directions(study)
    complete = {t.number: t.values for t in trials if t.state == "COMPLETE" and t.values is not None}
    if not complete:
        raise MmsentiError(f"study {study_name}: no completed trial yet ({len(trials)} trial(s) stored)")
    names = next((list(t.metrics["objectives"]["names"]) for t in trials if t.metrics), [f"objective_{i}" for i in range(len(dirs))])
    front = pareto(complete, dirs)
    doc: dict[str, Any] = {
        "schema": FRONT_SCHEMA, "study": study_name, "storage": storage, "objectives": names, "directions": dirs,
        "trials": [{"number": t.number, "state": t.state, "values": t.values, "params": t.params,
                    "run_dir": str(t.run_dir) if t.run_dir else None, "engine": str(t.engine) if t.engine else None,
                    "on_front": t.number in front} for t in trials],
        "front": front, "completed": len(complete), "stored": len(trials),
    }
    ref = None
    if reference:
        ref_dir = Path(reference)
        try:
            ref_metrics = json.loads((ref_dir / "metrics.json").read_text())
        except OSError:
            raise MmsentiError(f"--reference {ref_dir}: no metrics.json there; train it with the search's settings "
                               "(docs/search.md, The reference)") from None
        objectives = ref_metrics.get("objectives") or {}
        if list(objectives.get("names") or []) != names:
            raise MmsentiError(f"--reference {ref_dir}: it records objectives {objectives.get('names')}, the study {names}; "
                               "train the reference with the search's config (hparams_search=mosi_nas hydra.mode=RUN)")
        ref = {"run_dir": str(ref_dir), "values": list(objectives["values"]),
               "engine": str(first_engine(ref_metrics)) if first_engine(ref_metrics) else None}
        doc["reference"] = ref
    by_number = {t.number: t for t in trials}
    values = {n: list(complete[n]) for n in front}
    lat = [i for i, n in enumerate(names) if n.endswith(LATENCY_HINT)]  # the latency objectives
    if remeasure:
        engines = {f"trial_{n}": by_number[n].engine for n in front if by_number[n].engine}
        if ref and ref["engine"]:
            engines = {"reference": Path(ref["engine"]), **engines}
        settings = next(((by_number[n].metrics.get("export") or {}).get("summary", {}) for n in front if by_number[n].metrics), {})
        bench_settings = next((s["latency"]["settings"] for s in settings.values() if s.get("latency")), {})
        from mmsenti.export.hooks import time_engines

        report = time_engines(engines, bench_settings, mode="interleaved")  # side by side, the trials' settings
        write_json_atomic(Path(out) / "bench.json", report)
        p50 = {r["variant"]: r["p50_ms"] for r in report["results"]}
        for n in front:
            if f"trial_{n}" in p50:
                for i in lat:
                    values[n][i] = p50[f"trial_{n}"]
        if ref and "reference" in p50:
            for i in lat:
                ref["values"][i] = p50["reference"]
        doc["remeasured"] = {"bench": str(Path(out) / "bench.json"), "p50_ms": p50,
                             "settings": report["settings"], "hardware": report["hardware"]}
    doc["front_values"] = {str(n): values[n] for n in front}
    if ref:
        beats = []
        for n in front:
            if dominates(values[n], ref["values"], dirs):
                row = {"number": n, "values": values[n]}
                if lat:
                    row["speedup"] = ref["values"][lat[0]] / values[n][lat[0]]
                beats.append(row)
        doc["beats_reference"] = sorted(beats, key=lambda r: -r.get("speedup", 0.0))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "front.json", doc)
    doc["png"] = str(plot_front(doc, out / "front.png")) if len(names) >= 2 else None
    return doc


def plot_front(doc: dict[str, Any], path: Path) -> Path:
    """Objective 2 (x, usually latency) vs objective 1 (y): every trial, the front joined, the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = doc["objectives"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    done = [t for t in doc["trials"] if t["values"] is not None and t["state"] == "COMPLETE"]
    ax.scatter([t["values"][1] for t in done], [t["values"][0] for t in done], s=18, color="0.7", label="trial")
    pts = sorted((v[1], v[0], int(n)) for n, v in doc["front_values"].items())
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="tab:blue", label="Pareto front" +
            (" (re-measured side by side)" if doc.get("remeasured") else ""))
    for x, y, n in pts:
        ax.annotate(f"#{n}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if doc.get("reference"):
        rv = doc["reference"]["values"]
        ax.scatter([rv[1]], [rv[0]], marker="*", s=160, color="tab:red", zorder=5, label="reference (default config)")
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    ax.set_title(f"{doc['study']}: {doc['completed']} completed trials", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def trial_run(storage: str, study_name: str, runs_root: str | Path, number: int) -> TrialRun:
    """One trial with its run folder, or one line saying why it cannot be used."""
    study = load_study(storage, study_name)
    trials = {t.number: t for t in study_trials(study, runs_root)}
    if number not in trials:
        raise MmsentiError(f"trial {number}: not in study {study_name} (trials 0-{max(trials, default=-1)})")
    t = trials[number]
    if t.state != "COMPLETE":
        raise MmsentiError(f"trial {number}: {t.state.lower()}, nothing to export")
    if t.run_dir is None:
        raise MmsentiError(f"trial {number}: no run folder under {runs_root} records its values {t.values}; "
                           "pass the sweep's log folder with --runs")
    if not t.metrics.get("best_ckpt") or not Path(t.metrics["best_ckpt"]).is_file():
        raise MmsentiError(f"trial {number}: its best checkpoint {t.metrics.get('best_ckpt')} is gone")
    return t
