"""tde_det.evaluation.progress: progress and ETA of an inference pass."""
from tde_det.evaluation.progress import logged_progress


def test_every_batch_is_yielded_and_the_progress_logged(progress_log):
    assert list(logged_progress([10, 20, 30], "pass")) == [10, 20, 30]
    assert [m.split(". ")[0] for m in progress_log[:3]] == [
        "pass: inference done 1/3", "pass: inference done 2/3", "pass: inference done 3/3"]
    assert all(" s/iter. ETA=" in m for m in progress_log[:3])
    assert progress_log[3].startswith("pass: total inference time ") and "3 iters" in \
        progress_log[3]
    progress_log.clear()
    assert list(logged_progress(iter([1, 2]), "no length")) == [1, 2]
    assert progress_log[1].startswith("no length: inference done 2/?.")
    assert "ETA" not in progress_log[1]  # without a length, no ETA
