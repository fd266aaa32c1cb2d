"""Versioned sentiment lexicon files: the format, the parser, the shipped ones and VADER's.

A lexicon file (UTF-8) is a header line, then one term a line::

    # mmsenti-lexicon name=finance_en version=1 language=en
    # any other line starting with '#' is a comment; blank lines are skipped
    bullish<TAB>2.5<TAB>strong
    price target cut<TAB>-2.0<TAB>strong
    rally<TAB>1.5

* header: ``# mmsenti-lexicon`` then ``key=value`` fields; ``name`` and ``version`` are required,
  ``language`` (``en`` | ``zh`` | ...) is informative. ``name@version`` enters the cache keys of
  answers the lexicon helped make, so editing a file means bumping its version.
* ``score``: valence on VADER's scale, ``-4`` (most negative) .. ``+4`` (most positive), so domain
  and general lexicons add up (VADER's ``good`` is 1.9, ``great`` 3.1, ``bad`` -2.5).
* ``flags`` (optional, comma-separated): ``strong`` — a domain term sure enough that the
  ``override`` mode may answer from the lexicon without the model (:mod:`mmsenti.lexicon.hybrid`).
* a term may be several words (``price target cut``); English terms are matched lower-cased,
  emoticons as written.

A bad line raises one :class:`~mmsenti.errors.MmsentiError` naming the file and the line.

The general English lexicon is VADER's own (``vader_lexicon.txt`` inside the ``vaderSentiment``
package, read at run time, not copied; :func:`vader_lexicon`). The shipped domain lexicons live in
``mmsenti/lexicon/data/`` (:func:`shipped_lexicon`; where each term comes from: its README).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mmsenti.errors import MmsentiError

HEADER = "# mmsenti-lexicon"
FLAGS = frozenset({"strong"})
SCORE_RANGE = (-4.0, 4.0)  # VADER's valence scale
DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Entry:
    term: str
    score: float
    flags: frozenset[str] = frozenset()

    @property
    def strong(self) -> bool:
        return "strong" in self.flags


@dataclass(frozen=True)
class Lexicon:
    """Named, versioned ``term -> Entry`` table (terms lower-cased when they hold Latin letters)."""

    name: str
    version: str
    entries: dict[str, Entry] = field(repr=False)
    language: str = ""
    source: str = ""

    @property
    def id(self) -> str:
        """``name@version``: what cache keys record."""
        return f"{self.name}@{self.version}"

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, term: str) -> bool:
        return term in self.entries

    def get(self, term: str) -> Entry | None:
        return self.entries.get(term)


def term_key(term: str) -> str:
    """How a term is stored and matched: white space folded; words (letters, digits, ``'``, ``-``) lower-cased,
    anything else (emoticons such as ``:D``) as written."""
    term = " ".join(term.split())
    if re.fullmatch(r"[\w'\- ]+", term):
        return term.lower()
    return term


def parse_lexicon(text: str, source: str = "<string>") -> Lexicon:
    """Parse a lexicon file's text (format in the module docstring); errors name ``source`` and the line."""
    lines = text.splitlines()
    header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_at is None:
        raise MmsentiError(f"{source}: empty lexicon file; it needs a header '{HEADER} name=... version=...'")
    meta = _parse_header(lines[header_at], source, header_at + 1)
    entries: dict[str, Entry] = {}
    for number, raw in enumerate(lines[header_at + 1:], start=header_at + 2):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = _parse_entry(line, source, number)
        key = term_key(entry.term)
        if key in entries:
            raise MmsentiError(f"{source}:{number}: term {entry.term!r} is listed twice; keep one line per term")
        entries[key] = entry
    return Lexicon(name=meta["name"], version=meta["version"], entries=entries, language=meta.get("language", ""),
                   source=source)


def _parse_header(line: str, source: str, number: int) -> dict[str, str]:
    if not line.startswith(HEADER):
        raise MmsentiError(f"{source}:{number}: expected the header '{HEADER} name=<name> version=<version>', "
                           f"got {line.strip()[:60]!r}")
    meta = {}
    for item in line[len(HEADER):].split():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise MmsentiError(f"{source}:{number}: header field {item!r} is not key=value")
        meta[key] = value
    missing = [k for k in ("name", "version") if k not in meta]
    if missing:
        raise MmsentiError(f"{source}:{number}: header lacks {' and '.join(missing)} (e.g. '{HEADER} name=finance_en version=1')")
    return meta


def _parse_entry(line: str, source: str, number: int) -> Entry:
    fields = line.split("\t")
    where = f"{source}:{number}"
    if len(fields) not in (2, 3):
        raise MmsentiError(f"{where}: expected 'term<TAB>score[<TAB>flags]', got {len(fields)} tab-separated fields in {line[:60]!r}")
    term = " ".join(fields[0].split())
    if not term:
        raise MmsentiError(f"{where}: empty term")
    try:
        score = float(fields[1])
    except ValueError:
        raise MmsentiError(f"{where}: score {fields[1]!r} of {term!r} is not a number") from None
    lo, hi = SCORE_RANGE
    if not math.isfinite(score) or not lo <= score <= hi:
        raise MmsentiError(f"{where}: score {fields[1]} of {term!r} is outside VADER's scale [{lo:g}, {hi:g}]")
    flags = frozenset(f.strip() for f in fields[2].split(",") if f.strip()) if len(fields) == 3 else frozenset()
    unknown = sorted(flags - FLAGS)
    if unknown:
        raise MmsentiError(f"{where}: unknown flag(s) {', '.join(unknown)} for {term!r}; known: {', '.join(sorted(FLAGS))}")
    return Entry(term=term, score=score, flags=flags)


def load_lexicon(path: str | Path) -> Lexicon:
    """Read and parse a lexicon file."""
    path = Path(path)
    if not path.is_file():
        raise MmsentiError(f"{path}: no such lexicon file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise MmsentiError(f"{path}: not UTF-8 ({err.reason} at byte {err.start}); save the lexicon as UTF-8") from None
    return parse_lexicon(text, str(path))


def shipped_lexicons() -> list[str]:
    """Names of the lexicons shipped in ``mmsenti/lexicon/data/``."""
    return sorted(p.stem for p in DATA_DIR.glob("*.tsv"))


def shipped_lexicon(name: str) -> Lexicon:
    """A shipped lexicon by name (``finance_en``, ``finance_zh``, ``general_zh``) or ``vader``."""
    if name == "vader":
        return vader_lexicon()
    path = DATA_DIR / f"{name}.tsv"
    if not path.is_file():
        raise MmsentiError(f"lexicon {name!r} is not shipped; choose one of {', '.join(['vader', *shipped_lexicons()])} "
                           "or pass a file path")
    return load_lexicon(path)


def resolve_lexicon(spec: str | Path | Lexicon) -> Lexicon:
    """A :class:`Lexicon` from a shipped name, a file path, or a Lexicon (returned as is)."""
    if isinstance(spec, Lexicon):
        return spec
    text = str(spec)
    if text == "vader" or (DATA_DIR / f"{text}.tsv").is_file():
        return shipped_lexicon(text)
    return load_lexicon(text)


_VADER: Lexicon | None = None


def vader_lexicon() -> Lexicon:
    """VADER's general English lexicon (``term<TAB>mean<TAB>sd<TAB>ratings``), read from the installed package.

    Name ``vader``, version the package's (``3.3.2``). Loaded once per process.
    """
    global _VADER
    if _VADER is None:
        import importlib.metadata as md

        try:
            import vaderSentiment
        except ImportError as err:
            raise MmsentiError("the VADER lexicon needs the vaderSentiment package: pip install 'mmsenti[serve]'") from err
        path = Path(vaderSentiment.__file__).resolve().parent / "vader_lexicon.txt"
        entries: dict[str, Entry] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split("\t")
            if len(fields) < 2 or not fields[0].strip():
                continue
            try:
                score = float(fields[1])
            except ValueError:
                raise MmsentiError(f"{path}:{number}: score {fields[1]!r} is not a number") from None
            entries.setdefault(term_key(fields[0]), Entry(term=fields[0].strip(), score=score))
        _VADER = Lexicon(name="vader", version=md.version("vaderSentiment"), entries=entries, language="en",
                         source=str(path))
    return _VADER
