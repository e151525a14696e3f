"""The "categories" of an LVIS- or COCO-format json, read without parsing the rest of the file.

Registering a dataset needs only its categories (class names and id map), and every tool
registers all of ``DATASETS.LVIS_CUSTOM`` when it starts. For a synthetic json of LVIS v1 val's
size (167 MB; 2-core CPU machine), registering took 4.5 s and 0.96 GB more peak memory with a
whole parse, and takes 0.13 s and 0.17 GB (the file's pages, mapped) with this module; LVIS v1
train's json is several times larger. LVIS and COCO files hold the key once, at
the top level, so :func:`read_categories` finds it with a byte search and decodes only its
value; a file that holds the key more than once (in a nested object) is parsed whole.
:func:`read_json` parses a whole file, naming it in the error when it is not JSON.
"""
import json
import mmap
from typing import Any, Dict, List, Optional

from detectron2.utils.file_io import PathManager

__all__ = ["read_categories", "read_json"]

_KEY = b'"categories"'
_SPACE = b" \t\r\n"
_FIRST_WINDOW = 1 << 20  # bytes; 1203 categories with LVIS's fields: about 0.3 MB


def _not_json(json_file: str, err: json.JSONDecodeError) -> json.JSONDecodeError:
    """``err`` with the file named (``json.JSONDecodeError`` adds the line and column)."""
    return json.JSONDecodeError(f"{json_file} is not valid JSON (a truncated or partly written "
                                f"file?): {err.msg}", err.doc, err.pos)


def read_json(json_file: str) -> Any:
    """The parsed ``json_file``; ``json.JSONDecodeError`` naming the file, line and column when
    it is not valid JSON."""
    with PathManager.open(json_file, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise _not_json(json_file, e) from None


def read_categories(json_file: str) -> List[Dict]:
    """The top-level "categories" list of ``json_file`` (each a dict with an "id").

    Raises ``FileNotFoundError`` for a missing file, ``json.JSONDecodeError`` (naming the file,
    line and column) for a file that is not JSON, and ``ValueError`` naming the file when it
    has no such list."""
    with open(PathManager.get_local_path(json_file), "rb") as f:
        try:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                categories = _categories_alone(data)
        except (ValueError, OSError):  # empty, or not a regular file: parse it
            categories = None
        if categories is None:
            f.seek(0)
            try:
                whole = json.load(f)
            except json.JSONDecodeError as e:
                raise _not_json(json_file, e) from None
            categories = whole.get("categories") if isinstance(whole, dict) else None
    if not isinstance(categories, list) or not all(isinstance(c, dict) and "id" in c
                                                   for c in categories):
        raise ValueError(f"{json_file}: no top-level 'categories' list of objects with an 'id' "
                         f"(is it an LVIS- or COCO-format json?)")
    return categories


def _categories_alone(data: mmap.mmap) -> Optional[List]:
    """The value of the only "categories" key in ``data``, or None (no such key, several, or a
    value that does not decode). A key is the string followed by a colon; the string as a value
    (a category named "categories") is not one, and inside other strings it is escaped."""
    value_at = None
    at = data.find(_KEY)
    while at >= 0:
        end = at + len(_KEY)
        while end < len(data) and data[end] in _SPACE:
            end += 1
        if data[end:end + 1] == b":":
            if value_at is not None:
                return None
            value_at = end + 1
        at = data.find(_KEY, at + 1)
    if value_at is None:
        return None
    # The value ends where the decoder stops. Decode a window after the key, widened until it
    # holds the whole value (a list cut short never decodes), so the rest is not even read.
    window = _FIRST_WINDOW
    while True:
        last = value_at + window >= len(data)
        try:
            value, _ = json.JSONDecoder().raw_decode(
                data[value_at:value_at + window].decode("utf-8").lstrip())
            break
        except (UnicodeDecodeError, json.JSONDecodeError):
            if last:
                return None
            window *= 4
    return value if isinstance(value, list) else None
