"""The private names of Detectron2 that tde-det calls, overrides or reads, with the signatures and
attributes tde-det relies on. Detectron2 0.6 and main both have them; a Detectron2 that renames or
reshapes one fails here, by name, instead of deep inside a training run."""
import inspect

from detectron2.data import build
from detectron2.evaluation import LVISEvaluator
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.roi_heads import CascadeROIHeads, StandardROIHeads

from tde_det.data.detection.lvis import register_lvis_dataset
from tde_det.data.detection.synthetic import write_tiny_lvis


def _params(function):
    return list(inspect.signature(function).parameters)


def test_functions_and_methods_tde_det_calls_or_overrides():
    # detection_task.build_train_loader: Detectron2's loader arguments with our mapper
    assert _params(build._train_loader_from_config)[:2] == ["cfg", "mapper"]
    # the alpha sweep runs the cascade once; TDECascadeROIHeads overrides the other two
    assert _params(CascadeROIHeads._forward_box) == ["self", "features", "proposals", "targets"]
    assert _params(CascadeROIHeads._run_stage) == ["self", "features", "proposals", "stage"]
    assert _params(CascadeROIHeads._init_box_head) == ["cfg", "input_shape"]
    # APFixedInference runs a view of the heads without the per-image limit
    assert _params(StandardROIHeads._forward_box) == ["self", "features", "proposals"]
    assert _params(GeneralizedRCNN._postprocess) == ["instances", "batched_inputs",
                                                     "image_sizes"]
    # RecordsLVISEvaluator overrides the evaluation of the gathered predictions
    assert _params(LVISEvaluator._eval_predictions) == ["self", "predictions"]
    assert _params(LVISEvaluator._tasks_from_predictions) == ["self", "predictions"]


def test_lvis_evaluator_attributes_the_records_evaluator_reads(tmp_path):
    paths = write_tiny_lvis(str(tmp_path), num_train=1, num_val=1, seed=0)
    register_lvis_dataset("tiny_lvis_private_names", paths["val"], paths["image_root"])
    ev = LVISEvaluator("tiny_lvis_private_names", ("bbox",), distributed=False, output_dir="out",
                       max_dets_per_image=10)
    ev.reset()
    assert ev._output_dir == "out" and ev._max_dets_per_image == 10 and ev._tasks == ("bbox",)
    assert ev._do_evaluation is True and ev._predictions == []
    assert ev._distributed is False  # the AP-fixed evaluator gathers its heaps when True
    for name in ("_lvis_api", "_metadata", "_logger"):
        assert hasattr(ev, name), name

    class Probe(LVISEvaluator):  # evaluate() hands _eval_predictions the gathered predictions
        def _eval_predictions(self, predictions):
            seen.append((predictions, dict(self._results)))
            self._results["bbox"] = {"AP": 1.0}

    seen = []
    probe = Probe("tiny_lvis_private_names", ("bbox",), distributed=False, output_dir="")
    probe.reset()
    probe._predictions.append({"image_id": 1, "instances": []})
    assert probe.evaluate() == {"bbox": {"AP": 1.0}}
    assert seen == [([{"image_id": 1, "instances": []}], {})]
