"""The demo world: pictogram scenes, a simulated human and a simulated mouse, generated from a seed.

``ensure_demo_world()`` writes two datasets into the cache on first use, ``demo-human`` (fsaverage5
surface) and ``demo-mouse`` (neurons in six visual areas), sharing the same stimuli and captions.
Both are ordinary dataset folders (see :mod:`backend.data.folder`) with their planted truth in
``truth.npz``. Everything follows from the seed: the same seed gives the same bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from backend.cache import atomic_directory
from backend.config import datasets_dir, demo_world_size
from backend.data.demo import captioners, pictograms, scenes
from backend.data.demo.features import contrast_energy_grid
from backend.data.demo.human import HUMAN_TRUTH_DESCRIPTIONS, ROI_NAMES, simulate_human
from backend.data.demo.mouse import CELL_TYPES, MOUSE_AREAS, MOUSE_TRUTH_DESCRIPTIONS, area_outline, simulate_mouse
from backend.data.folder import FORMAT, MANIFEST

DEMO_IDS = ("demo-human", "demo-mouse")
DEFAULT_SEED = 0
IMAGE_SIZE = 256
CONTRAST_GRID = 16
#: Bumped whenever the generator changes what it writes, so stale caches are not reused.
GENERATOR_VERSION = 4

Progress = Callable[[str, float], None]


def ensure_demo_world(
    seed: int = DEFAULT_SEED,
    *,
    root: Path | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    neurons_per_area: int = 250,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Generate the demo datasets if they are not in the cache yet; return id -> folder.

    Sizes default to :func:`backend.config.demo_world_size`. Safe to call from several processes
    at once: one generates, the others wait for it.
    """
    root = Path(root) if root is not None else datasets_dir()
    default_train, default_test = demo_world_size()
    n_train = default_train if n_train is None else n_train
    n_test = default_test if n_test is None else n_test
    root.mkdir(parents=True, exist_ok=True)
    folders = {name: root / demo_folder_name(name, seed, n_train, n_test) for name in DEMO_IDS}
    if all(_complete(f) for f in folders.values()):
        return folders
    with _lock(root / ".demo-world.lock"):
        if not all(_complete(f) for f in folders.values()):
            for stale in folders.values():
                if stale.exists() and not _complete(stale):
                    shutil.rmtree(stale)
            generate_demo_world(
                folders, seed=seed, n_train=n_train, n_test=n_test, neurons_per_area=neurons_per_area, progress=progress
            )
    return folders


def demo_folder_name(dataset_id: str, seed: int, n_train: int, n_test: int) -> str:
    """The default world is stored under the plain id; others under names that say what they are."""
    if (seed, n_train, n_test) == (DEFAULT_SEED, 1000, 100):
        return dataset_id
    return f"{dataset_id}-s{seed}-{n_train}x{n_test}"


