"""Model jobs through the API as the viewer runs them: caption, embed, generate; cache hits skip
the model; offline and bad requests fail fast with one line."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from backend.service.client import BackendError
from tests.models_tiny import register_tiny, tiny_id

REQUIRED = [
    "Salesforce/blip-image-captioning-base",
    "Salesforce/blip-image-captioning-large",
    "microsoft/git-base-coco",
    "microsoft/git-large-coco",
    "nlpconnect/vit-gpt2-image-captioning",
    "microsoft/Florence-2-base",
    "Salesforce/blip2-opt-2.7b",
    "sentence-transformers/all-MiniLM-L6-v2",
    "sentence-transformers/all-mpnet-base-v2",
    "stabilityai/sd-turbo",
    "stabilityai/sdxl-turbo",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sim-reference",
    "sim-noisy-words",
    "sim-scene-renderer",
]


def wait_job(client, job: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = client.job(job["id"])
    return job


def test_models_list_tells_the_truth_offline(client):
    models = {m["id"]: m for m in client.models()}
    for model_id in REQUIRED:
        assert model_id in models, model_id
    assert models["sentence-transformers/all-MiniLM-L6-v2"]["present"]
    blip = models["Salesforce/blip-image-captioning-base"]
    assert not blip["present"] and blip["pull"] == "python launch.py models pull Salesforce/blip-image-captioning-base"
    assert models["sim-noisy-words"]["simulated"] and models["sim-noisy-words"]["present"]
    assert {m["kind"] for m in client.models(kind="captioner")} == {"captioner"}
    assert any(m["kind"] == "image_embedder" for m in models.values())


def test_missing_weights_fail_fast_with_the_pull_command(client):
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        client.caption("demo-human", "Salesforce/blip-image-captioning-base")
    assert time.monotonic() - started < 5
    assert info.value.status == 409
    assert "launch.py models pull Salesforce/blip-image-captioning-base" in str(info.value)


@pytest.mark.parametrize(
    ("call", "status", "words"),
    [
        (lambda c: c.caption("demo-human", "no/such-model"), 404, "unknown model 'no/such-model'"),
        (lambda c: c.caption("demo-human", "sentence-transformers/all-MiniLM-L6-v2"), 404, "not a captioner"),
        (lambda c: c.caption("demo-human", "sim-one-object", temperature=2), 422, "does not take ['temperature']"),
        (lambda c: c.embed_captions("demo-human", "sentence-transformers/all-MiniLM-L6-v2", "tiny/never-run"), 404, "has not captioned"),
        (lambda c: c.job("job-0"), 404, "no job"),
        (lambda c: c.output_image("0" * 64), 404, "no generated image"),
        (lambda c: c.output_image("../etc/passwd"), 404, ""),
    ],
)
def test_bad_job_requests(client, call, status, words):
    with pytest.raises(BackendError) as info:
        call(client)
    assert info.value.status == status and words in str(info.value)


@pytest.mark.slow
def test_caption_job_with_a_tiny_blip_then_served_from_the_cache(client, backend_services, human):
    spec = register_tiny("blip")  # a user model by local path, as users add one
    job = wait_job(client, client.caption("demo-human", spec.id))
    assert job["state"] == "done", job
    assert job["done"] == job["total"] == human.n_stimuli and job["result"]["captioned"] == human.n_stimuli
    loads = backend_services.pool.loads[spec.id]
    assert loads == 1

    captions = client.captions("demo-human", 4)
    assert spec.id in captions and isinstance(captions[spec.id], str)
    assert any(c["id"] == spec.id for c in client.captioners("demo-human"))

    backend_services.pool.evict(spec.id)
    again = wait_job(client, client.caption("demo-human", spec.id))
    assert again["state"] == "done" and again["message"] == f"{human.n_stimuli} of {human.n_stimuli} cached"
    assert backend_services.pool.loads[spec.id] == 1, "a cache hit never loads the model"
    assert spec.id not in backend_services.pool.resident()


@pytest.mark.slow
def test_simulated_captioner_job_reproduces_the_shipped_captions(client, backend_services, human):
    job = wait_job(client, client.caption("demo-human", "sim-noisy-words"))
    assert job["state"] == "done"
    from backend.stages.captions import cached_captions

    computed = cached_captions(human, "sim-noisy-words", backend_services.store)
    assert computed == list(human.captions["sim-noisy-words"])


@pytest.mark.slow
def test_embed_captions_with_real_minilm(client, backend_services, human):
    model = "sentence-transformers/all-MiniLM-L6-v2"
    job = wait_job(client, client.embed_captions("demo-human", model, "reference"))
    assert job["state"] == "done" and job["result"]["dim"] == 384 and job["result"]["n"] == human.n_stimuli
    from backend.stages.embeddings import embed_texts_cached

    class NoModels:
        def get(self, model_id):
            raise AssertionError("the cache should have answered")

    vectors = embed_texts_cached(list(human.stimuli.captions), model, store=backend_services.store, pool=NoModels())
    direct = backend_services.pool.get(model).embed(list(human.stimuli.captions[:5]))
    np.testing.assert_allclose(vectors[:5], direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)


@pytest.mark.slow
def test_generate_reconstructions_with_the_scene_renderer(client, human):
    from backend.data.demo import scenes

    rows = [int(i) for i in human.stimuli.indices("test")[:3]]
    job = wait_job(client, client.generate_images("demo-human", "sim-scene-renderer", ["reference", "sim-one-object"], rows))
    assert job["state"] == "done" and job["result"]["images"] == 6
    items = {r["source"]: r for r in client.reconstructions("demo-human", rows[0], "sim-scene-renderer")}
    assert items["reference"]["present"] and items["sim-one-object"]["present"]
    image = np.asarray(Image.open(io.BytesIO(client.output_image(items["reference"]["key"]))).convert("RGB"))
    expected = scenes.render(scenes.interpret(human.stimuli.captions[rows[0]]), 256, jitter=0)  # seed 0
    np.testing.assert_array_equal(image, expected)
    assert not items.get("sim-noisy-words", {"present": False})["present"], "only the asked sources were generated"


@pytest.mark.slow
def test_encoding_job_and_its_maps(client, human):
    model = "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(BackendError) as missing:
        client.encoding_map("demo-human", "sim-one-object", model)
    assert missing.value.status == 404 and "fit one first" in str(missing.value)
    job = wait_job(client, client.encode("demo-human", "sim-one-object", model))
    assert job["state"] == "done" and set(job["result"]["r_by_region"]) == {"EVC", "animate", "food", "place", "caption"}
    r = client.encoding_map("demo-human", "sim-one-object", model)
    assert r.shape == (human.n_units,) and np.isfinite(r).all()
    assert job["result"]["mean_r"] == pytest.approx(float(r.mean()), abs=1e-3)
    fraction = client.encoding_map("demo-human", "sim-one-object", model, part="fraction_of_ceiling")
    outside = human.space.roi_labels == 0  # no planted signal: a zero noise ceiling, so no fraction
    assert np.isnan(fraction[outside]).all() and np.isfinite(fraction[~outside]).all()
    with pytest.raises(BackendError) as bad:
        client.encode("demo-human", "tiny/never-run", model)
    assert bad.value.status == 404


@pytest.mark.slow
def test_decode_job_gives_test_stimuli_a_caption_from_the_brain(client, human):
    model = "sentence-transformers/all-MiniLM-L6-v2"
    test_row = int(human.stimuli.indices("test")[0])
    train_row = int(human.stimuli.indices("train")[0])
    with pytest.raises(BackendError) as before:
        client.decoded("demo-human", test_row)
    assert before.value.status == 404
    job = wait_job(client, client.decode("demo-human", "reference", model))
    assert job["state"] == "done" and 0.5 < job["result"]["two_way"] <= 1
    decoded = client.decoded("demo-human", test_row)
    training_captions = {human.stimuli.captions[i] for i in human.stimuli.indices("train")}
    assert decoded["caption"] in training_captions, "retrieved from the held-out corpus"
    assert -1 <= decoded["similarity"] <= 1
    with pytest.raises(BackendError, match="test stimuli only"):
        client.decoded("demo-human", train_row)

    # A corpus the user supplies: every decoded caption comes from it; the training-caption
    # decoding stays as it was.
    corpus = ["a large dog to the left of a small car on a beach", "a small apple under a night sky", "  ", "a large tree in a desert"]
    job = wait_job(client, client.decode("demo-human", "reference", model, corpus=corpus))
    assert job["state"] == "done" and job["result"]["corpus"] == "user corpus" and job["result"]["corpus_size"] == 3
    from_corpus = client.decoded("demo-human", test_row, corpus=job["result"]["corpus_id"])
    assert from_corpus["caption"] in corpus and from_corpus["corpus"] == "user corpus"
    assert client.decoded("demo-human", test_row) == decoded
    with pytest.raises(BackendError) as unknown:
        client.decoded("demo-human", test_row, corpus="0" * 64)
    assert unknown.value.status == 404 and "from corpus" in str(unknown.value)
    with pytest.raises(BackendError) as tiny:
        client.decode("demo-human", "reference", model, corpus=["only one"])
    assert tiny.value.status == 422 and "corpus" in str(tiny.value)

    # The reconstruction from the brain: an image generated from the decoded caption.
    before = {r["source"]: r for r in client.reconstructions("demo-human", test_row, "sim-scene-renderer")}
    assert before["decoded from the brain"]["caption"] == decoded["caption"] and not before["decoded from the brain"]["present"]
    assert "decoded from the brain" not in {r["source"] for r in client.reconstructions("demo-human", train_row, "sim-scene-renderer")}
    job = wait_job(client, client.generate_images("demo-human", "sim-scene-renderer", [], [test_row, train_row], with_decoded=True))
    assert job["state"] == "done" and job["result"]["images"] == 1, "only the test stimulus has a decoded caption"
    after = {r["source"]: r for r in client.reconstructions("demo-human", test_row, "sim-scene-renderer")}
    assert after["decoded from the brain"]["present"]


@pytest.mark.slow
def test_text_to_brain_predicts_with_the_fitted_encoding_model(client, backend_services, human):
    model = "sentence-transformers/all-MiniLM-L6-v2"
    job = wait_job(client, client.encode("demo-human", "reference", model))
    assert job["state"] == "done"
    sentence = human.stimuli.captions[0]
    predicted = client.text_to_brain("demo-human", sentence, "reference", model)
    from backend.stages.encoding import cached_encoding

    fit = cached_encoding(human, "reference", model, store=backend_services.store)
    embedding = backend_services.pool.get(model).embed([sentence])
    np.testing.assert_allclose(predicted, fit.predict(embedding)[0], rtol=1e-4, atol=1e-5)
    other = client.text_to_brain("demo-human", "a large pizza above a small train in a desert", "reference", model)
    assert predicted.shape == other.shape == (human.n_units,) and not np.allclose(predicted, other)
    with pytest.raises(BackendError) as empty:
        client.text_to_brain("demo-human", "", "reference", model)
    assert empty.value.status == 422


@pytest.mark.slow
def test_compare_captioners_job_gives_one_row_per_source(client):
    model = "sentence-transformers/all-MiniLM-L6-v2"
    sources = ["reference", "sim-one-object"]
    job = wait_job(client, client.compare_captioners("demo-human", model, "sim-scene-renderer", sources), timeout=300)
    assert job["state"] == "done", job
    rows = {row["source"]: row for row in job["result"]["rows"]}
    assert set(rows) == set(sources)
    for row in rows.values():
        assert -1 <= row["pixcorr"] <= 1 and -1 <= row["ssim"] <= 1 and 0 <= row["two_way"] <= 1
    assert rows["reference"]["encoding_r"] > rows["sim-one-object"]["encoding_r"]


@pytest.mark.slow
def test_rsa_job_compares_every_region_with_every_source(client, human):
    job = wait_job(client, client.rsa("demo-human", "sentence-transformers/all-MiniLM-L6-v2", ["reference", "sim-one-object"]))
    assert job["state"] == "done", job
    rows = job["result"]["rows"]
    assert {(r["region"], r["source"]) for r in rows} == {
        (region, source) for region in ("EVC", "animate", "food", "place", "caption") for source in ("reference", "sim-one-object")
    }
    assert all(-1 <= r["mean"] <= 1 and r["sd"] >= 0 for r in rows)
    caption = {r["source"]: r["mean"] for r in rows if r["region"] == "caption"}
    assert caption["reference"] > caption["sim-one-object"], "the caption region's geometry follows whole captions"
    again = wait_job(client, client.rsa("demo-human", "sentence-transformers/all-MiniLM-L6-v2", ["reference", "sim-one-object"]))
    assert again["result"]["rows"] == rows and again["elapsed_s"] < job["elapsed_s"], "read from the store"


def test_rdms_of_a_region_and_a_caption_model(client, human):
    from backend.analysis.rsa import compare_rdms, rdm

    model = "sentence-transformers/all-MiniLM-L6-v2"
    pair = client.rdms("demo-human", "caption", "reference", model, n=20)
    order = np.asarray(pair["stimuli"])
    test = human.stimuli.indices("test")
    assert sorted(order) == sorted(test[:20]), "the first test stimuli, reordered"
    brain, text = np.asarray(pair["brain"]), np.asarray(pair["model"])
    assert brain.shape == text.shape == (20, 20)
    np.testing.assert_allclose(brain, brain.T, atol=1e-4)
    np.testing.assert_allclose(np.diag(brain), 0, atol=1e-6)
    caption = human.space.roi_labels == list(human.space.roi_names).index("caption")
    expected = rdm(np.asarray(human.responses)[order][:, caption])
    np.testing.assert_allclose(brain, expected, atol=1e-4)
    assert pair["spearman"] == pytest.approx(compare_rdms(brain, text), abs=1e-3)  # order does not change it
    for bad, status in ((dict(region="V9"), 404), (dict(region="caption", source="tiny/never-run"), 404), (dict(region="caption", n=1), 422)):
        with pytest.raises(BackendError) as info:
            client.rdms("demo-human", **{"source": "reference", "embedder": model, **bad})
        assert info.value.status == status, bad


@pytest.mark.slow
def test_controls_job_and_difference_map(client, human):
    model = "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(BackendError) as before:  # no other test runs controls on one-object captions
        client.control_difference("demo-human", "word-average", "sim-one-object", model)
    assert before.value.status == 404 and "controls job" in str(before.value)
    job = wait_job(client, client.controls("demo-human", "sim-objects-only", model), timeout=300)
    assert job["state"] == "done", job
    summary = job["result"]["controls"]
    assert set(summary) == {"word-average", "nouns", "verbs"}
    assert summary["verbs"]["captions_with_words"] == 0, "the demo grammar has no verbs"
    assert summary["nouns"]["captions_with_words"] == 1
    assert set(summary["word-average"]["regions"]) == {"EVC", "animate", "food", "place", "caption"}
    difference = client.control_difference("demo-human", "word-average", "sim-objects-only", model)
    assert difference.shape == (human.n_units,)
    assert float(np.nanmean(difference)) == pytest.approx(summary["word-average"]["mean_difference"], abs=1e-4)
    with pytest.raises(BackendError) as bad:
        client.control_difference("demo-human", "adverbs", "sim-objects-only", model)
    assert bad.value.status == 422
