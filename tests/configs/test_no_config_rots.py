"""Every yaml file in configs/ is built by one of the config tests (no config may rot)."""
import glob
import os

import test_classification_configs
import test_fashion_mnist_configs
import test_lvis_configs

CONFIG_DIR = test_lvis_configs.CONFIGS
# Built and trained end to end by tests/engine/test_detection_train_net.py.
TRAINED_END_TO_END = {"tiny_lvis_cascade_tde_cpu.yaml"}


def test_every_config_is_built_by_a_test():
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, "*.yaml"))}
    covered = (set(test_lvis_configs.LVIS_CONFIGS) | set(test_classification_configs.CONFIGS)
               | set(test_fashion_mnist_configs.CONFIGS) | TRAINED_END_TO_END)
    assert on_disk - covered == set()


def test_every_experiment_config_has_its_own_output_dir():
    """Two experiments never share an output folder (and so never --resume each other's
    last_checkpoint): each config writes to output/<its file name>."""
    from detectron2.config import get_cfg

    from tde_det import add_tde_config

    seen = {}
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml"))):
        name = os.path.basename(path)[:-len(".yaml")]
        if name.startswith("Base-"):
            continue
        cfg = get_cfg()
        add_tde_config(cfg)
        cfg.merge_from_file(path)
        if not name.startswith("tiny_"):
            assert cfg.OUTPUT_DIR == f"output/{name}", name
        assert cfg.OUTPUT_DIR not in seen, (name, seen.get(cfg.OUTPUT_DIR))
        seen[cfg.OUTPUT_DIR] = name
