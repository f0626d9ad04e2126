"""NSD stimulus information and COCO captions: which COCO image each NSD image is, and its captions.

- ``nsd_stim_info_merged.csv``: one row per NSD image (73,000), columns include ``cocoId``,
  ``cocoSplit`` (train2017/val2017), ``nsdId`` (0-based 73k index; the row order when absent) and
  ``shared1000`` (True for the 1,000 images every subject saw).
- COCO caption files (``captions_train2017.json``, ``captions_val2017.json``): ``annotations`` is a
  list of ``{"image_id": cocoId, "id": ..., "caption": text}``, about five per image. The first
  caption in file order is the reference caption; all are kept.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from backend.data.importers.common import short_list
from backend.data.schema import DatasetError


@dataclass(frozen=True)
class StimInfo:
    """Per 0-based NSD image id: COCO id, COCO split, and whether it is a shared image."""

    path: Path
    coco_id: dict[int, int]
    coco_split: dict[int, str]
    shared1000: frozenset[int]


def read_stim_info(path: Path) -> StimInfo:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    coco_id: dict[int, int] = {}
    coco_split: dict[int, str] = {}
    shared: set[int] = set()
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "cocoId" not in reader.fieldnames:
                raise DatasetError(f"{path}: expected a 'cocoId' column (nsd_stim_info_merged.csv)")
            for row_number, row in enumerate(reader):
                nsd_id = int(row["nsdId"]) if row.get("nsdId") not in (None, "") else row_number
                coco_id[nsd_id] = int(float(row["cocoId"]))
                coco_split[nsd_id] = str(row.get("cocoSplit") or "")
                if str(row.get("shared1000", "")).strip().lower() in ("true", "1"):
                    shared.add(nsd_id)
    except DatasetError:
        raise
    except (ValueError, KeyError, OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path}: unreadable stimulus table ({str(err).splitlines()[0]})") from None
    return StimInfo(path=path, coco_id=coco_id, coco_split=coco_split, shared1000=frozenset(shared))


def read_coco_captions(paths: list[Path], wanted: set[int] | None = None) -> dict[int, list[str]]:
    """COCO image id -> its captions in file order (files read in the given order)."""
    out: dict[int, list[str]] = {}
    for path in paths:
        if not path.is_file():
            raise DatasetError(f"{path}: file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            annotations = data["annotations"]
            for ann in annotations:
                image_id = int(ann["image_id"])
                if wanted is None or image_id in wanted:
                    out.setdefault(image_id, []).append(" ".join(str(ann["caption"]).split()))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise DatasetError(
                f"{path}: not a COCO caption file (needs 'annotations' with 'image_id' and 'caption'; {type(err).__name__}: {err})"
            ) from None
    return out


def captions_for_nsd(
    nsd_ids: list[int],
    info: StimInfo,
    caption_files: list[Path],
    *,
    missing: str = "error",
) -> tuple[list[list[str]], list[int]]:
    """All COCO captions per NSD image (0-based ids), and the NSD ids that had none.

    ``missing="error"`` raises a DatasetError naming the caption files when an image has no caption;
    ``"skip"`` leaves those images without captions.
    """
    absent_info = [i for i in nsd_ids if i not in info.coco_id]
    if absent_info:
        raise DatasetError(f"{info.path}: no row for NSD image id(s) {short_list(absent_info)}")
    wanted = {info.coco_id[i] for i in nsd_ids}
    table = read_coco_captions(caption_files, wanted)
    captions = [table.get(info.coco_id[i], []) for i in nsd_ids]
    without = [i for i, c in zip(nsd_ids, captions, strict=True) if not c]
    if without and missing == "error":
        names = ", ".join(str(p) for p in caption_files)
        coco = short_list(info.coco_id[i] for i in without)
        raise DatasetError(
            f"{names}: no captions for {len(without)} image(s) (COCO ids {coco}); "
            "add the caption file of their COCO split (train2017/val2017) or allow missing captions"
        )
    return captions, without


def find_caption_files(root: Path) -> list[Path]:
    """COCO caption files below ``root`` (``captions_*.json``), sorted by name."""
    return sorted(p for p in root.rglob("captions_*.json") if p.is_file() and not p.name.startswith("."))
