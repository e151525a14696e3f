"""The K highest-scored detections of each class over a whole split, kept as they arrive.

AP-fixed (Dave et al. 2021) keeps per category the K = 10,000 top-scored detections of the
split, with no per-image limit. Keeping every candidate until the end would grow with images x
candidates; :class:`TopKPerClass` holds a bounded min-heap per class instead (memory grows with
K x classes), and tells, before a detection's mask is computed, whether the detection is among
its class's top K so far: the masks of the others are never needed.

The order is that of a stable sort of all detections by descending score, in arrival order:
of two equal scores the earlier one ranks first (as ``sorted(..., reverse=True)[:K]`` of the
reference code, which sorts the results file in its order).
"""
import heapq
from typing import Dict, List, Sequence

import torch

__all__ = ["TopKPerClass", "merge_top_k"]


class TopKPerClass:
    """Per class, the ``k`` best detections seen so far, each with an opaque record.

    ``admit(classes, scores)`` enters a batch of detections (in arrival order) and returns a
    ticket per detection (-1: not among its class's top ``k``); after the batch,
    ``alive(tickets)`` says which are still in, ``store(tickets, records)`` attaches their
    records (those evicted since are dropped), and ``entries()`` lists what is kept.
    """

    def __init__(self, num_classes: int, k: int):
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"TEST.AP_FIXED.DETS_PER_CLASS (K) must be a positive integer, got "
                             f"{k!r}")
        if num_classes <= 0:
            raise ValueError(f"top-K per class needs at least one class, got {num_classes}")
        self.k, self.num_classes = k, num_classes
        self._heaps: List[List] = [[] for _ in range(num_classes)]  # (score, -ticket) min-heaps
        self._records: Dict[int, object] = {}  # ticket -> record (None until stored)
        self._next = 0
        # Per class, the score a newcomer must exceed: the k-th score once the heap is full
        self._bar = torch.full((num_classes,), float("-inf"), dtype=torch.float64)

    def __len__(self) -> int:
        return len(self._records)

    def counts(self) -> List[int]:
        """Detections kept per class."""
        return [len(h) for h in self._heaps]

    def admit(self, classes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Enter detections of classes ``classes`` ([N] int, 0..C-1) with ``scores`` ([N]), in
        this order. Returns [N] int64 tickets, -1 for those not among their class's top ``k``
        when they arrive (the others may be evicted by later ones: see :meth:`alive`)."""
        classes = torch.as_tensor(classes).reshape(-1).long().cpu()
        scores = torch.as_tensor(scores).reshape(-1).double().cpu()
        if len(classes) != len(scores):
            raise ValueError(f"{len(classes)} classes for {len(scores)} scores")
        if len(classes) and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise ValueError(f"class ids must be in [0, {self.num_classes}), got "
                             f"{int(classes.min())}..{int(classes.max())}")
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("a detection score is not finite (NaN or inf)")
        tickets = [-1] * len(classes)
        # Only those above their class's bar at the start can enter (the bar only rises)
        candidates = torch.nonzero(scores > self._bar[classes]).flatten().tolist()
        cls_list, score_list = classes.tolist(), scores.tolist()
        touched = set()
        for i in candidates:
            c, s = cls_list[i], score_list[i]
            heap = self._heaps[c]
            ticket = self._next
            if len(heap) < self.k:
                heapq.heappush(heap, (s, -ticket))
            else:
                if not s > heap[0][0]:  # a tie with the k-th: the earlier one stays
                    continue
                _, evicted = heapq.heapreplace(heap, (s, -ticket))
                self._records.pop(-evicted, None)
            self._next += 1
            self._records[ticket] = None
            tickets[i] = ticket
            touched.add(c)
        for c in touched:
            if len(self._heaps[c]) == self.k:
                self._bar[c] = self._heaps[c][0][0]
        return torch.tensor(tickets, dtype=torch.long)

    def alive(self, tickets: torch.Tensor) -> torch.Tensor:
        """[N] bool: which ``tickets`` are still among their class's top ``k``."""
        return torch.tensor([t in self._records for t in tickets.tolist()], dtype=torch.bool)

    def store(self, tickets: Sequence[int], records: Sequence[object]) -> None:
        """Attach ``records`` to ``tickets`` (one each); a ticket no longer kept is skipped."""
        tickets = [int(t) for t in tickets]
        if len(tickets) != len(records):
            raise ValueError(f"{len(records)} records for {len(tickets)} tickets")
        for t, r in zip(tickets, records):
            if t in self._records:
                self._records[t] = r

    def entries(self) -> List[List]:
        """Per class, its kept ``(score, ticket, record)`` in rank order (score descending, then
        arrival). A detection admitted but never stored is an error: its record was lost."""
        out = []
        for heap in self._heaps:
            ranked = sorted(((s, -t) for s, t in heap), key=lambda e: (-e[0], e[1]))
            missing = [t for _, t in ranked if self._records[t] is None]
            if missing:
                raise RuntimeError(f"{len(missing)} kept detections have no record (admitted "
                                   f"but never stored)")
            out.append([(s, t, self._records[t]) for s, t in ranked])
        return out


def merge_top_k(parts: Sequence[List[List]], k: int) -> List[List]:
    """Per class, the ``k`` best of the ``entries()`` of several :class:`TopKPerClass` (one per
    process): by score, then by part (process rank), then arrival."""
    if not parts:
        return []
    if len(parts) == 1:
        return [list(c[:k]) for c in parts[0]]
    merged = []
    for per_class in zip(*parts):
        ranked = sorted(((e, rank) for rank, entries in enumerate(per_class) for e in entries),
                        key=lambda x: (-x[0][0], x[1], x[0][1]))
        merged.append([e for e, _ in ranked[:k]])
    return merged
