"""Fixtures shared by the data set tests."""
import logging
import os
import os.path as osp
import shutil

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


@pytest.fixture(scope='module')
def nested_photos(photo_folder, tmp_path_factory):
    """The 64 real photo crops in an ImageNet-like layout (two class folders, one nested)."""
    root = tmp_path_factory.mktemp('nested')
    for i, name in enumerate(sorted(os.listdir(photo_folder))):
        sub = ['n01/', 'n02/deeper/', ''][i % 3]
        os.makedirs(root / sub, exist_ok=True)
        shutil.copy2(osp.join(photo_folder, name), root / sub / name)
    return str(root)
