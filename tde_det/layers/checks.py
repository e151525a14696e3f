"""Validation of the method's numbers (classifier kind, K, tau, gamma, mu, alpha), shared by the
layers and the config checks, so that each rule and its message exist once."""
import math
from numbers import Real

__all__ = ["CLASSIFIER_KINDS", "check_kind", "check_mu", "check_normalised", "check_num_heads",
           "check_real"]

CLASSIFIER_KINDS = ("linear", "cosine", "capsule", "deconfound")


def check_kind(kind: str, name: str = "classifier kind") -> str:
    """Raise a ValueError unless ``kind`` is one of :data:`CLASSIFIER_KINDS`. ``name``: what the
    message calls the value (e.g. its config key)."""
    if kind not in CLASSIFIER_KINDS:
        allowed = ", ".join(CLASSIFIER_KINDS)
        raise ValueError(f"{name} {kind!r} is unknown; allowed: {allowed}")
    return kind


def check_normalised(kind: str) -> None:
    """Raise a ValueError unless ``kind`` is a normalised classifier, the only ones with TDE."""
    if check_kind(kind) == "linear":
        raise ValueError("TDE (eq. 8) needs a normalised classifier (cosine, capsule or "
                         "deconfound); got kind 'linear'")


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
