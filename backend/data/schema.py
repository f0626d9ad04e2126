"""The dataset model: stimuli, responses and the space their units live in.

A dataset is brain responses to images. Every stage downstream (captions, embeddings, encoding
fits, the viewer) reads it through these types, whatever format it was imported from.

Shapes used throughout:
    n_stimuli   images shown
    n_units     vertices (surface) or neurons
    responses   float32 [n_stimuli, n_units], averaged over repeats
    trials      float32 [n_repeats, n_trial_stimuli, n_units], single trials of some stimuli
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

#: Vertices per hemisphere of the FreeSurfer fsaverage family. Each mesh's vertices are the first
#: vertices of the next finer one, which is why data on fsaverage can be shown on fsaverage5.
SURFACE_MESHES: dict[str, int] = {
    "fsaverage3": 642,
    "fsaverage4": 2562,
    "fsaverage5": 10242,
    "fsaverage6": 40962,
    "fsaverage": 163842,
}

SPLITS = ("train", "test")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and the problem in one line."""


@dataclass(frozen=True)
class SurfaceSpace:
    """Units are vertices of a FreeSurfer-style mesh, both hemispheres, left first.

    vertices:   int64 [n_units], indices into the concatenated lh+rh vertices of ``mesh``, or
                None when the data cover every vertex (then n_units = 2 * vertices per hemisphere).
    roi_labels: int16 [n_units], index into ``roi_names``; 0 is "no region".
    """

    mesh: str
    roi_labels: np.ndarray
    roi_names: tuple[str, ...]
    vertices: np.ndarray | None = None
    kind: Literal["surface"] = field(default="surface", init=False)

    @property
    def n_mesh_vertices(self) -> int:
        return 2 * SURFACE_MESHES[self.mesh]

    @property
    def n_units(self) -> int:
        return self.n_mesh_vertices if self.vertices is None else len(self.vertices)


@dataclass(frozen=True)
class NeuronSpace:
    """Units are neurons, each in a visual area and at a position on the dorsal cortical map.

    area:       int16 [n_units], index into ``areas`` (e.g. VISp, VISl, ...)
    x, y:       float32 [n_units], position on the flattened dorsal map, mm (x lateral, y anterior)
    depth:      float32 [n_units], imaging depth below the pia, um
    cell_type:  int16 [n_units], index into ``cell_types`` (Cre line or class)
    area_outlines: area name -> float32 [k, 2] closed polygon on the same map, mm
    """

    areas: tuple[str, ...]
    area: np.ndarray
    x: np.ndarray
    y: np.ndarray
    depth: np.ndarray
    cell_types: tuple[str, ...]
    cell_type: np.ndarray
    area_outlines: dict[str, np.ndarray] = field(default_factory=dict)
    kind: Literal["neurons"] = field(default="neurons", init=False)

    @property
    def n_units(self) -> int:
        return len(self.area)


UnitSpace = SurfaceSpace | NeuronSpace


@dataclass(frozen=True)
class Stimuli:
    """The images shown, in response-row order. Images stay on disk until asked for."""

    ids: tuple[str, ...]
    image_paths: tuple[Path, ...]
    splits: tuple[str, ...]
    captions: tuple[str | None, ...]
    categories: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def indices(self, split: str) -> np.ndarray:
        """int64 [k]: rows of the stimuli in ``split``, in order."""
        return np.flatnonzero(np.asarray(self.splits) == split)


@dataclass(frozen=True)
class Dataset:
    """Responses of one subject (or one pooled population) to a set of images.

    noise_ceiling: float32 [n_units], percent of the variance of ``responses`` on the test split
    that is explainable (NSD convention: 100 * ncsnr^2 / (ncsnr^2 + 1/n_repeats)), or None.
    captions: captioner id -> one caption per stimulus, for captions that came with the dataset
    (the demo world's simulated captioners); the reference captions are ``stimuli.captions``.
    truth: names of planted ground-truth maps (simulated datasets), each float32 [n_units], loaded
    with :meth:`truth_map`.
    """

    id: str
    name: str
    root: Path
    stimuli: Stimuli
    responses: np.ndarray
    space: UnitSpace
    description: str = ""
    simulated: bool = False
    trials: np.ndarray | None = None
    trial_stimuli: np.ndarray | None = None
    noise_ceiling: np.ndarray | None = None
    captions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    truth: dict[str, str] = field(default_factory=dict)
    truth_file: Path | None = None

    @property
    def n_stimuli(self) -> int:
        return self.responses.shape[0]

    @property
    def n_units(self) -> int:
        return self.responses.shape[1]

    def truth_map(self, name: str) -> np.ndarray:
        """float32 [n_units]: one planted ground-truth map."""
        from backend.data.folder import load_array  # the folder module builds on this one

        if name not in self.truth or self.truth_file is None:
            raise KeyError(f"dataset {self.id!r} has no truth map {name!r}; it has {sorted(self.truth)}")
        # Through the checked reader: the file may have changed since the dataset was opened.
        return np.asarray(load_array(self.truth_file, key=name, root=self.root), dtype=np.float32)
