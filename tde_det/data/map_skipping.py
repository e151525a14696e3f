"""Training images that cannot be read: a mapper's policy, and a mapped dataset that replaces
the images a mapper skipped.

Detectron2's ``MapDataset`` maps another item where the mapper returns None, but in Detectron2
0.6 its retry calls ``random.sample`` on a set, which Python 3.11 refuses. The training loaders
of both tasks (detection and classification) use :class:`MapSkippingUnreadable` instead.
"""
import logging
import random
from typing import Callable, Dict, Optional, Set

import torch

__all__ = ["MapSkippingUnreadable", "UnreadableImages"]

logger = logging.getLogger(__name__)


class UnreadableImages:
    """A mapper's handling of image files it cannot read. With ``skip`` (in training, with
    ``DATASETS.INVALID_ANNOTATIONS skip``), :meth:`skip_or_raise` logs a file once and records
    it, and the mapper returns None for it (now and whenever it is drawn again); otherwise it
    raises ``OSError`` naming the file (in training, with the key that would skip it)."""

    def __init__(self, skip: bool, is_train: bool):
        self.skip, self.is_train = bool(skip) and is_train, is_train
        self._skipped: Set[str] = set()

    def skipped(self, file_name: Optional[str]) -> bool:
        return file_name in self._skipped

    def skip_or_raise(self, file_name: str, problem: str, error: BaseException) -> None:
        """``problem``: why the file cannot be read; ``error``: the exception it caused."""
        if not self.skip:
            hint = (" Set DATASETS.INVALID_ANNOTATIONS skip to train without it."
                    if self.is_train else "")
            raise OSError(f"cannot read image {file_name}: {problem}.{hint}") from error
        self._skipped.add(file_name)
        logger.warning(f"skipping training image {file_name}: it cannot be read ({problem}); "
                       f"it is left out whenever it is drawn (DATASETS.INVALID_ANNOTATIONS skip)")


class MapSkippingUnreadable(torch.utils.data.Dataset):
    """``dataset`` (a map-style dataset of Detectron2 dicts) mapped by ``mapper``; where the
    mapper returns None (an image it skipped), another index drawn at random is mapped instead
    (each data-loader worker draws its own sequence, from ``seed`` and its worker id).
    ``RuntimeError`` once every image has been skipped."""

    def __init__(self, dataset, mapper: Callable[[Dict], Optional[Dict]], seed: int = 42):
        self._dataset, self._mapper = dataset, mapper
        self._seed = seed
        self._rng: Optional[random.Random] = None  # made in the process that maps
        self._skipped: Set[int] = set()

    def _draw(self) -> int:
        if self._rng is None:
            worker = torch.utils.data.get_worker_info()
            self._rng = random.Random(self._seed + (worker.id + 1 if worker else 0))
        return self._rng.randrange(len(self._dataset))

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> Dict:
        index = int(index)
        while True:
            data = self._mapper(self._dataset[index])
            if data is not None:
                return data
            self._skipped.add(index)
            if len(self._skipped) == len(self._dataset):
                raise RuntimeError(f"none of the {len(self._dataset)} training images can be "
                                   f"read (each was skipped, see the warnings)")
            index = self._draw()
