"""Fixed-view rasterisation of a cortical surface mesh, in plain numpy.

The brain panel renders each (hemisphere, view) once per geometry on the server: an orthographic
projection of the inflated mesh, z-buffered over its triangles, gives for every pixel the triangle it
shows (and the barycentric weights inside it). The browser keeps that image and, on every stimulus
switch, only looks up per-vertex values: no WebGL, no mesh upload per switch.

Conventions
- Mesh coordinates are FreeSurfer RAS millimetres: x left->right, y posterior->anterior,
  z inferior->superior.
- Image coordinates are pixels, x to the right, y downwards, pixel (i, j) has its centre at
  (i + 0.5, j + 0.5). Images are indexed ``[row, column]`` = ``[y, x]``.
- ``depth`` grows towards the viewer (the visible surface has the largest depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (out, up): `out` points from the brain towards the viewer, `up` is the screen's up direction.
# Screen-right is up x out, which puts the frontal lobe on the left in lh-lateral and rh-medial
# views, and on the right in rh-lateral and lh-medial views (the usual neuroimaging layout).
_VIEW_AXES = {
    ("lh", "lateral"): ((-1, 0, 0), (0, 0, 1)),
    ("lh", "medial"): ((1, 0, 0), (0, 0, 1)),
    ("rh", "lateral"): ((1, 0, 0), (0, 0, 1)),
    ("rh", "medial"): ((-1, 0, 0), (0, 0, 1)),
    # Ventral and dorsal views keep the lateral view's front-back direction (frontal lobe left for
    # lh, right for rh), so they sit as a third row under the lateral and medial views.
    ("lh", "ventral"): ((0, 0, -1), (-1, 0, 0)),
    ("rh", "ventral"): ((0, 0, -1), (1, 0, 0)),
    ("lh", "dorsal"): ((0, 0, 1), (1, 0, 0)),
    ("rh", "dorsal"): ((0, 0, 1), (-1, 0, 0)),
    ("lh", "posterior"): ((0, -1, 0), (0, 0, 1)),
    ("rh", "posterior"): ((0, -1, 0), (0, 0, 1)),
}
VIEW_NAMES = ("lateral", "medial", "ventral", "dorsal", "posterior")
HEMIS = ("lh", "rh")


def view_basis(hemi: str, view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen basis of a named view.

    Returns (right, up, out): three orthonormal float64 [3] vectors in mesh space; `out` points
    from the surface towards the viewer.
    """
    try:
        out, up = _VIEW_AXES[(hemi, view)]
    except KeyError:
        raise ValueError(f"unknown view {hemi!r}/{view!r}; views: {VIEW_NAMES}") from None
    out = np.asarray(out, float)
    up = np.asarray(up, float)
    return np.cross(up, out), up, out


