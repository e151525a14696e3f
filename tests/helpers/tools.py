"""Helpers shared by the tool tests."""
import importlib.util
import os
import subprocess
import sys
from types import ModuleType
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lvis_overrides(paths):
    """KEY VALUE overrides registering the tiny dataset as tools_lvis_{train,val}."""
    return ["DATASETS.LVIS_CUSTOM.NAMES", "('tools_lvis_train', 'tools_lvis_val')",
            "DATASETS.LVIS_CUSTOM.JSON_FILES", f"('{paths['train']}', '{paths['val']}')",
            "DATASETS.LVIS_CUSTOM.IMAGE_ROOTS",
            f"('{paths['image_root']}', '{paths['image_root']}')",
            "DATASETS.TRAIN", "('tools_lvis_train',)", "DATASETS.TEST", "('tools_lvis_val',)"]


def run_tool(script: str, *args: str, env: Optional[dict] = None,
             timeout: int = 300) -> subprocess.CompletedProcess:
    """``python tools/<script> *args`` from the repository root, its output captured as text;
    ``env``: the environment (default: this one)."""
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", script), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def table_rows(text: str, *first_cells: str) -> List[List[str]]:
    """The stripped cells of the markdown table rows in ``text`` whose first cell starts with
    one of ``first_cells``."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if any(line.startswith(f"| {first}") for first in first_cells)]


def load_tool(script: str) -> ModuleType:
    """``tools/<script>.py`` (``script`` may name a subfolder: ``"benchmarks/heads"``) imported
    as a module (the tools folder is not a package)."""
    name = "tool_" + script.replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", script + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
