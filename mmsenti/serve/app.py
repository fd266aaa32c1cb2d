"""The HTTP API (FastAPI on uvicorn): ``create_app(settings)``, and ``app_from_env`` for ``--workers N``.

Routes (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

* ``POST /v1/predict`` — ``{"items": [{"text", "audio"?, "vision"?, "id"?}, ...], "model"?, "mode"?,
  "key"?, "user_id"?}`` → ``{"model", "version", "items": [{"id", "score", "polarity", "class_7",
  "cached", "lexicon"}]}`` in request order; ``cached`` is the cache layer that answered
  (``"exact"`` | ``"near"`` | null), ``lexicon`` what the lexicon did (null in mode ``model``;
  :mod:`mmsenti.serve.answers`); ``mode`` the hybrid mode (default ``--mode``); ``key`` /
  ``user_id`` (or an ``X-User-Id`` / ``X-Session-Id`` header) keep a caller on one A/B variant.
  The ``Server-Timing: app;dur=<ms>`` header is the server's time for the request;
* ``GET /healthz`` — the process is up (liveness); ``GET /readyz`` — a model is loaded, verified
  and warmed, and the server is not shutting down (readiness; 503 otherwise);
* ``GET /metrics`` — Prometheus text format (:mod:`mmsenti.serve.metrics`);
* ``GET /v1/models``; ``POST /v1/models`` — ``{"name", "path", "activate"?}`` loads (hot swap when
  ``name`` is loaded already), ``{"name", "action": "activate" | "unload"}``; the experiment verbs
  ``{"traffic": {name: share, ...}}``, ``{"shadow": name | null}``, ``{"action": "promote", "name"?}``,
  ``{"action": "rollback"}`` (:mod:`mmsenti.serve.experiments`);
* ``GET /v1/experiments`` — per-variant counts, mean score, polarity mix, latency, the
  two-proportion z-test against the primary, the shadow's comparison.

Requests are validated with pydantic and the limits of :class:`~mmsenti.serve.config.Limits`,
then against the model they go to (frame width = its feature dimension; frames only for the
modalities its engine takes). Every refusal is a 4xx ``{"error": "<field>: <what is wrong>"}``:
400 bad JSON, 404 unknown model, 413 body too large, 415 content type (``application/json``; a
missing type and curl's default ``-d`` form type are read as JSON too), 422 invalid field, 429 queue
full (with ``Retry-After``), 503 shutting down. An item that makes the engine fail fails only its
own request (500 naming the item); its batch-mates are answered.

Conventions, decided here: an item whose text is empty under the model's normalisation and that
carries no frames is refused (422 naming it: there is nothing to score), as ``mmsenti predict``
refuses an empty ``--text`` without a clip; with frames, empty text is scored as the model scores
``""`` (the tokenizer's ``[CLS] [SEP]``). ``"audio": []`` is the same as no audio (an all-false
mask). NaN/inf frame values are refused (standard JSON cannot carry them; a ``NaN`` literal or an
overflowing ``1e999`` gets 422 naming the value).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from time import perf_counter
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.background import BackgroundTask
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmsenti.errors import MmsentiError
from mmsenti.lexicon.hybrid import MODES
from mmsenti.serve.answers import Answerer, load_scorer
from mmsenti.serve.batcher import Draining, QueueFull
from mmsenti.serve.config import Limits, ServeSettings, error_path, validation_message
from mmsenti.serve.experiments import ExperimentError, Router
from mmsenti.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mmsenti.serve.metrics import ServeMetrics
from mmsenti.serve.models import LoadFailed, ModelRegistry, ScoreItem, ServedModel, UnknownModel

log = logging.getLogger("mmsenti.serve")

JSON_TYPES = ("application/json", "application/x-www-form-urlencoded")  # the second: curl -d's default
MAX_ID_CHARS = 256
GC_THRESHOLD_0 = 20_000  # allocations between young-generation collections while serving (CPython's default: 700-2,000)
KEY_HEADERS = ("x-user-id", "x-session-id")  # sticky A/B assignment, after the body's key / user_id
Mode = Literal[MODES]  # the one list: mmsenti.lexicon.hybrid.MODES
Frames = list[list[FiniteFloat]]


# ----------------------------------------------------------------------------- request / response schemas
class PredictItem(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: StrictStr = Field(description="the utterance; normalised by the model's own rule before tokenising")
    audio: Frames | None = Field(None, description="pre-extracted audio features [T, D_audio] (fused engines)")
    vision: Frames | None = Field(None, description="pre-extracted vision features [T, D_vision] (fused engines)")
    id: StrictStr | None = Field(None, description="echoed back in the result", max_length=MAX_ID_CHARS)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[PredictItem] = Field(description="one result per item, in this order")
    model: StrictStr | None = Field(None, description="a loaded model's name (bypasses an A/B split); default: the "
                                                      "active model, or the split's variant for this caller")
    mode: Mode | None = Field(None, description="lexicon + model hybrid mode; default: the server's --mode")
    key: StrictStr | None = Field(None, description="caller key for sticky A/B assignment", max_length=MAX_ID_CHARS)
    user_id: StrictStr | None = Field(None, description="same as key (used when key is absent)", max_length=MAX_ID_CHARS)


class PredictResult(BaseModel):
    id: str | None
    score: float = Field(description="sentiment in [-3, 3] (regression) or the logit of p(positive) (classification)")
    polarity: Literal["positive", "negative", "neutral"]
    class_7: int = Field(description="round(clip(score, -3, 3)), -3..3")
    cached: Literal["exact", "near"] | None = Field(None, description="the cache layer that answered; null: computed")
    lexicon: dict | None = Field(None, description="mode, answering path (model | lexicon | blend), lexicon score, "
                                                   "matched / strong / negated terms, lexicons; null in mode model")


class PredictResponse(BaseModel):
    model: str
    version: str
    items: list[PredictResult]


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: StrictStr | None = Field(None, description="the model (load, activate, unload; promote: default the candidate)")
    path: StrictStr | None = Field(None, description="an export folder (action=load)")
    activate: bool = Field(False, description="make it the default model once loaded")
    action: Literal["load", "activate", "unload", "promote", "rollback"] | None = Field(
        None, description="default: load (or the experiment change when traffic / shadow is given)")
    traffic: dict[StrictStr, FiniteFloat] | None = Field(None, description="A/B split: loaded model names -> shares "
                                                                           "summing to 1, the active model among them")
    shadow: StrictStr | None = Field(None, description="a loaded model that gets a copy of live traffic (null: off)")


class ErrorBody(BaseModel):
    error: str


# ----------------------------------------------------------------------------- errors
class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str, model: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.model, self.headers = status, message, reason, model, headers


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None,
                  background: BackgroundTask | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, headers=headers, media_type="application/json",
                    background=background)


def _parse(body: bytes, schema: type[BaseModel]):
    try:
        return schema.model_validate_json(body)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, f"request body: not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})",
                           "bad_json") from None
        raise ApiError(422, validation_message(err), "validation") from None


async def _read_body(request: Request, limits: Limits) -> bytes:
    ctype = request.headers.get("content-type")
    if ctype is not None:
        base = ctype.split(";", 1)[0].strip().lower()
        if base not in JSON_TYPES and not base.endswith("+json"):
            raise ApiError(415, f"content-type {base!r}: send the body as application/json", "content_type")
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
        raise ApiError(413, f"request body: {int(size)} bytes, more than the limit of {limits.max_body_bytes} "
                            "(--max-body-mb)", "too_large")
    if size is not None:
        return await request.body()
    chunks, total = [], 0
    async for chunk in request.stream():  # chunked upload: stop reading at the limit
        total += len(chunk)
        if total > limits.max_body_bytes:
            raise ApiError(413, f"request body: more than the limit of {limits.max_body_bytes} bytes (--max-body-mb)",
                           "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def check_items(req: PredictRequest, model: ServedModel, limits: Limits) -> list[ScoreItem]:
    """The request's items against the limits and the model they go to (raises :class:`ApiError` 422)."""
    def refuse(message: str) -> ApiError:
        return ApiError(422, message, "validation", model.name)

    n = len(req.items)
    if n == 0:
        raise refuse("items: empty; send at least one item")
    if n > limits.max_items:
        raise refuse(f"items: {n} items, more than the limit of {limits.max_items} per request (--max-items)")
    out = []
    for i, item in enumerate(req.items):
        if len(item.text) > limits.max_text_chars:
            raise refuse(f"items[{i}].text: {len(item.text)} characters, more than the limit of "
                         f"{limits.max_text_chars} (--max-text-chars)")
        frames = {}
        for m in ("audio", "vision"):
            rows = getattr(item, m)
            if not rows:
                continue
            if m not in model.frame_modalities:
                manifest = model.predictor.manifest
                raise refuse(f"items[{i}].{m}: model {model.name!r} ({manifest['variant']} engine, modalities "
                             f"{', '.join(manifest['modalities'])}) takes no {m} frames; send text only or use a fused model")
            if len(rows) > limits.max_frames:
                raise refuse(f"items[{i}].{m}: {len(rows)} frames, more than the limit of {limits.max_frames} (--max-frames)")
            dim = model.feature_dims[m]
            for j, row in enumerate(rows):
                if len(row) != dim:
                    raise refuse(f"items[{i}].{m}[{j}]: {len(row)} values; model {model.name!r} takes {dim}-wide {m} frames")
            frames[m] = rows
        if not frames and not model.predictor.normalize(item.text):
            raise refuse(f"items[{i}].text: empty{' after normalisation' if item.text.strip() else ''} and no frames; "
                         "nothing to score")
        out.append(ScoreItem(item.text, **frames))
    return out