def generate_demo_world(
    folders: dict[str, Path],
    *,
    seed: int,
    n_train: int,
    n_test: int,
    neurons_per_area: int,
    progress: Progress | None = None,
) -> None:
    """Write the demo datasets into ``folders`` (id -> path; paths must not exist)."""
    report = progress or (lambda stage, fraction: None)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)

    report("composing scenes", 0.0)
    scene_list, splits = _sample_scenes(rng, n_train, n_test)
    n = len(scene_list)
    references = [scenes.caption(s) for s in scene_list]

    report("rendering images", 0.02)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, scene in enumerate(scene_list):
        images[i] = scenes.render(scene, IMAGE_SIZE, jitter=seed * 1_000_003 + i)
        if i % 100 == 0:
            report("rendering images", 0.02 + 0.38 * i / n)
    contrast = contrast_energy_grid(images, CONTRAST_GRID)
    categories = _category_features(scene_list)

    report("embedding captions with MiniLM", 0.4)
    from backend.models.text_embedding import embed_texts

    caption_embeddings = embed_texts(references)
    residuals = _relation_residuals(references, caption_embeddings, embed_texts)

    report("simulating the human subject", 0.55)
    trial_stimuli = np.flatnonzero(np.asarray(splits) == "test").astype(np.int64)
    human = simulate_human(contrast, categories, caption_embeddings, residuals, trial_stimuli, np.random.default_rng([seed, 1]))
    report("simulating the mouse", 0.7)
    mouse = simulate_mouse(
        contrast, categories, caption_embeddings, trial_stimuli, np.random.default_rng([seed, 2]), per_area=neurons_per_area
    )

    # The same call the simulated captioners make when run as a job (seed 0), so the captions
    # shipped with the world and those a job computes agree.
    captions = {
        spec.id: [captioners.simulated_caption(spec.id, s, 0) for s in scene_list] for spec in captioners.SIMULATED_CAPTIONERS
    }
    stimuli = [
        {
            "id": f"demo-{i:04d}",
            "image": f"images/demo-{i:04d}.png",
            "caption": references[i],
            "split": splits[i],
            "category": scene_list[i].objects[0].category,
            "group": pictograms.category(scene_list[i].objects[0].category).group,
        }
        for i in range(n)
    ]
    common = {
        "format": FORMAT,
        "simulated": True,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "stimuli": stimuli,
        "responses": "responses.npy",
        "trials": {"file": "trials.npy", "stimuli": "trial_stimuli.npy"},
        "noise_ceiling": "noise_ceiling.npy",
        "captions": "captions.json",
        "captioners": [
            {"id": spec.id, "label": spec.label, "description": spec.description, "simulated": True}
            for spec in captioners.SIMULATED_CAPTIONERS
        ],
        "attribution": "Stimuli composed of OpenMoji pictograms (CC BY-SA 4.0), see assets/OPENMOJI-ATTRIBUTION.md",
    }

    report("writing datasets", 0.85)
    human_manifest = dict(
        common,
        id="demo-human",
        name="Demo world: simulated human (fsaverage5)",
        description=(
            "A simulated fMRI subject on both fsaverage5 hemispheres viewing pictogram scenes. Planted regions: "
            "EVC (retinotopic contrast), animate, food, place (ventral temporal) and caption (MiniLM meaning)."
        ),
        unit_space={"kind": "surface", "mesh": "fsaverage5", "rois": "rois.npy", "roi_names": list(ROI_NAMES)},
        truth={"file": "truth.npz", "maps": HUMAN_TRUTH_DESCRIPTIONS},
    )
    mouse_manifest = dict(
        common,
        id="demo-mouse",
        name="Demo world: simulated mouse (6 visual areas)",
        description=(
            f"{len(mouse['neurons']['area'])} simulated neurons in VISp, VISl, VISrl, VISal, VISpm and VISam; "
            "low-level drive strongest in VISp, semantic drive growing along the hierarchy."
        ),
        unit_space={
            "kind": "neurons",
            "units": "neurons.npz",
            "areas": list(MOUSE_AREAS),
            "cell_types": list(CELL_TYPES),
            "area_outlines": {name: area_outline(name).round(4).tolist() for name in MOUSE_AREAS},
        },
        truth={"file": "truth.npz", "maps": MOUSE_TRUTH_DESCRIPTIONS},
    )
    pngs = [_png_bytes(image) for image in images]
    for dataset_id, manifest, sim, extra in (
        ("demo-human", human_manifest, human, {"rois.npy": human["roi_labels"]}),
        ("demo-mouse", mouse_manifest, mouse, {}),
    ):
        final = folders[dataset_id]
        if _complete(final):
            continue
        with atomic_directory(final) as scratch:
            (scratch / "images").mkdir()
            for stimulus, png in zip(stimuli, pngs, strict=True):
                (scratch / stimulus["image"]).write_bytes(png)
            np.save(scratch / "responses.npy", sim["responses"])
            np.save(scratch / "trials.npy", sim["trials"])
            np.save(scratch / "trial_stimuli.npy", trial_stimuli)
            np.save(scratch / "noise_ceiling.npy", sim["noise_ceiling"])
            _save_npz(scratch / "truth.npz", sim["truth"])
            if "neurons" in sim:
                _save_npz(scratch / "neurons.npz", sim["neurons"])
            for name, array in extra.items():
                np.save(scratch / name, array)
            (scratch / "captions.json").write_text(json.dumps(captions, indent=0))
            # The manifest is written last: a folder without one is never listed as a dataset.
            (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1))
    report(f"done in {time.perf_counter() - started:.1f} s", 1.0)


def _sample_scenes(rng: np.random.Generator, n_train: int, n_test: int) -> tuple[list, list[str]]:
    """Scenes with unique captions, so a test caption never appears among training captions."""
    chosen, seen = [], set()
    while len(chosen) < n_train + n_test:
        scene = scenes.sample_scene(rng)
        text = scenes.caption(scene)
        if text not in seen:
            seen.add(text)
            chosen.append(scene)
    splits = ["train"] * n_train + ["test"] * n_test
    order = rng.permutation(len(chosen))  # interleave test stimuli among training ones
    return [chosen[i] for i in order], [splits[i] for i in order]


def _category_features(scene_list) -> np.ndarray:
    """float32 [n, 3]: how many objects are animate, food, and place-like (buildings, vehicles)."""
    out = np.zeros((len(scene_list), 3), np.float32)
    for i, scene in enumerate(scene_list):
        for obj in scene.objects:
            cat = pictograms.category(obj.category)
            out[i, 0] += cat.animate
            out[i, 1] += cat.food
            out[i, 2] += cat.group in ("buildings", "vehicles")
    return out


def _relation_residuals(captions: list[str], embeddings: np.ndarray, embed) -> np.ndarray:
    """float32 [n, d]: what of each caption's embedding a linear map of its mean word embedding misses.

    Word order (who is left of whom) does not change the mean of the word embeddings, so the
    residual carries the caption-level meaning that bag-of-words models cannot.
    """
    tokenised = [c.lower().rstrip(".").split() for c in captions]
    vocabulary = sorted({w for words in tokenised for w in words})
    vectors = dict(zip(vocabulary, embed(vocabulary), strict=True))
    word_means = np.stack([np.mean([vectors[w] for w in words], axis=0) for words in tokenised]).astype(np.float64)
    design = np.hstack([word_means, np.ones((len(word_means), 1))])
    coef, *_ = np.linalg.lstsq(design, embeddings.astype(np.float64), rcond=None)
    return (embeddings - design @ coef).astype(np.float32)


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # np.savez stamps zip entries with the current time; fixed timestamps keep the bytes reproducible.
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, buffer.getvalue())


def _complete(folder: Path) -> bool:
    if not (folder / MANIFEST).is_file():
        return False
    with contextlib.suppress(OSError, ValueError):
        return json.loads((folder / MANIFEST).read_text()).get("generator_version") == GENERATOR_VERSION
    return False


@contextlib.contextmanager
def _lock(path: Path):
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
