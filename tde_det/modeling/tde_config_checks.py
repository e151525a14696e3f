"""The ``MODEL.TDE`` keys checked against the rules of the TDE layers, with errors that name the
key: a wrong value in a yaml file or an override is reported as the config key a user sets, not as
a layer's argument."""
from detectron2.config import CfgNode

from tde_det.layers.checks import (
    HEAD_DIRECTION_FORMS,
    TEST_DIRECTIONS,
    check_choice,
    check_kind,
    check_mu,
    check_num_heads,
    check_real,
)

__all__ = ["check_softmax_box_head", "check_tde_config"]


def check_tde_config(cfg: CfgNode, feature_dim: int, feature: str) -> None:
    """Raise a ValueError naming the ``MODEL.TDE`` key whose value eq. 7, eq. 8 or Assumption 1
    cannot take. ``feature_dim`` / ``feature``: the size and a description of the feature x that
    the classifier takes, which ``MODEL.TDE.NUM_HEADS`` must divide (eq. 7)."""
    tde = cfg.MODEL.TDE
    check_kind(tde.CLASSIFIER, name="MODEL.TDE.CLASSIFIER")
    check_num_heads(feature_dim, tde.NUM_HEADS, what=feature, name="MODEL.TDE.NUM_HEADS")
    check_real("MODEL.TDE.TAU", tde.TAU, 0.0, low_inclusive=False)
    check_real("MODEL.TDE.GAMMA", tde.GAMMA, 0.0, low_inclusive=True)
    check_real("MODEL.TDE.FEATURE_EPS", tde.FEATURE_EPS, 0.0, low_inclusive=False)
    check_real("MODEL.TDE.ALPHA (eq. 8)", tde.ALPHA, 0.0, low_inclusive=True)
    check_mu(tde.MU, name="MODEL.TDE.MU")
    check_choice(tde.HEAD_DIRECTION_FORM, HEAD_DIRECTION_FORMS, "MODEL.TDE.HEAD_DIRECTION_FORM")
    check_choice(tde.TEST_DIRECTION, TEST_DIRECTIONS, "MODEL.TDE.TEST_DIRECTION")


def check_softmax_box_head(cfg: CfgNode) -> None:
    """Raise a ValueError naming ``MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE`` / ``USE_FED_LOSS`` (keys of
    later Detectron2 versions) when a config turns them on for the TDE box heads: eq. 8 and
    eq. 9 are written for a softmax over the classes and background, trained with softmax CE."""
    head = cfg.MODEL.ROI_BOX_HEAD
    on = [f"MODEL.ROI_BOX_HEAD.{k}" for k in ("USE_SIGMOID_CE", "USE_FED_LOSS") if head.get(k)]
    if on:
        raise ValueError(
            f"{' and '.join(on)} True: the TDE box predictor is a softmax classifier with a "
            f"background class (eq. 7-9) and supports neither the sigmoid nor the federated loss;"
            f" set {' and '.join(k + ' False' for k in on)}")
