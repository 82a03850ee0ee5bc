"""Checks that matter most across the compatibility matrix (tools/compat/run_stage.sh runs this
file in the oldest and newest environments; the main stage runs it too): the installed versions
are the ones declared, and a training step in fp32 and under bf16 autocast works."""
import os.path as osp
import re

import numpy as np
import torch
from mmengine.registry import init_default_scope

from mae_mm.registry import MODELS
from .conftest import REPO_ROOT, tiny_mae_cfg


def _declared_lower_bound(requirements: str, package: str) -> tuple:
    with open(osp.join(REPO_ROOT, 'requirements', requirements)) as f:
        for line in f:
            match = re.match(rf'{package}\s*>=\s*([0-9.]+)', line.strip())
            if match:
                return tuple(int(p) for p in match.group(1).split('.'))
    raise AssertionError(f'{package} has no lower bound in requirements/{requirements}')


def _version(module) -> tuple:
    return tuple(int(p) for p in re.findall(r'\d+', module.__version__.split('+')[0])[:2])


def test_installed_stack_is_within_the_declared_bounds():
    import mmengine
    assert _version(torch)[:2] >= _declared_lower_bound('runtime.txt', 'torch')[:2]
    assert _version(np)[:2] >= _declared_lower_bound('runtime.txt', 'numpy')[:2]
    assert _version(mmengine)[:2] >= _declared_lower_bound('runtime.txt', 'mmengine')[:2]


def _step(dtype):
    init_default_scope('mae_mm')
    torch.manual_seed(0)
    model = MODELS.build(tiny_mae_cfg())
    imgs = torch.randn(4, 3, 32, 32)
    noise = torch.rand(4, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss = model.forward_loss(imgs, noise)[0]
    loss.backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return float(loss), grads


def test_training_step_in_fp32_and_bf16_autocast():
    """bf16 autocast gives the fp32 loss to bf16 precision and finite gradients for every
    trained parameter."""
    loss32, grads32 = _step(torch.float32)
    loss16, grads16 = _step(torch.bfloat16)
    assert np.isfinite(loss32) and abs(loss16 - loss32) < 0.02 * abs(loss32)
    assert set(grads16) == set(grads32)
    for name, grad in grads16.items():
        assert torch.isfinite(grad).all(), name
        cos = torch.nn.functional.cosine_similarity(grad.flatten(), grads32[name].flatten(),
                                                    dim=0)
        assert cos > 0.95, (name, float(cos))
