"""MAEDataPreprocessor: the batch preprocessing of MAE pretraining, in mae-mm's own scope.

It gives what ``mmpretrain.SelfSupDataPreprocessor`` (mmpretrain 1.2) gives for mae-mm's
pretraining batches, from the same config keys, without importing ``mmpretrain.models``: that
package fails to import next to transformers >= 4.57 (docs/installation.md, "Compatibility with
transformers"), and with it every config whose preprocessor is registered there. The name
differs from mmpretrain's so that mae-mm's registry shadows none of mmpretrain's names.
"""
from typing import Optional, Sequence, Union

import torch
from mmengine.model import BaseDataPreprocessor

from mae_mm.registry import MODELS


def _as_channel_vector(name: str, values: Sequence[Union[int, float]]) -> torch.Tensor:
    if isinstance(values, (int, float)):
        values = [values]
    if len(values) == 0:
        raise ValueError(f'data_preprocessor.{name} is empty: give one value per channel '
                         '(e.g. 3 for RGB) or one for all channels')
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(-1, 1, 1)


@MODELS.register_module()
class MAEDataPreprocessor(BaseDataPreprocessor):
    """Move a ``default_collate`` batch to the model's device, swap BGR/RGB, make it float and
    normalise it: ``(x - mean) / std`` per channel.

    The batch is the dict ``{'inputs': ..., 'data_samples': ...}`` that
    ``mmpretrain.PackInputs`` + ``default_collate`` produce. ``inputs`` is an (N, C, H, W)
    tensor (uint8 or float), or a list of them, one per view of each image (multi-view
    pipelines); the output keeps that form (a list stays a list, one entry per view) and leaves
    ``data_samples`` as they are, on the device. For these batches the output equals
    ``mmpretrain.SelfSupDataPreprocessor``'s with the same arguments, to the bit: channels are
    swapped on the integer image, then converted to float32, then normalised as
    ``(x - mean) / std``.

    Args:
        mean (Sequence[float], optional): Per-channel mean, in the channel order of the output
            (RGB with ``to_rgb=True``), or one value for all channels. None: no normalisation.
        std (Sequence[float], optional): Per-channel standard deviation, likewise; given
            together with ``mean``.
        pad_size_divisor (int): Accepted for configs written for mmpretrain. As there, batches
            are not padded: ``default_collate`` has already stacked same-size crops.
        pad_value (float): Accepted with ``pad_size_divisor``; unused for the same reason.
        to_rgb (bool): Reverse the channel order (the pipeline's BGR images to RGB).
        bgr_to_rgb (bool): Same as ``to_rgb`` (mmengine's name).
        rgb_to_bgr (bool): Same operation, the other way round; not with ``bgr_to_rgb``.
        non_blocking (bool): Copy to the device with ``non_blocking=True``.

    A channel swap applies to 3-channel images only; one-channel (grey) images pass unswapped,
    where mmpretrain's raises an IndexError.
    """

    def __init__(self,
                 mean: Optional[Sequence[Union[float, int]]] = None,
                 std: Optional[Sequence[Union[float, int]]] = None,
                 pad_size_divisor: int = 1,
                 pad_value: Union[float, int] = 0,
                 to_rgb: bool = False,
                 bgr_to_rgb: bool = False,
                 rgb_to_bgr: bool = False,
                 non_blocking: Optional[bool] = False):
        super().__init__(non_blocking)
        if bgr_to_rgb and rgb_to_bgr:
            raise ValueError('data_preprocessor: bgr_to_rgb and rgb_to_bgr are both True: set '
                             'one (both reverse the channel order)')
        if (mean is None) != (std is None):
            missing = 'std' if std is None else 'mean'
            raise ValueError(f'data_preprocessor.{missing} is missing: give mean and std '
                             'together, or neither for no normalisation')
        if not isinstance(pad_size_divisor, int) or pad_size_divisor < 1:
            raise ValueError(f'data_preprocessor.pad_size_divisor={pad_size_divisor!r}: use a '
                             'positive int (1 = no padding)')
        self._enable_normalize = mean is not None
        if self._enable_normalize:
            self.register_buffer('mean', _as_channel_vector('mean', mean), persistent=False)
            self.register_buffer('std', _as_channel_vector('std', std), persistent=False)
        self._channel_conversion = bool(to_rgb or bgr_to_rgb or rgb_to_bgr)
        self.pad_size_divisor = pad_size_divisor
        self.pad_value = pad_value

    def _check_channels(self, images: torch.Tensor) -> None:
        if images.dim() < 3:
            raise ValueError(f'data_preprocessor: inputs of shape {tuple(images.shape)} are '
                             'not images: expected (N, C, H, W) from PackInputs + '
                             'default_collate')
        channels = images.shape[-3]
        if self._enable_normalize:
            for name in ('mean', 'std'):
                count = getattr(self, name).shape[0]
                if count not in (1, channels):
                    raise ValueError(f'data_preprocessor.{name} has {count} values for '
                                     f'{channels}-channel images: give {channels} values or '
                                     'one for all channels')

    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        self._check_channels(images)
        if self._channel_conversion and images.shape[-3] == 3:
            # Swap on the integer image, before the float copy: the smaller tensor.
            images = images.flip(-3)
        images = images.float()
        if self._enable_normalize:
            images = (images - self.mean) / self.std
        return images

    def forward(self, data: dict, training: bool = False) -> dict:
        """``{'inputs': tensor or list of tensors, 'data_samples': ...}`` on the device,
        inputs preprocessed."""
        if not isinstance(data, dict) or 'inputs' not in data:
            raise TypeError('data_preprocessor: expected the dict of default_collate with '
                            f"'inputs', got {type(data).__name__}: set the dataloader's "
                            "collate_fn=dict(type='default_collate')")
        data = self.cast_data(data)
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            inputs = [self._preprocess(view) for view in inputs]
        else:
            inputs = self._preprocess(inputs)
        return {'inputs': inputs, 'data_samples': data.get('data_samples')}
