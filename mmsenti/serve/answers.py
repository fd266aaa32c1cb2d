"""The answer path of request items: the answer cache, the lexicon + model hybrid, then the model.

For each item of a request, in one step of the event loop (so a hot swap cannot fall between the
model's resolution, its cache namespace and its batcher)::

    ns = model_namespace(manifest, variant_id(mode, scorer))   # model@version/variant
    answer, layer = cache.lookup(text, ns)                     # -> the item's "cached": "exact" | "near" | null
    if answer is None:
        p = plan(text, mode, scorer, task)                     # the lexicon decides what it can
        queue the item in the model's batcher if p.needs_model
    ...await the batcher (only for items that need the model)...
    decision = p.finish(model_score); cache.store(text, ns, answer)

* **A cached answer never reaches the batcher**: a request whose items are all hits answers without
  a thread hop or an engine call.
* **Keyed by the model's version.** The namespace is the manifest's model name + the engine file's
  sha256 (:func:`mmsenti.cache.keys.model_namespace`) + the hybrid variant (mode, lexicon versions,
  blend weight): a hot swap to another engine changes every key, so the old model's answers are
  never served for the new one, with no flush to race with. An answer is stored under the
  namespace of the model object that computed it, even when a swap happened while it was in the
  engine. After a swap the old version's entries are dropped (memory only; nobody asks for them).
* **Items with audio/vision frames bypass the cache** (the key is the text; the frames change the
  answer). The lexicon modes read their text all the same.
* **Exact key** = the model's own text normalisation (its manifest), lower-cased only when the
  model's tokenizer lower-cases anyway (manifest ``tokenizer.lowercase``), blake2b-hashed
  (:mod:`mmsenti.cache.keys`). The **near layer** (opt-in) serves near-duplicates whose
  negators/intensifiers/lexicon terms are the same (:mod:`mmsenti.cache.near`). **Redis** (opt-in)
  is a second exact layer shared by worker processes.

The item's ``lexicon`` field (null in mode ``model``): ``{"mode", "path", "score", "compound",
"terms", "strong", "negated", "lexicons"}`` — the path that answered (``model`` | ``lexicon`` |
``blend``), the lexicon's score on the model's scale, the matched terms, those flagged strong and
those negated, and the lexicons' ``name@version`` list. Modes: :mod:`mmsenti.lexicon.hybrid`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mmsenti.cache.keys import model_namespace
from mmsenti.cache.layered import LayeredCache
from mmsenti.cache.lru import LRUCache
from mmsenti.cache.near import NearCache
from mmsenti.errors import MmsentiError
from mmsenti.lexicon.hybrid import Decision, Plan, plan, variant_id
from mmsenti.serve.config import ServeSettings
from mmsenti.text import class_7, polarity

log = logging.getLogger("mmsenti.serve")


def tokenizer_lowercases(manifest: dict[str, Any]) -> bool:
    """Whether the export's tokenizer lower-cases its input (then case cannot change the model's answer)."""
    return bool((manifest.get("tokenizer") or {}).get("lowercase", False))


class AnswerCache:
    """The server's cache layers: one exact LRU (and Redis) shared by every model, a near layer per normalisation rule.

    Models with different text normalisation rules share the LRU's bounds (their keys differ by
    namespace anyway); :meth:`for_model` gives the :class:`~mmsenti.cache.layered.LayeredCache`
    that reads keys the way that model reads text.
    """

    def __init__(self, settings: ServeSettings, scorer=None):
        c = settings.cache
        self.settings = c
        self.exact = LRUCache(max_entries=c.max_entries, max_bytes=c.max_bytes, ttl_s=c.ttl_s)
        self.redis = None
        if c.redis_url:
            from mmsenti.cache.redis_backend import RedisCache

            self.redis = RedisCache(c.redis_url, ttl_s=c.ttl_s)
            if not self.redis.ping():
                log.warning("redis cache at %s does not answer; serving from the in-process cache until it does",
                            c.redis_url)
        if c.near and scorer is None:
            raise MmsentiError("the near-duplicate cache needs lexicons for its negation guard (--lexicon)")
        self.scorer = scorer
        self._layers: dict[tuple[str, bool], LayeredCache] = {}

    def for_model(self, model) -> LayeredCache:
        rule = model.predictor.text_normalization
        lower = tokenizer_lowercases(model.predictor.manifest)
        layered = self._layers.get((rule, lower))
        if layered is None:
            near = None
            if self.settings.near:
                near = next((lc.near for (r, _), lc in self._layers.items() if r == rule), None) or NearCache(
                    self.scorer, threshold=self.settings.near_threshold, ttl_s=self.settings.ttl_s, rule=rule)
            layered = self._layers[(rule, lower)] = LayeredCache(self.exact, redis=self.redis, near=near, rule=rule,
                                                                 lowercase=lower)
        return layered

    def drop_namespaces(self, namespaces: Sequence[str]) -> None:
        nears = {id(lc.near): lc.near for lc in self._layers.values() if lc.near is not None}
        for ns in namespaces:
            self.exact.drop_prefix(f"{ns}:")
            if self.redis is not None:
                self.redis.drop_prefix(f"{ns}:")
            for near in nears.values():
                near.drop_namespace(ns)

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per layer: ``exact`` (the LRU), ``redis``, ``near`` (summed over the rules' near layers)."""
        out = {"exact": self.exact.stats()}
        if self.redis is not None:
            out["redis"] = self.redis.stats()
        nears = {id(lc.near): lc.near for lc in self._layers.values() if lc.near is not None}
        if self.settings.near:
            total: dict[str, int] = {}
            for near in nears.values():
                for k, v in near.stats().items():
                    total[k] = total.get(k, 0) + v
            out["near"] = total or {"hits": 0, "misses": 0, "evictions": 0, "entries": 0, "bytes": 0}
        return out


