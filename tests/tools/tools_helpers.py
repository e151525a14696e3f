"""Helpers shared by the tool tests (imported by name: conftest modules are not importable)."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lvis_overrides(paths):
    """KEY VALUE overrides registering the tiny dataset as tools_lvis_{train,val}."""
    return ["DATASETS.LVIS_CUSTOM.NAMES", "('tools_lvis_train', 'tools_lvis_val')",
            "DATASETS.LVIS_CUSTOM.JSON_FILES", f"('{paths['train']}', '{paths['val']}')",
            "DATASETS.LVIS_CUSTOM.IMAGE_ROOTS", f"('{paths['image_root']}', '{paths['image_root']}')",
            "DATASETS.TRAIN", "('tools_lvis_train',)", "DATASETS.TEST", "('tools_lvis_val',)"]
