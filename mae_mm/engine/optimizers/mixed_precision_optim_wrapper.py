"""MixedPrecisionOptimWrapper: mmengine's AmpOptimWrapper that also runs on CPU."""
from typing import Union

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mae_mm.registry import OPTIM_WRAPPERS


class _NoScaling:
    """The GradScaler interface for bf16, whose range makes loss scaling unnecessary."""

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def unscale_(self, optimizer) -> None:
        pass

    def step(self, optimizer, **kwargs):
        return optimizer.step(**kwargs)

    def update(self, new_scale=None) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(AmpOptimWrapper):
    """Autocast training on any device: fp16 + dynamic loss scaling (or ``dtype``) on GPUs,
    exactly as :class:`mmengine.optim.AmpOptimWrapper`; bf16 without scaling on CPU, where
    mmengine's wrapper refuses to start.

    Args:
        loss_scale (str | float | dict): As for ``AmpOptimWrapper`` (GPU only).
        dtype (str | torch.dtype, optional): Autocast dtype. On CPU only bfloat16 is allowed.
        use_fsdp (bool): Use the sharded grad scaler (GPU only).
        **kwargs: ``OptimWrapper`` arguments (``optimizer``, ``clip_grad``, ...).
    """

    def __init__(self, loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = None, use_fsdp: bool = False,
                 **kwargs):
        if torch.cuda.is_available():
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(f'optim_wrapper.dtype={dtype!r} is not supported on CPU: use '
                             "'bfloat16' (or run on a GPU)")
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = _NoScaling()
        self.cast_dtype = torch.bfloat16
