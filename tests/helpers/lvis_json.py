"""Helpers shared by the LVIS loading tests."""
import json


def edited_copy(src: str, path, edit):
    """``src`` json with ``edit(data)`` applied, written to ``path``; returns (path, data)."""
    with open(src) as f:
        data = json.load(f)
    edit(data)
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path), data
