"""Image folder + split file datasets (ImageNet-LT, Places-LT, a user's own data).

A split file has one ``relative/path/to/image.jpg <label>`` line per image (the path relative to
an image root; labels 0..C-1), the format of the official ImageNet-LT files
(``ImageNet_LT_train.txt``: ``train/n01440764/n01440764_190.JPEG 0``). Blank lines and lines
starting with ``#`` are skipped.
"""
import os
from typing import Dict, List, Optional, Sequence

from .long_tailed import register_classification_dataset

__all__ = ["load_split_file", "max_label", "register_split_file_dataset"]


def _read_lines(split_file: str, dataset_name: str = ""):
    if not os.path.isfile(split_file):
        who = f" of dataset '{dataset_name}'" if dataset_name else ""
        raise FileNotFoundError(f"split file{who} not found: {split_file} (see "
                                f"the README, \"Image classification\", for the expected layout)")
    with open(split_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield lineno, line


def _parse(split_file: str, lineno: int, line: str):
    parts = line.rsplit(maxsplit=1)
    if len(parts) != 2:
        raise ValueError(f"{split_file}, line {lineno}: expected '<relative/path> <label>', "
                         f"got {line!r}")
    try:
        label = int(parts[1])
    except ValueError:
        raise ValueError(f"{split_file}, line {lineno}: the label {parts[1]!r} is not an "
                         f"integer (line {line!r})") from None
    return parts[0], label


def max_label(split_file: str) -> int:
    """The largest label of a split file (C - 1 when every class occurs)."""
    return max((_parse(split_file, n, line)[1] for n, line in _read_lines(split_file)),
               default=-1)


def load_split_file(split_file: str, image_root: str, num_classes: int,
                    dataset_name: str = "") -> List[Dict]:
    """Dataset dicts ``{"file_name", "label", "image_id"}`` of a split file.

    Raises with the file and line number on a malformed line or a label outside [0, C).
    Images are not opened here (the mapper reports an unreadable image with its path).
    """
    dicts = []
    for lineno, line in _read_lines(split_file, dataset_name):
        path, label = _parse(split_file, lineno, line)
        if not 0 <= label < num_classes:
            raise ValueError(f"{split_file}, line {lineno}: label {label} is out of range "
                             f"[0, {num_classes}) (line {line!r})")
        dicts.append({"file_name": os.path.join(image_root, path), "label": label,
                      "image_id": len(dicts)})
    if not dicts:
        raise ValueError(f"split file {split_file} lists no image")
    return dicts


def register_split_file_dataset(name: str, image_root: str, split_file: str, num_classes: int,
                                train_dataset: Optional[str] = None,
                                class_names: Optional[Sequence[str]] = None) -> None:
    """Register ``name`` as the images listed in ``split_file`` under ``image_root``.

    ``train_dataset``: the registered training split whose counts define the shot groups
    (default: ``name`` itself).
    """
    register_classification_dataset(
        name, lambda: load_split_file(split_file, image_root, num_classes, name),
        num_classes=num_classes, train_dataset=train_dataset, class_names=class_names,
        image_root=image_root, split_file=split_file)
