"""mae-mm's MAE needs no more GPU memory than mmpretrain's: ``torch.cuda.max_memory_allocated``
over bf16 training steps of ViT-B/16, batch 64, each implementation alone in its own process.

The probes are ``benchmark.py --memory-probe`` (``run_memory_probes``): both models built with
the same settings, two steps (forward with bf16 autocast, backward, AdamW) after resetting the
peak statistics; the optimizers are the tool's (mae-mm's fused AdamW, torch's default AdamW for
mmpretrain, as its configs), so the figure is a training step's as each project runs it.

Off CUDA (``MAE_MM_TEST_CUDA_DEVICE=cpu``): the tool's smoke sizes in fp32, compared on its CPU
counterpart of ``max_memory_allocated``, the peak of the tensors one step allocates
(``tensor_peak_mb``; the resident size is too noisy to compare).
"""
from ._device import DEVICE, ON_CUDA, requires_device
from ._tools import benchmark

pytestmark = requires_device

ARGS = (['--dtype', 'bf16', '--batch-size', '64'] if ON_CUDA else ['--smoke'])
METRIC = 'peak_mb' if ON_CUDA else 'tensor_peak_mb'


def test_mae_mm_peak_memory_at_most_mmpretrains():
    tool = benchmark()
    args = tool.parse_args(ARGS + ['--device', str(DEVICE)])  # default config: ViT-B/16, 224 px
    probes = tool.run_memory_probes(args)
    mae_mm, mmpretrain = probes['mae_mm'][METRIC], probes['mmpretrain'][METRIC]
    assert mae_mm > 0 and mmpretrain > 0, probes
    assert mae_mm <= mmpretrain, probes
