"""HeadDirection across two CPU processes (gloo): a synced EMA pools a sum and a count."""
import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers.distributed import destroy_process_group, exit_worker, rendezvous

from tde_det.layers import HeadDirection

DIM = 6
# Per step: number of kept rows on rank 0 and rank 1 (out of 8), and mu for that update.
KEPT = [(5, 1), (0, 3), (0, 0), (2, 6), (1, 0)]
MUS = [0.9, 0.9, 0.9, 0.5, 0.9]

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def make_step(rank: int, step: int):
    """Deterministic features and keep mask of ``rank`` at ``step``; rank means differ a lot."""
    g = torch.Generator().manual_seed(100 * rank + step)
    feats = torch.randn(8, DIM, generator=g) + (3.0 if rank == 0 else -2.0)
    keep = torch.zeros(8, dtype=torch.bool)
    keep[torch.randperm(8, generator=g)[:KEPT[step][rank]]] = True
    return feats, keep


def _worker(rank: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=2, timeout=timedelta(seconds=30))
    try:
        synced, local = HeadDirection(DIM, mu=MUS[0]), HeadDirection(DIM, mu=MUS[0], sync=False)
        for step, mu in enumerate(MUS):
            feats, keep = make_step(rank, step)
            synced.mu = local.mu = mu
            synced.update(feats, keep)  # a collective: every rank calls it, even with 0 rows
            local.update(feats, keep)
        torch.save({"synced": synced.state_dict(), "local": local.state_dict()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        destroy_process_group()
    exit_worker()  # the results are written: no interpreter finalisation (see the helper)


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("head_direction_ddp")
    # join=True re-raises any exception of a child, so a failing rank fails the test.
    mp.spawn(_worker, args=(rendezvous(out_dir), str(out_dir)), nprocs=2, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(2)]


def _single_process(ranks):
    """EMA from the kept rows of ``ranks`` pooled in one process (sum and count)."""
    hd = HeadDirection(DIM, sync=False)
    for step, mu in enumerate(MUS):
        hd.mu = mu
        rows = [make_step(r, step) for r in ranks]
        hd.update(torch.cat([f[k] for f, k in rows]))
    return hd.ema


def _mean_of_means():
    ema = torch.zeros(DIM, dtype=torch.float64)
    for step, mu in enumerate(MUS):
        steps = [make_step(r, step) for r in range(2)]
        means = [f[k].double().mean(0) for f, k in steps if k.any()]
        if means:
            ema = mu * ema + torch.stack(means).mean(0)
    return ema.float()


def test_synced_ema_is_identical_and_pools_sum_and_count(rank_results):
    ema0, ema1 = (res["synced"]["ema"] for res in rank_results)
    assert ema0.view(torch.int32).equal(ema1.view(torch.int32))  # bit-exact across ranks
    expected = _single_process([0, 1])
    torch.testing.assert_close(ema0, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(ema0, _mean_of_means(), rtol=1e-2, atol=1e-2)


def test_unsynced_ema_stays_per_rank(rank_results):
    local = [res["local"]["ema"] for res in rank_results]
    for rank in range(2):
        torch.testing.assert_close(local[rank], _single_process([rank]), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(local[0], local[1], atol=1e-2)
