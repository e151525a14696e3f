"""Fixed head directions for ablating the tracked x_bar of Assumption 1 at test time."""
import torch
from torch import Tensor

from .checks import TEST_DIRECTIONS, check_choice

__all__ = ["fixed_direction"]


def fixed_direction(name: str, dim: int, seed: int = 0) -> Tensor:
    """[dim] float32 direction that replaces x_bar in eq. 8: "ones" (all-ones; close to the
    mean of non-negative ReLU features), "random" (standard normal, drawn with a generator
    seeded by ``seed``: no effect on the global RNG) or "zero" (B = 0, i.e. eq. 7)."""
    check_choice(name, TEST_DIRECTIONS, "test direction")
    if name == "ones":
        return torch.ones(dim)
    if name == "zero":
        return torch.zeros(dim)
    if name == "random":
        return torch.randn(dim, generator=torch.Generator().manual_seed(int(seed)))
    raise ValueError(f"test direction {name!r} is not fixed: it comes from the model")