# ----------------------------------------------------------------------------- the app
class ServeApp(FastAPI):
    """FastAPI with one fast route: ``POST /v1/predict`` is answered by a plain ASGI handler placed
    in front of FastAPI's middleware stack and dependency machinery (the same handler and error
    bodies; the FastAPI route stays for the OpenAPI docs and answers the other methods). Profiled
    under k6 load (experiments/serving), that stack was ~25% of the event loop's time per request;
    every other route goes through FastAPI as usual."""

    fast_predict = None  # async (scope, receive, send) -> None, set by create_app

    def build_middleware_stack(self):
        inner = super().build_middleware_stack()
        handler = self.fast_predict
        if handler is None:
            return inner

        async def app(scope, receive, send):
            if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/predict":
                await handler(scope, receive, send)
            else:
                await inner(scope, receive, send)

        return app


class ServeState:
    def __init__(self, settings: ServeSettings, registry: ModelRegistry, metrics: ServeMetrics, answerer: Answerer):
        self.settings, self.registry, self.metrics, self.answerer = settings, registry, metrics, answerer
        self.router = Router(registry, answerer, metrics, max_batch=settings.max_batch, shadow_queue=settings.shadow_queue)
        self.draining = False


def request_key(req: PredictRequest, request: Request) -> str | None:
    """The caller's key for sticky A/B assignment: ``key``, ``user_id``, then the X-User-Id / X-Session-Id header."""
    if req.key:
        return req.key
    if req.user_id:
        return req.user_id
    for header in KEY_HEADERS:
        value = request.headers.get(header)
        if value:
            return value
    return None


