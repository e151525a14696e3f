"""Alpha sweep for the TDE cascade detector from one inference pass per image.

The backbone, the proposals and the box features of every cascade stage run once
(``TDECascadeROIHeads.forward_stages``: each stage's eq. 7 logits z and alpha-free TDE term B).
Eq. 8 is linear in alpha before the softmax (TDE = z - alpha * B), so every alpha is scored from
these per-stage tensors by ``TDECascadeROIHeads.detections`` (the predictors' ``probs`` with that
alpha, the cascade average, Detectron2's ``fast_rcnn_inference``), with one evaluator per alpha.

Masks depend on the box and the class, not on alpha: by default they are pasted once per image
for the union of the alphas' detections (``shared_detections``), the mask head's layers run
once per distinct box (``union_masks``), and each alpha takes its own rows from there. An
evaluator with ``process_records`` (:class:`~tde_det.evaluation.RecordsLVISEvaluator`, which
``Trainer.build_evaluator`` gives for LVIS datasets) also gets each mask encoded to RLE once,
the alphas' records sharing it; any other gets ``process(inputs, outputs)``. With
``share_masks=False`` each alpha's masks come from its own detections, as in ``--eval-only``.

Each alpha's results equal those of ``--eval-only MODEL.TDE.TEST_TDE True MODEL.TDE.ALPHA
<alpha>`` (shared masks: up to how a convolution library rounds for another batch size, see
``union_masks``): sweeping alpha means evaluating with TDE, whatever ``MODEL.TDE.TEST_TDE``.
The model is not changed.
"""
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import GeneralizedRCNN
from detectron2.utils import comm

from tde_det.layers.checks import check_has_tde
from tde_det.modeling.roi_heads import TDECascadeROIHeads

from .alpha_sweep import NO_ALPHA, check_alphas
from .ap_fixed_inference import candidates_and_standard
from .progress import logged_progress
from .lvis_records import RecordsLVISEvaluator
from .shared_detections import MergedDetections
from .union_masks import predict_masks

