"""Serving intelligence through ``mmsenti serve``: the answer cache (exact, near with the negation guard,
Redis), the lexicon + model hybrid modes, the A/B split, shadow traffic, and ``serve replay`` / ``serve traffic``.

In-process ASGI client where possible (tests/test_serve.py's helpers); one real uvicorn process for the
replay; a real ``redis-server`` on 127.0.0.1 when the binary is present. The second model of the
A/B and swap tests is the session's tiny text-only export with ``+DELTA`` added to its score inside
the ONNX graph (:func:`shifted_export`), so which model answered is known exactly from the score.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("vaderSentiment", reason="the serve extra is not installed: pip install -e '.[serve]'")

from test_serve import (  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative import)
    ROOT, free_port, metric_samples, predict_body, registry_of, sample_value, server_process, serving, wait_until,
)

from mmsenti.cache.near import jaccard, near_text, shingles  # noqa: E402
from mmsenti.lexicon.lexicon import shipped_lexicon, vader_lexicon  # noqa: E402
from mmsenti.runtime.predictor import Predictor  # noqa: E402
from mmsenti.serve.config import CacheSettings, ServeSettings  # noqa: E402
from mmsenti.serve.experiments import key_point, two_proportion_z  # noqa: E402

DELTA = 0.5  # the shifted export's score offset
TOL = 1e-4
TEXTS = ["great phone, battery lasts", "screen died after a week", "so-so. don't buy", "it works", "meh"]


# ----------------------------------------------------------------------------- helpers
def settings(export: Path, name: str = "tiny", **kw) -> ServeSettings:
    return ServeSettings(export=str(export), name=name, **kw)


def shifted_export(src: Path, dst: Path, delta: float = DELTA) -> Path:
    """A copy of a text-only export whose engine adds ``delta`` to every score (a different model, known exactly)."""
    import onnx
    from onnx import helper, numpy_helper

    from mmsenti.io import file_digest

    shutil.copytree(src, dst, copy_function=os.link)  # hard links: files are replaced below, never written through
    manifest = json.loads((dst / "manifest.json").read_text())
    engine = dst / manifest["engine"]
    model = onnx.load(str(engine))
    for node in model.graph.node:
        node.output[:] = ["score_unshifted" if o == "score" else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(delta, np.float32), "score_shift"))
    model.graph.node.append(helper.make_node("Add", ["score_unshifted", "score_shift"], ["score"], name="score_shift_add"))
    engine.unlink()
    onnx.save(model, str(engine))
    manifest["files"][manifest["engine"]] = {"bytes": engine.stat().st_size, "sha256": file_digest(engine)}
    (dst / "manifest.json").unlink()
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dst


def compound(total: float) -> float:
    return total / math.sqrt(total * total + 15.0)  # VADER's normalisation, alpha = 15


@pytest.fixture(scope="module")
def text_export(tiny_exports) -> Path:
    return tiny_exports["text_only"]


@pytest.fixture(scope="module")
def shifted(text_export, tmp_path_factory) -> Path:
    return shifted_export(text_export, tmp_path_factory.mktemp("shifted") / "text_only_shifted")


@pytest.fixture(scope="module")
def reference(text_export) -> Predictor:
    return Predictor.load(text_export, threads=1)


def scores_of(predictor: Predictor, texts) -> dict[str, float]:
    return dict(zip(texts, predictor.predict(list(texts))["score"].tolist()))


async def post(client, *texts, **extra):
    r = await client.post("/v1/predict", json=predict_body(*texts, **extra))
    assert r.status_code == 200, r.text
    return r


# ----------------------------------------------------------------------------- exact layer
def test_exact_hits_skip_the_engine_and_are_counted_per_layer(text_export, reference):
    ref = scores_of(reference, ["great phone", "a", "b", "c"])

    async def go():
        async with serving(settings(text_export, cache=CacheSettings(max_entries=3))) as (app, client):
            model = registry_of(app).get()
            first = await post(client, "great phone")
            batches = model.batcher.batches
            again = await post(client, "great phone")
            # the model's rule ("none") folds white space; its tokenizer lower-cases, so case cannot matter
            variants = [await post(client, t) for t in ("  great   phone ", "GREAT Phone")]
            punct = await post(client, "great phone!")  # a different input to the model: computed
            after_hits = model.batcher.batches
            for t in ("a", "b", "c"):  # 3 more entries in a 3-entry LRU: two evictions
                await post(client, t)
            metrics = metric_samples((await client.get("/metrics")).text)
            return first, again, variants, punct, batches, after_hits, metrics

    first, again, variants, punct, batches, after_hits, metrics = asyncio.run(go())
    a, b = first.json()["items"][0], again.json()["items"][0]
    assert a["cached"] is None and b["cached"] == "exact"
    assert a["score"] == b["score"] == pytest.approx(ref["great phone"], abs=TOL)
    assert [v.json()["items"][0]["cached"] for v in variants] == ["exact", "exact"]
    assert punct.json()["items"][0]["cached"] is None
    assert after_hits == batches + 1  # the three hits never reached the batcher; the punctuation variant did
    assert float(first.headers["server-timing"].split("dur=")[1]) > 0
    assert sample_value(metrics, "mmsenti_cache_hits_total", layer="exact") == 3
    assert sample_value(metrics, "mmsenti_cache_misses_total", layer="exact") == 5
    assert sample_value(metrics, "mmsenti_cache_evictions_total", layer="exact") == 2
    assert sample_value(metrics, "mmsenti_cache_entries", layer="exact") == 3
    assert sample_value(metrics, "mmsenti_answers_total", model="tiny", cached="exact", path="model") == 3
    assert sample_value(metrics, "mmsenti_answers_total", model="tiny", cached="none") == 5


def test_a_hot_swap_under_load_never_serves_the_old_models_answers(text_export, shifted, reference):
    ref = scores_of(reference, TEXTS)

    async def go():
        async with serving(settings(text_export, max_wait_ms=1)) as (app, client):
            registry = registry_of(app)
            old = registry.get()
            stop = asyncio.Event()
            seen = []  # (sent at, version, text, score, cached)

            async def client_loop(i):
                k = i
                while not stop.is_set():
                    text = TEXTS[k % len(TEXTS)]
                    k += 1
                    sent = time.perf_counter()
                    r = await post(client, text)
                    item = r.json()["items"][0]
                    seen.append((sent, r.json()["version"], text, item["score"], item["cached"]))
                    await asyncio.sleep(0)  # in-process: a cached answer never suspends; let the others run

            loops = [asyncio.ensure_future(client_loop(i)) for i in range(6)]
            await wait_until(lambda: sum(1 for s in seen if s[4] == "exact") > 30)
            swap = await client.post("/v1/models", json={"name": "tiny", "path": str(shifted)})
            swapped_at = time.perf_counter()
            await wait_until(lambda: sum(1 for s in seen if s[0] > swapped_at and s[4] == "exact") > 30)
            stop.set()
            await asyncio.gather(*loops)
            new = registry.get()
            cache = app.state.serve.answerer.cache
            old_ns = old.namespaces["model"] + ":"
            await wait_until(lambda: old.batcher.closing and not any(k.startswith(old_ns) for k in cache.exact.keys()))
            return swap, seen, swapped_at, old, new, cache.exact.keys()

    swap, seen, swapped_at, old, new, keys = asyncio.run(go())
    assert swap.status_code == 200
    assert old.version != new.version and old.namespaces["model"] != new.namespaces["model"]
    for t, version, text, score, cached in seen:
        expected = ref[text] + (DELTA if version == new.version else 0.0)
        assert score == pytest.approx(expected, abs=TOL), (version, text, cached)  # 0 answers from the other model
        if t > swapped_at:
            assert version == new.version  # sent after the POST returned: the switch had happened
    assert {s[4] for s in seen if s[0] > swapped_at} == {None, "exact"}  # the new version filled its own cache
    assert keys and all(k.startswith(new.namespaces["model"] + ":") for k in keys)  # the old namespace was dropped


# ----------------------------------------------------------------------------- near layer
def test_near_layer_serves_surface_variants_and_the_guard_refuses_negations(text_export, reference):
    en = "the battery of this phone is good and lasts all day"
    zh = "这款手机的电池续航时间很长，屏幕也非常清楚，拍照效果很好，我很满意"
    cases = [(en, None), (en.capitalize() + "!!", "near"), (en + " 👍", "near"),
             ("the battery of this phone is not good and lasts all day", None),
             (zh, None), (zh + "！", "near"), (zh.replace("我很满意", "我不满意"), None)]
    for text, layer in cases[3:4] + cases[6:7]:  # the negations are near candidates: only the guard tells them apart
        base = en if text.isascii() else zh
        assert jaccard(shingles(near_text(text)), shingles(near_text(base))) >= 0.8
    ref = scores_of(reference, [t for t, _ in cases])

    async def go():
        async with serving(settings(text_export, cache=CacheSettings(near=True))) as (app, client):
            out = [(await post(client, t)).json()["items"][0] for t, _ in cases]
            return out, metric_samples((await client.get("/metrics")).text)

    out, metrics = asyncio.run(go())
    assert [o["cached"] for o in out] == [layer for _, layer in cases]
    for (text, layer), o in zip(cases, out):
        base = en if text.isascii() or "👍" in text else zh
        # a near hit is the cached sentence's answer; everything else is the model's own for this text
        assert o["score"] == pytest.approx(ref[base] if layer == "near" else ref[text], abs=TOL)
    assert sample_value(metrics, "mmsenti_cache_hits_total", layer="near") == 3
    assert sample_value(metrics, "mmsenti_cache_guard_rejects_total", layer="near") == 2


# ----------------------------------------------------------------------------- lexicon + model hybrid
def test_lexicon_modes_through_the_api_by_hand_computed_cases(text_export, reference):
    downgraded = shipped_lexicon("finance_en").get("downgraded").score  # -2.0, strong
    bullish = shipped_lexicon("finance_en").get("bullish").score  # 2.5, strong
    wonderful = vader_lexicon().get("wonderful").score  # 2.7
    plain = "the phone arrived on tuesday"
    ref = scores_of(reference, ["analysts downgraded the stock", "a wonderful film", plain])

    async def go():
        out = {}
        s = settings(text_export, lexicons=["finance_en", "vader"], cache=CacheSettings(enabled=False))
        async with serving(s) as (app, client):
            model = registry_of(app).get()
            batches = model.batcher.batches
            for key, text, mode in [("lexicon", "analysts downgraded the stock", "lexicon"),
                                    ("override", "analysts downgraded the stock", "override"),
                                    ("override_negated", "not bullish at all", "override")]:
                out[key] = (await post(client, text, mode=mode)).json()["items"][0]
            out["batches_skipped"] = model.batcher.batches == batches  # lexicon answers never reached the engine
            for key, text, mode in [("override_weak", "a wonderful film", "override"),
                                    ("blend", "a wonderful film", "blend"), ("blend_plain", plain, "blend"),
                                    ("model", "a wonderful film", None)]:
                out[key] = (await post(client, text, **({"mode": mode} if mode else {}))).json()["items"][0]
            out["bad_mode"] = await client.post("/v1/predict", json=predict_body("x", mode="rules"))
            out["metrics"] = metric_samples((await client.get("/metrics")).text)
        async with serving(settings(text_export, mode="override", lexicons=["finance_en"],
                                    cache=CacheSettings(enabled=False))) as (app, client):
            out["server_mode"] = (await post(client, "analysts downgraded the stock")).json()["items"][0]
        async with serving(settings(text_export)) as (app, client):  # no lexicons loaded
            out["no_lexicons"] = await client.post("/v1/predict", json=predict_body("x", mode="override"))
        return out

    out = asyncio.run(go())
    lex = out["lexicon"]
    assert lex["score"] == pytest.approx(3 * compound(downgraded), abs=1e-6)  # regression scale: 3 x compound
    assert lex["polarity"] == "negative" and lex["class_7"] == -1 and lex["cached"] is None
    assert lex["lexicon"] == {"mode": "lexicon", "path": "lexicon", "score": pytest.approx(lex["score"], abs=1e-6),
                              "compound": pytest.approx(compound(-2.0), abs=1e-6), "terms": ["downgraded"],
                              "strong": ["downgraded"], "negated": [], "lexicons": "finance_en@1+vader@3.3.2"}
    assert out["override"]["score"] == pytest.approx(lex["score"]) and out["override"]["lexicon"]["path"] == "lexicon"
    neg = out["override_negated"]  # a negated strong term: valence x N_SCALAR (-0.74)
    assert neg["score"] == pytest.approx(3 * compound(bullish * -0.74), abs=1e-6) and neg["polarity"] == "negative"
    assert neg["lexicon"]["negated"] == ["bullish"] and neg["lexicon"]["path"] == "lexicon"
    assert out["batches_skipped"]
    weak = out["override_weak"]  # no strong term: the model answers
    assert weak["lexicon"]["path"] == "model" and weak["lexicon"]["terms"] == ["wonderful"]
    assert weak["score"] == pytest.approx(ref["a wonderful film"], abs=TOL)
    blend = out["blend"]
    assert blend["lexicon"]["path"] == "blend"
    assert blend["score"] == pytest.approx(0.5 * 3 * compound(wonderful) + 0.5 * ref["a wonderful film"], abs=TOL)
    assert out["blend_plain"]["lexicon"]["path"] == "model"  # no lexicon term: not pulled toward neutral
    assert out["blend_plain"]["score"] == pytest.approx(ref[plain], abs=TOL)
    assert out["model"]["lexicon"] is None and out["model"]["score"] == pytest.approx(ref["a wonderful film"], abs=TOL)
    assert out["bad_mode"].status_code == 422 and out["bad_mode"].json()["error"].startswith("mode: Input should be")
    assert out["server_mode"]["lexicon"]["path"] == "lexicon" and out["server_mode"]["lexicon"]["mode"] == "override"
    assert out["no_lexicons"].status_code == 422 and "needs lexicons" in out["no_lexicons"].json()["error"]
    m = out["metrics"]
    assert sample_value(m, "mmsenti_answers_total", model="tiny", path="lexicon") == 3
    assert sample_value(m, "mmsenti_answers_total", model="tiny", mode="blend", path="blend") == 1


# ----------------------------------------------------------------------------- A/B split
def test_split_ratio_stickiness_experiments_and_promote(text_export, shifted, reference):
    keys = [f"user{i:05d}" for i in range(1000)]
    expected_share = sum(key_point(k) >= 0.9 for k in keys) / len(keys)  # the primary owns [0, 0.9)
    ref = scores_of(reference, TEXTS)

    async def go():
        out = {}
        async with serving(settings(text_export, name="primary")) as (app, client):
            assert (await client.post("/v1/models", json={"name": "candidate", "path": str(shifted)})).status_code == 200
            out["bad"] = [await client.post("/v1/models", json={"traffic": t}) for t in
                          ({"primary": 0.9, "candidate": 0.2}, {"candidate": 1.0}, {"primary": 0.9, "nope": 0.1})]
            out["bad"].append(await client.post("/v1/models", json={"traffic": {"primary": 1.0}, "name": "x"}))
            r = await client.post("/v1/models", json={"traffic": {"primary": 0.9, "candidate": 0.1}})
            assert r.status_code == 200, r.text
            out["set"] = r.json()
            seen: dict[str, set] = {}
            scores_ok = True
            for round_ in range(2):
                for i, key in enumerate(keys):
                    # the same key through each channel: body key, body user_id, X-User-Id, X-Session-Id
                    channel = (i + round_) % 4
                    body = predict_body(TEXTS[i % len(TEXTS)], **({"key": key} if channel == 0 else
                                                                  {"user_id": key} if channel == 1 else {}))
                    headers = {"x-user-id": key} if channel == 2 else {"x-session-id": key} if channel == 3 else {}
                    res = (await client.post("/v1/predict", json=body, headers=headers)).json()
                    seen.setdefault(key, set()).add(res["model"])
                    score = res["items"][0]["score"]
                    scores_ok &= abs(score - ref[TEXTS[i % len(TEXTS)]] - (DELTA if res["model"] == "candidate" else 0)) < TOL
            unkeyed = [(await client.post("/v1/predict", json=predict_body("no key"))).json()["model"] for _ in range(20)]
            out.update(seen=seen, scores_ok=scores_ok, unkeyed=unkeyed)
            out["experiments"] = (await client.get("/v1/experiments")).json()
            out["metrics"] = metric_samples((await client.get("/metrics")).text)
            out["unload"] = await client.post("/v1/models", json={"name": "candidate", "action": "unload"})
            out["activate"] = await client.post("/v1/models", json={"name": "candidate", "action": "activate"})
            out["promote"] = (await client.post("/v1/models", json={"action": "promote"})).json()
            out["after"] = (await client.post("/v1/predict", json=predict_body("x", key=keys[0]))).json()["model"]
            out["after_experiments"] = (await client.get("/v1/experiments")).json()
            out["rollback"] = await client.post("/v1/models", json={"action": "rollback"})
        return out

    out = asyncio.run(go())
    assert [r.status_code for r in out["bad"]] == [422, 422, 404, 422]
    assert "sum to 1.1" in out["bad"][0].json()["error"] and "'primary' must be in the split" in out["bad"][1].json()["error"]
    assert out["set"]["experiment"]["primary"] == "primary" and out["set"]["traffic"] == {"primary": 0.9, "candidate": 0.1}
    seen = out["seen"]
    assert all(len(models) == 1 for models in seen.values())  # 100% sticky, whichever channel carried the key
    share = sum(models == {"candidate"} for models in seen.values()) / len(seen)
    assert share == expected_share and abs(share - 0.1) < 0.03  # 1000 keys: within 3 standard errors of 10%
    assert out["scores_ok"]  # each variant answered with its own model
    assert set(out["unkeyed"]) <= {"primary", "candidate"}
    ex = out["experiments"]
    assert ex["running"] and ex["primary"] == "primary"
    v = ex["variants"]
    assert v["primary"]["requests"] + v["candidate"]["requests"] == 2020
    assert v["candidate"]["requests"] == 2 * round(share * 1000) + out["unkeyed"].count("candidate")
    assert sum(v["candidate"]["polarity"].values()) == v["candidate"]["items"]
    assert v["candidate"]["latency_ms"]["p50"] > 0
    test = ex["tests"]["candidate"]
    pos_p, n_p = v["primary"]["polarity"]["positive"], v["primary"]["items"]
    pos_c, n_c = v["candidate"]["polarity"]["positive"], v["candidate"]["items"]
    assert test["p_value"] == pytest.approx(two_proportion_z(pos_p, n_p, pos_c, n_c)[1])
    assert test["mean_score_diff"] == pytest.approx(v["candidate"]["mean_score"] - v["primary"]["mean_score"], abs=1e-5)
    m = out["metrics"]
    assert sample_value(m, "mmsenti_traffic_weight", model="candidate") == pytest.approx(0.1)
    assert sample_value(m, "mmsenti_score_count", model="candidate") == n_c
    assert sample_value(m, "mmsenti_polarity_total", model="candidate", polarity="positive") == pos_c
    assert sample_value(m, "mmsenti_request_seconds_count", model="candidate") == v["candidate"]["requests"]
    assert out["unload"].status_code == 409 and "running experiment" in out["unload"].json()["error"]
    assert out["activate"].status_code == 409
    assert out["promote"]["active"] == "candidate" and out["promote"]["traffic"] is None
    assert out["promote"]["experiment"]["outcome"] == "promoted"
    assert out["after"] == "candidate"
    assert out["after_experiments"]["running"] is False and out["after_experiments"]["last"]["active"] == "candidate"
    assert out["rollback"].status_code == 409 and "no experiment is running" in out["rollback"].json()["error"]


def test_z_test_by_hand():
    z, p = two_proportion_z(50, 100, 70, 100)  # pooled 0.6, se = sqrt(0.24 * 0.02)
    assert z == pytest.approx(0.2 / math.sqrt(0.24 * 0.02)) and p == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert two_proportion_z(0, 0, 1, 2) == (None, None)
    assert 0.0 <= key_point("user1") < 1.0 and key_point("user1") == key_point("user1") != key_point("user2")


# ----------------------------------------------------------------------------- shadow traffic
def test_shadow_answers_are_compared_never_returned_and_dropped_first(text_export, shifted, reference):
    from test_serve import block_engine

    texts = [f"review number {i} was fine" for i in range(12)] + TEXTS
    ref = scores_of(reference, texts)
    shifted_ref = {t: s + DELTA for t, s in ref.items()}
    agree = sum((ref[t] > 0) == (shifted_ref[t] > 0) for t in texts)

    async def go():
        out = {}
        async with serving(settings(text_export, name="primary", shadow_queue=2)) as (app, client):
            assert (await client.post("/v1/models", json={"name": "candidate", "path": str(shifted)})).status_code == 200
            out["self"] = await client.post("/v1/models", json={"shadow": "primary"})
            assert (await client.post("/v1/models", json={"shadow": "candidate"})).status_code == 200
            answers = []
            for t in texts:
                answers.append((await post(client, t)).json())
                await wait_until(lambda: app.state.serve.router._queue.qsize() == 0)  # one at a time: none dropped
            router = app.state.serve.router
            await wait_until(lambda: router.shadow_stats.items == len(texts))
            out["answers"] = answers
            out["experiments"] = (await client.get("/v1/experiments")).json()
            # the candidate stalls: the bounded shadow queue fills and further copies are dropped, live answers flow
            release, entered = block_engine(registry_of(app).get("candidate"))
            live = [await post(client, f"under load {i}") for i in range(24)]
            out["live_ok"] = all(r.json()["model"] == "primary" for r in live)
            release.set()
            await wait_until(lambda: router.shadow_stats.dropped["queue"] > 0)
            out["dropped"] = dict(router.shadow_stats.dropped)
            out["metrics"] = metric_samples((await client.get("/metrics")).text)
        return out

    out = asyncio.run(go())
    assert out["self"].status_code == 422 and "is the active model" in out["self"].json()["error"]
    for t, a in zip(texts, out["answers"]):
        assert a["model"] == "primary" and a["items"][0]["score"] == pytest.approx(ref[t], abs=TOL)  # never the shadow's
    sh = out["experiments"]["shadow"]
    assert sh["model"] == "candidate" and sh["items"] == len(texts) and sh["compared_requests"] == len(texts)
    assert sh["score_mae"] == pytest.approx(DELTA, abs=TOL)
    assert sh["polarity_agreement"] == pytest.approx(agree / len(texts))
    assert "candidate" not in out["experiments"]["variants"]  # shadow answers are not candidate traffic
    assert out["live_ok"] and out["dropped"]["queue"] > 0
    m = out["metrics"]
    assert sample_value(m, "mmsenti_shadow_total", model="candidate", outcome="compared") >= len(texts)
    assert sample_value(m, "mmsenti_shadow_total", model="candidate", outcome="dropped_queue") == out["dropped"]["queue"]
    assert sample_value(m, "mmsenti_shadow_abs_diff_count", model="candidate") >= len(texts)


# ----------------------------------------------------------------------------- replay + traffic tools
def fake_sst2(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["it is a charming and often affecting journey", "the film is not funny at all", "a gorgeous , witty film",
            "it was n't worth the ticket", "an exhausting , tedious mess of a movie", "the cast is great fun to watch"]
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("sentence\tlabel\n" + "".join(f"{r}\t{i % 2}\n" for i, r in enumerate(rows)))
    return folder


def test_traffic_and_replay_commands_against_a_real_server(text_export, tmp_path, capsys):
    from mmsenti.cli import main

    traffic = tmp_path / "traffic.jsonl"
    assert main(["serve", "traffic", "--out", str(traffic), "--n", "80", "--seed", "3", "--sst2",
                 str(fake_sst2(tmp_path / "sst2")), "--unique", "6", "--rate", "400"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["requests"] == 80 and made["unique_texts"] < 40 and traffic.is_file()
    rows = tmp_path / "rows.jsonl"
    with server_process(str(text_export), "--name", "tiny") as (proc, base):
        cmd = [sys.executable, "-m", "mmsenti.cli", "serve", "replay", str(traffic), "--url", base, "--rate", "200",
               "--save", str(rows)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        bad = subprocess.run([*cmd[:6], "--url", f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["sent"] == summary["answered_200"] == 80 and summary["statuses"] == {"200": 80}
    assert summary["dropped"] == 0 and summary["offered_rps"] == 200
    exact = summary["cached"].get("exact", 0)
    assert exact >= 80 - made["unique_texts"] - 10  # repeats hit (a few repeats arrive while the first is computed)
    assert summary["hit_rate"]["exact"] == pytest.approx(exact / 80, abs=1e-4)
    assert summary["server_ms"]["cached_p50"] is not None and summary["latency_ms"]["p99"] > 0
    assert summary["models"] == {"tiny": {"requests": 80, "share": 1.0}}
    lines = [json.loads(x) for x in rows.read_text().splitlines()]
    assert len(lines) == 80 and all(x["status"] == 200 and "latency_ms" in x and "cached" in x for x in lines)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "no server answers" in bad.stderr


def test_serve_flags_refuse_bad_values_in_one_line(tmp_path, capsys):
    from mmsenti.cli import main

    for flags, words in ((["--near-threshold", "2"], "near_threshold"), (["--cache-ttl", "-1"], "ttl_s"),
                         (["--cache-size", "0"], "max_entries"), (["--blend-weight", "3"], "blend_weight")):
        assert main(["serve", str(tmp_path), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err, err
    assert main(["serve", "replay", str(tmp_path / "none.jsonl"), "--url", "http://127.0.0.1:9"]) == 2
    assert "no such traffic file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- Redis
@pytest.fixture()
def redis_url(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        import redis

        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_redis_layer_is_shared_between_servers_and_a_dead_redis_is_only_a_miss(text_export, reference, redis_url):
    url, proc = redis_url
    ref = scores_of(reference, ["shared between workers", "after redis died"])

    async def go():
        s = settings(text_export, cache=CacheSettings(redis_url=url))
        async with serving(s) as (_, a), serving(s) as (app_b, b):  # two "workers": separate LRUs, one Redis
            first = (await post(a, "shared between workers")).json()["items"][0]
            second = (await post(b, "shared between workers")).json()["items"][0]
            third = (await post(b, "shared between workers")).json()["items"][0]
            metrics_b = metric_samples((await b.get("/metrics")).text)
            proc.kill()
            proc.wait(timeout=10)
            dead = await b.post("/v1/predict", json=predict_body("after redis died"))
            metrics_dead = metric_samples((await b.get("/metrics")).text)
            return first, second, third, metrics_b, dead, metrics_dead

    first, second, third, metrics_b, dead, metrics_dead = asyncio.run(go())
    assert first["cached"] is None and second["cached"] == "exact" and third["cached"] == "exact"
    assert first["score"] == second["score"] == pytest.approx(ref["shared between workers"], abs=TOL)
    assert sample_value(metrics_b, "mmsenti_cache_hits_total", layer="redis") == 1  # then B's own LRU held it
    assert sample_value(metrics_b, "mmsenti_cache_hits_total", layer="exact") == 1
    assert dead.status_code == 200 and dead.json()["items"][0]["score"] == pytest.approx(ref["after redis died"], abs=TOL)
    assert sample_value(metrics_dead, "mmsenti_cache_errors_total", layer="redis") >= 1


# ----------------------------------------------------------------------------- the benchmark scenarios
@pytest.mark.slow
def test_serve_scenarios_quick_run_reports_every_target(text_export, shifted, tmp_path):
    """benchmarks/serve_scenarios.py --quick (k6 + real servers on 127.0.0.1) on the tiny exports: JSON with each target."""
    pytest.importorskip("psutil", reason="the bench extra is not installed: pip install -e '.[bench]'")
    out = tmp_path / "scenarios"
    for name, extra in (("cache", []), ("lexicon", []), ("ab", ["--candidate", str(shifted)])):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_scenarios.py"), name, "--export",
                               str(text_export), "--quick", "--out", str(out), *extra], capture_output=True, text=True,
                              timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads((out / f"{name}.json").read_text())
        assert report["targets"] and all("met" in t for t in report["targets"])
    cache = json.loads((out / "cache.json").read_text())
    assert cache["near_hits_on_negation_twins"] == 0 and cache["replay"]["statuses"] == {"200": 600}
    points = cache["max_rate"]["points"]  # figures, not timed assertions (the machine is shared)
    assert points["cache_on"] and points["cache_off"] and points["cache_on"][0]["exact_hit_rate"] is not None
    ab = json.loads((out / "ab.json").read_text())
    assert ab["split"]["stickiness"]["sticky_share"] == 1.0
    assert ab["shadow"]["comparisons"][0]["score_mae"] == pytest.approx(DELTA, abs=TOL)
    lexicon = json.loads((out / "lexicon.json").read_text())
    assert lexicon["finance_examples"]["override"]["model_errors"] >= lexicon["finance_examples"]["override"]["fixed"]
