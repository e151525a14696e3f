"""A tiny TDE Cascade Mask R-CNN trained for a few iterations on a tiny LVIS-format dataset,
shared by the tool tests."""
import os

import pytest
from detectron2.config import get_cfg
from detectron2.utils.env import seed_all_rng

from tde_det import add_tde_config
from tde_det.data.detection.synthetic import write_tiny_lvis
from tde_det.engine import Trainer
from tests.helpers.tools import REPO, lvis_overrides


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory):
    """(cfg, model in eval mode, dataset paths, checkpoint path)."""
    root = tmp_path_factory.mktemp("tools_lvis")
    paths = write_tiny_lvis(str(root / "data"), num_train=6, num_val=4, seed=3)
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "TinyLVIS/cascade_R_18_tde.yaml"))
    cfg.merge_from_list(lvis_overrides(paths))
    cfg.DATASETS.TEST = ()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS = 6, 1
    cfg.OUTPUT_DIR = str(root / "out")
    # every generator, the data loader's shuffling too (its seed is drawn from numpy's):
    # the same model in every run
    seed_all_rng(0)
    trainer = Trainer(cfg)
    trainer.train()
    return cfg, trainer.model.eval(), paths, os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
