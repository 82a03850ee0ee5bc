"""Fixtures shared by the data set tests."""
import logging

import pytest
from mmengine.logging import MMLogger

from mae_mm.datasets import reset_skipped_image_count


@pytest.fixture
def mmengine_logs():
    """Messages logged through the current MMLogger while the test runs."""
    records = []

    class _Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = _Collect(level=logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def _reset_skip_counter():
    reset_skipped_image_count()
    yield
