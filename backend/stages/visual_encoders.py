"""Stage: visual encoders trained toward language, and which brain regions prefer them.

For one dataset, three networks of the same architecture (see :mod:`backend.models.visual_encoders`):

    language   trained on the dataset's training images toward the caption source's embeddings by
               the text embedder (cosine, InfoNCE, or both)
    category   trained on the same images toward their multi-hot category labels (the control)
    untrained  the same network with the weights its seed gives (the other control)

Each network's features (penultimate and embedding layers) of every stimulus go through the encoding
stage (ridge per unit fitted on the training stimuli, r on the test stimuli, fraction of the noise
ceiling) and the RSA stage (per region or mouse area, over subsets of the *test* stimuli, which no
network has seen), beside the caption embeddings themselves (the row "text"), so one table compares
them. Trained weights are cached in the content-addressed store by the training data, the
configuration and the seed (written once, after the last step: a cancelled job leaves nothing);
features, encoding fits and the table are cached after them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from backend.cache import Store, array_from_npy, array_to_npy, entry_key
from backend.data.schema import Dataset
from backend.models import visual_encoders as ve
from backend.models.device import Cancelled, pick_device
from backend.models.registry import get_model
from backend.models.weights import fingerprint
from backend.stages.embeddings import embed_texts_cached
from backend.stages.encoding import (
    _complete_captions, cached_feature_encoding, dataset_fingerprint, fit_encoding, fit_feature_encoding, region_summary,
    unit_regions,
)
from backend.stages.inputs import image_hashes, load_images, text_hash
from backend.stages.rsa import region_rsa

STAGE = "visual-encoders"
NETWORKS = ("language", "category", "untrained")
#: The table's row for the caption embeddings themselves.
TEXT = "text"
LANGUAGE_OBJECTIVES = ("cosine", "infonce", "cosine+infonce")

Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    """What a comparison depends on besides the dataset.

    source, embedder: the captions (reference or a captioner's) and the text embedder whose
                      embeddings the language network is trained toward (and the "text" row)
    backbone:         "cnn", or the id of a registered CLIP-vision image embedder (frozen, with a
                      trained head)
    objective:        the language network's loss (cosine, infonce, cosine+infonce)
    """

    source: str = "reference"
    embedder: str = "sentence-transformers/all-MiniLM-L6-v2"
    backbone: str = "cnn"
    objective: str = "cosine"
    input_size: int = 64
    epochs: int = ve.EncoderConfig.epochs
    alignment_weight: float = 1.0
    seed: int = 0
    n_subsets: int = 20
    subset_size: int = 100

    def __post_init__(self) -> None:
        if self.objective not in LANGUAGE_OBJECTIVES:
            raise ValueError(f"objective must be one of {LANGUAGE_OBJECTIVES}, got {self.objective!r}")
        network_config(self, "language")  # the network's own checks (input size, epochs)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def network_config(settings: Settings, network: str) -> ve.EncoderConfig:
    """The :class:`EncoderConfig` of one of the three networks under ``settings``."""
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    backbone = "cnn" if settings.backbone == "cnn" else "tower"
    config = ve.EncoderConfig(backbone=backbone, objective=settings.objective, input_size=settings.input_size,
                              epochs=settings.epochs, alignment_weight=settings.alignment_weight)
    if network == "category":
        return replace(config, objective="category")
    if network == "untrained":
        return replace(config, epochs=0)
    return config


def check_backbone(backbone: str) -> None:
    """ValueError (one line) unless ``backbone`` is "cnn" or a registered CLIP-vision image tower."""
    if backbone == "cnn":
        return
    spec = get_model(backbone)  # UnknownModel for an unknown id
    if spec.architecture != "clip-vision":
        raise ValueError(f"backbone must be \"cnn\" or a CLIP-vision image embedder; {backbone} is a {spec.architecture}")


def check_categories(ds: Dataset) -> None:
    """ValueError (one line) if the training stimuli carry no categories (the category control needs them)."""
    train = ds.stimuli.indices("train")
    try:
        ve.category_targets([ds.stimuli.categories[i] for i in train])
    except ValueError:
        raise ValueError(f"dataset {ds.id!r} has no stimulus categories; the category-trained control needs them "
                         f"(leave it out of the networks)") from None


# ------------------------------------------------------------------------------ the networks


def _targets(ds: Dataset, network: str, settings: Settings, store: Store, pool, cancel) -> tuple[np.ndarray, str]:
    """(float32 [n_train, d] training targets, a hash of them): caption embeddings or multi-hot labels."""
    train = ds.stimuli.indices("train")
    if network == "category":
        check_categories(ds)
        labels, names = ve.category_targets([ds.stimuli.categories[i] for i in train])
        return labels, text_hash(json.dumps(names)) + hashlib.sha256(labels.tobytes()).hexdigest()
    captions = _complete_captions(ds, settings.source, store)
    embeddings = embed_texts_cached([captions[i] for i in train], settings.embedder, store=store, pool=pool, cancel=cancel)
    return embeddings, hashlib.sha256(np.ascontiguousarray(embeddings, np.float32).tobytes()).hexdigest()


def weights_key(ds: Dataset, network: str, settings: Settings, targets_hash: str) -> str:
    """The trained network's store key: its training images (content), targets, configuration,
    backbone (with the tower's fingerprint) and seed."""
    train = ds.stimuli.indices("train")
    hashes = image_hashes(ds)
    tower = None if settings.backbone == "cnn" else fingerprint(get_model(settings.backbone))
    return entry_key(stage=STAGE, part="weights", version=ve.VERSION, config=network_config(settings, network).to_dict(),
                     backbone=settings.backbone, tower=tower, seed=settings.seed, targets=targets_hash,
                     images=hashlib.sha256("".join(hashes[i] for i in train).encode()).hexdigest())


def _tower(settings: Settings, pool):
    return None if settings.backbone == "cnn" else ve.FrozenTower(pool.get(settings.backbone))


def _images(ds: Dataset, rows, side: int):
    return ve.images_tensor(load_images(ds, rows), side)


def trained_network(
    ds: Dataset, network: str, settings: Settings, *, store: Store, pool, device: str | None = None,
    report: Report | None = None, cancel: Callable[[], bool] | None = None,
) -> tuple[ve.VisualEncoder, dict, str]:
    """(model in eval mode, training record, weights key): read from the store, or trained on the
    training stimuli and then stored in one write (nothing is written if cancelled)."""
    say = report or (lambda done, total, message: None)
    targets, targets_hash = _targets(ds, network, settings, store, pool, cancel)
    key = weights_key(ds, network, settings, targets_hash)
    tower = _tower(settings, pool)
    with store.compute_once(key):
        found = store.get(key)
        if found is not None:
            model, record = ve.encoder_from_bytes(found[1], tower)
            return model, {**record, "cached": True}, key
        config = network_config(settings, network)
        model = ve.build_encoder(config, targets.shape[1], settings.seed, tower)
        device = device or pick_device()
        train = ds.stimuli.indices("train")
        say(0, 1, f"{network} network: loading {len(train)} training images")
        images = _images(ds, train, model.side)
        record = ve.train_encoder(
            model, images, targets, seed=settings.seed, device=device, cancel=cancel,
            report=lambda done, total, message: say(done, total, f"{network} network: {message}"),
        )
        model.to("cpu")
        store.put(key, "safetensors", ve.encoder_to_bytes(model, record))
        return model, {**record, "cached": False}, key


def network_features(
    ds: Dataset, network: str, settings: Settings, *, store: Store, pool, device: str | None = None,
    report: Report | None = None, cancel: Callable[[], bool] | None = None,
) -> tuple[dict[str, np.ndarray], dict, str]:
    """({layer: float32 [n_stimuli, d]} for every stimulus, training record, weights key); cached."""
    model, record, key = trained_network(ds, network, settings, store=store, pool=pool, device=device, report=report, cancel=cancel)
    keys = {layer: entry_key(stage=STAGE, part="features", weights=key, layer=layer, images=text_hash("".join(image_hashes(ds))))
            for layer in ve.LAYERS}
    found = store.get_many(list(keys.values()))
    if all(k in found for k in keys.values()):
        return {layer: array_from_npy(found[k][1]) for layer, k in keys.items()}, record, key
    if report:
        report(0, 1, f"{network} network: features of {ds.n_stimuli} stimuli")
    features = ve.encoder_features(model, _images(ds, range(ds.n_stimuli), model.side), device=device or pick_device())
    store.put_many({keys[layer]: ("npy", array_to_npy(features[layer])) for layer in ve.LAYERS})
    return features, record, key


def feature_set_id(weights: str, layer: str) -> str:
    """The id under which a network layer's encoding fit is stored."""
    return f"{STAGE}:{weights}:{layer}"


# ------------------------------------------------------------------------------ comparison


def comparison_key(ds: Dataset, networks: tuple[str, ...], settings: Settings) -> str:
    return entry_key(stage=STAGE, part="comparison", version=ve.VERSION, dataset=dataset_fingerprint(ds),
                     networks=list(networks), settings=settings.to_dict(),
                     embedder_revision=fingerprint(get_model(settings.embedder)))


def cached_comparison(ds: Dataset, networks, settings: Settings, store: Store) -> dict | None:
    text = store.get_text(comparison_key(ds, tuple(networks), settings))
    return None if text is None else json.loads(text)


def compare_visual_encoders(
    ds: Dataset,
    networks=NETWORKS,
    settings: Settings = Settings(),
    *,
    store: Store,
    pool,
    device: str | None = None,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Train (or read) the chosen networks and compare them with the caption embeddings, per region.

    Returns {"settings", "networks", "training": {network: record}, "regions": [...], "rows": [{"network",
    "layer", "region", "encoding_r" (mean test r over the region's units), "fraction_of_ceiling",
    "rsa_mean", "rsa_sd" (Spearman RDM correlation over subsets of test stimuli)}], "feature_sets":
    {network: {layer: id}}}; the "text" rows are the caption embeddings (layer "caption embedding").
    """
    networks = tuple(dict.fromkeys(networks))
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown or not networks:
        raise ValueError(f"networks must be some of {NETWORKS}, got {list(networks)}")
    if "category" in networks:
        check_categories(ds)
    if settings.backbone != "cnn":
        check_backbone(settings.backbone)
    key = comparison_key(ds, networks, settings)
    cached = store.get_text(key)
    if cached is not None:
        return json.loads(cached)
    say = report or (lambda done, total, message: None)
    started = time.perf_counter()
    labels, names = unit_regions(ds)
    test = ds.stimuli.indices("test")
    captions = _complete_captions(ds, settings.source, store)

    layers: dict[tuple[str, str], np.ndarray] = {}
    training, feature_sets, rows = {}, {}, []
    for network in networks:
        features, record, weights = network_features(ds, network, settings, store=store, pool=pool, device=device,
                                                     report=say, cancel=cancel)
        training[network] = {k: v for k, v in record.items() if k != "epoch_seconds"} | {
            "epoch_seconds_mean": round(float(np.mean(record["epoch_seconds"])), 2) if record.get("epoch_seconds") else None}
        feature_sets[network] = {}
        for layer in ve.LAYERS:
            if cancel and cancel():
                raise Cancelled()
            fid = feature_set_id(weights, layer)
            feature_sets[network][layer] = fid
            say(0, 1, f"{network} network, {layer} layer: encoding model")
            fit = fit_feature_encoding(ds, fid, features[layer], store=store)
            layers[(network, layer)] = features[layer]
            rows += _encoding_rows(network, layer, fit, labels, names)
    say(0, 1, "text embedding: encoding model")
    text_fit = fit_encoding(ds, settings.source, settings.embedder, store=store, pool=pool, cancel=cancel)
    rows += _encoding_rows(TEXT, "caption embedding", text_fit, labels, names)
    models = {f"{network}|{layer}": v for (network, layer), v in layers.items()}
    models[f"{TEXT}|caption embedding"] = embed_texts_cached(captions, settings.embedder, store=store, pool=pool, cancel=cancel)
    say(0, 1, "RSA over subsets of the test stimuli")
    rsa = region_rsa(ds, models, stimuli=test, n_subsets=settings.n_subsets, subset_size=settings.subset_size)
    by = {(r["source"], r["region"]): r for r in rsa}
    for row in rows:
        found = by.get((f"{row['network']}|{row['layer']}", row["region"]))
        row["rsa_mean"], row["rsa_sd"] = (found["mean"], found["sd"]) if found else (None, None)
    result = {
        "dataset": ds.id, "settings": settings.to_dict(), "networks": list(networks), "training": training,
        "regions": sorted({r["region"] for r in rows}, key=[str(n) for n in names].index),
        "rows": rows, "feature_sets": feature_sets, "seconds": round(time.perf_counter() - started, 1),
        "rsa_stimuli": int(len(test)), "rsa_subset_size": int(min(settings.subset_size, len(test))),
    }
    store.put(key, "json", json.dumps(result).encode())
    store.record_run(ds.id, STAGE, settings.backbone, {"networks": list(networks), **settings.to_dict()}, len(networks), len(networks))
    say(1, 1, "done")
    return result


def _encoding_rows(network: str, layer: str, fit, labels: np.ndarray, names) -> list[dict]:
    r = region_summary(fit.r, labels, names)
    ceiling = region_summary(fit.fraction_of_ceiling, labels, names)
    return [{"network": network, "layer": layer, "region": region, "encoding_r": round(value, 4),
             "fraction_of_ceiling": None if not np.isfinite(ceiling.get(region, np.nan)) else round(ceiling[region], 4)}
            for region, value in r.items()]


def difference_map(ds: Dataset, comparison: dict, store: Store, layer: str = "penultimate", part: str = "r") -> np.ndarray:
    """float32 [n_units]: the language network's encoding ``part`` ("r" or "fraction_of_ceiling")
    minus the category network's, per unit. LookupError if either fit is not in the store."""
    if layer not in ve.LAYERS:
        raise ValueError(f"layer must be one of {ve.LAYERS}, got {layer!r}")
    if part not in ("r", "fraction_of_ceiling"):
        raise ValueError(f'part must be "r" or "fraction_of_ceiling", got {part!r}')
    sets = comparison["feature_sets"]
    if "language" not in sets or "category" not in sets:
        raise LookupError("the difference map needs both the language- and the category-trained network in the comparison")
    fits = [cached_feature_encoding(ds, sets[n][layer], store=store) for n in ("language", "category")]
    if any(f is None for f in fits):
        raise LookupError("the encoding fits of this comparison are not in the store; run its job again")
    return (getattr(fits[0], part) - getattr(fits[1], part)).astype(np.float32)


def table_lines(comparison: dict, layer: str = "penultimate") -> list[str]:
    """The comparison as a plain-text table: one line per region, mean test r and RSA (mean +- sd)
    of each network at ``layer`` and of the text embedding."""
    columns = [n for n in comparison["networks"]] + [TEXT]
    cell = {(r["network"], r["region"]): r for r in comparison["rows"] if r["layer"] in (layer, "caption embedding")}
    lines = [f"{'region':<10}" + "".join(f"{c + ' r':>14}{c + ' RSA':>18}" for c in columns)]
    for region in comparison["regions"]:
        parts = []
        for c in columns:
            row = cell.get((c, region))
            parts.append(f"{row['encoding_r']:>14.3f}{row['rsa_mean']:>11.3f} ±{row['rsa_sd']:.3f}" if row else f"{'':>32}")
        lines.append(f"{region:<10}" + "".join(parts))
    return lines
