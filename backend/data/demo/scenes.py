"""The demo world's scenes: sample one, say it in words, read the words back, draw it.

A scene is 1-3 pictogram objects, each "small" or "large", optionally related in space, on one
of a fixed set of backgrounds. The grammar of the reference caption:

    1 object:            a small dog on a beach
    2 objects:           a small dog to the left of a large car under a night sky
    3 objects:           a small dog above a large car and a small tree in a desert
                         a small dog between a large car and a small tree at sunset
    no stated relation:  a small dog and a large car on a beach   /   a dog, a car and a tree ...

With three objects the relation holds between the first object and the other two (which stand
together), except "between", which puts the first object between the second (left) and the
third (right). ``relation=None`` with several objects means "no relation stated"; the sampler
never draws it, but :func:`interpret` produces it for captions that only list objects.

:func:`caption` and :func:`parse` are exact inverses; :func:`interpret` is the forgiving reader
used when the renderer stands in for a text-to-image model. :func:`render` draws a scene with
the relation made literal (left of is left, above is above, in front of overlaps and occludes).
"""

from __future__ import annotations

import functools
import re
import types
from dataclasses import dataclass

import numpy as np

from backend.data.demo import pictograms

SIZES: tuple[str, ...] = ("small", "large")
#: Relations between two objects, and between the first of three and the other two.
RELATIONS_2: tuple[str, ...] = (
    "to the left of", "to the right of", "above", "below", "in front of", "behind",
)
RELATIONS_3: tuple[str, ...] = ("to the left of", "to the right of", "above", "below", "between")
RELATIONS: tuple[str, ...] = tuple(dict.fromkeys(RELATIONS_2 + RELATIONS_3))
#: Background name -> the phrase that ends a caption.
BACKGROUNDS: types.MappingProxyType[str, str] = types.MappingProxyType({
    "grassy field": "in a grassy field",
    "night sky": "under a night sky",
    "beach": "on a beach",
    "snowy landscape": "in a snowy landscape",
    "city street": "on a city street",
    "white background": "on a plain white background",
    "desert": "in a desert",
    "sunset": "at sunset",
})
#: How often sample_scene draws 1, 2 and 3 objects.
OBJECT_COUNT_P: tuple[float, float, float] = (0.3, 0.4, 0.3)


@dataclass(frozen=True)
class SceneObject:
    category: str  # a pictograms.NAMES entry
    size: str  # a SIZES entry

    def __post_init__(self) -> None:
        pictograms.category(self.category)
        if self.size not in SIZES:
            raise ValueError(f"object size must be one of {SIZES}, got {self.size!r}")


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    relation: str | None
    background: str  # a BACKGROUNDS key

    def __post_init__(self) -> None:
        n = len(self.objects)
        if not 1 <= n <= 3:
            raise ValueError(f"a scene has 1-3 objects, got {n}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; "
                             f"expected one of {list(BACKGROUNDS)}")
        allowed = {1: (), 2: RELATIONS_2, 3: RELATIONS_3}[n]
        if self.relation is not None and self.relation not in allowed:
            raise ValueError(f"relation {self.relation!r} is not allowed with {n} object(s); "
                             f"expected one of {list(allowed) or [None]}")


# ---------------------------------------------------------------------------------- sampling


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene: 1/2/3 objects with p = OBJECT_COUNT_P, distinct categories, uniform sizes,
    relation and background."""
    n = int(rng.choice(3, p=OBJECT_COUNT_P)) + 1
    names = [pictograms.NAMES[i] for i in rng.choice(len(pictograms.NAMES), n, replace=False)]
    objects = tuple(SceneObject(c, SIZES[int(rng.integers(len(SIZES)))]) for c in names)
    relation = None
    if n > 1:
        choices = RELATIONS_2 if n == 2 else RELATIONS_3
        relation = choices[int(rng.integers(len(choices)))]
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    return Scene(objects, relation, background)


# -------------------------------------------------------------------------------- accessors


def scene_categories(scene: Scene) -> list[str]:
    """Category names of the objects, in caption order."""
    return [o.category for o in scene.objects]


def scene_groups(scene: Scene) -> list[str]:
    """Group (pictograms.GROUP_NAMES) of each object, in caption order."""
    return [pictograms.category(o.category).group for o in scene.objects]


def any_animate(scene: Scene) -> bool:
    """Whether an animal or a person is in the scene."""
    return any(pictograms.category(o.category).animate for o in scene.objects)


def any_food(scene: Scene) -> bool:
    """Whether food is in the scene."""
    return any(pictograms.category(o.category).food for o in scene.objects)


# ---------------------------------------------------------------------------------- caption


def article(word: str) -> str:
    """'a' or 'an' for the word that follows (all vocabulary words are regular)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def noun_phrase(obj: SceneObject, *, with_size: bool = True) -> str:
    """'a small dog', or 'a dog' without the size."""
    words = f"{obj.size} {obj.category}" if with_size else obj.category
    return f"{article(words)} {words}"


