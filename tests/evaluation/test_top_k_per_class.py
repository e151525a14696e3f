"""TopKPerClass keeps exactly the top K of each class (a stable sort of everything by score, in
arrival order: ties go to the earlier detection), bounded as it goes, and merges per process."""
import pytest
import torch

from tde_det.evaluation.top_k_per_class import TopKPerClass, merge_top_k


def stable_top_k(classes, scores, k, num_classes):
    """Per class, the arrival indices of its top k by a stable sort of all its detections."""
    out = []
    for c in range(num_classes):
        idx = [i for i, x in enumerate(classes) if x == c]
        out.append(sorted(idx, key=lambda i: -scores[i])[:k])
    return out


def feed(top, classes, scores, batch):
    """Enter the detections ``batch`` at a time; store each kept one's arrival index."""
    for start in range(0, len(classes), batch):
        c = torch.tensor(classes[start:start + batch])
        s = torch.tensor(scores[start:start + batch])
        tickets = top.admit(c, s)
        entered = (tickets >= 0).nonzero().flatten()
        alive = top.alive(tickets[entered])
        rows = entered[alive]
        top.store(tickets[rows].tolist(), [start + int(r) for r in rows])


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_keeps_exactly_the_stable_top_k_with_ties(batch):
    g = torch.Generator().manual_seed(0)
    n, num_classes, k = 600, 5, 17
    classes = torch.randint(0, num_classes, (n,), generator=g).tolist()
    # few distinct scores: many ties, also at the k-th place
    scores = (torch.randint(0, 12, (n,), generator=g).float() / 12).tolist()
    top = TopKPerClass(num_classes, k)
    feed(top, classes, scores, batch)
    kept = [[r for _, _, r in per_class] for per_class in top.entries()]
    assert kept == stable_top_k(classes, scores, k, num_classes)
    assert top.counts() == [k] * num_classes and len(top) == k * num_classes  # bounded


def test_only_detections_that_can_enter_get_tickets():
    top = TopKPerClass(2, 2)
    tickets = top.admit(torch.tensor([0, 0, 0, 1]), torch.tensor([0.5, 0.9, 0.5, 0.1]))
    # class 0: 0.5 and 0.9 fill it; the second 0.5 ties the 2nd place and arrives later
    assert (tickets >= 0).tolist() == [True, True, False, True]
    later = top.admit(torch.tensor([0, 0]), torch.tensor([0.5, 0.6]))
    assert (later >= 0).tolist() == [False, True]
    assert top.alive(tickets).tolist() == [False, True, False, True]  # 0.5 evicted by 0.6


def test_merging_processes_equals_one_process():
    g = torch.Generator().manual_seed(1)
    classes = torch.randint(0, 3, (300,), generator=g).tolist()
    scores = (torch.randint(0, 20, (300,), generator=g).float() / 20).tolist()
    parts = []
    for rank in range(2):  # each "process" gets every other detection
        top = TopKPerClass(3, 10)
        feed(top, classes[rank::2], scores[rank::2], 5)
        parts.append([[(s, t, (rank, r)) for s, t, r in c] for c in top.entries()])
    merged = merge_top_k(parts, 10)
    for c, per_class in enumerate(merged):
        got = sorted(s for s, _, _ in per_class)
        want = sorted(scores[i] for i in stable_top_k(classes, scores, 10, 3)[c])
        assert got == want  # the same scores (ties across ranks: the lower rank first)
        assert [s for s, _, _ in per_class] == sorted(got, reverse=True)


def test_bad_input():
    with pytest.raises(ValueError, match="TEST.AP_FIXED.DETS_PER_CLASS"):
        TopKPerClass(3, 0)
    top = TopKPerClass(3, 2)
    with pytest.raises(ValueError, match="not finite"):
        top.admit(torch.tensor([0]), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 3\)"):
        top.admit(torch.tensor([3]), torch.tensor([0.5]))
    top.admit(torch.tensor([1]), torch.tensor([0.5]))
    with pytest.raises(RuntimeError, match="no record"):  # admitted, never stored: lost
        top.entries()
