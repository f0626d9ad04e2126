"""Mouse panel: a stimulus's response of every neuron, as dots on the map of dorsal visual areas.

Same split as the brain panel (see viewer/brain_panel.py): the area outlines, neuron positions and
areas go once in the ``static_data`` prop of one ``gr.HTML``; each switch sends only the per-neuron
values (base64 float16) in ``value``. The browser draws outlines, names and dots on a 2-D canvas,
strongest responses on top, in the user's colour scale (the same controls as the brain panel);
hover names the neuron, its area and value.
"""

from __future__ import annotations

import hashlib

import numpy as np

from viewer.canvas_panel import CanvasPanel, MemoCache, b64, colormap_luts, hash_arrays

_PAYLOAD_CACHE = MemoCache()


def _get(space, name, default=None):
    """unit_space may be the client's dict or a schema dataclass (NeuronSpace)."""
    if isinstance(space, dict):
        return space.get(name, default)
    return getattr(space, name, default)


def build_static_payload(unit_space, width: int = 900) -> dict:
    """Everything the browser needs once for one neuron space; JSON-able, memoised.

    unit_space: areas list[str]; area int16 [n] (index into areas); x, y float32 [n] mm on the
    dorsal map (x lateral, y anterior: drawn anterior up); area_outlines {name: float32 [k, 2]};
    optional depth float32 [n] (um) and cell_type int16 [n] with cell_types list[str], shown on
    hover. width: canvas width in pixels (height follows the map's aspect).
    """
    areas = [str(a) for a in _get(unit_space, "areas")]
    area = np.asarray(_get(unit_space, "area"), np.int16)
    x = np.asarray(_get(unit_space, "x"), np.float32)
    y = np.asarray(_get(unit_space, "y"), np.float32)
    if not (len(area) == len(x) == len(y)):
        raise ValueError(f"area/x/y lengths differ: {len(area)}, {len(x)}, {len(y)}")
    outlines = _get(unit_space, "area_outlines") or {}
    depth = _get(unit_space, "depth")
    cell_type = _get(unit_space, "cell_type")
    cell_types = _get(unit_space, "cell_types")
    outline_items = [(str(k), np.asarray(v, np.float32).reshape(-1, 2)) for k, v in outlines.items()]
    key = (
        hash_arrays(area, x, y, depth if depth is None else np.asarray(depth, np.float32),
                     cell_type if cell_type is None else np.asarray(cell_type, np.int16),
                     *[v for _, v in outline_items]),
        tuple(areas), tuple(k for k, _ in outline_items), tuple(cell_types or ()), width,
    )
    hit = _PAYLOAD_CACHE.get(key)
    if hit is not None:
        return hit
    extra = []
    if cell_type is not None and cell_types:
        extra.append({"name": "cell type", "data_z": b64(np.asarray(cell_type, "<i2"), True), "dtype": "i2",
                      "names": [str(c) for c in cell_types]})
    if depth is not None:
        extra.append({"name": "depth", "data_z": b64(np.asarray(depth, "<f4"), True), "dtype": "f4", "unit": "\u00b5m"})
    payload = {
        "kind": "neurons",
        "sid": hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest(),
        "n_units": int(len(area)),
        "width": int(width),
        "areas": areas,
        "area_z": b64(area.astype("<i2"), True),
        "x_z": b64(x.astype("<f4"), True),
        "y_z": b64(y.astype("<f4"), True),
        "outlines": [{"name": k, "xy_z": b64(v.astype("<f4"), True)} for k, v in outline_items],
        "extra": extra,
        "luts": colormap_luts(),
    }
    _PAYLOAD_CACHE.put(key, payload)
    return payload


class MousePanel(CanvasPanel):
    """Neuron map panel; create inside a ``gr.Blocks()`` context.

    panel.static_payload(unit_space) -> gr.update carrying outlines and positions (once per
        dataset); the rest as in :class:`CanvasPanel`.
    """

    css_class = "ctx-mouse"
    js_mount = "CortextualPanels.mountMouse(element, props, watch);"

    def __init__(self, label: str = "Neural response", width: int = 900, elem_classes: list[str] | None = None, **html_kwargs):
        self.width = int(width)
        super().__init__(label, elem_classes, **html_kwargs)

    def static_payload(self, unit_space) -> dict:
        """gr.update setting the panel's area map; memoised per unit space."""
        return self._static_update(build_static_payload(unit_space, self.width))
