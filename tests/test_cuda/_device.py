"""Where the CUDA tests run, and what marks them.

They run on ``cuda`` where torch sees a GPU and are skipped, with the reason, elsewhere.
``MAE_MM_TEST_CUDA_DEVICE=cpu`` runs them on that device instead of skipping: the same code on
tiny sizes, with the assertions that only hold on a GPU (bf16 autocast, SDPA's flash and
memory-efficient CUDA kernels, nccl, ``torch.cuda.max_memory_allocated``) skipped or replaced
by their CPU counterparts, so that the tests' own logic is exercised on a machine without one.
"""
import os

import pytest
import torch

ENV = 'MAE_MM_TEST_CUDA_DEVICE'
OVERRIDE = os.environ.get(ENV) or None
DEVICE = torch.device(OVERRIDE or 'cuda')
ON_CUDA = DEVICE.type == 'cuda'
SKIP_REASON = (f'no CUDA device: torch {torch.__version__} sees no GPU (these tests check mae-mm '
               f'on CUDA; {ENV}=cpu runs their logic on CPU)')

#: Every test of this folder carries it (``pytestmark``).
requires_device = pytest.mark.skipif(not torch.cuda.is_available() and OVERRIDE is None,
                                     reason=SKIP_REASON)


def cuda_only(what: str) -> None:
    """Skip the rest of a test off CUDA (with MAE_MM_TEST_CUDA_DEVICE set), saying what."""
    if not ON_CUDA:
        pytest.skip(f'{what}: CUDA only ({ENV}={OVERRIDE})')
