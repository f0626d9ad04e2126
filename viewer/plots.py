"""Plotly figure builders for the viewer's plots: plain functions from data to ``go.Figure``.

Every figure names its axes in words, draws a chance (or no-effect) line as a trace so the legend
can hide it, and keeps traces with identical values apart (a marker shape per trace and a small
horizontal offset per trace), so e.g. the reference and the simulated reference captioner, which
give the same numbers, are both visible. Colours come from plotly's own qualitative and
sequential scales (no hand-written colour maps).
"""

from __future__ import annotations

import collections
import html

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

#: One marker shape per trace, so traces drawn on top of each other stay distinguishable.
SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "cross", "star", "triangle-down", "pentagon", "hexagon")
PALETTE = qualitative.T10
OTHER, UNLABELLED, SINGLE = "#b8b8b8", "#dcdcdc", PALETTE[0]
CHANCE_STYLE = dict(color="#555555", dash="dash", width=1.5)
FONT = dict(family="sans-serif", size=13)
TOP_CATEGORIES = 10
#: Horizontal spread of dodged traces around a category's position (fraction of one category step).
DODGE = 0.5


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)), height=height, font=FONT,
        template="plotly_white", margin=dict(l=60, r=20, t=60, b=60),
        legend=dict(itemclick="toggle", itemdoubleclick="toggleothers", title=dict(text="click to hide / show")),
    )
    return fig


def _dodge(k: int, n: int) -> float:
    """Offset of trace ``k`` of ``n`` around its category's position (0 for a single trace)."""
    return 0.0 if n <= 1 else (k / (n - 1) - 0.5) * DODGE


def _chance(fig: go.Figure, x0: float, x1: float, y: float, name: str, **where) -> None:
    fig.add_trace(go.Scatter(x=[x0, x1], y=[y, y], mode="lines", line=CHANCE_STYLE, name=name, hoverinfo="name"), **where)


# ---------------------------------------------------------------------------- manifolds


def category_groups(labels: list[str | None] | None, n: int) -> tuple[list[str], dict[str, str]]:
    """(legend label per point [n], label -> colour): the ten most frequent labels get their own
    colour, the rest are "other", missing labels "unlabelled"; without labels one "stimulus" group."""
    if not labels or all(x is None for x in labels):
        return ["stimulus"] * n, {"stimulus": SINGLE}
    counts = collections.Counter(x for x in labels if x is not None)
    top = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]]
    colours = {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(top)}
    names = ["unlabelled" if x is None else x if x in colours else "other" for x in labels]
    if "other" in names:
        colours["other"] = OTHER
    if "unlabelled" in names:
        colours["unlabelled"] = UNLABELLED
    return names, colours


def manifold_figure(data: dict, captions: dict[int, str] | None = None, height: int = 480) -> go.Figure:
    """The brain map and the (aligned) text map side by side, one trace per category group in each
    (legend toggles a group in both), each point's ``customdata`` its stimulus index, hover naming
    the stimulus and its caption. Two empty "selected stimulus" traces (``meta`` "selected") are
    filled in the browser for the selected stimulus, so a switch does not resend the figure.

    ``data``: the manifolds read ({indices int [n], brain float [n, 2], text float [n, 2],
    categories / groups, region, n_units, source, embedder, trustworthiness, shared_neighbours, chance}).
    """
    indices = np.asarray(data["indices"], np.int64)
    maps = {"brain": np.asarray(data["brain"], np.float64), "text": np.asarray(data["text"], np.float64)}
    labels = data.get("groups") or data.get("categories")
    names, colours = category_groups(labels, len(indices))
    categories = data.get("categories") or [None] * len(indices)
    captions = captions or {}
    hover = [
        f"#{i} · {html.escape(str(c or ''))}<br>{html.escape(_short(captions.get(int(i), '')))}" for i, c in zip(indices.tolist(), categories)
    ]
    trust = data.get("trustworthiness") or {}
    embedder = str(data.get("embedder") or "").split("/")[-1]
    region = data.get("region") or "all units with signal"
    titles = (
        f"Brain: {region} ({data.get('n_units', 0):,} units) · trustworthiness {trust.get('brain', float('nan')):.2f}",
        f"Captions: {data.get('source', 'reference')} · {embedder} (aligned) · trustworthiness {trust.get('text', float('nan')):.2f}",
    )
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.06)
    order = list(colours)
    for col, which in ((1, "brain"), (2, "text")):
        xy = maps[which]
        for name in order:
            rows = [k for k, n in enumerate(names) if n == name]
            fig.add_trace(go.Scatter(
                # plain lists, not numpy arrays (which travel as base64 typed arrays): the page's
                # script reads customdata and positions to ring the selected stimulus
                x=xy[rows, 0].round(4).tolist(), y=xy[rows, 1].round(4).tolist(), mode="markers", name=f"{name} ({len(rows)})", legendgroup=name,
                showlegend=col == 1, marker=dict(color=colours[name], size=7, line=dict(width=0.5, color="white")),
                customdata=indices[rows].tolist(), hovertext=[hover[k] for k in rows], hovertemplate="%{hovertext}<extra></extra>",
                meta=f"points:{which}",
            ), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=[], y=[], mode="markers", name="selected stimulus", legendgroup="selected", showlegend=col == 1,
            marker=dict(size=20, symbol="circle-open", color="black", line=dict(width=3)), hoverinfo="skip", meta="selected",
        ), row=1, col=col)
    shared = data.get("shared_neighbours")
    footer = "" if shared is None else (
        f"shared neighbours between the maps {100 * shared:.1f}% (chance {100 * data.get('chance', 0):.1f}%) · click a point to select its stimulus"
    )
    _layout(fig, footer, height)
    # legend below the maps: the maps keep the width, and the hover preview (top right) hides no entry
    fig.update_layout(title=dict(font=dict(size=12)), clickmode="event", hovermode="closest", margin=dict(b=90),
                      legend=dict(orientation="h", x=0, y=-0.12, yanchor="top", title=dict(text="click to hide / show:")))
    for col in (1, 2):
        fig.update_xaxes(title_text="UMAP 1", showticklabels=False, zeroline=False, row=1, col=col)
        fig.update_yaxes(title_text="UMAP 2", showticklabels=False, zeroline=False, row=1, col=col)
    fig.update_yaxes(scaleanchor="x", scaleratio=1, row=1, col=1)
    fig.update_yaxes(scaleanchor="x2", scaleratio=1, row=1, col=2)
    fig.update_layout(meta={"dataset": data.get("dataset"), "kind": "manifold"})
    return fig


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------- RDMs


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


