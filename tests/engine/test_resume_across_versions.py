"""--resume from a checkpoint in the layout Detectron2 0.6's trainer writes: its trainer state holds
the iteration and the hooks' states (the LR scheduler's), not the optimizer's. Detectron2 main
expects the optimizer in the trainer's state ("_trainer") and fails with a bare KeyError; tde-det's
trainer resumes it on either version."""
import logging
import os

import torch
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer
from detectron2.utils.file_io import PathManager

from tde_det import add_tde_config
from tde_det.data.classification.synthetic import write_cifar_pickles
from tde_det.engine import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(out_dir, max_iter):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "CIFAR-LT/cifar10_r10_tde.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "16",
                         "DATALOADER.NUM_WORKERS", "0", "MODEL.CIFAR_RESNET.DEPTH", "8",
                         "SOLVER.MAX_ITER", str(max_iter), "SOLVER.WARMUP_ITERS", "1",
                         "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", "1000",
                         "TEST.CLASSIFICATION.MANY_THRESHOLD", "20",
                         "TEST.CLASSIFICATION.FEW_THRESHOLD", "5", "OUTPUT_DIR", out_dir])
    return cfg


def test_resume_from_a_detectron2_0_6_checkpoint(tmp_path, monkeypatch, caplog):
    write_cifar_pickles(str(tmp_path / "data"), "cifar10", per_class=20, test_per_class=2)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "data"))
    out_dir = str(tmp_path / "out")
    trainer = Trainer(_cfg(out_dir, 3))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.optimizer.state_dict()["state"]  # momentum buffers, not in 0.6's file
    # what Detectron2 0.6's DefaultTrainer saves at the end of iteration 2
    path = os.path.join(out_dir, "model_0000002.pth")
    torch.save({"model": trainer.model.state_dict(), "iteration": 2,
                "trainer": {"iteration": 2,
                            "hooks": {"LRScheduler": trainer.scheduler.state_dict()}}}, path)
    with PathManager.open(os.path.join(out_dir, "last_checkpoint"), "w") as f:
        f.write("model_0000002.pth")

    resumed = Trainer(_cfg(out_dir, 5))
    with caplog.at_level(logging.WARNING, logger="tde_det.engine.trainer"):
        resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3 and resumed.iter == 2
    assert resumed.scheduler.last_epoch == trainer.scheduler.last_epoch
    hd = "head_direction.ema"
    assert torch.equal(resumed.model.state_dict()[hd], trainer.model.state_dict()[hd])
    if "state_dict" in vars(DefaultTrainer):  # a Detectron2 that saves "_trainer"
        assert "a checkpoint of Detectron2 0.6's trainer" in caplog.text
        assert "the iteration (2)" in caplog.text and "optimizer's state" in caplog.text
    resumed.train()  # goes on to iteration 5
    assert resumed.iter == 5
