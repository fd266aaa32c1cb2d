"""``mmsenti serve``: parity across entry points, the micro-batcher (order, grouping, isolation),
validation errors for each limit, backpressure (429), hot swap under load, failed swaps, the
model-repository watch, Prometheus metrics, graceful drain, and one real uvicorn process.

Most tests drive the ASGI app in-process (``httpx.AsyncClient`` over ``ASGITransport``, the app's
lifespan entered by hand); one starts ``mmsenti serve`` as a subprocess on a free 127.0.0.1 port
(always stopped). The models are the session's tiny exports (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from mmsenti.runtime.predictor import Predictor  # noqa: E402
from mmsenti.serve.app import create_app  # noqa: E402
from mmsenti.serve.batcher import MicroBatcher, QueueFull  # noqa: E402
from mmsenti.serve.config import CacheSettings, Limits, ServeSettings  # noqa: E402
from mmsenti.serve.models import LoadFailed, ModelRegistry, prepare_model, repo_versions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["great phone, battery lasts", "  Screen DIED   after a week!!", "so-so. don't buy", "a",
         "an endless, dull film " * 30]  # the last is truncated at the tokenizer's max_length
PARITY_TOL = 1e-5


# ----------------------------------------------------------------------------- helpers
def settings_for(export: Path | None, **kw) -> ServeSettings:
    # these tests are about the engine path (batcher, swaps, limits): no answer cache unless asked
    # (the cache, lexicon modes and A/B routing: tests/test_serve_intel.py)
    kw.setdefault("cache", CacheSettings(enabled=False))
    return ServeSettings(export=str(export) if export else None, name=kw.pop("name", "tiny" if export else None), **kw)


@contextlib.asynccontextmanager
async def serving(settings: ServeSettings):
    """The app with its lifespan running, and a client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test", timeout=60) as client:
            yield app, client


def registry_of(app) -> ModelRegistry:
    return app.state.serve.registry


def predict_body(*texts: str, **extra) -> dict:
    return {"items": [{"text": t} for t in texts], **extra}


def clone(src: Path, dst: Path) -> Path:
    """A copy of an export folder made of hard links (instant); never write into it, replace files."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def corrupt_engine(folder: Path) -> None:
    engine = folder / json.loads((folder / "manifest.json").read_text())["engine"]
    size = engine.stat().st_size
    engine.unlink()  # a hard link: replace the file, never write through to the original
    engine.write_bytes(b"\0" * size)


def metric_samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def sample_value(samples: dict, name: str, **labels) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def block_engine(model) -> tuple[threading.Event, threading.Event]:
    """Make ``model``'s engine calls wait until ``release`` is set; ``entered`` is set by the first call."""
    release, entered = threading.Event(), threading.Event()
    original = model.predictor.predict

    def predict(*args, **kwargs):
        entered.set()
        assert release.wait(15), "test never released the engine"
        return original(*args, **kwargs)

    model.predictor.predict = predict
    return release, entered


