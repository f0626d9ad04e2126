"""Matrices drawn as images (PIL, no plotting library): RDMs side by side with a shared colour bar."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

#: Anchors of viridis (matplotlib's default colour map, perceptually uniform), interpolated.
_VIRIDIS = np.array(
    [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
     [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]],
    np.float32,
)
CELL_PX = 256  # each matrix is drawn this many pixels wide, whatever its size
MARGIN = 28


def viridis(x: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] colours for values in 0..1 (clipped; NaN is drawn light grey)."""
    x = np.asarray(x, np.float32)
    t = np.clip(np.nan_to_num(x, nan=0.0), 0, 1) * (len(_VIRIDIS) - 1)
    low = np.floor(t).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (t - low)[..., None]
    rgb = _VIRIDIS[low] * (1 - frac) + _VIRIDIS[low + 1] * frac
    rgb[np.isnan(x)] = 220
    return rgb.round().astype(np.uint8)


def percentile_ranks(matrix: np.ndarray) -> np.ndarray:
    """float [n, n]: each off-diagonal entry as its rank percentile (0..1) among the off-diagonal
    entries, the diagonal 0. RSA compares RDMs by rank, so ranks are what to look at."""
    m = np.asarray(matrix, np.float64)
    off = ~np.eye(len(m), dtype=bool)
    values = m[off]
    ranks = np.empty_like(values)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    out = np.zeros_like(m)
    out[off] = ranks / max(values.size - 1, 1)
    return out


def rdm_figure(matrices: list[np.ndarray], titles: list[str], footer: str = "") -> Image.Image:
    """The matrices [n, n] side by side, each in rank percentiles, under their titles, with a
    colour bar from "similar" (dark) to "dissimilar" (yellow)."""
    if len(matrices) != len(titles) or not matrices:
        raise ValueError("one title per matrix, at least one matrix")
    width = MARGIN + len(matrices) * (CELL_PX + MARGIN)
    height = MARGIN * 2 + CELL_PX + 40
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    for k, (matrix, title) in enumerate(zip(matrices, titles, strict=True)):
        x0 = MARGIN + k * (CELL_PX + MARGIN)
        tile = Image.fromarray(viridis(percentile_ranks(matrix))).resize((CELL_PX, CELL_PX), Image.NEAREST)
        figure.paste(tile, (x0, MARGIN))
        draw.text((x0, 8), title, fill="black")
    bar_y = MARGIN + CELL_PX + 10
    bar = viridis(np.linspace(0, 1, CELL_PX)[None, :].repeat(8, axis=0))
    figure.paste(Image.fromarray(bar), (MARGIN, bar_y))
    draw.text((MARGIN, bar_y + 10), "similar", fill="black")
    draw.text((MARGIN + CELL_PX - 58, bar_y + 10), "dissimilar", fill="black")
    draw.text((MARGIN + CELL_PX + MARGIN, bar_y + 2), footer, fill="black")
    return figure
