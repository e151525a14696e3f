"""Helpers for the tests that run two gloo processes (imported by name from tests/)."""
import torch.distributed as dist
from detectron2.utils import comm


def destroy_process_group() -> None:
    """``dist.destroy_process_group()``, first dropping the group Detectron2's ``comm`` caches.

    ``comm.gather`` / ``comm.all_gather`` keep the gloo group they use (with the gloo backend,
    the default group itself) in an ``lru_cache``. Left there, the group outlives
    ``destroy_process_group`` and is torn down while the interpreter exits, where gloo now and
    then aborts the process ("terminate called without an active exception": about one run in
    30 to 100 of the evaluator's test on a loaded 2-core machine, each time after both
    processes had written their results and destroyed the group).
    """
    comm._get_global_gloo_group.cache_clear()
    dist.destroy_process_group()
