"""``--resume`` with a changed model: compare the model-defining keys with the run's saved config.

Detectron2 loads the last checkpoint of ``OUTPUT_DIR`` with ``strict=False``: a parameter whose
shape changed (e.g. another ``MODEL.ROI_BOX_HEAD.FC_DIM``) is skipped with a warning and stays
at its initialisation, and training goes on from the saved iteration.
"""
import logging
import os
from typing import Dict, List, Optional, Tuple

from detectron2.config import CfgNode, get_cfg
from detectron2.utils.file_io import PathManager

from tde_det.config import add_tde_config

__all__ = ["check_resume_config", "model_config_differences"]

logger = logging.getLogger(__name__)

# MODEL keys that change neither the state dict nor what it means: where the weights come from,
# the device, and what is applied at test time only (besides Detectron2's *_TEST keys).
RUN_TIME_KEYS = (
    "MODEL.WEIGHTS",
    "MODEL.DEVICE",
    "MODEL.TDE.ALPHA",
    "MODEL.TDE.TEST_TDE",
    "MODEL.TDE.TEST_DIRECTION",
    "MODEL.TDE.RANDOM_DIRECTION_SEED",
    "MODEL.TDE.BACKGROUND_EXEMPTED",
    "MODEL.TDE.LOG_PERIOD",
    "MODEL.TDE.FUSED_KERNELS",
    "MODEL.TDE.SYNC_HEAD_DIRECTION",
)


def _as_lists(value):
    """Tuples as lists, also nested (yaml gives lists where the config has tuples)."""
    return [_as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def _model_keys(cfg: CfgNode) -> Dict[str, object]:
    """{"MODEL.X.Y": value} of the model-defining keys."""
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}.{key}"
            if isinstance(value, CfgNode):
                walk(value, name)
            elif name not in RUN_TIME_KEYS and not key.endswith("_TEST"):
                flat[name] = _as_lists(value)

    walk(cfg.MODEL, "MODEL")
    return flat


def model_config_differences(saved: CfgNode, new: CfgNode) -> List[Tuple[str, object, object]]:
    """(key, saved value, new value) for each model-defining key that differs."""
    old, now = _model_keys(saved), _model_keys(new)
    missing = "<absent>"
    return [(k, old.get(k, missing), now.get(k, missing)) for k in sorted(set(old) | set(now))
            if old.get(k, missing) != now.get(k, missing)]


def check_resume_config(cfg: CfgNode, folder: Optional[str] = None) -> None:
    """Before ``--resume`` loads the last checkpoint of ``folder`` (None: ``cfg.OUTPUT_DIR``),
    and before Detectron2's ``default_setup`` overwrites its ``config.yaml``: raise a ValueError
    listing the model-defining MODEL keys that differ from that ``config.yaml`` (saved -> now),
    unless ``RESUME_ALLOW_MODEL_CHANGE`` (then a warning). Nothing to compare when the folder has no
    checkpoint (``--resume`` then starts from ``MODEL.WEIGHTS``); a checkpoint without
    ``config.yaml`` is a warning."""
    folder = cfg.OUTPUT_DIR if folder is None else folder
    if not folder or not PathManager.exists(os.path.join(folder, "last_checkpoint")):
        return
    path = os.path.join(folder, "config.yaml")
    if not PathManager.isfile(path):
        logger.warning(f"--resume: {folder} has a checkpoint but no config.yaml; the model's "
                       f"config cannot be compared with the one it was trained with")
        return
    saved = get_cfg()
    add_tde_config(saved)
    saved.set_new_allowed(True)  # keys of another version are compared, not refused
    try:
        saved.merge_from_file(path)
    except Exception as e:
        if cfg.RESUME_ALLOW_MODEL_CHANGE:
            logger.warning(f"--resume: cannot read {path} ({e}); not compared "
                           f"(RESUME_ALLOW_MODEL_CHANGE)")
            return
        raise ValueError(f"--resume: cannot read the run's config {path} to compare the model "
                         f"with it ({e}); set RESUME_ALLOW_MODEL_CHANGE True to resume without "
                         f"the comparison") from e
    differences = model_config_differences(saved, cfg)
    if not differences:
        return
    listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in differences)
    if cfg.RESUME_ALLOW_MODEL_CHANGE:
        logger.warning(f"--resume with a changed model (RESUME_ALLOW_MODEL_CHANGE): {listed}")
        return
    raise ValueError(
        f"--resume: the model differs from the one saved in {folder} (its config.yaml, "
        f"saved -> now): {listed}. Detectron2 would skip the checkpoint's parameters that no "
        f"longer fit, leave them at their initialisation and continue from the saved iteration. "
        f"Use the run's values, another OUTPUT_DIR, or RESUME_ALLOW_MODEL_CHANGE True to resume "
        f"anyway")