def list_phrase(phrases: list[str]) -> str:
    """'x', 'x and y', 'x, y and z'."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def word_classes() -> dict[str, str]:
    """The grammar's exact lexicon, word or phrase -> word class, for the word-level controls
    (``backend.analysis.controls.keep_word_classes``): names and backgrounds are nouns, sizes
    adjectives, relations and the backgrounds' leading words prepositions. The grammar has no verbs.
    """
    lexicon = {name: "noun" for name in pictograms.NAMES}
    lexicon.update({size: "adjective" for size in SIZES})
    lexicon.update({relation: "preposition" for relation in RELATIONS})
    for name, phrase in BACKGROUNDS.items():
        lexicon[name] = "noun"
        lexicon[phrase.split()[0]] = "preposition"  # "in", "under", "on", "at"
    lexicon.update({"a": "function", "an": "function", "and": "function"})
    return lexicon


def caption(scene: Scene) -> str:
    """The reference caption, e.g. 'a small dog to the left of a large car on a beach'."""
    nps = [noun_phrase(o) for o in scene.objects]
    if scene.relation is None:
        body = list_phrase(nps)
    else:
        body = f"{nps[0]} {scene.relation} {' and '.join(nps[1:])}"
    return f"{body} {BACKGROUNDS[scene.background]}"


# ------------------------------------------------------------------------------------ parse


def _tokens(text: str) -> list[str]:
    text = text.strip().lower().rstrip(".").replace(",", " , ")
    return text.split()


_NAME_TOKENS = sorted((tuple(n.split()) for n in pictograms.NAMES), key=len, reverse=True)
_REL_TOKENS = sorted((tuple(r.split()) for r in RELATIONS), key=len, reverse=True)
_BG_TOKENS = sorted(((tuple(p.split()), name) for name, p in BACKGROUNDS.items()),
                    key=lambda t: len(t[0]), reverse=True)


def _match(tokens: list[str], i: int, options: list[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The longest option that the tokens spell from position i, or None."""
    for opt in options:
        if tuple(tokens[i: i + len(opt)]) == opt:
            return opt
    return None


def _near(tokens: list[str], i: int) -> str:
    return repr(" ".join(tokens[i: i + 4]) or "<end>")


class _Reader:
    """Reads the tokens of one caption left to right; errors name what was expected where."""

    def __init__(self, tokens: list[str]):
        self.t, self.i = tokens, 0

    def done(self) -> bool:
        return self.i >= len(self.t)

    def take(self, word: str) -> bool:
        if not self.done() and self.t[self.i] == word:
            self.i += 1
            return True
        return False

    def object(self) -> SceneObject:
        if not (self.take("a") or self.take("an")):
            raise ValueError(f"could not read an object at {_near(self.t, self.i)}: "
                             f"expected 'a' or 'an', a size ({'/'.join(SIZES)}) and an object name")
        if self.done() or self.t[self.i] not in SIZES:
            raise ValueError(f"could not read the size at {_near(self.t, self.i)}: "
                             f"expected one of {'/'.join(SIZES)}")
        size = self.t[self.i]
        self.i += 1
        name = _match(self.t, self.i, _NAME_TOKENS)
        if name is None:
            raise ValueError(f"could not read the object name at {_near(self.t, self.i)}: "
                             "not one of the demo world's categories")
        self.i += len(name)
        return SceneObject(" ".join(name), size)

    def relation(self) -> str | None:
        rel = _match(self.t, self.i, _REL_TOKENS)
        if rel is None:
            return None
        self.i += len(rel)
        return " ".join(rel)


