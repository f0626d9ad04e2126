"""Publication figure of a map on the cortex: pyvista renders the views off-screen, matplotlib lays
them out with a title and a colour bar with units, as one PNG for slides (2400 px wide and more).

One plain function, :func:`render_figure`: geometry + per-vertex values + colour settings -> PNG
bytes. The colours follow the browser panel's controls: the same matplotlib colour map, limits and
threshold (values below it show the sulcal grey, as nilearn's ``threshold``).
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np

from viewer.canvas_panel import SCALES, colormap_lut, sulc_grey

#: One render at a time: VTK's off-screen windows are not safe to drive from several threads, and
#: the viewer serves requests from a thread pool.
_RENDER_LOCK = threading.Lock()

#: Camera per view: (direction from the hemisphere's centre to the camera, view-up), brain RAS axes.
CAMERAS = {
    ("lh", "lateral"): ((-1, 0, 0), (0, 0, 1)),
    ("lh", "medial"): ((1, 0, 0), (0, 0, 1)),
    ("rh", "lateral"): ((1, 0, 0), (0, 0, 1)),
    ("rh", "medial"): ((-1, 0, 0), (0, 0, 1)),
    ("lh", "ventral"): ((0, 0, -1), (0, 1, 0)),
    ("rh", "ventral"): ((0, 0, -1), (0, 1, 0)),
    ("lh", "dorsal"): ((0, 0, 1), (0, 1, 0)),
    ("rh", "dorsal"): ((0, 0, 1), (0, 1, 0)),
    ("lh", "posterior"): ((0, -1, 0), (0, 0, 1)),
    ("rh", "posterior"): ((0, -1, 0), (0, 0, 1)),
}


def check_colours(cmap: str, scale: str, vmin: float, vmax: float) -> None:
    """ValueError (one line) unless the colour settings can be drawn."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}")
    if not (np.isfinite(vmin) and np.isfinite(vmax) and vmax > vmin):
        raise ValueError(f"need vmin < vmax, got {vmin}, {vmax}")
    colormap_lut(cmap, 2)  # unknown names fail here


def _add_map(plotter, coords: np.ndarray, faces: np.ndarray, sulc: np.ndarray | None, values: np.ndarray, *,
             cmap: str, scale: str, vmin: float, vmax: float, threshold: float | None, lit: bool = True) -> None:
    """Add one hemisphere: the sulcal-grey surface, and over it the data where shown, cut along the
    threshold's iso-line (so the edge is a smooth contour, as in the browser's per-pixel test)
    and coloured after interpolating the values (``interpolate_before_map``)."""
    import pyvista as pv

    faces = np.asarray(faces, np.int64)
    cells = np.hstack([np.full((len(faces), 1), 3), faces]).ravel()
    base = pv.PolyData(np.asarray(coords, np.float32), cells)
    grey = sulc_grey(sulc, len(coords))
    base.point_data["rgb"] = np.repeat(grey[:, None], 3, axis=1)
    shading = {"smooth_shading": True, "ambient": 0.25, "diffuse": 0.75, "specular": 0.0} if lit else {"lighting": False}
    plotter.add_mesh(base, scalars="rgb", rgb=True, render=False, **shading)
    v = np.asarray(values, np.float32)
    has = np.isfinite(v)
    if not has.any():
        return
    data = base.copy()
    data.point_data["v"] = np.where(has, v, 0.0).astype(np.float32)
    data.point_data["has"] = has.astype(np.float32)
    data = data.clip_scalar(scalars="has", value=0.5, invert=False)  # no-data vertices: cut half-way
    if threshold:
        key = np.abs(data.point_data["v"]) if scale == "symmetric" else data.point_data["v"]
        data.point_data["key"] = key.astype(np.float32)
        data = data.clip_scalar(scalars="key", value=float(threshold), invert=False)
    if data.n_points == 0:
        return
    data = data.compute_normals(auto_orient_normals=False, split_vertices=False)
    data.points = data.points + 0.08 * data.point_data["Normals"]  # just above the grey surface
    plotter.add_mesh(data, scalars="v", cmap=cmap, clim=(vmin, vmax), n_colors=256, interpolate_before_map=True,
                     show_scalar_bar=False, render=False, **shading)


def _render_tiles(geometry: dict, values: np.ndarray, layout, tile: tuple[int, int], transparent: bool, colours: dict) -> dict:
    """{(hemi, view): RGBA uint8 image} for each hemisphere and view (pyvista, off-screen)."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # headless, no X
    import pyvista as pv

    n_lh = len(geometry["lh"]["coords"])
    offset = {"lh": 0, "rh": n_lh}
    tiles = {}
    plotter = pv.Plotter(off_screen=True, window_size=list(tile))
    try:
        plotter.set_background("white")
        plotter.enable_anti_aliasing("ssaa")
        for hemi, view in layout:
            coords = np.asarray(geometry[hemi]["coords"], np.float32)
            n = len(coords)
            plotter.clear_actors()
            _add_map(plotter, coords, geometry[hemi]["faces"], geometry[hemi].get("sulc"), values[offset[hemi] : offset[hemi] + n], **colours)
            centre = coords.mean(axis=0)
            direction, up = CAMERAS[(hemi, view)]
            plotter.camera_position = [tuple(centre + 400 * np.asarray(direction)), tuple(centre), up]
            plotter.reset_camera(render=False)
            plotter.camera.zoom(1.35)
            tiles[(hemi, view)] = plotter.screenshot(transparent_background=transparent, return_img=True)
    finally:
        plotter.close()
    return tiles


def _render_flat(geometry: dict, values: np.ndarray, tile: tuple[int, int], transparent: bool, colours: dict) -> np.ndarray:
    """One image of both flat hemispheres side by side, seen from above (pyvista, off-screen)."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    lh, rh = (np.asarray(geometry[h]["coords"], np.float32).copy() for h in ("lh", "rh"))
    lh[:, 2] = rh[:, 2] = 0
    gap = 12.0
    lh[:, 0] -= lh[:, 0].max() + gap / 2
    rh[:, 0] -= rh[:, 0].min() - gap / 2
    plotter = pv.Plotter(off_screen=True, window_size=[tile[0] * 2, tile[1]])
    try:
        plotter.set_background("white")
        plotter.enable_anti_aliasing("ssaa")
        n_lh = len(lh)
        for coords, h, vals in ((lh, "lh", values[:n_lh]), (rh, "rh", values[n_lh:])):
            _add_map(plotter, coords, geometry[h]["faces"], geometry[h].get("sulc"), vals, lit=False, **colours)
        plotter.view_xy()
        plotter.reset_camera(render=False)
        plotter.camera.zoom(1.3)
        return plotter.screenshot(transparent_background=transparent, return_img=True)
    finally:
        plotter.close()


