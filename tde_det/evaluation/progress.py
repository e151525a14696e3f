"""Progress and ETA of the inference passes that do not go through Detectron2's
``inference_on_dataset`` (the alpha sweep's, the diagnostics'), logged as it logs them."""
import datetime
import logging
import time
from typing import Iterable, Iterator, TypeVar

__all__ = ["LOG_SECONDS", "logged_progress"]

logger = logging.getLogger(__name__)
LOG_SECONDS = 5.0  # as often as Detectron2's inference_on_dataset logs
T = TypeVar("T")


def logged_progress(batches: Iterable[T], label: str) -> Iterator[T]:
    """Yield the batches of ``batches`` (a data loader); every ``LOG_SECONDS`` log
    "<label>: inference done i/N. <s> s/iter. ETA=<h:mm:ss>" (the time of a batch includes
    what the caller does with it; N and the ETA only when ``batches`` has a length), and at the
    end the total time."""
    try:
        total = len(batches)
    except TypeError:
        total = None
    start = last = time.perf_counter()
    done = 0
    for batch in batches:
        yield batch
        done += 1
        now = time.perf_counter()
        if now - last >= LOG_SECONDS:
            last = now
            per_iter = (now - start) / done
            left = "" if total is None else \
                f" ETA={datetime.timedelta(seconds=int(per_iter * (total - done)))}"
            logger.info(f"{label}: inference done {done}/{total or '?'}. {per_iter:.4f} s/iter."
                        f"{left}")
    seconds = time.perf_counter() - start
    logger.info(f"{label}: total inference time {datetime.timedelta(seconds=int(seconds))} "
                f"({seconds / max(done, 1):.4f} s/iter, {done} iters)")
