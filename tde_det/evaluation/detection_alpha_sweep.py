"""Alpha sweep for the TDE cascade detector from one inference pass per image.

The backbone, the proposals and the box features of every cascade stage run once. Each stage's
box predictor returns the eq. 7 logits z and the alpha-free TDE term B (``TDEClassLogits``), and
eq. 8 is linear in alpha before the softmax (TDE = z - alpha * B), so every alpha is scored from
these cached per-stage tensors: per-stage probabilities with that alpha (the predictor's own
``predict_probs``: eq. 9, softmax of eq. 8, or softmax of eq. 7 for alpha = 0), the cascade
average, Detectron2's ``fast_rcnn_inference`` on the last stage's boxes (box regression does not
depend on alpha), and one evaluator per alpha.

Masks depend on the box and the class, not on alpha: by default they are pasted once per image
for the union of the alphas' detections (``shared_detections``), the mask head's layers run
once per distinct box (``union_masks``), and each alpha takes its own rows from there. An
evaluator with ``process_records`` (:class:`~tde_det.evaluation.RecordsLVISEvaluator`, which
``Trainer.build_evaluator`` gives for LVIS datasets) also gets each mask encoded to RLE once,
the alphas' records sharing it; any other gets ``process(inputs, outputs)``. With
``share_masks=False`` each alpha's masks come from its own detections, as in ``--eval-only``.

Each alpha's results equal those of ``--eval-only MODEL.TDE.TEST_TDE True MODEL.TDE.ALPHA
<alpha>`` (shared masks: up to how a convolution library rounds for another batch size, see
``union_masks``): sweeping alpha means evaluating with TDE, whatever the predictors'
``test_tde`` (``MODEL.TDE.TEST_TDE``), which is restored afterwards.
"""
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Sequence

import torch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.utils import comm

from tde_det.modeling.roi_heads import TDECascadeROIHeads, TDEClassLogits

from .alpha_sweep import LINEAR_ERROR, check_alphas
from .lvis_records import RecordsLVISEvaluator
from .shared_detections import MergedDetections
from .union_masks import predict_masks

__all__ = ["DetectionAlphaSweep", "EvaluatorsSharingGroundTruth", "available_cpus",
           "parallel_evaluation_workers"]

logger = logging.getLogger(__name__)
# (alpha, evaluator) pairs that forked workers inherit (set only while
# DetectionAlphaSweep.evaluate forks).
_FORKED_EVALUATORS: Optional[List] = None