def project(coords: np.ndarray, hemi: str, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic projection of vertices onto a view's screen plane.

    coords: float [n, 3] mm. Returns (xy float64 [n, 2] mm with y *up*, depth float64 [n] mm,
    larger = nearer the viewer).
    """
    right, up, out = view_basis(hemi, view)
    c = np.asarray(coords, float)
    return np.stack([c @ right, c @ up], axis=1), c @ out


def rasterize(
    xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer a triangle mesh already projected to pixel coordinates.

    xy: float [n, 2] pixel coordinates (x right, y down); depth: float [n] (larger = nearer);
    faces: int [m, 3]; shape: (height, width).
    Returns
      face_id int32 [H, W]: index of the nearest triangle covering each pixel centre, -1 if none;
      bary float32 [H, W, 3]: barycentric weights of the pixel centre in that triangle (0 if none);
      zbuf float32 [H, W]: interpolated depth, -inf where empty.
    Triangles are processed in buckets by bounding-box size so everything stays vectorised.
    """
    height, width = shape
    xy = np.asarray(xy, np.float64)
    depth = np.asarray(depth, np.float64)
    faces = np.asarray(faces, np.int64)
    tri = xy[faces]  # [m, 3, 2]
    tz = depth[faces]  # [m, 3]
    # Pixel i covers centre i + 0.5: candidate columns are those whose centre is in the bbox.
    lo = np.ceil(tri.min(axis=1) - 0.5).astype(np.int64)
    hi = np.floor(tri.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    ext = (hi - lo + 1).max(axis=1)  # bbox side in pixels (<= 0: covers no pixel centre)
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    x1, y1 = tri[:, 1, 0], tri[:, 1, 1]
    x2, y2 = tri[:, 2, 0], tri[:, 2, 1]
    denom = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
    usable = (ext > 0) & (np.abs(denom) > 1e-12)

    pix_parts, z_parts, f_parts, w_parts = [], [], [], []
    k = 1
    remaining = usable.copy()
    while remaining.any():
        sel = np.flatnonzero(remaining & (ext <= k))
        remaining[sel] = False
        if sel.size:
            d = np.arange(k)
            dx, dy = np.meshgrid(d, d)
            px = lo[sel, 0, None] + dx.ravel()[None, :]  # [s, k*k]
            py = lo[sel, 1, None] + dy.ravel()[None, :]
            inbox = (px <= hi[sel, 0, None]) & (py <= hi[sel, 1, None])
            cx, cy = px + 0.5, py + 0.5
            s = sel[:, None]
            l0 = ((y1[s] - y2[s]) * (cx - x2[s]) + (x2[s] - x1[s]) * (cy - y2[s])) / denom[s]
            l1 = ((y2[s] - y0[s]) * (cx - x2[s]) + (x0[s] - x2[s]) * (cy - y2[s])) / denom[s]
            l2 = 1.0 - l0 - l1
            eps = -1e-7  # shared edges: both triangles claim the pixel, the z-buffer picks one
            inside = inbox & (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
            r, c = np.nonzero(inside)
            fsel = sel[r]
            w = np.stack([l0[r, c], l1[r, c], l2[r, c]], axis=1)
            pix_parts.append(py[r, c] * width + px[r, c])
            z_parts.append((w * tz[fsel]).sum(axis=1))
            f_parts.append(fsel)
            w_parts.append(w)
        k *= 2

    face_id = np.full(height * width, -1, np.int32)
    bary = np.zeros((height * width, 3), np.float32)
    zbuf = np.full(height * width, -np.inf, np.float32)
    if pix_parts:
        pix = np.concatenate(pix_parts)
        z = np.concatenate(z_parts)
        f = np.concatenate(f_parts)
        w = np.concatenate(w_parts)
        order = np.lexsort((-z, pix))  # per pixel, nearest candidate first
        pix_sorted = pix[order]
        first = np.ones(pix_sorted.size, bool)
        first[1:] = pix_sorted[1:] != pix_sorted[:-1]
        win = order[first]
        face_id[pix[win]] = f[win]
        bary[pix[win]] = np.clip(w[win], 0.0, 1.0)
        zbuf[pix[win]] = z[win]
    return (
        face_id.reshape(height, width),
        bary.reshape(height, width, 3),
        zbuf.reshape(height, width),
    )


def vertex_normals(coords: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, oriented outwards.

    coords: float [n, 3]; faces: int [m, 3]. Returns float64 [n, 3].
    Orientation is fixed from the data (normals should point away from the centroid on average),
    so a mesh with clockwise faces is still shaded correctly.
    """
    c = np.asarray(coords, float)
    f = np.asarray(faces, np.int64)
    fn = np.cross(c[f[:, 1]] - c[f[:, 0]], c[f[:, 2]] - c[f[:, 0]])  # length = 2 * area
    n = np.zeros_like(c)
    for j in range(3):
        np.add.at(n, f[:, j], fn)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    if np.einsum("ij,ij->", n, c - c.mean(axis=0)) < 0:
        n = -n
    return n


def lambert_shade(normals: np.ndarray, hemi: str, view: str) -> np.ndarray:
    """Per-vertex diffuse shading for a view, float32 [n] in [0, 1].

    A head-light tilted up and to the left (as in most figure software) gives relief without
    hiding the data; 0 = facing away from the light, 1 = facing it.
    """
    right, up, out = view_basis(hemi, view)
    light = out + 0.45 * up - 0.25 * right
    light /= np.linalg.norm(light)
    return np.clip(normals @ light, 0.0, 1.0).astype(np.float32)


def nearest_vertex(face_id: np.ndarray, bary: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Vertex nearest to each pixel centre: the triangle corner with the largest weight.

    face_id int [H, W] (-1 empty); bary float [H, W, 3]; faces int [m, 3].
    Returns int64 [H, W], -1 where the pixel shows no surface.
    """
    out = np.full(face_id.shape, -1, np.int64)
    hit = face_id >= 0
    corner = np.argmax(bary[hit], axis=1)
    out[hit] = np.asarray(faces, np.int64)[face_id[hit], corner]
    return out


def label_boundary_mask(vertex_image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pixels on the border between two regions, from a nearest-vertex image.

    vertex_image int [H, W] (-1 = background); labels int [n_vertices] (0 = no region).
    Returns bool [H, W]: True where the pixel's label differs from its right or lower neighbour's
    (both on the surface). A pixel-level view of the outlines for checks; the browser draws the
    vector outlines of `smooth_outlines` instead.
    """
    lab = np.where(vertex_image >= 0, np.asarray(labels)[np.maximum(vertex_image, 0)], -1)
    on = lab >= 0
    mask = np.zeros(lab.shape, bool)
    mask[:, :-1] |= (lab[:, :-1] != lab[:, 1:]) & on[:, :-1] & on[:, 1:]  # right neighbour
    mask[:-1, :] |= (lab[:-1, :] != lab[1:, :]) & on[:-1, :] & on[1:, :]  # lower neighbour
    return mask


def boundary_segments(coords: np.ndarray, faces: np.ndarray, labels: np.ndarray):
    """Region outlines on the mesh, as line segments through triangles ("marching triangles").

    coords float [n, 3]; faces int [m, 3]; labels int [n] (0 = no region).
    In a triangle whose corners carry two labels the outline joins the midpoints of the two edges
    that change label; with three labels, each edge midpoint joins the centroid.
    Returns (seg float64 [s, 2, 3] endpoints in mesh space, face int64 [s] the triangle of each
    segment, keys int64 [s, 2] an id per endpoint: ``i * n + j`` for the midpoint of edge (i < j),
    ``n * n + face`` for a centroid; neighbouring segments share endpoint ids).
    Every segment separates vertices of different labels.
    """
    c = np.asarray(coords, float)
    f = np.asarray(faces, np.int64)
    n = len(c)
    lab = np.asarray(labels)[f]  # [m, 3]

    def edge_key(i, j):
        return np.minimum(i, j) * n + np.maximum(i, j)

    segs, seg_face, keys = [], [], []
    # Two labels: exactly one corner is the odd one out.
    for odd in range(3):
        a, b = (odd + 1) % 3, (odd + 2) % 3
        sel = np.flatnonzero((lab[:, a] == lab[:, b]) & (lab[:, odd] != lab[:, a]))
        if sel.size:
            vo, va, vb = f[sel, odd], f[sel, a], f[sel, b]
            segs.append(np.stack([(c[vo] + c[va]) / 2, (c[vo] + c[vb]) / 2], axis=1))
            seg_face.append(sel)
            keys.append(np.stack([edge_key(vo, va), edge_key(vo, vb)], axis=1))
    three = np.flatnonzero(
        (lab[:, 0] != lab[:, 1]) & (lab[:, 1] != lab[:, 2]) & (lab[:, 0] != lab[:, 2])
    )
    if three.size:
        p = c[f[three]]  # [t, 3, 3]
        centre = p.mean(axis=1)
        for i, j in ((0, 1), (1, 2), (2, 0)):
            segs.append(np.stack([(p[:, i] + p[:, j]) / 2, centre], axis=1))
            seg_face.append(three)
            keys.append(np.stack([edge_key(f[three, i], f[three, j]), n * n + three], axis=1))
    if not segs:
        return np.zeros((0, 2, 3)), np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
    return np.concatenate(segs), np.concatenate(seg_face), np.concatenate(keys)


def chain_segments(keys: np.ndarray) -> list[tuple[list[int], bool]]:
    """Join segments that share endpoints into polylines.

    keys int [s, 2]: endpoint ids per segment (from `boundary_segments`).
    Returns a list of (node ids in walking order, closed): a closed loop lists each node once.
    Polylines end at loose ends and at junctions (a node shared by 3+ segments).
    """
    from collections import defaultdict

    adj: dict[int, list[int]] = defaultdict(list)
    for s_i, (a, b) in enumerate(keys.tolist()):
        adj[a].append(s_i)
        adj[b].append(s_i)
    used = np.zeros(len(keys), bool)
    klist = keys.tolist()

    def walk(node: int, seg: int) -> list[int]:
        nodes = [node]
        while True:
            used[seg] = True
            a, b = klist[seg]
            node = b if a == node else a
            nodes.append(node)
            if len(adj[node]) != 2:
                return nodes
            nxt = [t for t in adj[node] if not used[t]]
            if not nxt:
                return nodes
            seg = nxt[0]

    out = []
    for node, segs in adj.items():
        if len(segs) != 2:
            for s_i in segs:
                if not used[s_i]:
                    out.append((walk(node, s_i), False))
    for s_i in range(len(keys)):
        if not used[s_i]:
            nodes = walk(klist[s_i][0], s_i)
            out.append((nodes[:-1] if nodes[0] == nodes[-1] else nodes, nodes[0] == nodes[-1]))
    return out


def relax(points: np.ndarray, closed: bool, iterations: int = 4) -> np.ndarray:
    """Moving-average smoothing ([1, 2, 1] / 4) of a polyline float [k, d]; open ends stay put.

    Marching-triangle outlines zig-zag with a period of one or two triangles; this removes that
    while moving the line by well under a triangle.
    """
    p = np.asarray(points, float).copy()
    if len(p) < 3:
        return p
    for _ in range(iterations):
        prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
        q = 0.25 * prev + 0.5 * p + 0.25 * nxt
        if not closed:
            q[0], q[-1] = p[0], p[-1]
        p = q
    return p


def chaikin(points: np.ndarray, closed: bool, iterations: int = 2) -> np.ndarray:
    """Corner-cutting smoothing of a polyline float [k, d]; open lines keep their end points."""
    p = np.asarray(points, float)
    for _ in range(iterations):
        if len(p) < 3 and not closed:
            return p
        nxt = np.roll(p, -1, axis=0) if closed else p[1:]
        cur = p if closed else p[:-1]
        q = 0.75 * cur + 0.25 * nxt
        r = 0.25 * cur + 0.75 * nxt
        inner = np.stack([q, r], axis=1).reshape(-1, p.shape[1])
        p = inner if closed else np.concatenate([p[:1], inner[1:-1], p[-1:]])
    return p


def smooth_outlines(coords: np.ndarray, faces: np.ndarray, labels: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Region outlines as smoothed segments float64 [s, 2, 3] in mesh space.

    The raw marching-triangle outline zig-zags at the mesh's resolution (~4 mm on fsaverage5);
    chaining it into polylines, averaging neighbours and cutting corners gives the smooth
    contours figures usually show.
    """
    seg, _, keys = boundary_segments(coords, faces, labels)
    if len(seg) == 0:
        return np.zeros((0, 2, 3))
    point = {}
    for k, p in zip(keys.ravel().tolist(), seg.reshape(-1, 3)):
        point[k] = p
    out = []
    for nodes, closed in chain_segments(keys):
        poly = chaikin(relax(np.array([point[k] for k in nodes]), closed), closed, iterations)
        if closed:
            poly = np.concatenate([poly, poly[:1]])
        if len(poly) >= 2:
            out.append(np.stack([poly[:-1], poly[1:]], axis=1))
    return np.concatenate(out)


@dataclass
class RenderedView:
    """One rasterised view of one hemisphere.

    face_id int32 [H, W] (-1 = background), bary float32 [H, W, 3], zbuf float32 [H, W];
    vertex_xy float32 [n, 2] pixel coordinates of every vertex of the hemisphere; shade float32 [n]
    Lambert shading per vertex for this view.
    """

    hemi: str
    view: str
    face_id: np.ndarray
    bary: np.ndarray
    zbuf: np.ndarray
    vertex_xy: np.ndarray
    shade: np.ndarray
    px_per_mm: float
    origin_mm: tuple[float, float]  # screen (xmin, ymax) in mm that maps to pixel (pad, pad)
    pad_px: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.face_id.shape

    def to_pixels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mesh-space points float [k, 3] -> (pixel xy float64 [k, 2], depth float64 [k] mm)."""
        xy, depth = project(points, self.hemi, self.view)
        px = np.empty_like(xy)
        px[:, 0] = (xy[:, 0] - self.origin_mm[0]) * self.px_per_mm + self.pad_px
        px[:, 1] = (self.origin_mm[1] - xy[:, 1]) * self.px_per_mm + self.pad_px
        return px, depth


def render_view(
    coords: np.ndarray,
    faces: np.ndarray,
    hemi: str,
    view: str,
    px_per_mm: float = 2.5,
    pad_px: int = 3,
    extent: tuple[float, float, float, float] | None = None,
) -> RenderedView:
    """Rasterise one hemisphere seen from one side.

    coords float [n, 3] mm (inflated mesh), faces int [m, 3]; px_per_mm sets the resolution
    (fsaverage inflated spans ~220 mm front to back: 2.5 px/mm gives ~550 px).
    extent (xmin, xmax, ymin, ymax) in screen mm fixes the frame (to give several views one size);
    by default the hemisphere's own bounding box.
    """
    xy_mm, depth = project(coords, hemi, view)
    if extent is None:
        extent = (xy_mm[:, 0].min(), xy_mm[:, 0].max(), xy_mm[:, 1].min(), xy_mm[:, 1].max())
    xmin, xmax, ymin, ymax = extent
    width = int(np.ceil((xmax - xmin) * px_per_mm)) + 2 * pad_px
    height = int(np.ceil((ymax - ymin) * px_per_mm)) + 2 * pad_px
    px = np.empty_like(xy_mm)
    px[:, 0] = (xy_mm[:, 0] - xmin) * px_per_mm + pad_px
    px[:, 1] = (ymax - xy_mm[:, 1]) * px_per_mm + pad_px  # image rows grow downwards
    face_id, bary, zbuf = rasterize(px, depth, faces, (height, width))
    shade = lambert_shade(vertex_normals(coords, faces), hemi, view)
    return RenderedView(
        hemi=hemi,
        view=view,
        face_id=face_id,
        bary=bary,
        zbuf=zbuf,
        vertex_xy=px.astype(np.float32),
        shade=shade,
        px_per_mm=float(px_per_mm),
        origin_mm=(float(xmin), float(ymax)),
        pad_px=int(pad_px),
    )


def segments_to_pixels(
    segments: np.ndarray, rendered: RenderedView, tol_mm: float = 1.0
) -> np.ndarray:
    """Project outline segments into a rendered view, keeping the visible ones.

    segments float [s, 2, 3] mesh-space endpoints (from `boundary_segments`). A segment is kept
    when the z-buffer at its midpoint pixel is within tol_mm of the segment's own depth, i.e. it
    lies on the visible surface rather than behind it.
    Returns float32 [k, 4] pixel coordinates (x0, y0, x1, y1).
    """
    if len(segments) == 0:
        return np.zeros((0, 4), np.float32)
    px, depth = rendered.to_pixels(np.asarray(segments, float).reshape(-1, 3))
    px = px.reshape(-1, 2, 2)
    z = depth.reshape(-1, 2).mean(axis=1)
    mid = px.mean(axis=1)
    h, w = rendered.shape
    ci = np.clip(mid[:, 0].astype(np.int64), 0, w - 1)
    ri = np.clip(mid[:, 1].astype(np.int64), 0, h - 1)
    keep = z >= rendered.zbuf[ri, ci] - tol_mm
    return px[keep].reshape(-1, 4).astype(np.float32)
