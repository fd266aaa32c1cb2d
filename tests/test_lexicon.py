"""Lexicon files, English + Chinese tokens, negation/intensifier rules and the hybrid modes, by hand-computed cases."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("vaderSentiment", reason="the lexicon rules need the serve extra (vaderSentiment)")

from mmsenti.errors import MmsentiError
from mmsenti.lexicon.hybrid import MODES, decide, lexicon_to_model_scale, plan, variant_id
from mmsenti.lexicon.lexicon import load_lexicon, parse_lexicon, shipped_lexicon, shipped_lexicons, vader_lexicon
from mmsenti.lexicon.rules import ALPHA, B_INCR, N_SCALAR, Scorer
from mmsenti.lexicon.tokenize import Tokenizer

TOY = """# mmsenti-lexicon name=toy version=7 language=en
# a comment line
up\t2.0\tstrong
down\t-2.0\tstrong
nice\t1.0
price target cut\t-3.0\tstrong
"""


def compound(total: float) -> float:
    return total / math.sqrt(total * total + ALPHA)


@pytest.fixture(scope="module")
def toy() -> Scorer:
    return Scorer([parse_lexicon(TOY, "toy.tsv")])


@pytest.fixture(scope="module")
def full() -> Scorer:
    pytest.importorskip("jieba", reason="Chinese segmentation needs the serve extra (jieba)")
    return Scorer(["finance_zh", "general_zh", "finance_en", "vader"])


# ---------------------------------------------------------------------------------------------- files
def test_parse_lexicon_reads_header_terms_flags_and_phrases():
    lex = parse_lexicon(TOY, "toy.tsv")
    assert (lex.name, lex.version, lex.language, lex.id) == ("toy", "7", "en", "toy@7")
    assert len(lex) == 4 and lex.get("up").strong and not lex.get("nice").strong
    assert lex.get("price target cut").score == -3.0


@pytest.mark.parametrize("body, line, phrase", [
    ("bullish 2.5\n", 2, "tab-separated fields"),            # spaces, not a tab
    ("bullish\tlots\n", 2, "is not a number"),
    ("bullish\t9\n", 2, "outside VADER's scale"),
    ("bullish\tnan\n", 2, "outside VADER's scale"),
    ("bullish\t2\tstrong,loud\n", 2, "unknown flag(s) loud"),
    ("ok\t1\n# fine\n\nok\t2\n", 5, "listed twice"),
    ("a\t1\t\t\n", 2, "tab-separated fields"),
    ("\t1\n", 2, "empty term"),
])
def test_bad_line_is_one_error_naming_file_and_line(tmp_path, body, line, phrase):
    path = tmp_path / "bad.tsv"
    path.write_text("# mmsenti-lexicon name=bad version=1\n" + body, encoding="utf-8")
    with pytest.raises(MmsentiError) as err:
        load_lexicon(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: ") and phrase in message and "\n" not in message


@pytest.mark.parametrize("text, line, phrase", [
    ("bullish\t2.5\n", 1, "expected the header"),
    ("\n\n# mmsenti-lexicon name=x\nup\t1\n", 3, "header lacks version"),
    ("# mmsenti-lexicon name=x version\n", 1, "is not key=value"),
    ("", None, "empty lexicon file"),
])
def test_header_errors(tmp_path, text, line, phrase):
    path = tmp_path / "h.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MmsentiError, match=phrase) as err:
        load_lexicon(path)
    if line is not None:
        assert str(err.value).startswith(f"{path}:{line}: ")


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(MmsentiError, match="no such lexicon file"):
        load_lexicon(tmp_path / "absent.tsv")
    (tmp_path / "latin1.tsv").write_bytes("# mmsenti-lexicon name=x version=1\ncaf\xe9\t1\n".encode("latin-1"))
    with pytest.raises(MmsentiError, match="not UTF-8"):
        load_lexicon(tmp_path / "latin1.tsv")
    with pytest.raises(MmsentiError, match="is not shipped; choose one of vader, finance_en"):
        shipped_lexicon("finance_fr")


def test_shipped_lexicons_and_vader_from_the_package():
    assert shipped_lexicons() == ["finance_en", "finance_zh", "general_zh"]
    zh = shipped_lexicon("finance_zh")
    assert zh.get("利好").score > 0 and zh.get("利空").score < 0 and zh.get("涨停").strong and zh.get("跌停").strong
    en = shipped_lexicon("finance_en")
    assert en.get("bullish").score > 0 > en.get("bearish").score and en.get("downgrade").strong
    vader = vader_lexicon()
    assert vader.name == "vader" and vader.version == "3.3.2" and len(vader) > 7000
    assert vader.get("good").score == 1.9 and vader.get(":(").score < 0  # emoticons kept as written


def test_every_shipped_term_is_found_as_itself(full):
    for name in ("finance_en", "finance_zh", "general_zh"):
        for entry in shipped_lexicon(name).entries.values():
            hits = full.score(entry.term).hits
            assert hits and hits[0].term == entry.term, (name, entry.term, full.tokens(entry.term))


# ---------------------------------------------------------------------------------------------- tokens
def test_english_tokens():
    tok = Tokenizer()
    assert tok.tokens("It does n't WORK , I don’t like it :( ") == ["it", "does", "n't", "work", "i", "don't", "like", "it", ":("]
    assert tok.tokens("ＧＲＥＡＴ！ so-so :D 😀") == ["great", "so-so", ":D"]  # NFKC, hyphen kept, emoji dropped
    assert tok.tokens("at 3:30 it was fine") == ["at", "3", "30", "it", "was", "fine"]  # no emoticon in a time


def test_chinese_split_merge_and_whole_words(full):
    assert full.tokens("这部电影不好看") == ["这部", "电影", "不", "好看"]
    assert full.tokens("太好了") == ["太", "好", "了"]                 # split: intensifier + term + particle
    assert full.tokens("业绩超预期") == ["业绩", "超预期"]             # protected: jieba alone cuts 超 + 预期
    assert full.tokens("利好不断") == ["利好", "不断"]                 # 不断 "continuously" is no negation
    assert full.tokens("没想到这么好") == ["没想到", "这么", "好"]
    assert full.tokens("这 部 电影 不 好看") == full.tokens("这部电影不好看")  # spaces between ideographs say nothing
    assert full.tokens("A股利好 bullish") == ["a", "股", "利好", "bullish"]


# ---------------------------------------------------------------------------------------------- rules
def test_rules_by_hand(toy):
    r = toy.score("nice")
    assert r.total == 1.0 and r.compound == pytest.approx(1 / math.sqrt(16))
    assert toy.score("not nice").total == pytest.approx(N_SCALAR)                         # -0.74
    assert toy.score("very nice").total == pytest.approx(1 + B_INCR)                      # 1.293
    assert toy.score("not very nice").total == pytest.approx((1 + B_INCR) * N_SCALAR)     # -0.95682
    assert toy.score("slightly nice").total == pytest.approx(1 - B_INCR)                  # a dampener
    assert toy.score("never not nice").total == pytest.approx(N_SCALAR ** 2)              # double negation
    assert toy.score("not one two three nice").total == 1.0                               # beyond the 3-token window
    assert toy.score("up but down").total == pytest.approx(2 * 0.5 - 2 * 1.5)             # VADER's but rule: -2
    assert toy.score("they announced a price target cut").hits[0].term == "price target cut"  # phrase, longest first
    # a negator acts on the next term only: "down" keeps its sign
    r = toy.score("not up , down")
    assert [h.adjusted for h in r.hits] == [pytest.approx(2 * N_SCALAR), -2.0]


def test_chinese_rules_by_hand(full):
    assert full.score("不好").total == pytest.approx(1.9 * N_SCALAR)                       # 好 = 1.9 in general_zh
    assert full.score("很不满意").total == pytest.approx((2.0 + B_INCR) * N_SCALAR)
    assert full.score("不是利空").total == pytest.approx(-2.5 * N_SCALAR)                  # not bad news: positive
    assert full.score("利好不断").total == 2.5                                             # 不断 does not negate
    assert full.score("公司业绩不及预期").total == -2.0                                    # a term of its own


def test_first_lexicon_wins_on_a_shared_term():
    mine = parse_lexicon("# mmsenti-lexicon name=mine version=1\ngood\t-1.0\n", "mine.tsv")
    assert Scorer([mine, "vader"]).score("good").total == -1.0
    assert Scorer(["vader", mine]).score("good").total == 1.9


def test_guard_terms(full):
    assert full.guard_terms("the battery is good") == ("good",)
    assert full.guard_terms("the battery is not very good") == ("not", "very", "good")
    assert full.guard_terms("rated 9 out of 10 :)") == ("9", "10", ":)")
    assert full.guard_terms("这个消息算不上利好") == ("算不上", "利好")  # Chinese negates inside words
    assert full.guard_terms("great 😀") == ("great",) and full.guard_terms("great 😀", emoji=True) == ("great", "😀")


# ---------------------------------------------------------------------------------------------- hybrid
class Model:
    def __init__(self, score: float):
        self.score, self.calls = score, 0

    def __call__(self, text: str) -> float:
        self.calls += 1
        return self.score


def test_scale_mapping():
    assert lexicon_to_model_scale(0.5, "regression") == 1.5
    assert lexicon_to_model_scale(0.5, "classification") == pytest.approx(math.log(3))  # p = 0.75
    assert lexicon_to_model_scale(-0.5, "classification") == pytest.approx(-math.log(3))
    assert math.isfinite(lexicon_to_model_scale(1.0, "classification"))
    with pytest.raises(MmsentiError, match="task='ranking'"):
        lexicon_to_model_scale(0.5, "ranking")


def test_model_mode_never_reads_the_lexicon(toy):
    m = Model(-0.4)
    assert decide("up up up", "model", None, m) == (-0.4, "model") and m.calls == 1


def test_lexicon_mode_never_calls_the_model(toy):
    m = Model(9.0)
    score, path = decide("nice", "lexicon", toy, m)
    assert (score, path, m.calls) == (pytest.approx(3 * compound(1.0)), "lexicon", 0)
    score, _ = decide("nice", "lexicon", toy, m, task="classification")
    c = compound(1.0)
    assert score == pytest.approx(math.log((1 + c) / (1 - c)))
    assert decide("no opinion here", "lexicon", toy, m) == (0.0, "lexicon") and m.calls == 0


def test_override_mode(toy):
    m = Model(0.7)
    assert decide("shares up today", "override", toy, m) == (pytest.approx(3 * compound(2.0)), "lexicon")
    assert m.calls == 0                                                                  # strong hit: model skipped
    assert decide("not up", "override", toy, m) == (pytest.approx(3 * compound(2 * N_SCALAR)), "lexicon")
    assert m.calls == 0                                                                  # negated strong hit decides too
    assert decide("nice", "override", toy, m) == (0.7, "model") and m.calls == 1          # no strong term
    assert decide("up but down", "override", toy, m) == (0.7, "model") and m.calls == 2   # strong hits disagree
    # the general-lexicon short cut, off by default
    assert decide("nice", "override", toy, m, confident=0.2) == (pytest.approx(3 * compound(1.0)), "lexicon")
    assert decide("not nice", "override", toy, m, confident=0.1) == (0.7, "model")        # negation: left to the model
    assert m.calls == 3


def test_blend_mode(toy):
    m = Model(1.0)
    score, path = decide("nice", "blend", toy, m, blend_weight=0.25)
    assert path == "blend" and score == pytest.approx(0.25 * 3 * compound(1.0) + 0.75 * 1.0) and m.calls == 1
    assert decide("no terms at all", "blend", toy, m, blend_weight=0.25) == (1.0, "model")  # nothing to blend
    with pytest.raises(MmsentiError, match=r"blend_weight=1.5; choose a weight in \[0, 1\]"):
        decide("nice", "blend", toy, m, blend_weight=1.5)


def test_plan_then_finish_for_a_batching_server(toy):
    p = plan("nice", "blend", toy, blend_weight=0.5)
    assert p.needs_model
    with pytest.raises(MmsentiError, match="needs the model's score"):
        p.finish()
    assert p.finish(1.0) == (pytest.approx(0.5 * 3 * compound(1.0) + 0.5), "blend")
    assert not plan("up", "override", toy).needs_model


def test_bad_modes_and_missing_lexicon(toy):
    with pytest.raises(MmsentiError, match="mode='rules'; choose one of model, lexicon, override, blend"):
        decide("x", "rules", toy, Model(0))
    for mode in MODES[1:]:
        with pytest.raises(MmsentiError, match=f"mode {mode} needs a lexicon"):
            decide("x", mode, None, Model(0))
    with pytest.raises(MmsentiError, match="at least one lexicon"):
        Scorer([])


def test_variant_ids_separate_what_shaped_an_answer(toy):
    other = Scorer([parse_lexicon(TOY.replace("version=7", "version=8"), "toy.tsv")])
    ids = {variant_id("model"), variant_id("lexicon", toy), variant_id("override", toy), variant_id("blend", toy),
           variant_id("blend", toy, blend_weight=0.3), variant_id("override", other), variant_id("override", toy, confident=0.5)}
    assert len(ids) == 7 and variant_id("override", toy) == "override:toy@7"


def test_finance_terms_fix_a_general_models_errors(full):
    """A general model that misreads domain terms (as an English-only vocabulary reads 利空 as [UNK]) is corrected."""
    cases = [("公司业绩不及预期", -1), ("今天该股跌停", -1), ("这只股票利好不断", 1), ("这不是利空", 1),
             ("analysts downgraded the stock", -1), ("the outlook is bullish", 1), ("the company filed for chapter 11", -1)]
    fixed = 0
    for text, sign in cases:
        wrong = Model(-0.5 * sign)  # always the wrong sign
        for mode in ("override", "blend"):
            score, path = decide(text, mode, full, wrong, blend_weight=0.8)
            fixed += math.copysign(1, score) == sign
        assert decide(text, "override", full, wrong)[1] == "lexicon"
    assert fixed == 2 * len(cases)
