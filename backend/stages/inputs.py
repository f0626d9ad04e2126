"""A dataset's stimuli as stage inputs: content hashes and decoded images."""

from __future__ import annotations

import functools
import hashlib

from PIL import Image

from backend.data.folder import shown_path
from backend.data.schema import Dataset, DatasetError


@functools.lru_cache(maxsize=16)
def _hashes(paths: tuple) -> tuple[str, ...]:
    return tuple(hashlib.sha256(path.read_bytes()).hexdigest() for path in paths)


def image_hashes(ds: Dataset) -> tuple[str, ...]:
    """SHA-256 of each stimulus image file, in stimulus order (memoised per dataset)."""
    return _hashes(ds.stimuli.image_paths)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_images(ds: Dataset, indices) -> list[Image.Image]:
    """RGB images of the stimuli at ``indices``; an unreadable file is a one-line DatasetError."""
    images = []
    for i in indices:
        path = ds.stimuli.image_paths[i]
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (OSError, Image.DecompressionBombError) as err:
            raise DatasetError(f"{shown_path(ds.root, path)}: not a readable image ({type(err).__name__})") from None
    return images
