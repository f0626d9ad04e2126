"""`launch.py analyze`: the whole pipeline headless, every score in the JSON report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_analyze_writes_every_score(small_world, tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run(
        # --brain-steps 2: the real SmolLM2 path end to end, trained just enough to run (the truth
        # tests in test_brain_captions_truth.py train it properly)
        [sys.executable, "launch.py", "analyze", "--dataset", "demo-human", "--captioner", "sim-objects-only", "--out", str(out),
         "--brain-steps", "2", "--brain-align-steps", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[analyze] 100.0%  done" in done.stdout
    report = json.loads(out.read_text())
    assert report["captioner"] == "sim-objects-only"
    regions = report["encoding"]["r_by_region"]
    assert set(regions) == {"EVC", "animate", "food", "place", "caption"}
    assert set(report["encoding"]["fraction_of_ceiling_by_region"]) == set(regions)
    assert 0.5 <= report["decoding"]["two_way"] <= 1
    for key in ("bleu1", "bleu4", "meteor_exact", "rouge_l", "cider", "embedding_similarity"):
        assert math.isfinite(report["decoded_captions"][key])
    assert -1 <= report["decoded_captions"]["embedding_similarity"] <= 1
    assert 0 <= report["captioner_vs_reference"]["bleu4"] <= 1
    assert -1 <= report["reconstructions"]["pixcorr"] <= 1 and -1 <= report["reconstructions"]["ssim"] <= 1
    assert report["reconstructions"]["image_embedder"] == "sim-scene-reader", "the simulated reader on the simulated world"
    assert 0 <= report["reconstructions"]["image_two_way"] <= 1
    assert report["decoding"]["corpus"] == "training captions"
    generated = report["brain_captions"]
    assert generated["language_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and generated["training"]["steps"] == 2
    assert set(generated["metrics"]) == {"retrieval", "brain", "qformer", "ceiling"}
    for scores in generated["metrics"].values():
        assert all(math.isfinite(scores[k]) for k in ("bleu1", "bleu4", "meteor", "rouge_l", "cider", "similarity"))
    # retrieval here is the decoded_captions section's, on the same stimuli
    assert generated["metrics"]["retrieval"]["cider"] == pytest.approx(report["decoded_captions"]["cider"])
    assert "r_vs_planted_caption_region" in report["truth_recovery"]
    for control in ("word-average", "nouns", "verbs"):
        assert 0 <= report["controls"][control]["fraction_a_better"] <= 1
        assert set(report["controls"][control]["regions"]) == set(regions)


def test_analyze_explains_a_bad_captioner_in_one_line(small_world, tmp_path):
    done = subprocess.run(
        [sys.executable, "launch.py", "analyze", "--captioner", "no/such-captioner", "--out", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1 and "unknown model 'no/such-captioner'" in done.stderr
    assert not (tmp_path / "r.json").exists()


def test_analyze_explains_a_bad_corpus_in_one_line(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"a dog on a beach\n\xff\xfe not text\n")
    done = subprocess.run(
        [sys.executable, "launch.py", "analyze", "--corpus", str(corpus), "--out", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1 and "not UTF-8 text" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()
