"""The baseline of ``gpu_evidence_run.py``: logistic regression on raw Fashion-MNIST pixels
(``small_scale_runs.logistic_regression_baseline``), computed in a spawned process with two BLAS
threads while the GPU trains."""
from concurrent.futures import ProcessPoolExecutor

from small_scale_runs import DataSizes

REFERENCE_ACCURACY = 0.836  # raw-pixel logistic regression, 10k labels, full test split


def _logistic_regression(sizes: dict, data_root: str, max_iter: int) -> dict:
    """In the child process: the regression, its accuracies as fractions."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    from small_scale_runs import logistic_regression_baseline
    with threadpool_limits(limits=2), warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        result = logistic_regression_baseline(DataSizes(**sizes), max_iter=max_iter,
                                              data_root=data_root)
    return dict(accuracy=result['top1'] / 100.0,
                accuracy_full_test=result['top1_full_test'] / 100.0,
                seconds=round(result['seconds'], 2), max_iter=max_iter, labels=sizes['probe'],
                classifier='sklearn LogisticRegression(C=0.1) on raw pixels / 255',
                reference_accuracy=REFERENCE_ACCURACY)


class BackgroundLogisticRegression:
    """The logistic regression, started in a spawned process at construction.

    Args:
        sizes: the run's data sizes (``probe`` labelled images, ``test`` test images).
        data_root: the folder of the Fashion-MNIST IDX files.
        max_iter: the solver's iterations.
    """

    def __init__(self, sizes: DataSizes, data_root: str, max_iter: int):
        import multiprocessing
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'))
        self.future = self.pool.submit(_logistic_regression, dict(sizes.__dict__), data_root,
                                       max_iter)

    def result(self) -> dict:
        """The regression's figures (waiting for them), or its error with ``accuracy`` None."""
        try:
            return self.future.result()
        except Exception as err:  # noqa: BLE001 (recorded in the JSON)
            return dict(accuracy=None, error=f'{type(err).__name__}: {err}',
                        reference_accuracy=REFERENCE_ACCURACY)
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop waiting for the process (it is not waited for, nor started if still queued)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