__all__ = ["DetectionAlphaSweep", "EvaluatorsSharingGroundTruth", "available_cpus",
           "parallel_evaluation_workers", "sweep_detection"]

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
    called again. ``folder_of(alpha)``: each alpha's output folder ("": no files).
    ``per_class_of(alpha)``: an LVIS evaluator's folder for its per-class AP files, also when
    ``folder_of`` gives "" (None: ``folder_of``'s). Use one for all the passes over a
    dataset."""

    def __init__(self, build: Callable[[str], object],
                 folder_of: Callable[[float], str] = lambda alpha: "",
                 per_class_of: Optional[Callable[[float], str]] = None):
        self._build, self._folder_of, self._per_class_of = build, folder_of, per_class_of
        self._template: Optional[RecordsLVISEvaluator] = None  # holds no predictions

    def __call__(self, alpha: float):
        folder = self._folder_of(alpha)
        per_class = None if self._per_class_of is None else self._per_class_of(alpha)
        if self._template is not None:
            return self._template.sharing_ground_truth(folder, per_class)
        evaluator = self._build(folder)
        if isinstance(evaluator, RecordsLVISEvaluator):
            self._template = evaluator.sharing_ground_truth("", "")
            if per_class is not None:
                evaluator = self._template.sharing_ground_truth(folder, per_class)
        return evaluator


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
        for predictor in roi_heads.box_predictor:
            check_has_tde(predictor.cls_score.kind, NO_ALPHA)
        self.model = model
        self.alphas = check_alphas(alphas)
        self.share_masks = bool(share_masks)
        self.evaluators = {a: make_evaluator(a) for a in self.alphas}
        for ev in self.evaluators.values():
            ev.reset()
        # the alphas whose evaluators also compute AP-fixed (TEST.AP_FIXED.ENABLED)
        self._ap_fixed = {a for a, ev in self.evaluators.items()
                          if hasattr(ev, "process_candidates")}
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
        if self._ap_fixed:  # all the detections; each alpha's standard ones are their prefix
            candidates, standard = {}, []
            for alpha, of_alpha in zip(self.alphas, per_alpha):
                of_candidates, prefix = candidates_and_standard(
                    heads, features, of_alpha, batched_inputs, images.image_sizes)
                if alpha in self._ap_fixed:
                    candidates[alpha] = of_candidates
                standard.append(prefix)
            self._process_standard(batched_inputs, images, features, standard)
            for alpha, of_alpha in candidates.items():
                self.evaluators[alpha].process_candidates(batched_inputs, of_alpha)
            return
        self._process_standard(batched_inputs, images, features, per_alpha)

    def _process_standard(self, batched_inputs, images, features, per_alpha) -> None:
        """Each alpha's standard detections (``per_alpha``) with their masks, to its
        evaluator."""
        heads = self.model.roi_heads
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
        """Per alpha, that alpha's detections of each image (before masks): the box cascade
        once, then each alpha scored from the stages' z and B."""
        heads = self.model.roi_heads
        stages = heads.forward_stages(features, proposals)
        topk = -1 if self._ap_fixed else None  # AP-fixed: every detection, as APFixedInference
        return [heads.detections(stages, alpha, topk) for alpha in self.alphas]

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


def sweep_detection(model: GeneralizedRCNN, data_loader: Iterable,
                    build_evaluator: Callable[[str], object], alphas: Sequence[float],
                    output: str = "", eval_workers: int = 1, alphas_per_pass: int = 0,
                    share_masks: bool = True, save_predictions: bool = False,
                    dataset: str = "") -> List[Dict]:
    """One row ``{"alpha", "<task>/<metric>", ...}`` per alpha. The network runs once per pass
    over ``data_loader`` (iterated once per pass); a pass scores up to ``alphas_per_pass``
    alphas (0: all in one pass), whose evaluators hold their predictions until that pass is
    evaluated: fewer alphas per pass, less memory, more passes. ``build_evaluator(folder)``:
    the dataset's evaluator (e.g. ``Trainer.build_evaluator(cfg, dataset, folder)``), built
    once and then shared (:class:`EvaluatorsSharingGroundTruth`). An LVIS evaluator
    writes each alpha's per-class AP files to ``output/alpha_<alpha>`` (none when ``output`` is
    ""); with ``save_predictions`` each alpha's evaluator also writes its predictions there, as
    ``--eval-only`` does.
    ``share_masks``, ``eval_workers``: see :class:`DetectionAlphaSweep`. ``dataset``: the
    split's name, for the log."""
    if alphas_per_pass < 0:
        raise ValueError(f"--alphas-per-pass must be >= 0 (0: all alphas in one pass), got "
                         f"{alphas_per_pass}")
    alphas = check_alphas(alphas)  # each alpha once, also across passes
    per_pass = alphas_per_pass or len(alphas)
    passes = [alphas[i:i + per_pass] for i in range(0, len(alphas), per_pass)]
    make_evaluator = EvaluatorsSharingGroundTruth(  # one parse of the json for all passes
        build_evaluator,
        lambda a: os.path.join(output, f"alpha_{a:g}") if save_predictions else "",
        lambda a: os.path.join(output, f"alpha_{a:g}") if output else "")
    rows = []
    for n, chunk in enumerate(passes, 1):
        of = f", pass {n} of {len(passes)}" if len(passes) > 1 else ""
        if of:
            logger.info(f"pass {n} of {len(passes)} over {dataset}: alphas "
                        f"{', '.join(f'{a:g}' for a in chunk)}")
        sweep = DetectionAlphaSweep(model, chunk, make_evaluator, share_masks=share_masks)
        for batch in logged_progress(data_loader, f"alpha sweep on {dataset}{of}"):
            sweep.process(batch)
        if share_masks:
            logger.info(f"{sweep.detections} detections over {len(chunk)} alphas, "
                        f"{sweep.distinct} distinct (box, class) pairs, {sweep.mask_rows} "
                        f"distinct boxes: masks were pasted for the pairs, the mask head ran "
                        f"on the boxes")
        for alpha, results in sweep.evaluate(eval_workers).items():
            row = {"alpha": alpha}
            for task, metrics in (results or {}).items():
                row.update({f"{task}/{k}": float(v) for k, v in metrics.items()})
            rows.append(row)
        del sweep  # this pass's predictions, before the next pass makes its own
    return rows
