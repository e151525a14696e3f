"""Shared pytest set-up: small CPU thread counts so that xdist workers do not oversubscribe."""
import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
