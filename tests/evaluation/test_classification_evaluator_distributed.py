"""ClassificationEvaluator across two CPU processes (gloo): rank 0 gathers every image."""
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

# label, top-1 with TDE, top-1 without; rank r gets the images r, r + 2, r + 4, ...
IMAGES = [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 1, 1), (2, 2, 0), (2, 0, 0), (2, 2, 2)]


def _worker(rank: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=2, timeout=timedelta(seconds=60))
    try:
        from detectron2.data import MetadataCatalog

        from tde_det.evaluation import ClassificationEvaluator

        MetadataCatalog.get("ddp_eval").set(num_classes=3)
        ev = ClassificationEvaluator("ddp_eval", train_counts=[200, 50, 3], topk=1)
        ev.reset()
        for label, tde, plain in IMAGES[rank::2]:
            z, p = torch.zeros(3), torch.zeros(3)
            z[tde], p[plain] = 1.0, 1.0
            ev.process([{"label": label}], [{"logits": z, "logits_no_tde": p, "tde": True}])
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(ev.evaluate(), f)
    finally:
        destroy_process_group()
    exit_worker()  # the results are written: no interpreter finalisation (see the helper)


def test_rank0_reports_the_whole_dataset(tmp_path):
    mp.spawn(_worker, args=(rendezvous(tmp_path), str(tmp_path)), nprocs=2, join=True)
    rank0 = json.load(open(tmp_path / "rank0.json"))["classification"]
    assert json.load(open(tmp_path / "rank1.json")) == {}
    # With TDE: classes 1/2, 2/2, 2/3 -> top-1 5/7; many 50, medium 100, few 66.67.
    assert rank0["top1"] == pytest.approx(500 / 7)
    assert (rank0["many"], rank0["medium"]) == (50.0, 100.0)
    assert rank0["few"] == pytest.approx(200 / 3)
    # Without: 2/2, 1/2, 1/3 -> 4/7.
    assert rank0["top1_no_tde"] == pytest.approx(400 / 7)
    assert rank0["few_no_tde"] == pytest.approx(100 / 3)
