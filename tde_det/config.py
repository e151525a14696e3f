"""Config keys of tde-det: every number of the method lives here, with the paper's default.

Equation numbers refer to Tang, Huang, Zhang, "Long-Tailed Classification by Keeping the Good and
Removing the Bad Momentum Causal Effect", NeurIPS 2020.
"""
from detectron2.config import CfgNode as CN


def add_tde_config(cfg: CN) -> None:
    """Add every tde-det key to a Detectron2 config (call once, before merging a yaml file)."""
    _add_method_config(cfg)
    _add_detection_config(cfg)
    _add_classification_config(cfg)


def _add_method_config(cfg: CN) -> None:
    """Keys of the method itself, shared by the detection head and the image classifier."""
    cfg.MODEL.TDE = CN()
    # Classifier of eq. 7 and its ablations (paper Table 4, supplement eq. 1):
    # "linear" (plain w^T x, no bias), "cosine", "capsule", "deconfound" (eq. 7).
    cfg.MODEL.TDE.CLASSIFIER = "deconfound"
    # K: number of heads the feature and the weights are split into (paper: 2).
    cfg.MODEL.TDE.NUM_HEADS = 2
    # tau: logit scale of eq. 7 (paper: 16).
    cfg.MODEL.TDE.TAU = 16.0
    # gamma: added to ||w_i^k|| in eq. 7 (paper: 1/32).
    cfg.MODEL.TDE.GAMMA = 1.0 / 32.0
    # epsilon added to ||x^k|| so that a zero feature chunk gives finite logits (official
    # detection code: 1e-9).
    cfg.MODEL.TDE.FEATURE_EPS = 1e-9
    # alpha of eq. 8 (paper: LVIS 1.5, ImageNet-LT 3.0, CIFAR-10-LT 1.0, CIFAR-100-LT 1.5).
    # alpha = 0 gives back eq. 7 exactly.
    cfg.MODEL.TDE.ALPHA = 1.5
    # Apply TDE (eq. 8) at test time. Training always uses eq. 7.
    cfg.MODEL.TDE.TEST_TDE = True
    # mu: decay of the head-direction EMA (Assumption 1), x_bar <- mu * x_bar + mean(x).
    # Official LVIS head: 1 - 0.1 * 0.002 = 0.9998; official classification code: 0.9.
    cfg.MODEL.TDE.MU = 0.9998
    # Average the batch mean of the head direction across processes before the update, so that
    # every rank holds the same EMA (the official code does not).
    cfg.MODEL.TDE.SYNC_HEAD_DIRECTION = True


def _add_detection_config(cfg: CN) -> None:
    """Keys used only by the detection branch (TDE cascade ROI heads on LVIS)."""
    # Background-exempted inference (eq. 9); without it TDE hurts detection badly.
    cfg.MODEL.TDE.BACKGROUND_EXEMPTED = True


def _add_classification_config(cfg: CN) -> None:
    """Keys used only by the image-classification branch (ImageNet-LT, CIFAR-LT)."""
