"""Every yaml file in configs/ is built by one of the config tests (no config may rot)."""
import os

from tde_det.engine import load_config
from tests.helpers.configs import (CLASSIFICATION_CONFIGS, CONFIG_DIR, FASHION_MNIST_CONFIGS,
                                   FASHION_MNIST_DET_CONFIGS, LVIS_CONFIGS, all_configs)

# Built and trained end to end by tests/engine/test_detection_train_net.py.
TRAINED_END_TO_END = {"TinyLVIS/cascade_R_18_tde.yaml"}


def test_every_config_is_built_by_a_test():
    covered = (set(LVIS_CONFIGS) | set(CLASSIFICATION_CONFIGS) | set(FASHION_MNIST_CONFIGS)
               | set(FASHION_MNIST_DET_CONFIGS) | TRAINED_END_TO_END)
    assert set(all_configs()) - covered == set()
    assert TRAINED_END_TO_END <= set(all_configs())


def test_every_experiment_config_has_its_own_output_dir():
    """Two experiments never share an output folder (and so never --resume each other's
    last_checkpoint): each config writes to output/<its path below configs/>."""
    seen = {}
    for name in all_configs():
        if os.path.basename(name).startswith("Base-"):
            continue
        cfg = load_config(os.path.join(CONFIG_DIR, name))
        assert cfg.OUTPUT_DIR == os.path.join("output", name[:-len(".yaml")]), name
        assert cfg.OUTPUT_DIR not in seen, (name, seen.get(cfg.OUTPUT_DIR))
        seen[cfg.OUTPUT_DIR] = name
