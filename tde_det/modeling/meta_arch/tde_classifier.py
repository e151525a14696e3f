"""Image classifier with the de-confounded head, the head direction and TDE inference.

backbone -> global average pooling of one output -> ``NormalizedClassifier`` (eq. 7 or an
ablation). Training: softmax cross-entropy on eq. 7 logits, and the head-direction EMA
(Assumption 1) updated from all samples' detached features. Inference: eq. 8 (TDE) logits when
``MODEL.TDE.TEST_TDE`` and alpha > 0, and always the plain eq. 7 logits, from one forward pass.
The direction that eq. 8 removes is x_bar unless ``MODEL.TDE.TEST_DIRECTION`` names an ablation.
"""
import logging
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from torch import nn

from tde_det.layers import TEST_DIRECTIONS, HeadDirection, NormalizedClassifier, fixed_direction
from tde_det.layers.checks import check_choice, check_has_tde, check_real
from tde_det.layers.tde_math import tde_logits

from ..tde_config_checks import check_tde_config

__all__ = ["TDEImageClassifier"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class TDEImageClassifier(nn.Module):
    """Long-tailed image classifier of the paper (Tables 2, 3).

    Input (Detectron2 style): a list of dicts, each with "image" (a CHW tensor in
    ``cfg.INPUT.FORMAT``, 0-255) and, in training, "label" (int in [0, C)).
    Output: in training ``{"loss_cls": ...}``; in inference one dict per image with
      - "logits" / "probs": the model's prediction, eq. 8 (TDE) if TDE is applied, else eq. 7;
      - "logits_no_tde": the eq. 7 logits (the "total effect"), always;
      - "tde": whether "logits" are TDE logits.
    """

    @configurable
    def __init__(self, *, backbone: Backbone, in_feature: str, classifier: NormalizedClassifier,
                 head_direction: HeadDirection, alpha: float, test_tde: bool,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 test_direction: str = "ema", random_direction_seed: int = 0):
        """
        Args:
            backbone: a Detectron2 backbone; ``in_feature`` names the output that is pooled.
            classifier: eq. 7 (or an ablation) on the pooled feature.
            head_direction: the EMA x_bar of Assumption 1, same ``dim`` and K as the classifier.
            alpha: alpha of eq. 8. test_tde: apply eq. 8 in inference (needs alpha > 0 to
                change anything, and a normalised classifier).
            pixel_mean, pixel_std: per-channel normalisation of the input images.
            test_direction: the head direction eq. 8 removes (``MODEL.TDE.TEST_DIRECTION``):
                "ema" (x_bar), "ones", "train_mean" (the buffer ``train_mean_direction``, set
                by :func:`set_train_mean_direction` after training), "random" (seeded by
                ``random_direction_seed``) or "zero" (eq. 7).
        """
        super().__init__()
        if in_feature not in backbone.output_shape():
            raise ValueError(f"MODEL.IMAGE_CLASSIFIER.IN_FEATURE={in_feature!r} is not an output "
                             f"of the backbone; available: {sorted(backbone.output_shape())}")
        if head_direction.dim != classifier.in_features \
                or head_direction.num_heads != classifier.num_heads:
            raise ValueError("head_direction and classifier must have the same dim and num_heads")
        if test_tde:
            check_has_tde(classifier.kind, "set MODEL.TDE.TEST_TDE False")
        self.backbone = backbone
        self.in_feature = in_feature
        self.classifier = classifier
        self.head_direction = head_direction
        self.alpha = check_real("MODEL.TDE.ALPHA (eq. 8)", alpha, 0.0, low_inclusive=True)
        self.test_tde = bool(test_tde)
        self.test_direction = test_direction
        self.random_direction_seed = int(random_direction_seed)
        # Mean training feature, computed after training (not saved: recomputed per model).
        self.register_buffer("train_mean_direction", torch.zeros(head_direction.dim), False)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        in_feature = cfg.MODEL.IMAGE_CLASSIFIER.IN_FEATURE
        shapes = backbone.output_shape()
        if in_feature not in shapes:
            raise ValueError(f"MODEL.IMAGE_CLASSIFIER.IN_FEATURE={in_feature!r} is not an output "
                             f"of backbone {cfg.MODEL.BACKBONE.NAME}; available: {sorted(shapes)} "
                             f"(set the backbone's OUT_FEATURES)")
        dim = shapes[in_feature].channels
        check_tde_config(cfg, dim, f"feature '{in_feature}' of backbone {cfg.MODEL.BACKBONE.NAME}")
        tde = cfg.MODEL.TDE
        classifier = NormalizedClassifier(
            dim, cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES, kind=tde.CLASSIFIER,
            num_heads=tde.NUM_HEADS, tau=tde.TAU, gamma=tde.GAMMA, eps=tde.FEATURE_EPS,
            fused=tde.FUSED_KERNELS)
        head_direction = HeadDirection(dim, num_heads=tde.NUM_HEADS, mu=tde.MU,
                                       sync=tde.SYNC_HEAD_DIRECTION,
                                       form=tde.HEAD_DIRECTION_FORM)
        return {
            "backbone": backbone,
            "in_feature": in_feature,
            "classifier": classifier,
            "head_direction": head_direction,
            "alpha": tde.ALPHA,
            "test_tde": tde.TEST_TDE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "test_direction": tde.TEST_DIRECTION,
            "random_direction_seed": tde.RANDOM_DIRECTION_SEED,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def test_direction(self) -> str:
        return self._test_direction

    @test_direction.setter
    def test_direction(self, value: str) -> None:
        self._test_direction = check_choice(value, TEST_DIRECTIONS, "MODEL.TDE.TEST_DIRECTION")

    def tde_direction(self) -> torch.Tensor:
        """[d] the head direction that eq. 8 removes (``test_direction``); raises for a train
        mean never computed. x_bar is checked by :meth:`inference` (``check_for_tde``)."""
        name = self.test_direction
        if name == "ema":
            return self.head_direction.direction()
        if name == "train_mean":
            d = self.train_mean_direction
            if not bool(torch.isfinite(d).all()) or not bool(d.ne(0).any()):
                raise RuntimeError(
                    "MODEL.TDE.TEST_DIRECTION 'train_mean' needs the mean training feature, "
                    "which is zero or not finite: compute it after training with "
                    "tde_det.modeling.meta_arch.set_train_mean_direction(model, loader)")
            return d
        return fixed_direction(name, self.head_direction.dim,
                               self.random_direction_seed).to(self.device)

    @property
    def applies_tde(self) -> bool:
        """True when inference returns eq. 8 logits (TEST_TDE, alpha > 0)."""
        return self.test_tde and self.alpha > 0

    def preprocess_image(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """Stack the images into [N, 3, H, W] and normalise them (all must have one size)."""
        images = [x["image"].to(self.device) for x in batched_inputs]
        sizes = {tuple(im.shape) for im in images}
        if len(sizes) != 1:
            raise ValueError(f"all images of a batch must have the same shape (use a crop in "
                             f"INPUT.CLASSIFICATION), got {sorted(sizes)}")
        x = torch.stack(images).float()
        return (x - self.pixel_mean) / self.pixel_std

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] normalised images -> [N, d] globally average-pooled features x."""
        return self.backbone(images)[self.in_feature].mean(dim=(2, 3))

    def forward(self, batched_inputs: List[Dict]):
        x = self.extract_features(self.preprocess_image(batched_inputs))
        if self.training:
            labels = torch.as_tensor([int(d["label"]) for d in batched_inputs],
                                     dtype=torch.long, device=x.device)
            # Assumption 1: all samples, detached, independent of the loss.
            self.head_direction.update(x.detach())
            logits = self.classifier(x)
            return {"loss_cls": F.cross_entropy(logits.float(), labels)}
        return self.inference(x)

    @torch.no_grad()
    def logits_and_tde_bias(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(z, B) of features ``x``: eq. 7 logits and the alpha-free term of eq. 8 (zeros for a
        linear classifier), so that eq. 8 for any alpha is ``tde_logits(z, B, alpha)``."""
        if self.classifier.kind == "linear":
            total = self.classifier(x)
            return total, torch.zeros_like(total)
        return self.classifier.logits_and_tde_bias(x, self.tde_direction())

    @torch.no_grad()
    def inference(self, x: torch.Tensor) -> List[Dict]:
        """Per image: eq. 8 logits (when TDE is applied) and eq. 7 logits, from features ``x``."""
        if self.applies_tde:
            if self.test_direction == "ema":
                self.head_direction.check_for_tde()
            plain, bias = self.logits_and_tde_bias(x)
            final = tde_logits(plain, bias, self.alpha)
        else:
            final = plain = self.classifier(x)
        probs = F.softmax(final, dim=1)
        return [
            {"logits": final[i], "probs": probs[i], "logits_no_tde": plain[i],
             "tde": self.applies_tde}
            for i in range(x.shape[0])
        ]
