"""An interactive plotly plot on the page: a ``gr.HTML`` drawn by plotly.js served as a static file.

gr.Plot has no click event in Gradio 6 and keeps its plotly.js from page scripts, so the viewer
draws its plots itself: the plotly wheel's own ``plotly.min.js`` is served once (a static file,
cached by the browser) and a few lines of JavaScript draw the figure JSON the component's value
holds. A click on a point whose ``customdata`` is a stimulus index fires the component's
``point`` event with ``{"index": i}``; the ``selected`` prop marks that stimulus in the traces
whose ``meta`` is "selected" (filled from the points traces), so selecting a stimulus sends one
number, not the figure. The modebar downloads PNG (3x) and SVG. After each draw the root element's
``data-draws`` counts up and ``data-selected`` names the marked stimulus (tests and benches wait on them).
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import plotly
import plotly.graph_objects as go

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
gr.set_static_paths([str(PLOTLY_JS)])
HEAD = f'<script src="/gradio_api/file={PLOTLY_JS}"></script>'

JS = r"""
const svgIcon = {width: 1000, height: 1000, path: 'M100 100h800v800h-800z M250 700l150-250 150 150 100-150 100 250z'};
function config(name) {
  return {displaylogo: false, responsive: true,
          toImageButtonOptions: {format: 'png', scale: 3, filename: name},
          modeBarButtonsToAdd: [{name: 'Download plot as SVG', icon: svgIcon,
                                 click: gd => Plotly.downloadImage(gd, {format: 'svg', filename: name})}]};
}
function mark(div, fig, selected) {
  // fill each "selected" trace with the selected stimulus's point(s) on the same axes
  const xs = {}, ys = {};
  fig.data.forEach(t => {
    if (!(t.meta || '').startsWith('points') || !t.customdata) return;
    const ax = (t.xaxis || 'x');
    t.customdata.forEach((c, j) => { if (c === selected) { (xs[ax] = xs[ax] || []).push(t.x[j]); (ys[ax] = ys[ax] || []).push(t.y[j]); } });
  });
  const traces = [], x = [], y = [];
  fig.data.forEach((t, k) => { if (t.meta === 'selected') { const ax = t.xaxis || 'x'; traces.push(k); x.push(xs[ax] || []); y.push(ys[ax] || []); } });
  if (traces.length) return Plotly.restyle(div, {x: x, y: y}, traces);
  return Promise.resolve();
}
let shownKey = null, shownFig = null;
async function draw() {
  const div = element.querySelector('.ctx-plotly');
  if (!div || typeof Plotly === 'undefined') return;
  const key = props.value || '';
  if (key !== shownKey || (key && !div._fullLayout)) {
    shownKey = key;
    shownFig = key ? JSON.parse(key) : null;
    if (!shownFig) { Plotly.purge(div); div.innerHTML = ''; }
    else await Plotly.react(div, shownFig.data, shownFig.layout, config(element.id || 'figure'));
  }
  const selected = (props.selected === null || props.selected === undefined || props.selected === '') ? null : Number(props.selected);
  if (shownFig) await mark(div, shownFig, selected);
  element.dataset.selected = selected === null ? '' : String(selected);
  element.dataset.draws = String(Number(element.dataset.draws || 0) + 1);
  if (!div.ctxBound && shownFig) {
    div.ctxBound = true;
    div.on('plotly_click', ev => {
      const p = ev.points && ev.points[0];
      if (p && p.customdata !== undefined && p.customdata !== null && !Array.isArray(p.customdata)) trigger('point', {index: p.customdata});
    });
    div.on('plotly_hover', ev => {
      const p = ev.points && ev.points[0];
      const preview = element.querySelector('.ctx-preview');
      if (!preview || !p || p.customdata === undefined || Array.isArray(p.customdata) || typeof server === 'undefined' || !server.thumbnail) return;
      const dataset = (shownFig.layout.meta || {}).dataset;
      server.thumbnail(dataset, p.customdata).then(src => {
        if (!src) return;
        preview.querySelector('img').src = src;
        preview.querySelector('span').textContent = p.hovertext ? p.hovertext.replace(/<br>/g, ' · ').replace(/<[^>]+>/g, '') : '';
        preview.style.display = 'flex';
      });
    });
  }
}
watch(['value', 'selected'], draw);
if (typeof Plotly === 'undefined') { window.addEventListener('load', draw); setTimeout(draw, 500); } else { draw(); }
"""

CSS = """
.ctx-plot-wrap { position: relative; }
.ctx-preview { display: none; position: absolute; top: 4px; right: 8px; z-index: 5; gap: 6px; align-items: center;
  background: rgba(255,255,255,0.95); border: 1px solid #ccc; border-radius: 6px; padding: 4px; max-width: 340px; font-size: 12px; }
.ctx-preview img { width: 96px; height: 96px; object-fit: contain; }
"""


def figure_json(fig: go.Figure | None) -> str:
    """The component's value for ``fig`` ("" clears the plot)."""
    return "" if fig is None else fig.to_json()


class PlotlyView:
    """Create inside a Blocks context. ``.html`` is the component; set its value with
    :func:`figure_json` and its marked stimulus with ``gr.update(selected=i)``; ``.html.point``
    is the click event (handler gets ``gr.EventData`` whose ``_data["index"]`` is the stimulus).
    ``thumbnail([dataset, index]) -> data URL`` (Gradio passes a server function's arguments as one
    list): a hover preview of the stimulus under the cursor."""

    def __init__(self, elem_id: str, height: int = 420, thumbnail=None, value: go.Figure | None = None) -> None:
        preview = "<div class='ctx-preview'><img alt='stimulus under the cursor'><span></span></div>" if thumbnail else ""
        self.html = gr.HTML(
            value=figure_json(value),
            html_template=f"<div class='ctx-plot-wrap'>{preview}<div class='ctx-plotly' style='min-height:{height}px'></div></div>",
            css_template=CSS,
            js_on_load=JS,
            head=HEAD,
            elem_id=elem_id,
            selected=None,
            server_functions=[thumbnail] if thumbnail else None,
        )


def figure_of(value: str) -> dict:
    """The figure dict a component value holds (tests)."""
    return json.loads(value) if value else {}