class _Prefix(logging.Filter):
    """Puts ``prefix`` before the message of every record it sees (once per record)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_alpha_prefixed", False):
            record.msg, record.args = self.prefix + record.getMessage(), None
            record._alpha_prefixed = True
        return True


@contextmanager
def _labelled_logs(alpha: float):
    """Within the block, every message that reaches a handler of any logger (the evaluators'
    tables, the LVIS API's lines) starts with "alpha <alpha>: "."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    handlers = {h for lg in loggers for h in lg.handlers}
    prefix = _Prefix(f"alpha {alpha:g}: ")
    for h in handlers:
        h.addFilter(prefix)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(prefix)


def _evaluate_labelled(alpha: float, evaluator):
    """``evaluator.evaluate()``, its log lines labelled with ``alpha``."""
    with _labelled_logs(alpha):
        return evaluator.evaluate()


def _evaluate_inherited(index: int):
    """In a forked worker: run the ``index``-th inherited evaluator's ``evaluate()``."""
    return _evaluate_labelled(*_FORKED_EVALUATORS[index])


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallel_evaluation_workers(requested: int, num_alphas: int) -> int:
    """How many processes can evaluate alphas at once: at most ``requested`` and one per alpha;
    1 (in this process) with several distributed processes (each evaluator gathers over them),
    or where processes cannot be forked (not Linux/macOS)."""
    if requested < 1:
        raise ValueError(f"the number of evaluation workers must be >= 1, got {requested}")
    if comm.get_world_size() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(requested, num_alphas)


class EvaluatorsSharingGroundTruth:
    """``alpha -> evaluator`` for :class:`DetectionAlphaSweep` that parses the dataset's json
    once: ``build(output_folder)`` makes the first evaluator (e.g. ``lambda folder:
    Trainer.build_evaluator(cfg, dataset_name, folder)``); if it is a
    :class:`~tde_det.evaluation.RecordsLVISEvaluator`, every later one shares its ground truth
    (:meth:`~tde_det.evaluation.RecordsLVISEvaluator.sharing_ground_truth`), else ``build`` is
    called again. ``folder_of(alpha)``: each alpha's output folder ("": no files). Use one
    for all the passes over a dataset."""

    def __init__(self, build: Callable[[str], object],
                 folder_of: Callable[[float], str] = lambda alpha: ""):
        self._build, self._folder_of = build, folder_of
        self._template: Optional[RecordsLVISEvaluator] = None  # holds no predictions

    def __call__(self, alpha: float):
        folder = self._folder_of(alpha)
        if self._template is not None:
            return self._template.sharing_ground_truth(folder)
        evaluator = self._build(folder)
        if isinstance(evaluator, RecordsLVISEvaluator):
            self._template = evaluator.sharing_ground_truth("")
        return evaluator


@contextmanager
def _recording_stages(roi_heads: TDECascadeROIHeads, record: List):
    """Within the block, every stage predictor's ``predict_probs`` also appends
    (predictor, predictions, proposals) to ``record``; TDE is forced on (alpha > 0) so that the
    predictions carry the TDE term."""
    saved = [(p, p.test_tde, p.alpha) for p in roi_heads.box_predictor]
    for p in roi_heads.box_predictor:
        def recording(predictions, proposals, _p=p, _orig=p.predict_probs):
            record.append((_p, predictions, proposals))
            return _orig(predictions, proposals)

        p.predict_probs = recording
        p.test_tde, p.alpha = True, 1.0
    try:
        yield record
    finally:
        for p, test_tde, alpha in saved:
            del p.predict_probs  # back to the class's method
            p.test_tde, p.alpha = test_tde, alpha


class DetectionAlphaSweep:
    """Score several alphas of a ``GeneralizedRCNN`` with ``TDECascadeROIHeads``, with TDE on
    for every alpha (as ``MODEL.TDE.TEST_TDE True``, whatever the model's setting).

    ``process(batched_inputs)`` runs the network once and feeds one evaluator per alpha;
    ``evaluate(workers)`` returns ``{alpha: evaluator results}``, evaluating up to ``workers``
    alphas at once in forked processes.
    """

    def __init__(self, model: GeneralizedRCNN, alphas: Sequence[float],
                 make_evaluator: Callable[[float], object], share_masks: bool = True):
        """``share_masks``: pasting and encoding masks once per distinct (box, class) of an
        image and the mask head once per distinct box, over all alphas (default); False: the
        mask head, pasting and encoding on each alpha's own detections, in ``--eval-only``'s
        batches (slower; the convolutions then see exactly eval-only's batch sizes)."""
        roi_heads = getattr(model, "roi_heads", None)
        if not isinstance(roi_heads, TDECascadeROIHeads):
            raise ValueError("the alpha sweep needs MODEL.ROI_HEADS.NAME TDECascadeROIHeads, got "
                             f"{type(roi_heads).__name__}")
        kinds = {p.cls_score.kind for p in roi_heads.box_predictor}
        if "linear" in kinds:
            raise ValueError(LINEAR_ERROR)
        self.model = model
        self.alphas = check_alphas(alphas)
        self.share_masks = bool(share_masks)
        self.evaluators = {a: make_evaluator(a) for a in self.alphas}
        for ev in self.evaluators.values():
            ev.reset()
        # Detections over the alphas (each alpha's counted), the distinct (box, class) pairs
        # among them (counted with share_masks only), and the rows the mask head ran on (with
        # share_masks: distinct boxes)
        self.detections = 0
        self.distinct = 0
        self.mask_rows = 0

    @torch.no_grad()
    def process(self, batched_inputs: List[Dict]) -> None:
        model, heads = self.model, self.model.roi_heads
        images = model.preprocess_image(batched_inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        per_alpha = self._detections(features, proposals)
        if not self.share_masks:
            for alpha, instances in zip(self.alphas, per_alpha):
                self.detections += sum(len(i) for i in instances)
                self.mask_rows += sum(len(i) for i in instances)
                instances = heads.forward_with_given_boxes(features, instances)
                self.evaluators[alpha].process(batched_inputs, GeneralizedRCNN._postprocess(
                    instances, batched_inputs, images.image_sizes))
            return
        # Pasting (and encoding) masks once per distinct (box, class) of an image, the mask
        # head once per distinct box; at most one alpha's detections per mask-head batch
        merged = [MergedDetections(of_image) for of_image in zip(*per_alpha)]
        self.distinct += sum(len(m) for m in merged)
        self.detections += sum(m.num_detections for m in merged)
        union, rows = predict_masks(heads, features, [m.union for m in merged],
                                    chunk=max(sum(len(d) for d in dets) for dets in per_alpha))
        self.mask_rows += rows
        outputs = [o["instances"] for o in
                   GeneralizedRCNN._postprocess(union, batched_inputs, images.image_sizes)]
        if all(hasattr(ev, "process_records") for ev in self.evaluators.values()):
            # RecordsLVISEvaluator: each distinct mask encoded to RLE once, shared by the alphas
            records = [instances_to_coco_json(out.to("cpu"), image["image_id"])
                       for out, image in zip(outputs, batched_inputs)]
            for k, alpha in enumerate(self.alphas):
                self.evaluators[alpha].process_records(batched_inputs, [
                    m.records_of_alpha(k, out, r) for m, out, r in zip(merged, outputs, records)])
            return
        for k, alpha in enumerate(self.alphas):
            self.evaluators[alpha].process(batched_inputs, [
                {"instances": m.of_alpha(k, out)} for m, out in zip(merged, outputs)])

    def _detections(self, features, proposals) -> List[List]:
        """Per alpha, that alpha's detections of each image (before masks): Detectron2's cascade
        once, then each alpha scored from the stages' cached z and B."""
        heads = self.model.roi_heads
        stages: List = []
        with _recording_stages(heads, stages):
            heads._forward_box(features, proposals)  # Detectron2's cascade, once
        stages = stages[-heads.num_cascade_stages:]
        last, last_predictions, last_proposals = stages[-1]
        boxes = last.predict_boxes(last_predictions, last_proposals)
        image_sizes = [p.image_size for p in last_proposals]
        saved = [(p, p.test_tde, p.alpha) for p, _, _ in stages]
        per_alpha = []
        try:
            for alpha in self.alphas:
                per_stage = []
                for p, predictions, props in stages:
                    if not isinstance(predictions[0], TDEClassLogits):
                        raise RuntimeError("a stage returned no TDE term in the sweep pass")
                    p.test_tde, p.alpha = True, alpha
                    per_stage.append(p.predict_probs(predictions, props))
                scores = [sum(s) * (1.0 / len(stages)) for s in zip(*per_stage)]
                instances, _ = fast_rcnn_inference(boxes, scores, image_sizes,
                                                   last.test_score_thresh, last.test_nms_thresh,
                                                   last.test_topk_per_image)
                per_alpha.append(instances)
        finally:
            for p, test_tde, alpha in saved:
                p.test_tde, p.alpha = test_tde, alpha
        return per_alpha

    def evaluate(self, workers: int = 1) -> Dict[float, Dict]:
        """``{alpha: evaluator.evaluate()}``, each evaluator's log lines (its tables) starting
        with "alpha <alpha>: ". With ``workers`` > 1 the evaluators run at once in
        that many forked processes, each inheriting the evaluators with what ``process`` gave
        them (LVIS evaluation is single-threaded Python, and one alpha's does not depend on
        another's); the results are the same. One process per rank under
        ``torch.distributed`` (see :func:`parallel_evaluation_workers`)."""
        global _FORKED_EVALUATORS
        alphas = list(self.evaluators)
        workers = parallel_evaluation_workers(workers, len(alphas))
        if workers == 1:
            return {a: _evaluate_labelled(a, self.evaluators[a]) for a in alphas}
        logger.info(f"evaluating {len(alphas)} alphas in {workers} processes")
        _FORKED_EVALUATORS = [(a, self.evaluators[a]) for a in alphas]
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) \
                    as pool:
                results = list(pool.map(_evaluate_inherited, range(len(alphas))))
        except BrokenProcessPool as e:
            raise RuntimeError(
                f"a process evaluating alphas in parallel died (out of memory?); evaluate fewer "
                f"at once (tools/sweep_alpha.py --eval-workers, now {workers}; 1 evaluates them "
                f"one after another in this process)") from e
        finally:
            _FORKED_EVALUATORS = None
        return dict(zip(alphas, results))
