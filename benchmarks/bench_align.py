"""Benchmark: our vectorised word alignment vs the CMU SDK's ``mmdataset.align`` at CMU-MOSI scale.

Generates the MOSI-scale synthetic set (93 videos, ~26k words, ~1.1 M COVAREP and ~0.33 M FACET
frames) in a temporary folder, then runs each aligner in its own subprocess so that peak memory
(``VmHWM`` minus the post-import baseline) is measured per aligner:

* ``sdk``  - ``mmdatasdk.mmdataset({...}).align("CMU_MOSI_TimestampedWords", collapse_functions=[avg])``
  with the CMU tutorial's ``avg`` (``np.average`` over frames, words passed through);
* ``ours`` - :class:`mmsenti.data.csd.CSDReader` (one video in memory at a time) +
  :func:`mmsenti.data.align.collapse_frames` per video (raw features, NaN/-inf kept, exactly what
  the SDK sees); ``compute_seconds`` excludes the HDF5 reads.

It then reports the speed ratio, the max abs difference between the two aligned feature sets
(over entries finite on both sides, plus counts of non-finite pattern and presence mismatches;
the SDK omits words no frame overlaps, we give them a zero row and count 0), and the uncached and
cached times of the full loader :func:`mmsenti.data.mosi.load_mosi_csd` (aligned mode).

The SDK needs ~30 s here, so this is a script, never a test. Usage::

    .venv/bin/python benchmarks/bench_align.py            # prints one JSON object
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS, AUDIO, VISION = "CMU_MOSI_TimestampedWords", "CMU_MOSI_COVAREP", "CMU_MOSI_Visual_Facet_41"
MODS = {"audio": AUDIO, "vision": VISION}


def _rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    ``VmHWM`` rather than ``ru_maxrss``: on Linux the latter keeps the parent's high-water mark
    across fork+exec, which would charge the data generation to the workers.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _save(out: Path, vids: list[str], n_words: dict[str, int], get) -> None:
    """Store aligned features as [total words, D] (NaN where absent) + presence masks."""
    arrays = {}
    for mod in MODS:
        rows, present = [], []
        for vid in vids:
            feats, ok = get(mod, vid, n_words[vid])
            rows.append(feats)
            present.append(ok)
        arrays[mod] = np.concatenate(rows).astype(np.float32)
        arrays[f"{mod}_present"] = np.concatenate(present)
    np.savez(out, **arrays)


def worker_sdk(data_dir: Path, out: Path) -> dict:
    from mmsdk import mmdatasdk

    import h5py

    with h5py.File(data_dir / f"{WORDS}.csd", "r") as f:
        root = f[list(f.keys())[0]]["data"]
        n_words = {vid: int(root[vid]["intervals"].shape[0]) for vid in root}
    vids = sorted(n_words)
    dims = {"audio": 74, "vision": 47}

    def avg(intervals, features):
        try:
            return np.average(features, axis=0)
        except Exception:  # the reference (word) sequence holds bytes: pass it through
            return features

    base = _rss_mb()
    t0 = time.perf_counter()
    dataset = mmdatasdk.mmdataset({WORDS: str(data_dir / f"{WORDS}.csd"), AUDIO: str(data_dir / f"{AUDIO}.csd"),
                                   VISION: str(data_dir / f"{VISION}.csd")})
    dataset.align(WORDS, collapse_functions=[avg])
    seconds = time.perf_counter() - t0
    peak = _rss_mb()

    def get(mod, vid, n):
        seq = dataset[MODS[mod]].data
        feats = np.full((n, dims[mod]), np.nan, np.float32)
        ok = np.zeros(n, bool)
        for i in range(n):
            entry = seq.get(f"{vid}[{i}]")
            if entry is not None:
                feats[i] = np.asarray(entry["features"]).reshape(-1)
                ok[i] = True
        return feats, ok

    _save(out, vids, n_words, get)
    return {"seconds": seconds, "peak_rss_mb": peak, "rss_increase_mb": peak - base}


def worker_ours(data_dir: Path, out: Path) -> dict:
    from mmsenti.data.align import collapse_frames
    from mmsenti.data.csd import CSDReader, read_csd

    base = _rss_mb()
    t0 = time.perf_counter()
    words = read_csd(data_dir / f"{WORDS}.csd")
    aligned: dict[str, dict] = {mod: {} for mod in MODS}
    read_seconds = 0.0
    for mod, name in MODS.items():
        with CSDReader(data_dir / f"{name}.csd") as reader:  # one video in memory at a time, like the loader
            for vid, (_, w_iv) in words.data.items():
                t_r = time.perf_counter()
                feats, iv = reader.read(vid)
                read_seconds += time.perf_counter() - t_r
                aligned[mod][vid] = collapse_frames(feats, iv, w_iv)
    seconds = time.perf_counter() - t0
    peak = _rss_mb()
    vids = sorted(words.data)
    n_words = {vid: len(words.data[vid][1]) for vid in vids}

    def get(mod, vid, n):
        a = aligned[mod][vid]
        return a.features, a.counts > 0

    _save(out, vids, n_words, get)
    return {"seconds": seconds, "compute_seconds": seconds - read_seconds, "peak_rss_mb": peak,
            "rss_increase_mb": peak - base}


def _run_worker(kind: str, data_dir: Path, tmp: Path) -> dict:
    result = tmp / f"{kind}.json"
    arrays = tmp / f"{kind}.npz"
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, str(data_dir), str(arrays), str(result)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def _compare(tmp: Path) -> dict:
    sdk, ours = np.load(tmp / "sdk.npz"), np.load(tmp / "ours.npz")
    out = {}
    for mod in MODS:
        ps, po = sdk[f"{mod}_present"], ours[f"{mod}_present"]
        both = ps & po
        a, b = sdk[mod][both], ours[mod][both]
        fin = np.isfinite(a) & np.isfinite(b)
        nonfinite_mismatch = int(np.count_nonzero(np.isfinite(a) != np.isfinite(b)))
        nonfinite_mismatch += int(np.count_nonzero((np.isnan(a) != np.isnan(b)) & ~np.isfinite(a)))
        out[mod] = {
            "words_compared": int(both.sum()),
            "max_abs_diff": float(np.max(np.abs(a[fin] - b[fin]))) if fin.any() else 0.0,
            "nonfinite_mismatches": nonfinite_mismatch,
            "presence_mismatches": int(np.count_nonzero(ps != po)),
            "words_without_frames": int((~po).sum()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "DATA", "ARRAYS", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        kind, data_dir, arrays, result = args.worker
        fn = {"sdk": worker_sdk, "ours": worker_ours}[kind]
        Path(result).write_text(json.dumps(fn(Path(data_dir), Path(arrays))))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mmsenti.data.mosi import load_mosi_csd
    from mmsenti.data.synthetic import write_synthetic_mosi

    with tempfile.TemporaryDirectory(prefix="bench_align_") as tmp_str:
        tmp = Path(tmp_str)
        data_dir = tmp / "mosi"
        t0 = time.perf_counter()
        write_synthetic_mosi(data_dir, scale="mosi", seed=args.seed)
        t_write = time.perf_counter() - t0
        sdk = _run_worker("sdk", data_dir, tmp)
        ours = _run_worker("ours", data_dir, tmp)
        diff = _compare(tmp)
        t0 = time.perf_counter()
        first = load_mosi_csd(data_dir, mode="aligned", cache_dir=tmp / "cache")
        t_uncached = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = load_mosi_csd(data_dir, mode="aligned", cache_dir=tmp / "cache")
        t_cached = time.perf_counter() - t0
        assert second.from_cache and not first.from_cache

    report = {
        "dataset": {"scale": "mosi", "seed": args.seed, "write_seconds": round(t_write, 3),
                    "segments": first.report["segments"]},
        "sdk_align": {k: round(v, 3) for k, v in sdk.items()},
        "ours_align": {k: round(v, 3) for k, v in ours.items()},
        "speedup": round(sdk["seconds"] / ours["seconds"], 1),
        "memory_ratio": round(sdk["rss_increase_mb"] / max(ours["rss_increase_mb"], 1e-9), 1),
        "diff": diff,
        "loader_aligned": {"uncached_seconds": round(t_uncached, 3), "cached_seconds": round(t_cached, 3)},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
