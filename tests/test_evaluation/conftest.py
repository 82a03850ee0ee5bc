"""Fixtures of the evaluation-protocol tests: a labelled folder of real photo crops."""
import pytest

from ._labelled_folder import write_labelled_photo_folder


@pytest.fixture(scope='session')
def labelled_photos(tmp_path_factory):
    """``{'train': dir, 'val': dir}``: 3 classes x 8 real photo crops each, disjoint regions."""
    root = tmp_path_factory.mktemp('labelled_photos')
    return {split: write_labelled_photo_folder(str(root / split), split, seed=i)
            for i, split in enumerate(('train', 'val'))}


@pytest.fixture(scope='session')
def tiny_checkpoints(tmp_path_factory):
    """One tiny MAE (32 px, patch 8) saved as mae-mm, official and timm files: {format: path}."""
    from mmengine.registry import init_default_scope

    from ._tiny_cfg import write_tiny_checkpoints
    # Session fixtures run before the per-test scope reset: an mmdet/mmseg Runner of an
    # earlier test may have left its default scope current.
    init_default_scope('mae_mm')
    return write_tiny_checkpoints(tmp_path_factory.mktemp('tiny_checkpoints'))