def parse(text: str) -> Scene:
    """The scene a reference caption describes: the exact inverse of :func:`caption`.

    Tolerates case, extra whitespace and a trailing period (and 'a'/'an' mix-ups); anything else
    outside the grammar raises ValueError with a one-line message naming the unreadable part.
    """
    tokens = _tokens(text)
    if not tokens:
        raise ValueError("could not read the caption: it is empty")
    background = None
    for phrase, name in _BG_TOKENS:
        if len(tokens) > len(phrase) and tuple(tokens[-len(phrase):]) == phrase:
            background, tokens = name, tokens[: -len(phrase)]
            break
    if background is None:
        raise ValueError(f"could not read the background at the end of {text.strip()!r}: "
                         f"expected it to end with one of {list(BACKGROUNDS.values())}")
    r = _Reader(tokens)
    objects = [r.object()]
    relation = None
    if not r.done():
        relation = r.relation()
        if relation is None:
            # A bare list: "x and y", "x, y and z".
            sep = r.t[r.i]
            if sep not in ("and", ","):
                raise ValueError(f"could not read the relation at {_near(r.t, r.i)}: expected "
                                 f"one of {list(RELATIONS)} or 'and'")
            r.i += 1
            objects.append(r.object())
            if sep == ",":
                if not r.take("and"):
                    raise ValueError(f"could not read the list at {_near(r.t, r.i)}: "
                                     "expected 'and' before the last object")
                objects.append(r.object())
        else:
            objects.append(r.object())
            if r.take("and"):
                objects.append(r.object())
    if not r.done():
        raise ValueError(f"could not read the end of the caption at {_near(r.t, r.i)}: "
                         "expected the background phrase")
    if relation == "between" and len(objects) != 3:
        raise ValueError("could not read the relation 'between': it needs two objects after it "
                         "('a dog between a car and a tree')")
    if len(objects) == 3 and relation is not None and relation not in RELATIONS_3:
        raise ValueError(f"could not read the relation {relation!r}: with three objects it must "
                         f"be one of {list(RELATIONS_3)}")
    return Scene(tuple(objects), relation, background)


def interpret(text: str) -> Scene:
    """A scene for any text that names at least one known object (the stand-in text-to-image
    model's reading). Takes the first three object names in order, a size word just before a
    name (else "large"), the first relation phrase that fits the object count (else none) and
    the first background named by its phrase or name (else the plain white background).
    Raises ValueError when no object name is found.
    """
    try:
        return parse(text)
    except ValueError:
        pass
    tokens = re.sub(r"[^a-z]+", " ", text.lower()).split()
    objects: list[SceneObject] = []
    relations: list[str] = []
    i = 0
    while i < len(tokens):
        name = _match(tokens, i, _NAME_TOKENS)
        if name is not None:
            if len(objects) < 3:
                size = tokens[i - 1] if i > 0 and tokens[i - 1] in SIZES else "large"
                objects.append(SceneObject(" ".join(name), size))
            i += len(name)
            continue
        rel = _match(tokens, i, _REL_TOKENS)
        if rel is not None and objects:
            relations.append(" ".join(rel))
            i += len(rel)
            continue
        i += 1
    if not objects:
        raise ValueError(f"could not read any object in {text.strip()!r}: "
                         "no demo world category is named")
    allowed = {1: (), 2: RELATIONS_2, 3: RELATIONS_3}[len(objects)]
    relation = next((r for r in relations if r in allowed), None)
    joined = " " + " ".join(tokens) + " "
    background = next((name for name, phrase in BACKGROUNDS.items() if f" {phrase} " in joined),
                      None) or next((name for name in BACKGROUNDS if f" {name} " in joined),
                                    "white background")
    return Scene(tuple(objects), relation, background)


# ----------------------------------------------------------------------------------- layout

#: Object side (longer pictogram side) as a fraction of the image side, by object count.
_SIDE = {1: {"small": 0.26, "large": 0.46}, 2: {"small": 0.24, "large": 0.42},
         3: {"small": 0.19, "large": 0.29}}