def _crop(img: np.ndarray, transparent: bool, pad: int = 12) -> np.ndarray:
    """Trim the empty border (white, or alpha 0) around a rendered view."""
    if transparent and img.shape[2] == 4:
        used = img[:, :, 3] > 0
    else:
        used = (img[:, :, :3] < 250).any(axis=2)
    if not used.any():
        return img
    rows, cols = np.flatnonzero(used.any(axis=1)), np.flatnonzero(used.any(axis=0))
    r0, r1 = max(0, rows[0] - pad), min(img.shape[0], rows[-1] + pad + 1)
    c0, c1 = max(0, cols[0] - pad), min(img.shape[1], cols[-1] + pad + 1)
    return img[r0:r1, c0:c1]


def render_figure(
    geometry: dict,
    values: np.ndarray,
    *,
    cmap: str = "RdBu_r",
    scale: str = "symmetric",
    vmin: float = -1.0,
    vmax: float = 1.0,
    threshold: float | None = None,
    title: str = "",
    units: str = "",
    views: tuple[str, ...] = ("lateral", "medial"),
    transparent: bool = False,
    flat: bool = False,
    width_px: int = 2400,
) -> bytes:
    """A PNG (bytes) of a per-vertex map on both hemispheres: rows = views, columns = left, right
    hemisphere (or one flat map of both when ``flat``), a title and a horizontal colour bar with
    ``units``; ``width_px`` wide (at least 2400), transparent background when asked.

    geometry {"lh"/"rh": {"coords" float32 [n_h, 3] mm, "faces" int [m_h, 3], "sulc" float32 [n_h]}};
    values float [n_lh + n_rh] per vertex (NaN = no data); colour settings as the panel's controls.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure  # not pyplot: no global figure state shared between threads

    if width_px < 2400:
        raise ValueError("a publication figure is at least 2400 px wide")
    unknown = [v for v in views if ("lh", v) not in CAMERAS]
    if unknown or not views:
        raise ValueError(f"views must be among lateral, medial, ventral, dorsal, posterior; got {list(views)}")
    n_total = len(geometry["lh"]["coords"]) + len(geometry["rh"]["coords"])
    values = np.asarray(values, np.float32)
    if values.shape != (n_total,):
        raise ValueError(f"values must have shape ({n_total},), got {values.shape}")
    check_colours(cmap, scale, vmin, vmax)
    colours = {"cmap": cmap, "scale": scale, "vmin": float(vmin), "vmax": float(vmax), "threshold": threshold}

    tile = (1000, 760)
    with _RENDER_LOCK:
        if flat:
            grid = [[_crop(_render_flat(geometry, values, tile, transparent, colours), transparent)]]
        else:
            tiles = _render_tiles(geometry, values, [(h, v) for v in views for h in ("lh", "rh")], tile, transparent, colours)
            grid = [[_crop(tiles[("lh", v)], transparent), _crop(tiles[("rh", v)], transparent)] for v in views]

    dpi = 200
    n_rows, n_cols = len(grid), len(grid[0])
    col_w = [max(row[c].shape[1] for row in grid) for c in range(n_cols)]
    row_h = [max(img.shape[0] for img in row) for row in grid]
    scale_px = width_px / sum(col_w)
    head_px, bar_px = 170 if title else 60, 260
    height_px = int(round(sum(row_h) * scale_px)) + head_px + bar_px
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    y = height_px - head_px
    for r, row in enumerate(grid):
        x = 0.0
        h = row_h[r] * scale_px
        y -= h
        for c, img in enumerate(row):
            w = col_w[c] * scale_px
            ax = fig.add_axes([x / width_px, y / height_px, w / width_px, h / height_px])
            ax.imshow(img, interpolation="bilinear")
            ax.set_axis_off()
            x += w
    if title:
        fig.text(0.5, 1 - 70 / height_px, title, ha="center", va="center", fontsize=15, fontweight="semibold")
    if not flat:
        for c, name in enumerate(("left", "right")):
            fig.text((sum(col_w[:c]) + col_w[c] / 2) * scale_px / width_px, 1 - (head_px - 25) / height_px, name,
                     ha="center", va="center", fontsize=11, color="#555")
    cax = fig.add_axes([0.3, 110 / height_px, 0.4, 42 / height_px])
    bar = fig.colorbar(ScalarMappable(norm=Normalize(vmin, vmax), cmap=colormaps[cmap]), cax=cax, orientation="horizontal")
    bar.set_label(units + (f"  (not coloured: {'|value|' if scale == 'symmetric' else 'value'} < {threshold:g})" if threshold else ""), fontsize=11)
    bar.ax.tick_params(labelsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, transparent=transparent, facecolor="none" if transparent else "white")
    return buf.getvalue()