async def wait_until(condition, timeout: float = 10.0, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


@pytest.fixture(scope="module")
def text_export(tiny_exports) -> Path:
    return tiny_exports["text_only"]


@pytest.fixture(scope="module")
def fused_export(tiny_exports) -> Path:
    return tiny_exports["fused"]


@pytest.fixture(scope="module")
def reference(text_export) -> Predictor:
    return Predictor.load(text_export, threads=1)


# ----------------------------------------------------------------------------- parity
def test_same_score_through_eager_model_predictor_cli_and_http(tiny_model, text_export, fused_export, reference, capsys):
    from mmsenti.cli import main
    from mmsenti.export.wrapper import eager_predictor

    eager = eager_predictor(tiny_model, variant="text_only").predict(TEXTS)
    runtime = reference.predict(TEXTS)
    np.testing.assert_allclose(runtime["score"], eager["score"], atol=PARITY_TOL)
    assert runtime["polarity"] == eager["polarity"]

    cli = []
    for text in TEXTS:
        assert main(["predict", "--text", text, "--model", str(text_export), "--json"]) == 0
        cli.append(json.loads(capsys.readouterr().out))
    # the CLI prints scores rounded to 4 decimals
    np.testing.assert_allclose([r["score"] for r in cli], runtime["score"], atol=5e-5 + 1e-7)
    assert [r["polarity"] for r in cli] == runtime["polarity"]

    rng = np.random.default_rng(0)
    audio = [rng.standard_normal((5, 74)).astype(np.float32), None, rng.standard_normal((2, 74)).astype(np.float32)]
    vision = [None, rng.standard_normal((3, 47)).astype(np.float32), rng.standard_normal((7, 47)).astype(np.float32)]
    fused_ref = Predictor.load(fused_export, threads=1).predict(TEXTS[:3], audio=audio, vision=vision)

    async def go():
        async with serving(settings_for(text_export, max_wait_ms=5)) as (app, client):
            whole = (await client.post("/v1/predict", json=predict_body(*TEXTS))).json()
            # each text alone, all at once: they are batched with each other (padded to the longest)
            alone = await asyncio.gather(*(client.post("/v1/predict", json=predict_body(t)) for t in TEXTS))
            load = await client.post("/v1/models", json={"name": "fused", "path": str(fused_export)})
            assert load.status_code == 200, load.text
            items = [{"text": t, **({"audio": a.tolist()} if a is not None else {}),
                      **({"vision": v.tolist()} if v is not None else {}), "id": f"u{i}"}
                     for i, (t, a, v) in enumerate(zip(TEXTS[:3], audio, vision))]
            fused = (await client.post("/v1/predict", json={"items": items, "model": "fused"})).json()
            return whole, [r.json() for r in alone], fused

    whole, alone, fused = asyncio.run(go())
    engine = reference.manifest["engine"]
    assert whole["model"] == "tiny" and whole["version"] == reference.manifest["files"][engine]["sha256"][:12]
    np.testing.assert_allclose([r["score"] for r in whole["items"]], runtime["score"], atol=PARITY_TOL)
    np.testing.assert_allclose([r["items"][0]["score"] for r in alone], runtime["score"], atol=PARITY_TOL)
    assert [r["polarity"] for r in whole["items"]] == runtime["polarity"]
    assert [r["class_7"] for r in whole["items"]] == runtime["class_7"].tolist()
    assert all(r["cached"] is None and r["lexicon"] is None for r in whole["items"])
    np.testing.assert_allclose([r["score"] for r in fused["items"]], fused_ref["score"], atol=PARITY_TOL)
    assert [r["id"] for r in fused["items"]] == ["u0", "u1", "u2"]


# ----------------------------------------------------------------------------- the batcher
def test_batcher_order_length_grouping_and_isolation():
    calls: list[list[str]] = []
    gate = threading.Event()

    def run_batch(items):
        calls.append(list(items))
        if items[0] == "first":
            gate.wait(10)
        if "bad" in items:
            raise ValueError("bad item")
        return [f"<{x}>" for x in items]

    async def go():
        batcher = MicroBatcher(run_batch, max_batch=4, max_wait_s=0.001, queue_size=16)
        batcher.start()
        first = batcher.submit(["first"], [50])
        await wait_until(lambda: batcher.queued == 0)  # "first" is in the engine, which waits on the gate
        # queued while the engine is busy: lengths 1, 100, 2, 100, 3, 100, 4, 100 in two requests
        a = batcher.submit(["s1", "L1", "s2", "L2"], [1, 100, 2, 100])
        b = batcher.submit(["s3", "L3", "bad", "L4"], [3, 100, 4, 100])
        with pytest.raises(QueueFull):
            batcher.submit(list("abcdefghi"), None)  # 8 queued + 9 > 16
        gate.set()
        results = await asyncio.gather(first, a, b)
        await batcher.close()
        return results

    (first, a, b) = asyncio.run(go())
    assert first == ["<first>"]
    assert a == ["<s1>", "<L1>", "<s2>", "<L2>"]  # each request's own order
    assert b[:2] == ["<s3>", "<L3>"] and isinstance(b[2], ValueError) and b[3] == "<L4>"  # only the bad item failed
    # the short texts went together, the long ones together (oldest first, nearest lengths)
    assert calls[1] == ["s1", "s2", "s3", "bad"]
    assert calls[2:6] == [["s1"], ["s2"], ["s3"], ["bad"]]  # the failed batch, retried item by item
    assert calls[6] == ["L1", "L2", "L3", "L4"]


def test_one_failing_item_fails_only_its_request(text_export, reference):
    async def go():
        async with serving(settings_for(text_export, max_wait_ms=20)) as (app, client):
            model = registry_of(app).get()
            original = model.predictor.predict

            def predict(texts, **kw):
                if "boom" in texts:
                    raise RuntimeError("engine exploded")
                return original(texts, **kw)

            model.predictor.predict = predict
            good = [client.post("/v1/predict", json=predict_body(t)) for t in TEXTS]
            bad = client.post("/v1/predict", json=predict_body("fine", "boom"))
            *good, bad = await asyncio.gather(*good, bad)
            metrics = metric_samples((await client.get("/metrics")).text)
            return good, bad, metrics, model.batcher.batches

    good, bad, metrics, batches = asyncio.run(go())
    assert [r.status_code for r in good] == [200] * len(TEXTS)
    np.testing.assert_allclose([r.json()["items"][0]["score"] for r in good], reference.predict(TEXTS)["score"],
                               atol=PARITY_TOL)
    assert bad.status_code == 500 and bad.json() == {"error": "items[1]: the engine failed on this item "
                                                              "(RuntimeError: engine exploded)"}
    assert sample_value(metrics, "mmsenti_errors_total", model="tiny", reason="engine") == 1
    assert batches < len(TEXTS) + 1  # they really shared engine calls


# ----------------------------------------------------------------------------- validation
def test_every_limit_and_bad_input_is_a_4xx_naming_the_field(text_export, fused_export, reference):
    limits = Limits(max_items=4, max_text_chars=300, max_frames=8, max_body_bytes=4096)
    fused_item = {"text": "x", "audio": [[0.5] * 74] * 2}
    cases = [  # (body or (raw bytes, content type), model, status, error text)
        ((b'{"items": [', "application/json"), None, 400, "request body: not valid JSON"),
        ((b'{"items": []}', "text/plain"), None, 415, "content-type 'text/plain'"),
        ((b"[1]", "application/json"), None, 422, "body: Input should be an object"),
        ({}, None, 422, "items: Field required"),
        ({"items": []}, None, 422, "items: empty"),
        (predict_body(*"abcde"), None, 422, "items: 5 items, more than the limit of 4"),
        ({"items": [{"id": "1"}]}, None, 422, "items[0].text: Field required"),
        ({"items": [{"text": 5}]}, None, 422, "items[0].text: Input should be a valid string"),
        (predict_body("fine", " \n "), None, 422, "items[1].text: empty and no frames; nothing to score"),
        (predict_body("ok", "x" * 301), None, 422, "items[1].text: 301 characters, more than the limit of 300"),
        ({"items": [{"text": "a", "colour": "red"}]}, None, 422, "items[0].colour: Extra inputs are not permitted"),
        ({"items": [{"text": "a"}], "model": "nope"}, None, 404, "model 'nope' is not loaded; loaded: fused, tiny"),
        ({"items": [{"text": "a", "audio": [[0.0] * 74]}]}, None, 422, "items[0].audio: model 'tiny' (text_only engine"),
        (predict_body("y" * 5000), None, 413, "request body: "),
        ({"items": [{"text": "a", "audio": [[0.0] * 74] * 9}], "model": "fused"}, None, 422,
         "items[0].audio: 9 frames, more than the limit of 8"),
        ({"items": [fused_item, {"text": "a", "vision": [[0.0] * 47, [0.0] * 46]}], "model": "fused"}, None, 422,
         "items[1].vision[1]: 46 values; model 'fused' takes 47-wide vision frames"),
        ((b'{"model": "fused", "items": [{"text": "a", "vision": [[0, 1, NaN]]}]}', "application/json"), None, 422,
         "items[0].vision[0][2]: Input should be a finite number"),
        ((b'{"model": "fused", "items": [{"text": "a", "audio": [[1e999]]}]}', "application/json"), None, 422,
         "items[0].audio[0][0]: Input should be a finite number"),
        ({"items": [{"text": "a", "audio": [["1.0"]]}], "model": "fused"}, None, 422,
         "items[0].audio[0][0]: Input should be a valid number"),
    ]

    async def go():
        out = []
        async with serving(settings_for(text_export, limits=limits, queue_size=8)) as (app, client):
            assert (await client.post("/v1/models", json={"name": "fused", "path": str(fused_export)})).status_code == 200
            for body, _, status, message in cases:
                if isinstance(body, tuple):
                    r = await client.post("/v1/predict", content=body[0], headers={"content-type": body[1]})
                else:
                    r = await client.post("/v1/predict", json=body)
                out.append((r, status, message))
            # accepted: empty text with frames (scored as the model scores ""), curl -d's default content type, no
            # content type, "audio": [] (= no audio)
            ok = [await client.post("/v1/predict", json={"items": [{**fused_item, "text": ""}], "model": "fused"}),
                  await client.post("/v1/predict", content=json.dumps(predict_body("great")),
                                    headers={"content-type": "application/x-www-form-urlencoded"}),
                  await client.post("/v1/predict", content=json.dumps(predict_body("great"))),
                  await client.post("/v1/predict", json={"items": [{"text": "great", "audio": []}], "model": "fused"})]
            other = [await client.get("/no/such/route"), await client.get("/v1/predict")]
            metrics = metric_samples((await client.get("/metrics")).text)
        return out, ok, other, metrics

    out, ok, other, metrics = asyncio.run(go())
    for r, status, message in out:
        assert r.status_code == status, (message, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error"} and message in body["error"], (message, body)
    assert [r.status_code for r in ok] == [200] * 4
    expected = Predictor.load(fused_export, threads=1).predict([""], audio=[np.full((2, 74), 0.5, np.float32)])
    assert ok[0].json()["items"][0]["score"] == pytest.approx(float(expected["score"][0]), abs=PARITY_TOL)
    assert ok[1].json()["items"][0]["score"] == ok[2].json()["items"][0]["score"]
    assert other[0].status_code == 404 and "error" in other[0].json()
    assert other[1].status_code == 405 and "error" in other[1].json()
    assert sample_value(metrics, "mmsenti_errors_total", reason="validation") == 15
    assert sample_value(metrics, "mmsenti_errors_total", reason="bad_json") == 1
    assert sample_value(metrics, "mmsenti_errors_total", reason="unknown_model") == 1


def test_settings_and_cli_refuse_bad_values_in_one_line(tmp_path, capsys):
    from mmsenti.cli import main
    from mmsenti.errors import MmsentiError

    with pytest.raises(MmsentiError, match="--max-items 100 is larger than --queue-size 10"):
        ServeSettings.build(export="x", limits=Limits(max_items=100), queue_size=10)
    assert main(["serve"]) == 2
    assert "give an EXPORT_DIR to serve or --model-repo DIR" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no manifest.json" in err and "\n" not in err
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert "max_batch" in capsys.readouterr().err


# ----------------------------------------------------------------------------- backpressure
def test_full_queue_answers_429_at_once_and_recovers(text_export):
    async def go():
        async with serving(settings_for(text_export, max_batch=2, max_wait_ms=0, queue_size=4, max_queue_ms=0,
                                        limits=Limits(max_items=4))) as (app, client):
            model = registry_of(app).get()
            release, entered = block_engine(model)
            first = asyncio.ensure_future(client.post("/v1/predict", json=predict_body("in the engine")))
            await wait_until(entered.is_set)
            queued = [asyncio.ensure_future(client.post("/v1/predict", json=predict_body(f"queued {i}"))) for i in range(4)]
            await wait_until(lambda: model.batcher.queued == 4)
            t = time.perf_counter()
            refused = await client.post("/v1/predict", json=predict_body("one too many"))
            refused_s = time.perf_counter() - t
            release.set()
            done = await asyncio.gather(first, *queued)
            after = await client.post("/v1/predict", json=predict_body("later"))
            metrics = metric_samples((await client.get("/metrics")).text)
            return refused, refused_s, done, after, metrics

    refused, refused_s, done, after, metrics = asyncio.run(go())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "queue is full (4 of 4 items waiting)" in refused.json()["error"]
    assert refused_s < 5  # answered while the engine was still blocked, not after it
    assert [r.status_code for r in done] == [200] * 5 and after.status_code == 200
    assert sample_value(metrics, "mmsenti_errors_total", model="tiny", reason="queue_full") == 1
    assert sample_value(metrics, "mmsenti_queue_items", model="tiny") == 0


def test_queue_wait_budget_refuses_by_estimated_time_not_only_by_count():
    """--max-queue-ms: the queue holds at most that much of the engine's recent work per item."""
    gate = threading.Event()

    def run_batch(items):
        gate.wait(10)
        return list(items)

    async def go():
        batcher = MicroBatcher(run_batch, max_batch=1, max_wait_s=0, queue_size=100, max_queue_s=0.05)
        batcher.start()
        assert batcher.submit(["no estimate yet"]) is not None  # before any batch ran: only the count bound
        await wait_until(lambda: batcher.queued == 0)  # in the (blocked) engine
        batcher.item_seconds = 0.01  # as if measured: 10 ms per item -> 5 items fill 50 ms
        accepted = [batcher.submit([f"q{i}"]) for i in range(5)]
        with pytest.raises(QueueFull, match=r"the queue holds 60 ms of work \(5 items\), more than the limit of 50 ms"):
            batcher.submit(["one too many"])
        gate.set()
        await asyncio.gather(*accepted)
        await batcher.close()
        return batcher.item_seconds

    assert asyncio.run(go()) is not None  # the worker keeps the moving average up to date


# ----------------------------------------------------------------------------- hot swap
def test_swap_under_concurrent_requests_fails_none(text_export, fused_export, tmp_path):
    same_files = clone(fused_export, tmp_path / "fused_again")

    async def go():
        async with serving(settings_for(text_export, max_wait_ms=1)) as (app, client):
            stop = asyncio.Event()
            seen: list[tuple[int, str | None, float, str | None]] = []  # status, version, answered at, model

            async def client_loop(i):
                while not stop.is_set():
                    r = await client.post("/v1/predict", json=predict_body(TEXTS[i % len(TEXTS)]))
                    seen.append((r.status_code, r.json().get("version"), time.perf_counter(), r.json().get("model")))

            loops = [asyncio.ensure_future(client_loop(i)) for i in range(6)]
            await wait_until(lambda: len(seen) > 20)
            old = registry_of(app).get().version
            swap = await client.post("/v1/models", json={"name": "tiny", "path": str(fused_export)})
            swapped_at = time.perf_counter()
            await wait_until(lambda: sum(1 for _, _, t, _ in seen if t > swapped_at) > 20)
            again = await client.post("/v1/models", json={"name": "tiny", "path": str(same_files)})  # same engine file
            activated_at = time.perf_counter()
            cand = await client.post("/v1/models", json={"name": "candidate", "path": str(text_export), "activate": True})
            await wait_until(lambda: sum(1 for *_, m in seen if m == "candidate") > 10)
            stop.set()
            await asyncio.gather(*loops)
            listed = (await client.get("/v1/models")).json()
            return old, swap, swapped_at, again, activated_at, cand, seen, listed

    old, swap, swapped_at, again, activated_at, cand, seen, listed = asyncio.run(go())
    assert swap.status_code == 200, swap.text
    new = swap.json()["load"]["version"]
    assert new != old and swap.json()["load"]["variant"] == "fused"
    assert [s for s, *_ in seen if s != 200] == []  # zero failed requests
    assert len(seen) > 50
    # after the swap every answer comes from the new version (0.5 s: requests queued before it finish on the old one)
    assert {v for _, v, t, _ in seen if swapped_at + 0.5 < t < activated_at} == {new}
    assert again.status_code == 200, again.text  # same files: its smoke scores equal the serving ones
    assert again.json()["load"]["version"] == new
    assert cand.status_code == 200 and listed["active"] == "candidate"
    assert sorted(m["name"] for m in listed["models"]) == ["candidate", "tiny"]


def test_in_flight_requests_finish_on_the_old_model(text_export, fused_export):
    async def go():
        async with serving(settings_for(text_export, max_wait_ms=0)) as (app, client):
            old = registry_of(app).get()
            release, entered = block_engine(old)
            in_flight = [asyncio.ensure_future(client.post("/v1/predict", json=predict_body(TEXTS[0])))]
            await wait_until(entered.is_set)  # one request in the engine, two more queued behind it
            in_flight += [asyncio.ensure_future(client.post("/v1/predict", json=predict_body(t))) for t in TEXTS[1:3]]
            await wait_until(lambda: old.batcher.queued == 2)
            swap = await client.post("/v1/models", json={"name": "tiny", "path": str(fused_export)})
            after = await client.post("/v1/predict", json=predict_body("after the swap"))
            release.set()
            return old.version, swap, await asyncio.gather(*in_flight), after

    old_version, swap, in_flight, after = asyncio.run(go())
    assert swap.status_code == 200
    assert [r.status_code for r in in_flight] == [200] * 3
    assert {r.json()["version"] for r in in_flight} == {old_version}
    assert after.json()["version"] == swap.json()["load"]["version"] != old_version


def test_failed_swap_keeps_the_old_model_and_says_why(text_export, tmp_path):
    broken = clone(text_export, tmp_path / "broken")
    corrupt_engine(broken)
    partial = clone(text_export, tmp_path / "partial")
    (partial / "tokenizer" / "tokenizer.json").unlink()

    async def go():
        async with serving(settings_for(text_export)) as (app, client):
            version = registry_of(app).get().version
            answers = [await client.post("/v1/models", json={"name": "tiny", "path": str(p)})
                       for p in (tmp_path / "missing", broken, partial)]
            answers.append(await client.post("/v1/models", json={"name": "tiny"}))
            answers.append(await client.post("/v1/models", json={"name": "tiny", "action": "unload"}))
            still = await client.post("/v1/predict", json=predict_body("still serving?"))
            ready = await client.get("/readyz")
            metrics = metric_samples((await client.get("/metrics")).text)
            return version, answers, still, ready, metrics

    version, answers, still, ready, metrics = asyncio.run(go())
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 409]
    errors = [a.json()["error"] for a in answers]
    assert "nothing changed" in errors[0] and "no manifest.json" in errors[0]
    assert "does not match the sha256 in its manifest" in errors[1]
    assert "tokenizer.json is listed in the manifest but missing" in errors[2]
    assert "path: required" in errors[3]
    assert "the only model loaded" in errors[4]
    assert still.status_code == 200 and still.json()["version"] == version
    assert ready.status_code == 200 and ready.json()["version"] == version
    assert sample_value(metrics, "mmsenti_model_loads_total", model="tiny", outcome="failed") == 3
    assert sample_value(metrics, "mmsenti_model_info", model="tiny", version=version) == 1


def test_verification_refuses_same_files_with_other_scores(text_export):
    settings = settings_for(text_export)
    current = prepare_model("tiny", text_export, settings)
    current.smoke_scores = current.smoke_scores + 0.01  # as if the serving copy scored differently
    with pytest.raises(LoadFailed, match="same engine file as the serving version .* scores differ by 0.01"):
        prepare_model("tiny", text_export, settings, current=current)


# ----------------------------------------------------------------------------- model repository
def test_repository_watch_serves_the_highest_new_version(text_export, fused_export, tmp_path):
    repo = tmp_path / "models"
    (repo / "sent").mkdir(parents=True)
    (repo / "sent" / "notes").mkdir()  # no manifest: not a version

    def publish(src: Path, version: str, broken: bool = False) -> None:  # as an export does: build aside, rename
        staging = clone(src, repo / "sent" / f".{version}.staging")
        if broken:
            corrupt_engine(staging)
        os.replace(staging, repo / "sent" / version)

    def failed_loads(registry) -> float:
        return sample_value(metric_samples(registry.metrics.render().decode()), "mmsenti_model_loads_total",
                            model="sent", outcome="failed")

    publish(text_export, "9")

    async def go():
        async with serving(settings_for(None, model_repo=str(repo), poll_s=0.05)) as (app, client):
            registry = registry_of(app)
            first = (await client.get("/readyz")).json()
            publish(fused_export, "10")  # numeric order: 10 after 9
            await wait_until(lambda: registry.get("sent").version == "10")
            variant = (await client.post("/v1/predict", json=predict_body("hello"))).json()
            publish(text_export, "11", broken=True)
            await wait_until(lambda: failed_loads(registry) == 1)
            await asyncio.sleep(0.3)  # several polls: a failed version is not retried until it changes
            metrics = metric_samples((await client.get("/metrics")).text)
            return first, variant, registry.get("sent"), metrics

    first, variant, model, metrics = asyncio.run(go())
    assert first == {"ready": True, "model": "sent", "version": "9"}
    assert variant["model"] == "sent" and variant["version"] == "10"
    assert model.version == "10" and model.predictor.manifest["variant"] == "fused"
    assert sample_value(metrics, "mmsenti_model_loads_total", model="sent", outcome="failed") == 1
    assert sample_value(metrics, "mmsenti_model_loads_total", model="sent", outcome="ok") == 2
    (repo / "other").mkdir()
    (repo / "other" / "b").mkdir()
    (repo / "other" / "b" / "manifest.json").write_text("{}")
    (repo / "other" / "a10").mkdir()
    (repo / "other" / "a10" / "manifest.json").write_text("{}")
    assert repo_versions(repo)["other"][0] == "b"  # not all numeric: lexicographic


def test_readyz_waits_for_a_model_and_healthz_does_not(tmp_path):
    async def go():
        async with serving(settings_for(None, model_repo=str(tmp_path), poll_s=0.05)) as (app, client):
            return await client.get("/healthz"), await client.get("/readyz"), await client.post(
                "/v1/predict", json=predict_body("anyone?"))

    health, ready, predict = asyncio.run(go())
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 503 and ready.json()["ready"] is False and "no model loaded" in ready.json()["error"]
    assert predict.status_code == 404 and "no model is active" in predict.json()["error"]


# ----------------------------------------------------------------------------- metrics, docs, shutdown
def test_prometheus_metrics_parse_and_count_what_happened(text_export):
    async def go():
        async with serving(settings_for(text_export, max_wait_ms=5)) as (app, client):
            rs = await asyncio.gather(*(client.post("/v1/predict", json=predict_body(*TEXTS[: 1 + i % 3])) for i in range(9)))
            assert all(r.status_code == 200 for r in rs)
            await client.post("/v1/predict", json={"items": []})
            r = await client.get("/metrics")
            return r, registry_of(app).get().version

    r, version = asyncio.run(go())
    assert r.headers["content-type"].startswith("text/plain")
    samples = metric_samples(r.text)
    items = 3 * (1 + 2 + 3)
    assert sample_value(samples, "mmsenti_request_seconds_count", model="tiny") == 9
    assert sample_value(samples, "mmsenti_queue_wait_seconds_count", model="tiny") == items
    assert sample_value(samples, "mmsenti_batch_size_sum", model="tiny") == items
    assert sample_value(samples, "mmsenti_batch_size_count", model="tiny") < 9  # requests shared engine calls
    assert sample_value(samples, "mmsenti_engine_seconds_count", model="tiny") >= 1
    assert sample_value(samples, "mmsenti_items_total", model="tiny") == items
    assert sample_value(samples, "mmsenti_errors_total", model="tiny", reason="validation") == 1
    assert sample_value(samples, "mmsenti_model_info", model="tiny", version=version) == 1
    buckets = [s for s in samples["mmsenti_request_seconds_bucket"] if s.labels["model"] == "tiny"]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 9


def test_no_batching_runs_one_item_per_engine_call(text_export):
    async def go():
        async with serving(settings_for(text_export, max_batch=1, max_wait_ms=0)) as (app, client):
            rs = await asyncio.gather(*(client.post("/v1/predict", json=predict_body(t)) for t in TEXTS))
            assert all(r.status_code == 200 for r in rs)
            return metric_samples((await client.get("/metrics")).text)

    samples = asyncio.run(go())
    assert sample_value(samples, "mmsenti_batch_size_count", model="tiny") == len(TEXTS)
    assert sample_value(samples, "mmsenti_batch_size_sum", model="tiny") == len(TEXTS)


def test_openapi_documents_the_request_schemas(text_export):
    async def go():
        async with serving(settings_for(text_export)) as (app, client):
            return (await client.get("/openapi.json")).json(), await client.get("/docs")

    schema, docs = asyncio.run(go())
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    components = schema["components"]["schemas"]
    assert {"PredictRequest", "PredictItem", "PredictResponse", "ModelRequest"} <= set(components)
    assert set(components["PredictItem"]["properties"]) == {"text", "audio", "vision", "id"}
    assert {"/healthz", "/readyz", "/metrics", "/v1/models"} <= set(schema["paths"])
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_shutdown_drains_queued_requests(text_export):
    async def go():
        results = []
        async with serving(settings_for(text_export, max_wait_ms=0)) as (app, client):
            model = registry_of(app).get()
            release, entered = block_engine(model)
            tasks = [asyncio.ensure_future(client.post("/v1/predict", json=predict_body(TEXTS[0])))]
            await wait_until(entered.is_set)
            tasks += [asyncio.ensure_future(client.post("/v1/predict", json=predict_body(t))) for t in TEXTS[1:]]
            await wait_until(lambda: model.batcher.queued == len(TEXTS) - 1)
            asyncio.get_running_loop().call_later(0.2, release.set)
            # leaving the block runs the lifespan shutdown: it must finish the queued items first
        closed = model.batcher.closing
        results = await asyncio.gather(*tasks)
        return results, closed

    results, closed = asyncio.run(go())
    assert closed and [r.status_code for r in results] == [200] * len(TEXTS)


# ----------------------------------------------------------------------------- a real server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, content_type: str | None = "application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if content_type and data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@contextlib.contextmanager
def server_process(*args: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mmsenti.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
            try:
                if http("GET", base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server never became ready")
            time.sleep(0.05)
        yield proc, base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()


def test_real_server_process_serves_reloads_on_sighup_and_drains_on_sigterm(text_export, reference):
    with server_process(str(text_export), "--name", "tiny") as (proc, base):
        # curl -d's default content type, as in the README's examples
        status, body = http("POST", base + "/v1/predict", predict_body(*TEXTS), "application/x-www-form-urlencoded")
        assert status == 200, body
        np.testing.assert_allclose([r["score"] for r in json.loads(body)["items"]], reference.predict(TEXTS)["score"],
                                   atol=PARITY_TOL)
        proc.send_signal(signal.SIGHUP)  # reload from the folder: a verified swap, same files
        deadline = time.monotonic() + 60
        while True:
            status, text = http("GET", base + "/metrics")
            if sample_value(metric_samples(text), "mmsenti_model_loads_total", model="tiny", outcome="ok") == 2:
                break
            assert http("POST", base + "/v1/predict", predict_body("during the reload"))[0] == 200
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.05)
        assert http("GET", base + "/readyz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        out = proc.stdout.read()
    assert "mmsenti serve: tiny version" in out and "Traceback" not in out


@pytest.mark.slow
def test_real_server_with_two_workers_sums_metrics_over_processes(text_export):
    with server_process(str(text_export), "--name", "tiny", "--workers", "2") as (proc, base):
        for _ in range(20):
            assert http("POST", base + "/v1/predict", predict_body("two workers"))[0] == 200
        samples = metric_samples(http("GET", base + "/metrics")[1])
        assert sample_value(samples, "mmsenti_request_seconds_count", model="tiny") == 20
        status, body = http("POST", base + "/v1/models", {"name": "x", "path": str(text_export)})
        assert status == 409 and "worker processes" in json.loads(body)["error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
