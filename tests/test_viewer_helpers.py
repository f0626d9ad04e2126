"""Small viewer helpers: the controls table, the caption-corpus upload."""

import gradio as gr
import pytest

from viewer.controls_tab import control_rows, coverage_note
from viewer.model_runs import MAX_CORPUS_UPLOAD, read_corpus_upload


def test_controls_table_and_coverage_note():
    summary = {
        "word-average": {"mean_difference": 0.05, "fraction_a_better": 0.7, "regions": {"EVC": {"mean_difference": -0.01, "fraction_a_better": 0.4}}},
        "verbs": {"mean_difference": 0.3, "fraction_a_better": 0.9, "regions": {}, "captions_with_words": 0.0},
    }
    frame = control_rows(summary)
    assert list(frame["region"]) == ["all units", "EVC", "all units"]
    assert frame.loc[1, "mean_difference"] == -0.01 and frame.loc[1, "control"] == "mean of word embeddings"
    assert "0% of captions" in coverage_note(summary) and "too few" in coverage_note(summary)


def test_corpus_upload_is_read_as_lines_or_refused_in_one_line(tmp_path):
    good = tmp_path / "corpus.txt"
    good.write_text("a dog\na cat on a beach\n", encoding="utf-8")
    assert read_corpus_upload(str(good)) == ["a dog", "a cat on a beach"]
    assert read_corpus_upload(None) is None
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(gr.Error, match="not UTF-8"):
        read_corpus_upload(str(bad))
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(MAX_CORPUS_UPLOAD + 1)
    with pytest.raises(gr.Error, match="at most"):
        read_corpus_upload(str(huge))
