"""Helpers for the tests that run two gloo processes."""
import os
import sys

import torch.distributed as dist
from detectron2.utils import comm


def rendezvous(folder) -> str:
    """The file in ``folder`` at which the processes meet (``init_method=f"file://{...}"``): no
    TCP port picked beforehand, which another process could take in between."""
    return os.path.join(str(folder), "rendezvous")


def destroy_process_group() -> None:
    """``dist.destroy_process_group()``, first dropping the group Detectron2's ``comm`` caches
    (``comm.gather`` / ``all_gather`` keep their gloo group, with the gloo backend the default
    group itself, in an ``lru_cache``, which would keep it alive until the interpreter exits)."""
    comm._get_global_gloo_group.cache_clear()
    dist.destroy_process_group()


def exit_worker() -> None:
    """End a spawned worker that has written its results and destroyed its group, without the
    interpreter's finalisation (``os._exit(0)``, after flushing the output).

    On a loaded 2-core machine gloo now and then aborted a worker *after* the worker function
    had returned ("terminate called without an active exception", SIGABRT; about 1 run in 30 to
    100), which failed the test although both processes' results were complete. It happened
    with Detectron2's cached group dropped too. A worker that fails raises before this point
    and still fails the test."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
