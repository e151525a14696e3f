"""Shared pytest set-up: small CPU thread counts so that xdist workers do not oversubscribe."""
import logging
import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture
def progress_log(monkeypatch):
    """The messages of ``tde_det.evaluation.progress`` (inference progress), logged at every
    batch (``LOG_SECONDS`` 0) while the test runs."""
    from tde_det.evaluation import progress

    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    monkeypatch.setattr(progress, "LOG_SECONDS", 0.0)
    handler = Collect(logging.INFO)
    progress.logger.addHandler(handler)
    level = progress.logger.level
    progress.logger.setLevel(logging.INFO)
    yield messages
    progress.logger.removeHandler(handler)
    progress.logger.setLevel(level)
