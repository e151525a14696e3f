"""Trainer.train() returns the last evaluation's results for a classifier (not only with
TEST.EXPECTED_RESULTS), and last_eval_results holds them."""
from tests.helpers.tiny_fashion_mnist import tiny_fashion_mnist_cfg

from tde_det.engine import Trainer


def test_train_returns_the_final_evaluation(tmp_path):
    cfg = tiny_fashion_mnist_cfg("trainer_results_fm", str(tmp_path), True,
                                 "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1",
                                 "MODEL.SMALL_CNN.CHANNELS", "[4, 8, 8]")
    trainer = Trainer(cfg)
    assert trainer.last_eval_results is None
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert results is not None and results is trainer.last_eval_results
    metrics = results["classification"]
    assert set(metrics) >= {"top1", "many", "medium", "few"}, results
    assert 0 <= metrics["top1"] <= 100


def test_train_without_a_test_split_returns_no_results(tmp_path):
    cfg = tiny_fashion_mnist_cfg("trainer_results_fm_none", str(tmp_path), False,
                                 "SOLVER.MAX_ITER", "1", "SOLVER.WARMUP_ITERS", "1",
                                 "MODEL.SMALL_CNN.CHANNELS", "[4, 8, 8]")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    assert not trainer.train()  # Detectron2's final evaluation of no split: empty
