"""What a dataset id may be: a plain name, never a path.

Ids travel in URLs and job bodies and name folders under the cache, so they are checked against
one strict pattern before anything touches the file system: letters, digits, ``.``, ``_`` and
``-``, starting with a letter or digit (so neither ``.``, ``..`` nor ``~user``), at most 64
characters.
"""

from __future__ import annotations

import re

#: The pattern the API declares for every dataset id (path parameters and job bodies).
DATASET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_ID_LENGTH = 64
_ID = re.compile(DATASET_ID_PATTERN)


def is_dataset_id(text: object) -> bool:
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def id_from_name(name: str) -> str:
    """A valid id made from a folder name: other characters become ``_``, cut to 64 characters."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("-._")[:MAX_ID_LENGTH].rstrip("-._")
    return text or "dataset"
