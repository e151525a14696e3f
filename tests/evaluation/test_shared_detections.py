"""MergedDetections: each distinct (box, class) once, each alpha gets back its own rows."""
import pytest
import torch
from detectron2.structures import Boxes, Instances

from tde_det.evaluation.shared_detections import MergedDetections


def _detections(boxes, classes, scores, size=(50, 60)):
    d = Instances(size)
    d.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    d.pred_classes = torch.tensor(classes, dtype=torch.long)
    d.scores = torch.tensor(scores, dtype=torch.float32)
    return d


A, B, C = [1.0, 2.0, 10.0, 20.0], [0.0, 0.0, 5.0, 5.0], [3.0, 3.0, 3.0, 9.0]


def test_union_has_each_box_and_class_once_and_alphas_get_their_rows_back():
    per_alpha = [
        _detections([A, B, A], [4, 1, 2], [0.9, 0.5, 0.4]),
        _detections([B, A], [1, 4], [0.7, 0.2]),  # same pairs, other order and scores
        _detections([C, A], [1, 2], [0.3, 0.1]),
        _detections([], [], []),  # an alpha with nothing left
    ]
    merged = MergedDetections(per_alpha)
    assert len(merged) == 4 and merged.num_detections == 7  # (A,4) (B,1) (A,2) (C,1)
    pairs = {(tuple(b.tolist()), c) for b, c in
             zip(merged.union.pred_boxes.tensor, merged.union.pred_classes.tolist())}
    assert pairs == {(tuple(A), 4), (tuple(B), 1), (tuple(A), 2), (tuple(C), 1)}
    # what the mask head would add: a value that depends on box and class only
    output = merged.union
    output.pred_masks = output.pred_boxes.tensor.sum(1) * 100 + output.pred_classes
    for k, d in enumerate(per_alpha):
        got = merged.of_alpha(k, output)
        assert got.image_size == d.image_size and not got.has("union_row")
        assert torch.equal(got.pred_boxes.tensor, d.pred_boxes.tensor)
        assert torch.equal(got.pred_classes, d.pred_classes)
        assert torch.equal(got.scores, d.scores)
        assert torch.equal(got.pred_masks, d.pred_boxes.tensor.sum(1) * 100 + d.pred_classes)


def test_rows_that_post_processing_drops_are_dropped_from_every_alpha():
    per_alpha = [_detections([A, B, C], [4, 1, 1], [0.9, 0.5, 0.4]),
                 _detections([C, B], [1, 1], [0.8, 0.6])]
    merged = MergedDetections(per_alpha)
    union = merged.union
    dropped = union.pred_boxes.tensor[:, 0] == 0.0  # box B, as if empty after rescaling
    output = union[~dropped]
    first, second = merged.of_alpha(0, output), merged.of_alpha(1, output)
    assert first.pred_boxes.tensor.tolist() == [A, C] and first.scores.tolist() == \
        pytest.approx([0.9, 0.4])
    assert second.pred_boxes.tensor.tolist() == [C] and second.scores.tolist() == \
        pytest.approx([0.8])


def test_no_alphas_is_an_error():
    with pytest.raises(ValueError, match="at least one alpha"):
        MergedDetections([])


def test_records_of_alpha_copy_the_records_with_the_alphas_scores():
    per_alpha = [_detections([A, B], [4, 1], [0.9, 0.5]), _detections([B, C], [1, 1], [0.7, 0.2])]
    merged = MergedDetections(per_alpha)
    output = merged.union
    records = [{"bbox": [float(i)], "segmentation": {"counts": str(i)}, "score": 0.0,
                "category_id": int(c)} for i, c in enumerate(output.pred_classes.tolist())]
    second = merged.records_of_alpha(1, output, records)
    assert [r["score"] for r in second] == pytest.approx([0.7, 0.2])
    by_box = {tuple(b.tolist()): i for i, b in enumerate(output.pred_boxes.tensor)}
    assert [r["segmentation"] for r in second] == [records[by_box[tuple(B)]]["segmentation"],
                                                   records[by_box[tuple(C)]]["segmentation"]]
    assert second[0]["segmentation"] is records[by_box[tuple(B)]]["segmentation"]  # shared
    assert all(r["score"] == 0.0 for r in records)  # the union's records are not changed