def rdm_figure(matrices: list[np.ndarray], titles: list[str], stimuli: list[int], captions: dict[int, str] | None = None,
               footer: str = "", height: int = 460) -> go.Figure:
    """RDMs [n, n] side by side as heatmaps of rank percentiles (one shared colour bar, 0 =
    most similar pair, 1 = most dissimilar), hover naming both stimuli (index and caption) and
    the dissimilarity's rank. ``stimuli``: the n stimulus indices in matrix order."""
    if len(matrices) != len(titles) or not matrices:
        raise ValueError("one title per matrix, at least one matrix")
    captions = captions or {}
    names = [f"#{i} {_short(captions.get(int(i), ''), 50)}".strip() for i in stimuli]
    if len(set(names)) != len(names):
        raise ValueError("stimuli must be distinct")
    fig = make_subplots(rows=1, cols=len(matrices), subplot_titles=titles, horizontal_spacing=0.08)
    for k, matrix in enumerate(matrices):
        m = np.asarray(matrix, np.float64)
        if m.shape != (len(names), len(names)):
            raise ValueError(f"matrix {k} is {m.shape}, expected {len(names)} x {len(names)}")
        fig.add_trace(go.Heatmap(
            z=percentile_ranks(m), x=names, y=names, customdata=m, coloraxis="coloraxis",
            hovertemplate="row: %{y}<br>column: %{x}<br>dissimilarity %{customdata:.3f} (rank percentile %{z:.2f})"
                          f"<extra>{html.escape(titles[k])}</extra>",
        ), row=1, col=k + 1)
        fig.update_xaxes(showticklabels=False, title_text="stimulus (clustered order)", row=1, col=k + 1)
        fig.update_yaxes(showticklabels=False, autorange="reversed", title_text="stimulus" if k == 0 else None,
                         scaleanchor=f"x{k + 1 if k else ''}", row=1, col=k + 1)
    _layout(fig, footer, height)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1, colorbar=dict(
        title=dict(text="dissimilarity<br>(rank percentile)"), tickvals=[0, 1], ticktext=["similar", "dissimilar"])))
    return fig


# ---------------------------------------------------------------------------- summary plots