def initial_model_name(settings: ServeSettings) -> str:
    """``--name``, else the export's manifest name."""
    from mmsenti.runtime.manifest import read_manifest

    if settings.name:
        return settings.name
    return str(read_manifest(settings.export)["name"])


def create_app(settings: ServeSettings, registry: ModelRegistry | None = None) -> FastAPI:
    """The ASGI app. ``registry``: models loaded already (:meth:`ModelRegistry.preload`); else the
    app loads ``settings.export`` (and scans ``settings.model_repo``) at startup."""
    metrics = registry.metrics if registry is not None else ServeMetrics()
    registry = registry or ModelRegistry(settings, metrics)
    answerer = Answerer(settings, load_scorer(settings))
    state = ServeState(settings, registry, metrics, answerer)
    router = state.router
    registry.on_retire = answerer.retired
    if answerer.cache is not None:
        metrics.cache_source = answerer.cache.stats
    limits = settings.limits

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.export and not registry.models:
            await registry.load(initial_model_name(settings), settings.export)
        await registry.start()
        router.start()
        router.export_weights()
        if settings.gc_freeze:
            # the loaded models, tokenizers and app are permanent: moved out of the collector's view, and
            # young collections made rarer, so a full collection never stalls the event loop mid-burst
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD_0, *gc.get_threshold()[1:])
        watcher = None
        if settings.model_repo:
            await registry.scan_repo()
            watcher = asyncio.get_running_loop().create_task(registry.watch(), name="model-repo-watch")
        loop = asyncio.get_running_loop()
        hup = settings.handle_sighup and hasattr(signal, "SIGHUP")
        if hup:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(registry.reload(), name="sighup-reload"))
        try:
            yield
        finally:
            state.draining = True
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await router.close()
            await registry.close()

    app = ServeApp(title="mmsenti", summary="Multimodal sentiment scoring (mmsenti serve)", version=_version(),
                   lifespan=lifespan)
    app.state.serve = state

    # ------------------------------------------------------------------ errors as {"error": ...}
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        metrics.error(err.model, err.reason)
        if request.url.path == "/v1/predict":
            router.error(err.model)
        return json_response({"error": err.message}, err.status, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        metrics.error(None, "validation")
        loc = tuple(p for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return json_response({"error": f"{error_path(loc)}: {first.get('msg')}"}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return json_response({"error": f"{request.method} {request.url.path}: {err.detail}"}, err.status_code,
                             getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception):
        metrics.error(None, "internal")
        log.error("%s %s: %s: %s", request.method, request.url.path, type(err).__name__, err)
        return json_response({"error": f"internal error ({type(err).__name__}: {err})"}, 500)

    # ------------------------------------------------------------------ scoring
    @app.post("/v1/predict", summary="Score items", response_model=None,
              responses={200: {"model": PredictResponse}, 400: {"model": ErrorBody}, 404: {"model": ErrorBody},
                         413: {"model": ErrorBody}, 415: {"model": ErrorBody}, 422: {"model": ErrorBody},
                         429: {"model": ErrorBody}, 503: {"model": ErrorBody}},
              openapi_extra=_body_schema("PredictRequest"))
    async def predict(request: Request) -> Response:
        return await predict_response(request)

    async def fast_predict(scope, receive, send) -> None:
        request = Request(scope, receive)
        try:
            response = await predict_response(request)
        except ApiError as err:
            response = await _api_error(request, err)
        except Exception as err:  # noqa: BLE001  (the same 500 body the FastAPI handler gives)
            response = await _internal_error(request, err)
        await response(scope, receive, send)

    app.fast_predict = fast_predict

    async def predict_response(request: Request) -> Response:
        start = perf_counter()
        body = await _read_body(request, limits)
        req = _parse(body, PredictRequest)
        try:
            model = router.route(req.model, request_key(req, request))
        except UnknownModel as err:
            raise ApiError(404, f"model: {err}", "unknown_model", req.model) from None
        mode = req.mode or settings.mode
        why = answerer.check_mode(mode)
        if why:
            raise ApiError(422, f"mode: {why}", "validation", model.name)
        items = check_items(req, model, limits)
        # route, cache lookup and submit happen in one step of the event loop: a swap cannot fall between them
        try:
            results = await answerer.answer(model, items, mode)
        except QueueFull as err:
            raise ApiError(429, f"model {model.name!r}: {err}", "queue_full", model.name,
                           {"Retry-After": str(err.retry_after)}) from None
        except Draining as err:
            raise ApiError(503, str(err), "draining", model.name, {"Retry-After": "1"}) from None
        out = []
        for i, (item, res) in enumerate(zip(req.items, results)):
            if isinstance(res, Exception):
                reason = "draining" if isinstance(res, Draining) else "engine"
                log.error("model %s: item %d failed: %s: %s", model.name, i, type(res).__name__, res)
                raise ApiError(503 if reason == "draining" else 500,
                               f"items[{i}]: the engine failed on this item ({type(res).__name__}: {res})",
                               reason, model.name)
            out.append({"id": item.id, **res})
        seconds = perf_counter() - start
        model.metrics.request_seconds.observe(seconds)
        router.record(model, results, seconds)
        if metrics.multiprocess:
            metrics.sync_cache()  # each worker's cache counters reach the shared files (a scrape reads them all)
        job = router.shadow_copy(model, items, mode, results)
        return json_response({"model": model.name, "version": model.version, "items": out},
                             headers={"Server-Timing": f"app;dur={(perf_counter() - start) * 1000:.3f}"},
                             background=BackgroundTask(router.enqueue, job) if job is not None else None)

    # ------------------------------------------------------------------ probes and metrics
    @app.get("/healthz", summary="Liveness: the process is up")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", summary="Readiness: a model is loaded and warmed")
    async def readyz() -> Response:
        if state.draining:
            return json_response({"ready": False, "error": "shutting down"}, 503)
        if not registry.ready:
            why = "; ".join(f"{k}: {v}" for k, v in registry.last_error.items()) or "no model loaded yet"
            return json_response({"ready": False, "error": f"not ready: {why}"}, 503)
        model = registry.get()
        return json_response({"ready": True, "model": model.name, "version": model.version})

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    # ------------------------------------------------------------------ models
    @app.get("/v1/models", summary="Loaded models, the active one, the A/B split and the shadow")
    async def list_models() -> Response:
        return json_response(describe_models())

    @app.post("/v1/models", summary="Load (hot swap), activate or unload a model; set an A/B split or shadow; "
                                    "promote or roll back", response_model=None,
              responses={200: {"description": "the registry after the change"}, 404: {"model": ErrorBody},
                         409: {"model": ErrorBody}, 422: {"model": ErrorBody}},
              openapi_extra=_body_schema("ModelRequest"))
    async def change_models(request: Request) -> Response:
        req = _parse(await _read_body(request, limits), ModelRequest)
        if settings.workers > 1:
            raise ApiError(409, f"this server runs {settings.workers} worker processes and a request reaches one of "
                                "them; change models with --model-repo (every worker watches it) or SIGHUP "
                                "(restarts the workers one by one)", "validation", req.name)
        given = req.model_fields_set
        experiment = {"traffic", "shadow"} & given
        action = req.action or ("experiment" if experiment else "load")
        if experiment and (action != "experiment" or given & {"name", "path", "activate"}):
            raise ApiError(422, "traffic / shadow: send them on their own ({\"traffic\": {...}, \"shadow\": ...}), "
                                "without name, path, activate or action", "validation", req.name)
        if action in ("load", "activate", "unload") and not req.name:
            raise ApiError(422, f"name: required to {action} a model", "validation")
        try:
            if action == "experiment":
                if "traffic" in given:
                    if req.traffic is None:
                        raise ExperimentError("traffic: null is not a split; use {\"action\": \"rollback\"} to end one")
                    router.set_traffic(req.traffic)
                if "shadow" in given:
                    router.set_shadow(req.shadow)
                return json_response({"experiment": _experiment_config(router), **describe_models()})
            if action == "promote":
                model = router.promote(req.name)
                return json_response({"promote": model.describe(), "experiment": router.last, **describe_models()})
            if action == "rollback":
                model = router.rollback()
                return json_response({"rollback": model.describe(), "experiment": router.last, **describe_models()})
            if action in ("activate", "unload") and router.holds(req.name):
                raise ExperimentError(f"{action} {req.name!r}: it takes part in the running experiment "
                                      "(traffic split or shadow); promote or rollback first", status=409)
            if (action == "activate" or (action == "load" and req.activate)) and router.split is not None:
                raise ExperimentError(f"activate {req.name!r}: a traffic split is running (its primary is the active "
                                      "model); promote or rollback first", status=409)
            if action == "load":
                if not req.path:
                    raise ApiError(422, "path: required to load a model (an export folder)", "validation", req.name)
                model = await registry.load(req.name, req.path, activate=req.activate)
            elif action == "activate":
                model = await registry.activate(req.name)
                router.export_weights()
            else:
                model = await registry.unload(req.name)
        except ExperimentError as err:
            raise ApiError(err.status, str(err), "validation", req.name) from None
        except UnknownModel as err:
            raise ApiError(404, f"name: {err}", "unknown_model", req.name) from None
        except LoadFailed as err:
            status = 409 if action == "unload" else 422
            raise ApiError(status, f"{action} {req.name!r} failed, nothing changed: {err}", "validation",
                           req.name) from None
        if action == "load":
            router.export_weights()
        return json_response({action: model.describe() if action != "unload" else
                              {"name": model.name, "version": model.version}, **describe_models()})

    def describe_models() -> dict[str, Any]:
        return {**registry.describe(), "traffic": router.split, "shadow": router.shadow}

    @app.get("/v1/experiments", summary="The running A/B split / shadow: per-variant statistics and tests")
    async def experiments() -> Response:
        return json_response(router.describe())

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PredictRequest, ModelRequest):
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def _experiment_config(router: Router) -> dict[str, Any]:
    return {"primary": router.primary, "traffic": router.split, "shadow": router.shadow, "since": router.started_at}


def _body_schema(name: str) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}


def _version() -> str:
    import mmsenti

    return str(getattr(mmsenti, "__version__", "0"))


def app_from_env() -> FastAPI:
    """uvicorn's app factory for ``--workers N`` (each worker process builds its app from :data:`SETTINGS_ENV`)."""
    try:
        return create_app(ServeSettings.from_env())
    except MmsentiError as err:
        raise SystemExit(f"error: {err}") from None

