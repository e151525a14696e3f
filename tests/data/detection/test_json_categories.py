"""read_categories: a json's "categories" without parsing the rest; the same list as json.load."""
import json

import pytest

from tde_det.data.detection import json_categories
from tde_det.data.detection.json_categories import read_categories
from tde_det.data.detection.synthetic import write_tiny_lvis

CATS = [{"id": 3, "name": "cup", "synonyms": ["cup", "mug \"big\"", "tasse à café"],
         "frequency": "r"},
        {"id": 1, "name": "categories", "def": "a name that is the key's", "frequency": "f"}]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_tiny_lvis_json_without_a_whole_parse(tmp_path, monkeypatch):
    paths = write_tiny_lvis(str(tmp_path / "data"), num_train=2, num_val=2, seed=0)
    expected = json.load(open(paths["val"]))["categories"]

    def refuse(*args, **kwargs):
        raise AssertionError("the whole file was parsed")

    monkeypatch.setattr(json_categories.json, "load", refuse)
    assert read_categories(paths["val"]) == expected


@pytest.mark.parametrize("layout", [
    '{{"images": [], "annotations": [{{"id": 1}}], "categories": {cats}}}',  # LVIS v1 order
    '{{"categories"  :\n {cats}, "images": [{{"file_name": "categories.jpg"}}]}}',  # first
    '{{"info": {{"note": "\\"categories\\": []"}}, "categories": {cats}}}',  # escaped in a string
])
@pytest.mark.parametrize("window", [1 << 20, 7])  # 7 bytes: widened 4x at a time
@pytest.mark.parametrize("ascii_only", [True, False])
def test_layouts(tmp_path, layout, window, ascii_only, monkeypatch):
    cats = json.dumps(CATS, ensure_ascii=ascii_only)
    path = _write(tmp_path / "a.json", layout.format(cats=cats))
    monkeypatch.setattr(json_categories, "_FIRST_WINDOW", window)
    monkeypatch.setattr(json_categories.json, "load", None)  # must not be needed
    assert read_categories(path) == CATS


def test_first_window_ending_inside_a_utf8_character(tmp_path, monkeypatch):
    text = '{"categories": ' + json.dumps(CATS, ensure_ascii=False) + "}"
    raw = text.encode("utf-8")
    value_at = raw.index(b":") + 1
    cut = raw.index("à".encode("utf-8")) + 1  # between the two bytes of "à"
    path = tmp_path / "u.json"
    path.write_bytes(raw)
    monkeypatch.setattr(json_categories, "_FIRST_WINDOW", cut - value_at)
    monkeypatch.setattr(json_categories.json, "load", None)
    assert read_categories(str(path)) == CATS


def test_key_twice_parses_the_whole_file(tmp_path):
    text = json.dumps({"info": {"categories": [{"id": 9}]}, "categories": CATS})
    assert read_categories(_write(tmp_path / "b.json", text)) == CATS


@pytest.mark.parametrize("text", ['{"images": []}', '{"categories": {"id": 1}}',
                                  '{"categories": [1, 2]}', '[]'])
def test_no_category_list_is_an_error_naming_the_file(tmp_path, text):
    path = _write(tmp_path / "c.json", text)
    with pytest.raises(ValueError, match=r"c\.json: no top-level 'categories' list"):
        read_categories(path)


def test_missing_empty_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_categories(str(tmp_path / "missing.json"))
    with pytest.raises(json.JSONDecodeError):
        read_categories(_write(tmp_path / "empty.json", ""))
    with pytest.raises(json.JSONDecodeError):  # the value itself is cut off: parsed, and fails
        read_categories(_write(tmp_path / "cut.json", '{"categories": [{"id": 1}, '))