def _dodged_points(rows: list[dict], category: str, group: str, value: str, spread: str | None, title: str,
                   x_title: str, y_title: str, chance: float, chance_name: str, height: int) -> go.Figure:
    """Points per (category, group): categories along x, groups dodged around each category and
    drawn with their own marker shape, optional error bars (``spread``: a half-width column)."""
    if not rows:
        raise ValueError("no rows to plot")
    categories = list(dict.fromkeys(r[category] for r in rows))
    groups = list(dict.fromkeys(r[group] for r in rows))
    fig = go.Figure()
    for k, name in enumerate(groups):
        mine = [r for r in rows if r[group] == name]
        xs = [categories.index(r[category]) + _dodge(k, len(groups)) for r in mine]
        ys = [r[value] for r in mine]
        error = None
        if spread is not None:
            error = dict(type="data", array=[r[spread] for r in mine], visible=True, thickness=1.2, width=4)
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers", name=str(name), error_y=error,
            marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=10, color=PALETTE[k % len(PALETTE)], line=dict(width=1, color="white")),
            customdata=[[r[category]] + ([r[spread]] if spread else []) for r in mine],
            hovertemplate=f"{html.escape(str(name))}<br>%{{customdata[0]}}: %{{y:.3f}}"
                          + (" ± %{customdata[1]:.3f}" if spread else "") + "<extra></extra>",
        ))
    _chance(fig, -0.5, len(categories) - 0.5, chance, chance_name)
    _layout(fig, title, height)
    fig.update_xaxes(title_text=x_title, tickmode="array", tickvals=list(range(len(categories))), ticktext=categories,
                     range=[-0.5, len(categories) - 0.5])
    fig.update_yaxes(title_text=y_title, zeroline=True)
    return fig


def rsa_figure(rows: list[dict], height: int = 420) -> go.Figure:
    """RSA rows ({region, source, mean, sd}): per region, each caption source's RDM correlation,
    mean ± sd over random stimulus subsets, and the no-correlation line."""
    return _dodged_points(
        rows, "region", "source", "mean", "sd", "RDM correlation of each brain region with each caption model",
        "brain region / area", "RDM correlation (Spearman ρ), mean ± sd over subsets", 0.0, "no correlation (ρ = 0)", height,
    )


def controls_figure(rows: list[dict], height: int = 420) -> go.Figure:
    """Controls rows ({region, control, mean_difference}): per region, the mean r of the full
    caption minus the control's, and the no-difference line (no spread is computed per region)."""
    return _dodged_points(
        rows, "region", "control", "mean_difference", None, "Full caption against word-level controls",
        "brain region / area", "mean encoding r difference (full caption − control)", 0.0, "no difference", height,
    )


def comparison_figure(rows: list[dict], y: str = "image_two_way", height: int = 440) -> go.Figure:
    """Captioner comparison rows ({source, encoding_r, image_two_way | pixcorr, ...}): one trace
    per caption source (own marker shape; sources with identical values are offset sideways by
    a small step and hover gives the exact values), with the chance level of the y measure."""
    y_titles = {
        "image_two_way": ("reconstruction 2-way identification (image embedding)", 0.5, "chance (2-way: 0.5)"),
        "pixcorr": ("reconstruction PixCorr (pixel correlation)", 0.0, "no correlation"),
        "two_way": ("decoding 2-way identification (text embedding)", 0.5, "chance (2-way: 0.5)"),
    }
    y_title, chance, chance_name = y_titles.get(y, (y, 0.0, "zero"))
    xs = [float(r["encoding_r"]) for r in rows]
    span = (max(xs) - min(xs)) if len(xs) > 1 else 0.0
    step = 0.01 * (span or max(abs(max(xs, default=1.0)), 0.1))
    seen: collections.Counter = collections.Counter()
    fig = go.Figure()
    for k, r in enumerate(rows):
        point = (round(float(r["encoding_r"]), 6), round(float(r[y]), 6))
        shift = seen[point] * step  # identical points side by side, not on top of each other
        seen[point] += 1
        fig.add_trace(go.Scatter(
            x=[float(r["encoding_r"]) + shift], y=[float(r[y])], mode="markers", name=str(r["source"]),
            marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=13, color=PALETTE[k % len(PALETTE)], line=dict(width=1, color="white")),
            customdata=[[float(r["encoding_r"])]],
            hovertemplate=f"{html.escape(str(r['source']))}<br>encoding r %{{customdata[0]:.4f}}<br>{y}: %{{y:.3f}}<extra></extra>",
        ))
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    pad = 0.1 * ((hi - lo) or 0.1)
    _chance(fig, lo - pad, hi + pad + step * max(seen.values(), default=1), chance, chance_name)
    _layout(fig, "Encoding accuracy against reconstruction quality, per caption source", height)
    fig.update_xaxes(title_text="encoding accuracy: mean test r over units with signal")
    fig.update_yaxes(title_text=y_title)
    return fig


def message_figure(text: str, height: int = 160) -> go.Figure:
    """An empty figure saying why there is nothing to plot (what to run first)."""
    fig = go.Figure()
    fig.add_annotation(text=html.escape(text), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14, color="#555555"))
    fig.update_layout(height=height, template="plotly_white", xaxis=dict(visible=False), yaxis=dict(visible=False),
                      margin=dict(l=10, r=10, t=10, b=10), meta={"kind": "message"})
    return fig
