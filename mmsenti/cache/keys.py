"""Cache keys: the exact layer's text, the model namespace, the blake2b key.

**Exact text.** The exact layer may only serve an answer the model itself would give, so its key is
the text *exactly as the model receives it*: the model's own normalisation rule
(:func:`mmsenti.text.normalize_text`, the manifest's ``text.normalization``), nothing looser:

* ``transcript`` already is Unicode NFKC + lower-casing + white-space folding (+ edge punctuation
  stripped), so "I LOVED it!" and "i loved it" share a key — the model sees the same words;
* ``none`` folds white space only. NFKC and case are left alone on purpose: the model's tokenizer
  does not apply NFKC, and it changes what the model sees (with MiniLM's tokenizer ``ＧＯＯＤ`` is
  ``[UNK]`` but NFKC's ``GOOD`` is ``good``; ``ﬁne`` is ``ﬁ ##ne`` but ``fine``; ``x²`` is ``x ##²``
  but ``x ##2``), and a cased model reads "GREAT" and "great" differently. ``lowercase=True`` adds
  lower-casing for a model whose tokenizer lower-cases anyway (BERT uncased / MiniLM:
  ``tokenizer.json`` ``normalizer.lowercase``), where it cannot change the model's input.

Looser matching (case, punctuation, emoji, small edits) is the near-duplicate layer's job
(:mod:`mmsenti.cache.near`), which is approximate by design and guarded against negation.

**Namespace.** Every key starts with ``model@version/variant``: the model's name, a version that
changes whenever the engine does (:func:`model_namespace` takes the engine file's sha256 from the
manifest), and what else shaped the answer (the hybrid mode and lexicon versions,
:func:`mmsenti.lexicon.hybrid.variant_id`). A hot swap changes the namespace, so the old model's
answers are never served for the new one — no flush needed, and nothing to race with.

**Key.** ``<namespace>:<blake2b-128 hex>`` of the exact text, personalised and keyed by the
namespace; the readable prefix lets Redis drop a namespace with one ``SCAN MATCH``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mmsenti.errors import MmsentiError
from mmsenti.text import check_normalization, normalize_text

DIGEST_SIZE = 16  # bytes: 128-bit keys, collisions negligible at any cache size
_PERSON = b"mmsenti-exact1"  # blake2b personalisation (<= 16 bytes): keys of this scheme only


def exact_text(text: str | None, rule: str = "none", lowercase: bool = False) -> str:
    """``text`` as the exact layer compares it: the model's normalisation (+ lower-casing if asked)."""
    out = normalize_text(text, check_normalization(rule))
    return out.lower() if lowercase else out


def namespace(model: str, version: str, variant: str = "model") -> str:
    """``model@version/variant``: the prefix of every key made for that model and answer variant."""
    for what, value in (("model", model), ("version", version), ("variant", variant)):
        if not value or not isinstance(value, str):
            raise MmsentiError(f"cache namespace: {what} must be a non-empty string, got {value!r}")
        if ":" in value and what != "variant":
            raise MmsentiError(f"cache namespace: {what} {value!r} must not contain ':'")
    return f"{model}@{version}/{variant}"


def model_namespace(manifest: dict[str, Any], variant: str = "model") -> str:
    """The namespace of an export from its ``manifest.json`` (name + the engine file's sha256, 12 hex digits)."""
    try:
        name = manifest["name"]
        digest = manifest["files"][manifest["engine"]]["sha256"]
    except (KeyError, TypeError):
        raise MmsentiError("manifest lacks name / files[engine].sha256; re-export the model with this mmsenti") from None
    return namespace(name, digest[:12], variant)


def digest(text: str, ns: str) -> str:
    """blake2b-128 hex of ``text``, keyed by the namespace (a key from one namespace never equals another's)."""
    key = ns.encode("utf-8")
    if len(key) > 64:  # blake2b's key limit; longer namespaces are hashed down first
        key = hashlib.blake2b(key, digest_size=32).digest()
    return hashlib.blake2b(text.encode("utf-8"), digest_size=DIGEST_SIZE, key=key, person=_PERSON).hexdigest()


def exact_key(text: str | None, ns: str, rule: str = "none", lowercase: bool = False) -> str:
    """``<namespace>:<digest>`` of the exact text of ``text``."""
    return f"{ns}:{digest(exact_text(text, rule, lowercase), ns)}"
