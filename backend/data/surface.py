"""Cortical surface meshes and the operations on them that simulations and displays need.

fsaverage5 ships inside nilearn, so it is available offline; finer fsaverage meshes are downloads,
and data on them are shown on fsaverage5 (whose vertices are the first 10,242 of each finer
hemisphere).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

HEMISPHERES = ("lh", "rh")
_NILEARN_PARTS = {"lh": "left", "rh": "right"}
DISPLAY_MESH = "fsaverage5"


@dataclass(frozen=True)
class Hemisphere:
    """One hemisphere of a mesh. coords: float32 [n, 3] mm; faces: int32 [m, 3]; sulc: float32 [n]."""

    coords: np.ndarray
    faces: np.ndarray
    sulc: np.ndarray


@functools.lru_cache(maxsize=8)
def load_hemispheres(mesh: str = DISPLAY_MESH, kind: str = "inflated") -> dict[str, Hemisphere]:
    """The two hemispheres of ``mesh`` as ``kind`` (inflated, pial, white_matter, sphere, flat).

    Only fsaverage5 is available offline; other meshes raise ValueError saying so.
    """
    if mesh != DISPLAY_MESH:
        raise ValueError(f"mesh {mesh!r} is not available offline; only {DISPLAY_MESH} ships with nilearn")
    from nilearn import datasets

    meshes = datasets.load_fsaverage(mesh)
    if kind not in meshes or kind == "description":
        raise ValueError(f"unknown surface kind {kind!r}; use one of inflated, pial, white_matter, sphere, flat")
    sulc = datasets.load_fsaverage_data(mesh, data_type="sulcal", mesh_type=kind if kind != "flat" else "inflated")
    out = {}
    for hemi in HEMISPHERES:
        part = meshes[kind].parts[_NILEARN_PARTS[hemi]]
        out[hemi] = Hemisphere(
            coords=np.asarray(part.coordinates, dtype=np.float32),
            faces=np.asarray(part.faces, dtype=np.int32),
            sulc=np.asarray(sulc.data.parts[_NILEARN_PARTS[hemi]], dtype=np.float32),
        )
    return out


def adjacency(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency [n_vertices, n_vertices] from triangles int [m, 3]."""
    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    a = sp.coo_matrix((np.ones(len(i), np.float32), (i, j)), shape=(n_vertices, n_vertices)).tocsr()
    a = ((a + a.T) > 0).astype(np.float32)
    return a.tocsr()


def smoothing_operator(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Row-stochastic operator averaging each vertex with its neighbours: one diffusion step.

    Applying it k times smooths with a kernel whose width grows like sqrt(k) edge lengths
    (about 4 mm per edge on fsaverage5).
    """
    a = adjacency(faces, n_vertices) + sp.identity(n_vertices, dtype=np.float32, format="csr")
    degree = np.asarray(a.sum(axis=1)).ravel()
    return sp.diags(1.0 / degree).astype(np.float32) @ a


def smooth(values: np.ndarray, operator: sp.csr_matrix, steps: int) -> np.ndarray:
    """Diffuse ``values`` [n_vertices, ...] along the mesh ``steps`` times."""
    out = values
    for _ in range(steps):
        out = operator @ out
    return np.asarray(out, dtype=np.float32)


def display_vertices(mesh: str, vertices: np.ndarray | None) -> np.ndarray:
    """int64 [n_units]: each unit's vertex on the fsaverage5 display mesh (lh then rh), -1 if none.

    mesh: the data's fsaverage mesh; vertices: the units' indices into its lh+rh vertices, or
    None for all of them. Every fsaverage mesh's vertices are the first vertices of each finer
    one, so a coarser mesh's vertex j is fsaverage5's vertex j, and a finer mesh's vertex j is
    displayable exactly when j < 10,242.
    """
    from backend.data.schema import SURFACE_MESHES

    per_hemi = SURFACE_MESHES[mesh]
    shown = SURFACE_MESHES[DISPLAY_MESH]
    index = np.arange(2 * per_hemi, dtype=np.int64) if vertices is None else np.asarray(vertices, np.int64)
    right = index >= per_hemi
    local = index - right * per_hemi
    return np.where(local < shown, local + right * shown, -1).astype(np.int64)
