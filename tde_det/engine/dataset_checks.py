"""Checks, before training starts, of the datasets a config names.

Detectron2 loads ``DATASETS.TRAIN`` when training starts, but ``DATASETS.TEST`` only when it
first evaluates: every ``TEST.EVAL_PERIOD`` iterations, and after the last one. A misspelt test
split, a missing annotation file or a test split with other classes then stops the run after
hours of training. These checks read only the catalogues and the metadata (no dataset is loaded).
"""
import difflib
from typing import List, Optional, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog

__all__ = ["check_registered", "check_config_splits"]


def check_registered(names: Sequence[str], key: str) -> None:
    """Raise ``KeyError`` naming the config ``key`` and the closest registered names for every
    one of ``names`` that is not a registered dataset."""
    registered = DatasetCatalog.list()
    for name in names:
        if name not in registered:
            close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else \
                " (tde-det registers LVIS-format data named in DATASETS.LVIS_CUSTOM.*)"
            raise KeyError(f"{key}: {name!r} is not a registered dataset{hint}")


def check_config_splits(cfg: CfgNode, training: bool = True,
                        test: Optional[Sequence[str]] = None) -> Tuple[str, List[str]]:
    """Check that the splits a run will use are registered: ``DATASETS.TRAIN`` when
    ``training``, and ``DATASETS.TEST`` (or a tool's ``--dataset`` splits, ``test``).
    ``DATASETS.TRAIN`` may not be empty when training, nor the test splits when not (an
    evaluation of nothing): a ``ValueError`` names the key. Return the config key to name in
    later errors about the test splits, and those splits."""
    if training:
        if not cfg.DATASETS.TRAIN:
            raise ValueError("DATASETS.TRAIN is empty: name the registered dataset(s) to train "
                             "on, e.g. DATASETS.TRAIN '(\"lvis_v1_train\",)'")
        check_registered(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
    key = "DATASETS.TEST" if test is None else "--dataset"
    splits = list(cfg.DATASETS.TEST if test is None else test)
    if not training and not splits:
        raise ValueError(f"{key} is empty: there is nothing to evaluate; name the registered "
                         f"dataset(s) to evaluate on")
    check_registered(splits, key)
    return key, splits
