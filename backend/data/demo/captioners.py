"""Simulated captioners of graded quality, so the captioner comparison has something true to find.

Best first:
    sim-reference     the reference caption itself
    sim-objects-only  every object named, nothing else          "a dog and a car"
    sim-one-object    only the largest object (first if tied)    "a dog"
    sim-noisy-words   the reference with each content slot (object name, size, relation,
                      background) swapped for another word of the same kind with probability
                      ``rate`` (0.7): fluent, parseable, and wrong about most of the scene

The first three say only true things and say less and less; the noisy one says as much as the
reference but most of it is false, including most object names, which is what the simulated
brain's category-selective regions respond to. The rate is set so the planted order holds for
encoding accuracy too: with MiniLM on the default world, mean test r over the planted regions is
0.60 / 0.38 / 0.22 / 0.16 down this list (at rate 0.5 the noisy captioner, 0.28, beat one-object). Outputs depend only on the captioner,
the scene and the seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from backend.data.demo import pictograms
from backend.data.demo.scenes import (
    BACKGROUNDS, RELATIONS_2, RELATIONS_3, SIZES, Scene, SceneObject, caption, list_phrase,
    noun_phrase,
)

#: Default probability that sim-noisy-words replaces each content slot. High enough that the
#: captioner is plainly the worst by what it tells of a scene: at 0.7 a two-object caption still
#: carries 0.6 right object names and the right background 40% of the time, about what the
#: one-object captioner gives, so the planted order was a near tie on reconstructions.
NOISY_WORD_RATE = 0.9


@dataclass(frozen=True)
class CaptionerSpec:
    id: str
    label: str
    description: str


SIMULATED_CAPTIONERS: tuple[CaptionerSpec, ...] = (
    CaptionerSpec("sim-reference", "Reference (simulated)",
                  "The demo world's true caption: objects, sizes, relation and background."),
    CaptionerSpec("sim-objects-only", "Objects only (simulated)",
                  "Names every object and nothing else: no sizes, relation or background."),
    CaptionerSpec("sim-one-object", "One object (simulated)",
                  "Names only the largest object (the first one if tied)."),
    CaptionerSpec("sim-noisy-words", "Noisy words (simulated)",
                  f"The true caption with each object name, size, relation and background "
                  f"replaced by another at random ({NOISY_WORD_RATE:.0%} of them)."),
)
CAPTIONER_IDS: tuple[str, ...] = tuple(s.id for s in SIMULATED_CAPTIONERS)


def _objects_only(scene: Scene) -> str:
    return list_phrase([noun_phrase(o, with_size=False) for o in scene.objects])


def _one_object(scene: Scene) -> str:
    # max() keeps the first of equals, so a tie goes to the first-named object.
    largest = max(scene.objects, key=lambda o: SIZES.index(o.size))
    return noun_phrase(largest, with_size=False)


def _noisy(scene: Scene, rng: np.random.Generator, rate: float) -> str:
    def swap(current: str, options: tuple[str, ...] | list[str]) -> str:
        others = [o for o in options if o != current]
        if not others or rng.random() >= rate:
            return current
        return others[int(rng.integers(len(others)))]

    # A replaced name is never one already in the scene, so the result still has distinct objects.
    used = {o.category for o in scene.objects}
    objects = []
    for o in scene.objects:
        name = swap(o.category, [n for n in pictograms.NAMES if n not in used])
        used.add(name)
        objects.append(SceneObject(name, swap(o.size, SIZES)))
    relation = scene.relation
    if relation is not None:
        relation = swap(relation, RELATIONS_2 if len(objects) == 2 else RELATIONS_3)
    background = swap(scene.background, tuple(BACKGROUNDS))
    return caption(Scene(tuple(objects), relation, background))


def simulated_caption(captioner_id: str, scene: Scene, seed: int, *,
                      rate: float = NOISY_WORD_RATE) -> str:
    """The caption the simulated captioner ``captioner_id`` writes for ``scene``.

    Deterministic in (captioner_id, scene, seed, rate); ``rate`` only affects sim-noisy-words.
    Raises ValueError naming the valid ids for an unknown captioner.
    """
    if captioner_id not in CAPTIONER_IDS:
        raise ValueError(f"unknown simulated captioner {captioner_id!r}; "
                         f"expected one of {list(CAPTIONER_IDS)}")
    if captioner_id == "sim-reference":
        return caption(scene)
    if captioner_id == "sim-objects-only":
        return _objects_only(scene)
    if captioner_id == "sim-one-object":
        return _one_object(scene)
    # Seeded by the scene's own caption too, so each scene gets its own noise under one seed.
    rng = np.random.default_rng([seed % (1 << 64), zlib.crc32(caption(scene).encode()),
                                 zlib.crc32(captioner_id.encode())])
    return _noisy(scene, rng, rate)
