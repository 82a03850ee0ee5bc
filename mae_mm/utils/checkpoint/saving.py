"""Writing checkpoints: atomically, and in mae-mm's MMEngine layout."""
import os
import uuid
from collections import OrderedDict
from typing import Any, Mapping, Optional, Union

import torch


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def save_checkpoint_atomic(obj: Any, path: Union[str, os.PathLike]) -> str:
    """``torch.save`` to a temporary file in the same directory, then ``os.replace``.

    A reader never sees a half-written file, and an interrupted save leaves any older file at
    ``path`` intact.

    Args:
        obj: What to save.
        path (str | PathLike): Destination; its directory is created if needed.

    Returns:
        str: ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        with open(tmp, 'xb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def mae_mm_checkpoint(state_dict: Mapping[str, torch.Tensor],
                      meta: Optional[dict] = None) -> dict:
    """Wrap a mae-mm state dict as MMEngine saves it: ``{'meta': {...}, 'state_dict': sd}``.

    Such a file works as ``load_from`` (and as the checkpoint of ``tools/test.py``) and as
    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``; it holds no
    training state, so it cannot be resumed from.
    """
    from mae_mm.version import __version__
    full_meta = {'mae_mm_version': __version__}
    full_meta.update(meta or {})
    return {'meta': full_meta, 'state_dict': OrderedDict(state_dict)}
