"""bf16 autocast trains mae-mm like fp32: over 50 steps from the same initial weights, on the
same batches and masks, the mean loss of the bf16 run is within 1% of the fp32 run's.

The run is ``benchmark.py --loss-check`` (``loss_check``): ViT-S/16 at 224 px, batch 16, real
photo crops, AdamW. Off CUDA (``MAE_MM_TEST_CUDA_DEVICE=cpu``): the same check on the tool's
smoke sizes (2-block ViT, 32 px, batch 2) for 5 steps, in CPU bf16 autocast.
"""
import math

from ._device import DEVICE, ON_CUDA, requires_device
from ._tools import benchmark

pytestmark = requires_device

STEPS = 50 if ON_CUDA else 5
ARGS = (['--arch', 's', '--batch-size', '16'] if ON_CUDA else ['--smoke'])


def test_bf16_loss_within_one_percent_of_fp32():
    tool = benchmark()
    args = tool.parse_args(ARGS + ['--loss-check', str(STEPS), '--dtype', 'bf16', '--device',
                                   str(DEVICE)])
    result = tool.loss_check(args)
    fp32, bf16 = result['curves']['fp32'], result['curves']['bf16']
    assert len(fp32) == len(bf16) == STEPS
    assert all(math.isfinite(v) for v in fp32 + bf16)
    assert fp32 != bf16  # two runs, in two precisions
    assert result['relative_difference_mean'] < 0.01, result
