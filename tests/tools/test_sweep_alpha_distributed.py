"""The detection alpha sweep in two CPU processes (gloo), as on two GPUs: each process runs the
network on its half of the split, and the first one evaluates every alpha on all of it."""
import json
import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers.distributed import destroy_process_group, exit_worker, rendezvous

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")
ALPHAS = [0.0, 1.0, 2.0]


def _sweep(cfg, model, eval_workers: int = 1):
    from tde_det.engine import Trainer
    from tde_det.evaluation.detection_alpha_sweep import sweep_detection

    return sweep_detection(model, Trainer.build_test_loader(cfg, "tools_lvis_val"),
                           lambda folder: Trainer.build_evaluator(cfg, "tools_lvis_val", folder),
                           ALPHAS, eval_workers=eval_workers, dataset="tools_lvis_val")


def _worker(rank: int, store: str, config: str, weights: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=120))
    try:
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg

        from tde_det import add_tde_config
        from tde_det.data import register_datasets_from_config
        from tde_det.engine import Trainer

        cfg = get_cfg()
        add_tde_config(cfg)
        cfg.merge_from_file(config)
        register_datasets_from_config(cfg)
        Trainer.check_datasets(cfg, training=False, test=["tools_lvis_val"])
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model).load(weights)
        model.eval()
        images = []
        original = model.backbone.forward
        model.backbone.forward = lambda x: images.append(len(x)) or original(x)
        rows = _sweep(cfg, model, eval_workers=2)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"rows": rows, "images": sum(images)}, f)
    finally:
        destroy_process_group()
    exit_worker()  # the results are written: no interpreter finalisation (see the helper)


def test_two_processes_give_the_rows_of_one(tiny_detector, tmp_path):
    cfg, model, _, weights = tiny_detector
    config = tmp_path / "config.yaml"
    config.write_text(cfg.dump())
    # join=True re-raises any exception of a child, so a failing rank fails the test.
    mp.spawn(_worker, args=(rendezvous(tmp_path), str(config), weights, str(tmp_path)),
             nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["images"] for r in ranks] == [2, 2]  # 4 validation images, split between them
    one = _sweep(cfg, model)
    assert ranks[0]["rows"] == one and "segm/APr" in one[0]
    assert ranks[1]["rows"] == [{"alpha": a} for a in ALPHAS]  # only the first one evaluates
