"""Mouse panel: a stimulus's response of every neuron, as dots on the map of dorsal visual areas.

Same split as the brain panel (see viewer/brain_panel.py): the area outlines, neuron positions and
areas go once in the ``static_data`` prop of one ``gr.HTML``; each switch sends only the per-neuron
values (base64 float16) in ``value``. The browser draws outlines, names and dots on a 2-D canvas,
strongest responses on top; hover names the neuron, its area and value.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from viewer.brain_panel import (
    STATIC_PROP,
    _cache_get,
    _cache_put,
    _hash_arrays,
    b64,
    diverging_lut,
    html_literal,
    panel_css,
    panel_head,
    values_payload,
)

_PAYLOAD_CACHE: OrderedDict = OrderedDict()


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
        _hash_arrays(area, x, y, depth if depth is None else np.asarray(depth, np.float32),
                     cell_type if cell_type is None else np.asarray(cell_type, np.int16),
                     *[v for _, v in outline_items]),
        tuple(areas), tuple(k for k, _ in outline_items), tuple(cell_types or ()), width,
    )
    hit = _cache_get(_PAYLOAD_CACHE, key)
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
        "lut": b64(diverging_lut()),
    }
    _cache_put(_PAYLOAD_CACHE, key, payload)
    return payload


class MousePanel:
    """Neuron map panel; create inside a ``gr.Blocks()`` context.

    panel.outputs: [gr.HTML].
    panel.static_payload(unit_space) -> gr.update carrying outlines and positions (once per dataset).
    panel.values_update(values, title) -> gr.update carrying only per-neuron values (every switch);
        ``static=panel.static_payload(...)`` sends both in one message (dataset switch).
    """

    js_mount = "CortextualPanels.mountMouse(element, props, watch);"

    def __init__(self, label: str = "Neural response", width: int = 900, elem_classes: list[str] | None = None, **html_kwargs):
        import gradio as gr

        self.label = label
        self.width = int(width)
        self.html = gr.HTML(
            value=None,
            html_template=self._template(label),
            css_template=panel_css(),
            js_on_load=self.js_mount,
            head=panel_head(),
            apply_default_css=False,
            elem_classes=["ctx-panel-host", *(elem_classes or [])],
            **{STATIC_PROP: None},
            **html_kwargs,
        )
        self.outputs = [self.html]

    @staticmethod
    def _template(label: str) -> str:
        return (
            '<div class="ctx-panel ctx-mouse">'
            f'<div class="ctx-head"><span class="ctx-label">{html_literal(label)}</span>'
            '<span class="ctx-status">waiting for data</span>'
            '<button type="button" class="ctx-png" title="Download this figure as PNG">PNG</button></div>'
            '<div class="ctx-stage"><canvas class="ctx-canvas" width="8" height="8"></canvas>'
            '<div class="ctx-tip" hidden></div></div>'
            "</div>"
        )

    def static_payload(self, unit_space) -> dict:
        """gr.update setting the panel's area map; memoised per unit space."""
        import gradio as gr

        return gr.update(**{STATIC_PROP: build_static_payload(unit_space, self.width)})

    def values_update(
        self,
        values: np.ndarray,
        title: str = "",
        *,
        static: dict | None = None,
        vmax: float | None = None,
        cbar_label: str = "",
    ) -> dict:
        """gr.update with per-neuron values float [n] (NaN = no value); see BrainPanel.values_update."""
        import gradio as gr

        upd = gr.update(value=values_payload(values, title, vmax, None, cbar_label))
        if static:
            upd[STATIC_PROP] = static[STATIC_PROP] if STATIC_PROP in static else static
        return upd

    def clear_update(self, message: str = "no data") -> dict:
        import gradio as gr

        return gr.update(value={"clear": True, "title": message})
