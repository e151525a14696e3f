"""Validation of the method's numbers (classifier kind, K, tau, gamma, mu, alpha), shared by the
layers and the config checks, so that each rule and its message exist once."""
import math
from numbers import Real

__all__ = ["CLASSIFIER_KINDS", "HEAD_DIRECTION_FORMS", "TEST_DIRECTIONS", "check_choice",
           "check_has_tde", "check_kind", "check_mu", "check_num_heads", "check_real", "has_tde",
           "tde_undefined"]

CLASSIFIER_KINDS = ("linear", "cosine", "capsule", "deconfound")
# Update rules of x_bar (Assumption 1): the decayed sum of batch means, or the (1 - mu) average.
HEAD_DIRECTION_FORMS = ("sum", "average")
# Head directions that TDE (eq. 8) can remove at test time (ablations of the tracked x_bar).
TEST_DIRECTIONS = ("ema", "ones", "train_mean", "random", "zero")


def check_choice(value, choices, name: str):
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} {value!r} is unknown; allowed: {', '.join(choices)}")
    return value


def check_kind(kind: str, name: str = "classifier kind") -> str:
    """Raise a ValueError unless ``kind`` is one of :data:`CLASSIFIER_KINDS`. ``name``: what the
    message calls the value (e.g. its config key)."""
    if kind not in CLASSIFIER_KINDS:
        allowed = ", ".join(CLASSIFIER_KINDS)
        raise ValueError(f"{name} {kind!r} is unknown; allowed: {allowed}")
    return kind


def has_tde(kind: str) -> bool:
    """The one rule: TDE (eq. 8) is defined for the normalised classifiers (eq. 7 and its
    ablations), not for "linear", whose logits have no per-head direction to remove."""
    return check_kind(kind) != "linear"


def tde_undefined(kind: str, remedy: str = "") -> str:
    """The one message for TDE asked of a classifier without it; ``remedy``: what to do."""
    return (f"TDE (eq. 8) is not defined for MODEL.TDE.CLASSIFIER {kind!r}: it needs a "
            f"normalised classifier (cosine, capsule or deconfound)"
            + (f"; {remedy}" if remedy else ""))


def check_has_tde(kind: str, remedy: str = "") -> None:
    """Raise a ValueError (:func:`tde_undefined`) unless :func:`has_tde`."""
    if not has_tde(kind):
        raise ValueError(tde_undefined(kind, remedy))


def check_num_heads(dim: int, num_heads: int, what: str = "feature (in_features)",
                    name: str = "num_heads") -> None:
    """Raise a ValueError unless ``num_heads >= 1`` and the ``dim``-d ``what`` splits into K equal
    head chunks (eq. 7). ``name``: what the message calls ``num_heads`` (e.g. its config key)."""
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {num_heads!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"the {what} must have an integer size >= 1, got {dim!r}")
    if dim % num_heads != 0:
        raise ValueError(
            f"{name}={num_heads} does not divide the {dim}-d {what}: eq. 7 splits it into K "
            f"equal head chunks; choose {name} among the divisors of {dim}")


def check_real(name: str, value: float, low: float, low_inclusive: bool) -> float:
    """``value`` as a float; a ValueError naming ``name`` unless it is a finite real number
    above ``low`` (or equal to it, with ``low_inclusive``)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value >= low if low_inclusive else value > low):
        raise ValueError(f"{name} must be a finite number {'>=' if low_inclusive else '>'} {low},"
                         f" got {value!r}")
    return float(value)


def check_mu(mu: float, name: str = "mu") -> float:
    """``mu`` of Assumption 1 as a float; a ValueError naming ``name`` unless it is in [0, 1]."""
    if isinstance(mu, bool) or not isinstance(mu, Real) or not 0.0 <= mu <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (Assumption 1), got {mu!r}")
    return float(mu)