#: Centres (x, y) as fractions of the image side, per object in caption order.
_CENTRES: dict[tuple[int, str | None], tuple[tuple[float, float], ...]] = {
    (1, None): ((0.5, 0.55),),
    (2, "to the left of"): ((0.27, 0.55), (0.73, 0.55)),
    (2, "to the right of"): ((0.73, 0.55), (0.27, 0.55)),
    (2, "above"): ((0.5, 0.27), (0.5, 0.73)),
    (2, "below"): ((0.5, 0.73), (0.5, 0.27)),
    # Overlapping, the front object lower-left (nearer the viewer) and drawn last; the offset
    # between the two shrinks with their sizes (see layout) so that small ones overlap too.
    (2, "in front of"): ((0.5, 0.53), (0.5, 0.53)),
    (2, "behind"): ((0.5, 0.53), (0.5, 0.53)),
    (2, None): ((0.27, 0.55), (0.73, 0.55)),
    (3, "to the left of"): ((0.24, 0.5), (0.73, 0.27), (0.73, 0.73)),
    (3, "to the right of"): ((0.76, 0.5), (0.27, 0.27), (0.27, 0.73)),
    (3, "above"): ((0.5, 0.26), (0.27, 0.73), (0.73, 0.73)),
    (3, "below"): ((0.5, 0.74), (0.27, 0.27), (0.73, 0.27)),
    (3, "between"): ((0.5, 0.55), (0.2, 0.55), (0.8, 0.55)),
    (3, None): ((0.2, 0.55), (0.5, 0.55), (0.8, 0.55)),
}
#: Drawing order (first drawn first) where it matters; default is caption order.
_Z_ORDER = {(2, "in front of"): (1, 0)}
#: Largest jitter: centre shift as a fraction of the image side, and relative size change. Small
#: enough that no relation flips (the closest centres are 0.3 apart along their axis).
_JITTER_SHIFT, _JITTER_SCALE = 0.035, 0.10


@dataclass(frozen=True)
class Placement:
    """Where one object is drawn: a square of ``side`` px with top-left corner (x0, y0) in px
    (may reach outside the image); ``index`` is the object's position in the caption."""

    index: int
    category: str
    x0: int
    y0: int
    side: int


def layout(scene: Scene, size: int = 256, *, jitter: int | None = None) -> tuple[Placement, ...]:
    """Placements of the scene's objects in an image of ``size`` px, in drawing order."""
    n = len(scene.objects)
    centres = _CENTRES[(n, scene.relation)]
    rng = np.random.default_rng(jitter) if jitter is not None else None
    if scene.relation in ("in front of", "behind"):
        # Centres 0.45 of the mean side apart along each axis: clearly overlapping, yet the back
        # object stays recognisable.
        half = 0.45 * (_SIDE[2][scene.objects[0].size] + _SIDE[2][scene.objects[1].size]) / 4
        front, back = (0.5 - half, 0.53 + half), (0.5 + half, 0.53 - half)
        centres = (front, back) if scene.relation == "in front of" else (back, front)
    out = []
    for k, obj in enumerate(scene.objects):
        (cx, cy), frac = centres[k], _SIDE[n][obj.size]
        if rng is not None:
            cx, cy = cx + rng.uniform(-1, 1) * _JITTER_SHIFT, cy + rng.uniform(-1, 1) * _JITTER_SHIFT
            frac *= 1 + rng.uniform(-1, 1) * _JITTER_SCALE
        # Even sides keep the pictogram cache small when jitter varies sizes continuously.
        side = max(2, 2 * round(frac * size / 2))
        out.append(Placement(k, obj.category, round(cx * size - side / 2),
                             round(cy * size - side / 2), side))
    order = _Z_ORDER.get((n, scene.relation), tuple(range(n)))
    return tuple(out[k] for k in order)


# ------------------------------------------------------------------------------- backgrounds


def _lerp(c0, c1, t: np.ndarray) -> np.ndarray:
    """Colour ramp: t float [...] in 0..1 -> float32 [..., 3]."""
    c0, c1 = np.asarray(c0, np.float32), np.asarray(c1, np.float32)
    t = np.clip(t, 0, 1)[..., None].astype(np.float32)
    return c0 * (1 - t) + c1 * t


