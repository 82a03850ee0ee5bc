"""MixedPrecisionOptimWrapper: mmengine's AmpOptimWrapper that also runs on CPU."""
from typing import Tuple, Union

import torch
from mmengine.logging import print_log
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


def native_bf16_supported() -> bool:
    """Whether the current CUDA device computes in bfloat16 natively (compute capability 8.0+,
    Ampere or newer). Emulated bf16, which ``torch.cuda.is_bf16_supported()`` also counts
    from torch 2.4 on (V100, T4), runs without tensor cores (theirs take fp16 only), at a
    fraction of fp16's speed, so it does not count here."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.4: no emulation counted, no argument
        return bool(torch.cuda.is_bf16_supported())


def _device_description() -> Tuple[str, str]:
    """(name, 'major.minor') of the current CUDA device; '?' where it cannot be read."""
    try:
        major, minor = torch.cuda.get_device_capability()
        return torch.cuda.get_device_name(), f'{major}.{minor}'
    except Exception:  # noqa: BLE001 (a description for an error message only)
        return 'this GPU', '?'


def _is_bf16(dtype) -> bool:
    return dtype in ('bfloat16', torch.bfloat16)


@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(AmpOptimWrapper):
    """Autocast training on any device: ``dtype`` autocast (fp16 when None) with ``loss_scale``
    on GPUs, exactly as :class:`mmengine.optim.AmpOptimWrapper`; on CPU, where mmengine's
    wrapper refuses to start, ``cpu_dtype``: bf16 autocast without scaling (the default, for the
    MAE recipes), or plain fp32 (``cpu_dtype=None``, logged once), what mmdet/mmseg models need
    on CPU: mmcv's CPU kernels (``nms`` in the RPN, ``roi_align``) have no bf16 version.

    The MAE recipes set ``dtype='bfloat16'`` (docs/precision.md). On a GPU without native bf16
    (before Ampere: V100, T4) that is a one-line ``ValueError`` at construction, before any
    compute, naming the fix (``optim_wrapper.dtype=float16``): torch would otherwise emulate bf16
    there, without tensor cores, and mmengine's autocast raises only at the first step (on GPUs
    without even emulated bf16), with no mention of the config.

    Args:
        loss_scale (str | float | dict): As for ``AmpOptimWrapper`` (GPU only; kept with bf16
            as mmengine keeps it: not needed for range, it skips an overflowing step).
        dtype (str | torch.dtype, optional): Autocast dtype on GPUs (None: fp16); 'bfloat16'
            needs a GPU with native bf16 (compute capability 8.0+). On CPU only bfloat16 is
            accepted (it then means ``cpu_dtype='bfloat16'``).
        use_fsdp (bool): Use the sharded grad scaler (GPU only).
        cpu_dtype (str | torch.dtype, optional): Without a GPU: ``'bfloat16'`` (autocast) or
            None / ``'float32'`` (no autocast). Defaults to 'bfloat16'.
        **kwargs: ``OptimWrapper`` arguments (``optimizer``, ``clip_grad``, ...).
    """

    def __init__(self, loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = None, use_fsdp: bool = False,
                 cpu_dtype: Union[str, torch.dtype, None] = 'bfloat16', **kwargs):
        if cpu_dtype not in (None, 'float32', torch.float32, 'bfloat16', torch.bfloat16):
            raise ValueError(f"optim_wrapper.cpu_dtype={cpu_dtype!r} is not valid: use "
                             "'bfloat16' (autocast on CPU) or None (fp32 on CPU)")
        self._fp32 = False
        if torch.cuda.is_available():
            if _is_bf16(dtype) and not native_bf16_supported():
                name, capability = _device_description()
                raise ValueError(
                    f"optim_wrapper.dtype={dtype!r} needs a GPU with native bfloat16 (compute "
                    f'capability 8.0+, Ampere or newer), but {name} has compute capability '
                    f'{capability}: use fp16 with loss scaling, --cfg-options '
                    'optim_wrapper.dtype=float16 (docs/precision.md)')
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if dtype is not None and not _is_bf16(dtype):
            raise ValueError(f'optim_wrapper.dtype={dtype!r} is not supported on CPU: use '
                             "'bfloat16' (or run on a GPU)")
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = _NoScaling()
        if dtype is None and cpu_dtype in (None, 'float32', torch.float32):
            self._fp32 = True
            self.cast_dtype = None
            print_log('MixedPrecisionOptimWrapper: no GPU: training in fp32 on CPU '
                      '(cpu_dtype=None; mixed precision applies on GPUs only)', logger='current')
        else:
            self.cast_dtype = torch.bfloat16

    def optim_context(self, model: torch.nn.Module):
        """``AmpOptimWrapper``'s autocast context, or none in fp32 on CPU."""
        if self._fp32:
            return OptimWrapper.optim_context(self, model)
        return super().optim_context(model)
