"""The de-confounded box predictor of one cascade stage: eq. 7 in training, eq. 8 / eq. 9 in
inference, and the stage's own head direction (Assumption 1) from its foreground proposals."""
import weakref
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor

from tde_det.layers import HeadDirection, NormalizedClassifier, background_exempted_probs
from tde_det.layers.checks import check_has_tde, check_real, has_tde
from tde_det.layers.tde_math import split_heads, tde_logits, unit_heads

from ..tde_config_checks import check_softmax_box_head, check_tde_config

__all__ = ["TDEClassLogits", "TDEFastRCNNOutputLayers"]


class TDEClassLogits(NamedTuple):
    """Class outputs of :class:`TDEFastRCNNOutputLayers` in inference when TDE is applied.

    ``total``: eq. 7 logits z ([R, C+1], background last); ``bias``: the alpha-free term B of
    eq. 8, so that TDE(z) = z - alpha * B. Any alpha's probabilities follow from them
    (:meth:`TDEFastRCNNOutputLayers.probs`) without another forward pass.
    """

    total: Tensor
    bias: Tensor


class TDEFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose classifier over C+1 classes (background last) is a
    :class:`~tde_det.layers.NormalizedClassifier` (eq. 7 or an ablation), with a
    :class:`~tde_det.layers.HeadDirection` x_bar of the box-head features.

    Box regression, the losses and the box decoding are Detectron2's.

    - Training: ``forward(x, gt_classes)`` updates x_bar from the detached features of the
      foreground rows (0 <= gt_classes < C; background is C) before any loss, on every call
      (a collective when synchronised), and returns eq. 7 logits.
    - Inference: ``forward`` returns :class:`TDEClassLogits` (z and B) for a normalised
      classifier; ``probs(z, B, alpha)`` gives the probabilities of any alpha, exactly one
      softmax per term: with background exemption eq. 9, ``background_exempted_probs(z,
      z - alpha B)``; without, softmax(eq. 8); alpha = 0 -> softmax(eq. 7). ``predict_probs``
      uses it with ``alpha`` (0 when ``test_tde`` is off).
    """

    @configurable
    def __init__(self, input_shape, *, classifier_kind: str = "deconfound", num_heads: int = 2,
                 tau: float = 16.0, gamma: float = 1 / 32, feature_eps: float = 1e-9,
                 alpha: float = 1.5, test_tde: bool = True, background_exempted: bool = True,
                 mu: float = 0.9998, sync_head_direction: bool = True,
                 fused_kernels: bool = False, log_period: int = 0,
                 head_direction_form: str = "sum", **kwargs):
        """
        Args:
            input_shape, kwargs: as ``FastRCNNOutputLayers`` (``box2box_transform``,
                ``num_classes``, ``test_score_thresh``, ...).
            classifier_kind, num_heads, tau, gamma, feature_eps: the classifier of eq. 7
                ("deconfound") or an ablation ("cosine", "capsule", "linear").
            alpha: alpha of eq. 8 (paper, LVIS: 1.5). test_tde: apply eq. 8 in inference.
            background_exempted: use eq. 9 (with TDE); otherwise softmax of eq. 8.
            mu, sync_head_direction: decay of x_bar and whether it is averaged over processes.
            fused_kernels: Triton kernels for the classifier and the x_bar update in training
                steps on float32 CUDA tensors (``MODEL.TDE.FUSED_KERNELS``).
            log_period: every this many training iterations, put the head direction's
                metrics into the EventStorage (``MODEL.TDE.LOG_PERIOD``; 0: never).
            head_direction_form: x_bar's update rule, "sum" or "average"
                (``MODEL.TDE.HEAD_DIRECTION_FORM``).
        """
        super().__init__(input_shape, **kwargs)
        in_features = self.cls_score.in_features
        if test_tde:
            check_has_tde(classifier_kind, "set MODEL.TDE.TEST_TDE False")
        self.cls_score = NormalizedClassifier(in_features, self.num_classes + 1,
                                              kind=classifier_kind, num_heads=num_heads, tau=tau,
                                              gamma=gamma, eps=feature_eps,
                                              fused=fused_kernels)
        self.head_direction = HeadDirection(in_features, num_heads=num_heads, mu=mu,
                                            sync=sync_head_direction, fused=fused_kernels,
                                            form=head_direction_form)
        self.alpha = alpha
        self.test_tde = bool(test_tde)
        self.background_exempted = bool(background_exempted)
        self._pending_gt_classes: Optional[Tensor] = None
        if isinstance(log_period, bool) or not isinstance(log_period, int) or log_period < 0:
            raise ValueError(f"MODEL.TDE.LOG_PERIOD must be an integer >= 0 (0: no logging), "
                             f"got {log_period!r}")
        self.log_period = log_period
        self._logged_direction: Optional[Tensor] = None  # d_hat per head at the last log
        # (weak reference to the head direction's tensor, its version) when last checked
        self._checked_direction: Optional[Tuple[weakref.ref, int]] = None

    @property
    def alpha(self) -> float:
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = check_real("MODEL.TDE.ALPHA (eq. 8)", value, 0.0, low_inclusive=True)

    @classmethod
    def from_config(cls, cfg, input_shape, **kwargs):
        check_softmax_box_head(cfg)  # before Detectron2 reads them
        ret = super().from_config(cfg, input_shape)
        ret.update(kwargs)  # e.g. the cascade stage's box2box_transform
        dim = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        check_tde_config(cfg, dim, "box-head feature (MODEL.ROI_BOX_HEAD.FC_DIM; without fc "
                                   "layers, CONV_DIM x POOLER_RESOLUTION^2)")
        tde = cfg.MODEL.TDE
        if tde.TEST_DIRECTION != "ema":
            raise ValueError(f"MODEL.TDE.TEST_DIRECTION {tde.TEST_DIRECTION!r}: the detection "
                             f"head removes its tracked x_bar only; set it to 'ema' (the "
                             f"direction ablation is for the image classifier)")
        ret.update(classifier_kind=tde.CLASSIFIER, num_heads=tde.NUM_HEADS, tau=tde.TAU,
                   gamma=tde.GAMMA, feature_eps=tde.FEATURE_EPS, alpha=tde.ALPHA,
                   test_tde=tde.TEST_TDE, background_exempted=tde.BACKGROUND_EXEMPTED,
                   mu=tde.MU, sync_head_direction=tde.SYNC_HEAD_DIRECTION,
                   fused_kernels=tde.FUSED_KERNELS, log_period=tde.LOG_PERIOD,
                   head_direction_form=tde.HEAD_DIRECTION_FORM)
        return ret

    @property
    def applies_tde(self) -> bool:
        """Whether inference uses eq. 8 (TDE on, alpha > 0)."""
        return self.test_tde and self.alpha > 0

    class _GtClasses:
        def __init__(self, predictor, gt_classes):
            self.predictor, self.gt_classes = predictor, gt_classes

        def __enter__(self):
            self.predictor._pending_gt_classes = self.gt_classes

        def __exit__(self, *exc):
            self.predictor._pending_gt_classes = None

    def proposal_labels(self, gt_classes: Tensor) -> "_GtClasses":
        """Context in which ``forward(x)`` uses ``gt_classes`` (labels of the rows of x, in
        [0, C], C = background) to update the head direction; lets ROI heads that call the
        predictor with features only (Detectron2's cascade) pass the labels."""
        return self._GtClasses(self, gt_classes)

    def forward(self, x: Tensor, gt_classes: Optional[Tensor] = None):
        """x: [R, ...] box-head features. gt_classes: [R] labels (training only; otherwise
        those given by :meth:`proposal_labels`).

        Returns (scores, proposal_deltas): scores are eq. 7 logits [R, C+1], or in inference
        with a normalised classifier a :class:`TDEClassLogits` (eq. 7 logits and the TDE term,
        whatever ``test_tde`` and ``alpha``, so that any alpha can be scored from them).
        """
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        if self.training:
            if gt_classes is None:
                gt_classes = self._pending_gt_classes
            if gt_classes is None:
                raise RuntimeError("TDEFastRCNNOutputLayers needs the proposals' gt_classes in "
                                   "training (to update the head direction from foreground "
                                   "proposals): call forward(x, gt_classes) or use "
                                   "proposal_labels(gt_classes)")
            update = self.head_direction.kernel_update(x, gt_classes, self.num_classes)
            if update is not None:  # x_bar updated inside the classifier's kernel launch
                outputs = self.cls_score(x, update=update), self.bbox_pred(x)
            else:
                self.update_head_direction(x, gt_classes)
                outputs = super().forward(x)
            self.put_head_direction_metrics(x, gt_classes)
            return outputs
        if has_tde(self.cls_score.kind):
            # eq. 7 and the TDE term sharing the normalised features and weights
            scores = TDEClassLogits(*self.cls_score.logits_and_tde_bias(
                x, self.head_direction.ema))
            return scores, self.bbox_pred(x)
        return super().forward(x)

    def update_head_direction(self, x: Tensor, gt_classes: Tensor) -> None:
        """Assumption 1 from the foreground rows only: 0 <= gt_classes < C (background is C;
        the official ``label > 0`` mask dropped class 0 and let background in). Every call
        updates (a batch without foreground leaves x_bar unchanged), so that the collective
        of a synchronised x_bar is entered by every process."""
        self.head_direction.update_from_labels(x, gt_classes, self.num_classes)  # checks shapes

    def put_head_direction_metrics(self, x: Tensor, gt_classes: Tensor) -> None:
        """In a training step of every ``log_period``-th iteration of a trainer, put into its
        EventStorage (under the name scope, ``tde/stage{k}/`` in the cascade):

        - ``ema_norm``: ||x_bar|| (a decayed sum: it grows to ~ mean / (1 - mu));
        - ``direction_cos_prev``: mean over heads of cos(d_hat^k now, at the previous log): how
          much the head direction still moves (absent at the first log or while d_hat is 0);
        - ``fg_cos``: mean over heads and this batch's foreground rows of cos(x^k, d_hat^k)
          (absent without foreground rows).
        """
        if self.log_period <= 0 or not self.head_direction.moves():
            return
        try:
            storage = get_event_storage()
        except AssertionError:  # not inside a trainer's EventStorage
            return
        if (storage.iter + 1) % self.log_period:
            return
        hd, k = self.head_direction, self.head_direction.num_heads
        d_hat = split_heads(hd.direction(), k)
        scalars = {"ema_norm": torch.linalg.vector_norm(hd.ema.double())}
        prev = self._logged_direction
        if prev is not None and bool(d_hat.any()) and bool(prev.any()):
            scalars["direction_cos_prev"] = (d_hat * prev.to(d_hat)).sum(-1).mean()
        self._logged_direction = d_hat.clone()
        fg = ((gt_classes >= 0) & (gt_classes < self.num_classes)).to(x.device)
        if bool(fg.any()):
            x_hat = split_heads(unit_heads(x.detach()[fg].float(), k), k)
            scalars["fg_cos"] = (x_hat * d_hat.to(x_hat)).sum(-1).mean()
        storage.put_scalars(**scalars, smoothing_hint=False)

    def probs(self, total: Tensor, bias: Tensor, alpha: float) -> Tensor:
        """[R, C+1] class probabilities with TDE at ``alpha`` from eq. 7 logits z and the TDE
        term B (a :class:`TDEClassLogits`): eq. 9 with background exemption, else softmax of
        eq. 8; alpha = 0: softmax of eq. 7. Depends on ``alpha`` only, not on the predictor's
        ``alpha`` or ``test_tde``, so one forward pass scores many alphas (the alpha sweep).

        With alpha > 0, raises FloatingPointError if the head direction is not finite
        (Detectron2's ``fast_rcnn_inference`` would silently drop the resulting NaN rows) and
        RuntimeError if it is zero (weights not trained with tde-det: eq. 8 would be eq. 7),
        as the image classifier does (``HeadDirection.check_for_tde``).
        """
        if alpha == 0:
            return torch.softmax(total, dim=-1)
        tde = tde_logits(total, bias, alpha)
        self._check_head_direction()
        if self.background_exempted:
            return background_exempted_probs(total, tde, bg_index=-1)
        return torch.softmax(tde, dim=-1)

    def predict_probs(self, predictions: Tuple[Union[Tensor, TDEClassLogits], Tensor],
                      proposals: List[Instances]):
        """Per-image class probabilities [Ri, C+1]: :meth:`probs` with ``alpha``, or with
        alpha = 0 (eq. 7) when ``test_tde`` is off; softmax of the logits of a linear
        classifier."""
        scores, _ = predictions
        if isinstance(scores, TDEClassLogits):
            probs = self.probs(*scores, self.alpha if self.test_tde else 0.0)
        else:
            probs = torch.softmax(scores, dim=-1)
        return probs.split([len(p) for p in proposals], dim=0)

    def _check_head_direction(self) -> None:
        """Once per value of the head direction (the same tensor, same version counter): the
        check needs a host sync, which would otherwise stall every stage of every image."""
        ema = self.head_direction.ema
        try:
            version = ema._version
        except RuntimeError:  # an inference tensor (moved under inference_mode): no version
            version = None
        checked = self._checked_direction
        if version is not None and checked is not None and checked[0]() is ema \
                and checked[1] == version:
            return
        self.head_direction.check_for_tde("'head_direction.ema' of a TDE box predictor")
        self._checked_direction = None if version is None else (weakref.ref(ema), version)