def _sky_ground(size: int, horizon: float, sky, ground) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image [size, size, 3] with a vertical sky ramp above ``horizon`` and a ground ramp below;
    also the pixel-centre coordinates y [size, 1] and x [1, size] in 0..1."""
    y = ((np.arange(size, dtype=np.float32) + 0.5) / size)[:, None]
    x = y.T
    img = np.where(y[..., None] < horizon,
                   _lerp(*sky, y / horizon), _lerp(*ground, (y - horizon) / (1 - horizon)))
    return np.broadcast_to(img, (size, size, 3)).copy(), y, x


def _disc(img, y, x, cx, cy, r, colour) -> None:
    """Paint a disc (fractions of the side) with a one-pixel soft edge."""
    size = img.shape[0]
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    a = np.clip((r - d) * size + 0.5, 0, 1)[..., None]
    img[:] = img * (1 - a) + np.asarray(colour, np.float32) * a


def _grassy_field(size):
    img, y, x = _sky_ground(size, 0.42, ((110, 170, 230), (195, 225, 245)),
                            ((120, 190, 85), (55, 135, 45)))
    rng = np.random.default_rng(1)
    rows = (y >= 0.42)[:, 0]
    # Mowing stripes and speckle read as grass without any per-blade drawing.
    stripes = 1 + 0.06 * np.sin(x * 9 * np.pi + y * 3)
    img[rows] *= stripes[rows][..., None]
    img[rows] += rng.normal(0, 6, (int(rows.sum()), size, 3)).astype(np.float32)
    for cx, cy, r in ((0.2, 0.14, 0.06), (0.27, 0.12, 0.07), (0.34, 0.15, 0.05), (0.75, 0.2, 0.05),
                      (0.81, 0.18, 0.06)):
        _disc(img, y, x, cx, cy, r, (250, 250, 252))
    return img


def _night_sky(size):
    img, y, x = _sky_ground(size, 0.86, ((8, 12, 40), (40, 45, 95)), ((22, 28, 40), (12, 15, 22)))
    rng = np.random.default_rng(2)
    n = max(8, size * size // 500)
    sy, sx = rng.integers(0, int(size * 0.86), n), rng.integers(0, size, n)
    img[sy, sx] = rng.uniform(150, 255, (n, 1)).astype(np.float32)
    _disc(img, y, x, 0.84, 0.14, 0.07, (245, 240, 200))
    _disc(img, y, x, 0.865, 0.125, 0.062, (12, 16, 46))  # crescent: cut by sky-coloured disc
    return img


def _beach(size):
    img, y, x = _sky_ground(size, 0.38, ((100, 180, 240), (190, 228, 250)),
                            ((40, 130, 200), (70, 165, 215)))
    shore = 0.55 + 0.018 * np.sin(x * 2 * np.pi * 2.5)
    sand = _lerp((240, 220, 165), (215, 190, 130), (y - 0.55) / 0.45)
    img[:] = np.where((y > shore)[..., None], sand, img)
    foam = np.abs(y - shore) * size < 1.5
    img[foam] = (245, 250, 255)
    _disc(img, y, x, 0.85, 0.12, 0.06, (255, 240, 150))
    return img


def _snowy_landscape(size):
    img, y, x = _sky_ground(size, 0.48, ((165, 180, 205), (215, 222, 235)),
                            ((250, 252, 255), (220, 228, 240)))
    peaks = 0.48 - np.maximum(0.17 * (1 - np.abs(x - 0.25) / 0.22),
                              0.12 * (1 - np.abs(x - 0.7) / 0.28))
    mountain = (y > peaks) & (y < 0.48)
    img[mountain] = (140, 155, 185)
    cap = mountain & (y < peaks + 0.035)
    img[cap] = (245, 248, 252)
    rng = np.random.default_rng(4)
    n = max(8, size * size // 350)
    fy, fx = rng.integers(0, size, n), rng.integers(0, size, n)
    img[fy, fx] = img[fy, fx] * 0.3 + np.float32(255) * 0.7
    return img


def _city_street(size):
    img, y, x = _sky_ground(size, 0.62, ((150, 170, 195), (205, 212, 222)),
                            ((70, 70, 76), (50, 50, 55)))
    rng = np.random.default_rng(5)
    xs = np.cumsum(rng.uniform(0.08, 0.17, 12))
    left = 0.0
    col = (x * size).astype(int)
    row = (y * size).astype(int)
    for right in xs:
        top = rng.uniform(0.12, 0.4)
        shade = rng.uniform(85, 150)
        tone = np.array([shade, shade * rng.uniform(0.9, 1.0), shade * rng.uniform(0.85, 1.05)],
                        np.float32)
        b = (x >= left) & (x < right) & (y >= top) & (y < 0.56)
        img[b] = tone
        win = b & ((col % 10) >= 4) & ((row % 12) >= 5) & (y < 0.53) & (x > left + 0.012)
        img[win] = (235, 215, 140) if rng.uniform() < 0.5 else (185, 200, 215)
        left = right
    img[((y >= 0.56) & (y < 0.62))[..., 0]] = (175, 172, 165)  # pavement
    dash = (np.abs(y - 0.82) * size < max(1.0, size / 128)) & ((x * 7) % 1 < 0.5)
    img[dash] = (240, 235, 220)
    return img


def _white_background(size):
    return np.full((size, size, 3), 255, np.float32)


def _desert(size):
    img, y, x = _sky_ground(size, 0.5, ((120, 185, 235), (240, 225, 195)),
                            ((235, 190, 115), (205, 145, 75)))
    dune = 0.5 - 0.05 * np.sin(x * 5 + 1) ** 2
    near = 0.72 + 0.05 * np.sin(x * 4 + 2.5)
    img[:] = np.where(((y > dune) & (y <= 0.5))[..., None], np.float32([225, 180, 110]), img)
    img[:] = np.where((y > near)[..., None], img * 0.88, img)
    _disc(img, y, x, 0.16, 0.15, 0.055, (255, 248, 215))
    return img


def _sunset(size):
    y = ((np.arange(size, dtype=np.float32) + 0.5) / size)[:, None]
    x = y.T
    upper = _lerp((60, 35, 105), (215, 85, 90), y / 0.35)
    lower = _lerp((215, 85, 90), (250, 185, 95), (y - 0.35) / 0.27)
    img = np.where(y[..., None] < 0.35, upper, lower)
    img = np.broadcast_to(img, (size, size, 3)).copy()
    _disc(img, y, x, 0.5, 0.62, 0.13, (255, 225, 130))
    ground = _lerp((70, 40, 65), (28, 18, 35), (y - 0.62) / 0.38)
    img[:] = np.where((y >= 0.62)[..., None], ground, img)
    return img


_BACKGROUND_PAINTERS = {
    "grassy field": _grassy_field, "night sky": _night_sky, "beach": _beach,
    "snowy landscape": _snowy_landscape, "city street": _city_street,
    "white background": _white_background, "desert": _desert, "sunset": _sunset,
}
assert set(_BACKGROUND_PAINTERS) == set(BACKGROUNDS)


@functools.lru_cache(maxsize=64)
def _background_f32(name: str, size: int) -> np.ndarray:
    img = np.clip(_BACKGROUND_PAINTERS[name](size), 0, 255).astype(np.float32)
    img.flags.writeable = False
    return img


def render_background(name: str, size: int = 256) -> np.ndarray:
    """The background alone: uint8 [size, size, 3]."""
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background {name!r}; expected one of {list(BACKGROUNDS)}")
    return np.round(_background_f32(name, size)).astype(np.uint8)


# ----------------------------------------------------------------------------------- render


def render_with_masks(scene: Scene, size: int = 256, *,
                      jitter: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scene image uint8 [size, size, 3] and each object's visible pixels, bool
    [n_objects, size, size] in caption order (alpha >= 0.5 and not covered by a later object)."""
    img = _background_f32(scene.background, size).copy()
    masks = np.zeros((len(scene.objects), size, size), bool)
    for p in layout(scene, size, jitter=jitter):
        pict = pictograms.load_pictogram(p.category, p.side)
        # Clip the object's square to the image.
        x0, y0 = max(p.x0, 0), max(p.y0, 0)
        x1, y1 = min(p.x0 + p.side, size), min(p.y0 + p.side, size)
        if x1 <= x0 or y1 <= y0:
            continue
        sub = pict[y0 - p.y0: y1 - p.y0, x0 - p.x0: x1 - p.x0]
        alpha = sub[..., 3:4].astype(np.float32) * np.float32(1 / 255)
        region = img[y0:y1, x0:x1]
        region += (sub[..., :3] - region) * alpha
        opaque = alpha[..., 0] >= 0.5
        masks[:, y0:y1, x0:x1] &= ~opaque
        masks[p.index, y0:y1, x0:x1] |= opaque
    return np.round(img).astype(np.uint8), masks


def render(scene: Scene, size: int = 256, *, jitter: int | None = None) -> np.ndarray:
    """The scene image, uint8 [size, size, 3]. ``jitter=None`` is the canonical layout; an int
    seed shifts and rescales objects a little (deterministically) without changing what the
    caption says."""
    return render_with_masks(scene, size, jitter=jitter)[0]