def load_scorer(settings: ServeSettings):
    """The lexicon scorer the settings ask for (None when no mode or guard needs one); warms jieba for Chinese lexicons."""
    if not settings.needs_lexicons:
        return None
    from mmsenti.lexicon.rules import Scorer

    scorer = Scorer(settings.lexicon_specs())
    if any(lex.language == "zh" for lex in scorer.lexicons):
        scorer.score("利好")  # jieba's dictionary loads now (~2 s), not on the first Chinese request
    return scorer


def lexicon_info(p: Plan, decision: Decision, lexicons: str) -> dict[str, Any] | None:
    if p.lexicon is None:
        return None
    hits = p.lexicon.hits
    return {"mode": p.mode, "path": decision.path, "score": round(float(p.lexicon_score), 6),
            "compound": round(float(p.lexicon.compound), 6), "terms": [h.term for h in hits],
            "strong": [h.term for h in hits if h.strong], "negated": [h.term for h in hits if h.negated],
            "lexicons": lexicons}


class Answerer:
    """Answers validated items for a served model: cache, hybrid mode, batcher (see the module docstring)."""

    def __init__(self, settings: ServeSettings, scorer=None):
        self.settings = settings
        self.scorer = scorer
        self.cache = AnswerCache(settings, scorer) if settings.cache.enabled else None

    # ------------------------------------------------------------------ keys
    def variant(self, mode: str) -> str:
        s = self.settings
        return variant_id(mode, self.scorer, s.blend_weight, s.override_confident)

    def namespace(self, model, mode: str) -> str:
        ns = model.namespaces.get(mode)
        if ns is None:
            ns = model.namespaces[mode] = model_namespace(model.predictor.manifest, self.variant(mode))
        return ns

    def check_mode(self, mode: str) -> str | None:
        """None when ``mode`` can be served, else why not (one line)."""
        if mode != "model" and self.scorer is None:
            return (f"mode {mode!r} needs lexicons, and this server loaded none; start it with --lexicon NAME_OR_FILE[,...] "
                    "(e.g. finance_en,vader) or a --mode other than model")
        return None

    def retired(self, model, still_served: Sequence[Any]) -> None:
        """``model`` was replaced or unloaded: drop its namespaces unless a served model shares them (same engine)."""
        if self.cache is None or not model.namespaces:
            return
        live = {ns for m in still_served for ns in m.namespaces.values()}
        gone = [ns for ns in model.namespaces.values() if ns not in live]
        if gone:
            self.cache.drop_namespaces(gone)

    # ------------------------------------------------------------------ answering
    async def answer(self, model, items: Sequence[Any], mode: str, record: bool = True) -> list:
        """The answers to ``items`` (validated :class:`~mmsenti.serve.models.ScoreItem` s) from ``model``.

        Everything up to the batcher's submit runs before the first suspension, i.e. in the caller's
        step of the event loop (:class:`~mmsenti.serve.batcher.QueueFull` / ``Draining`` are raised
        from there); nothing is awaited when no item needs the model. An answer is a dict
        (``score``, ``polarity``, ``class_7``, ``cached``, ``lexicon``) or the exception the engine
        raised for that item. ``record``: count it in the model's answer metrics (not for shadow copies).
        """
        ns = self.namespace(model, mode)
        cache = self.cache.for_model(model) if self.cache is not None else None
        task = model.predictor.task
        s = self.settings
        out: list[Any] = [None] * len(items)
        plans: dict[int, Plan] = {}
        need: list[int] = []
        for i, item in enumerate(items):
            if cache is not None and not item.audio and not item.vision:
                hit, layer = cache.lookup(item.text, ns)
                if hit is not None:
                    out[i] = {**hit, "cached": layer}
                    continue
            p = plan(item.text, mode, self.scorer, task, s.blend_weight, s.override_confident)
            plans[i] = p
            if p.needs_model:
                need.append(i)
        scored: dict[int, Any] = {}
        if need:
            future = model.batcher.submit([items[i] for i in need], [len(items[i].text) for i in need])
            scored = dict(zip(need, await future))
        lexicons = self.scorer.id if self.scorer is not None else ""
        for i, p in plans.items():
            res = scored.get(i)
            if isinstance(res, Exception):
                out[i] = res
                continue
            decision = p.finish(res["score"] if res is not None else None)
            if res is not None and decision.path == "model":
                answer = dict(res)
            else:
                answer = {"score": float(decision.score), "polarity": polarity(decision.score),
                          "class_7": class_7(decision.score)}
            answer["lexicon"] = lexicon_info(p, decision, lexicons)
            if cache is not None and not items[i].audio and not items[i].vision:
                cache.store(items[i].text, ns, answer)
            out[i] = {**answer, "cached": None}
        if record and model.metrics is not None:
            for a in out:
                if isinstance(a, dict):
                    model.metrics.answered(mode, a["lexicon"]["path"] if a["lexicon"] else "model", a["cached"],
                                           a["score"], a["polarity"])
        return out
