"""DDP and FSDP on one GPU: a process group of world size 1 (nccl, initialised from environment
variables on a free port), mae-mm's MAE wrapped by torch's ``DistributedDataParallel`` and by
``FullyShardedDataParallel`` (the FSDP that mmengine's ``FSDPStrategy`` of the ViT-H FSDP
recipe wraps the model in, ``use_orig_params=True`` as the frozen position table requires), two
training steps through mae-mm's ``MixedPrecisionOptimWrapper`` in bf16 (``use_fsdp=True``:
the sharded grad scaler). Two steps, because DDP reports parameters that got no gradient in
the step after. Checked: finite losses, every trainable parameter updated, the gradients the
optimizer saw finite. With one process FSDP keeps whole parameters (it switches to
``NO_SHARD``): what runs is the wrapping into units, FSDP's forward/backward hooks, the sharded
grad scaler and the optimizer over FSDP's parameters, not the sharding itself, which needs two
GPUs.

Off CUDA (``MAE_MM_TEST_CUDA_DEVICE=cpu``): gloo, the tiny model, bf16 autocast on CPU.
"""
import contextlib
import functools
import socket

import torch
import torch.distributed as dist

from mae_mm.engine.optimizers import MixedPrecisionOptimWrapper
from ._device import DEVICE, ON_CUDA, requires_device
from ._models import build_mae, images, mae_cfg

pytestmark = requires_device

BACKEND = 'nccl' if ON_CUDA else 'gloo'
ARCH, BATCH = 's', 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _process_group(monkeypatch):
    """A world of one process, from MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE."""
    for key, value in dict(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()), RANK='0',
                           LOCAL_RANK='0', WORLD_SIZE='1').items():
        monkeypatch.setenv(key, value)
    if ON_CUDA:
        torch.cuda.set_device(0)
    dist.init_process_group(BACKEND, init_method='env://')
    try:
        assert dist.get_world_size() == 1 and dist.get_backend() == BACKEND
        yield
    finally:
        dist.destroy_process_group()


def _train_two_steps(wrapped, wrapper, cfg):
    """Two steps through the optimizer wrapper; the losses and the parameters before."""
    before = {name: p.detach().clone() for name, p in wrapped.named_parameters()
              if p.requires_grad}
    grads_finite, losses = [], []
    step = wrapper.optimizer.step

    def checked_step(*args, **kwargs):
        grads_finite.append(all(torch.isfinite(p.grad).all() for group in
                                wrapper.optimizer.param_groups for p in group['params']
                                if p.grad is not None))
        return step(*args, **kwargs)

    wrapper.optimizer.step = checked_step
    for seed in range(2):
        batch = images(cfg, BATCH, seed=seed)
        with wrapper.optim_context(wrapped):
            loss = wrapped(batch, [], mode='loss')['loss']
        wrapper.update_params(loss)
        losses.append(float(loss.detach()))
    return losses, before, grads_finite


def _check(wrapped, losses, before, grads_finite):
    assert all(torch.isfinite(torch.tensor(losses))), losses
    # The scaler may skip the first step while it calibrates (fp16 only; bf16 does not
    # overflow): every step the optimizer took saw finite gradients, and it took one at least.
    assert grads_finite and all(grads_finite), grads_finite
    after = dict(wrapped.named_parameters())
    unchanged = [name for name, value in before.items() if torch.equal(value, after[name])]
    assert not unchanged, unchanged


def test_ddp_one_gpu_trains(monkeypatch):
    from torch.nn.parallel import DistributedDataParallel
    cfg = mae_cfg(ARCH)
    with _process_group(monkeypatch):
        model = build_mae(cfg)
        ddp = DistributedDataParallel(model, device_ids=[0] if ON_CUDA else None)
        wrapper = MixedPrecisionOptimWrapper(
            optimizer=torch.optim.AdamW(ddp.parameters(), lr=1e-4, betas=(0.9, 0.95)),
            dtype='bfloat16')
        losses, before, grads_finite = _train_two_steps(ddp, wrapper, cfg)
        _check(ddp, losses, before, grads_finite)


def test_fsdp_one_gpu_trains(monkeypatch):
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy
    cfg = mae_cfg(ARCH)
    with _process_group(monkeypatch):
        model = build_mae(cfg)
        fsdp = FullyShardedDataParallel(
            model, device_id=DEVICE if not ON_CUDA else torch.cuda.current_device(),
            use_orig_params=True,
            # one unit per block, as the ViT-H FSDP recipe (there with min_num_params=1e7)
            auto_wrap_policy=functools.partial(size_based_auto_wrap_policy,
                                               min_num_params=10000))
        assert len([m for m in fsdp.modules() if isinstance(m, FullyShardedDataParallel)]) > 1
        wrapper = MixedPrecisionOptimWrapper(
            optimizer=torch.optim.AdamW(fsdp.parameters(), lr=1e-4, betas=(0.9, 0.95)),
            dtype='bfloat16', use_fsdp=True)
        if ON_CUDA:
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
            assert isinstance(wrapper.loss_scaler, ShardedGradScaler)
        losses, before, grads_finite = _train_two_steps(fsdp, wrapper, cfg)
        _check(fsdp, losses, before, grads_finite)
