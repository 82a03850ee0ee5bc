"""Encoder and decoder attention of mae-mm's MAE run on SDPA's fused CUDA kernels in bf16.

``torch.nn.attention.sdpa_kernel`` restricted to the flash and memory-efficient backends, the
math backend excluded: a forward + backward of the whole model under bf16 autocast must run
(with no allowed kernel for some attention call, torch raises instead of falling back), and the
attention ops dispatched are counted, one fused-kernel call per encoder and decoder block. The
control shows that the restriction bites: with only flash allowed and fp32 inputs, which flash
cannot take, the same model raises.

Off CUDA (``MAE_MM_TEST_CUDA_DEVICE=cpu``) the same test runs in fp32 with the CPU flash kernel
(``_scaled_dot_product_flash_attention_for_cpu``) as the allowed backend, and the control
allows only the memory-efficient backend, which has no CPU kernel.
"""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from ._device import DEVICE, ON_CUDA, requires_device
from ._models import attention_layers, build_mae, images, mae_cfg

pytestmark = requires_device

if ON_CUDA:
    FUSED = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    FUSED_OPS = {'_scaled_dot_product_flash_attention', '_scaled_dot_product_efficient_attention'}
    AUTOCAST_DTYPE = torch.bfloat16
    # flash takes fp16/bf16 only: fp32 inputs leave no kernel
    UNUSABLE = [SDPBackend.FLASH_ATTENTION]
else:
    FUSED = [SDPBackend.FLASH_ATTENTION]
    FUSED_OPS = {'_scaled_dot_product_flash_attention_for_cpu'}
    AUTOCAST_DTYPE = None
    UNUSABLE = [SDPBackend.EFFICIENT_ATTENTION]  # no CPU kernel


class AttentionOps(TorchDispatchMode):
    """Names of the attention ops dispatched inside the mode (forward: the backward runs on
    autograd's device threads, where the mode is not active)."""

    def __init__(self):
        super().__init__()
        self.names, self.dtypes = [], set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if 'scaled_dot_product' in name or 'attention' in name:
            self.names.append(name)
            self.dtypes.add(args[0].dtype)  # the query's
        return func(*args, **(kwargs or {}))


def test_encoder_and_decoder_attention_run_on_fused_kernels():
    cfg = mae_cfg('b')
    model = build_mae(cfg)
    batch = images(cfg, 8)
    recorder = AttentionOps()
    with sdpa_kernel(FUSED):
        with recorder:
            with torch.autocast(DEVICE.type, dtype=AUTOCAST_DTYPE or torch.float32,
                                enabled=AUTOCAST_DTYPE is not None):
                loss = model.loss(batch, [])['loss']
        loss.backward()  # inside the restriction too
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)
    # One fused call per encoder block and per decoder block, and nothing else.
    assert len(recorder.names) == attention_layers(model), recorder.names
    assert set(recorder.names) <= FUSED_OPS, recorder.names
    assert recorder.dtypes == {AUTOCAST_DTYPE or torch.float32}


def test_restriction_to_an_unusable_backend_raises():
    """The control: the restriction is enforced (no silent fallback to the math kernel)."""
    cfg = mae_cfg('b')
    model = build_mae(cfg)
    batch = images(cfg, 2)
    with sdpa_kernel(UNUSABLE), pytest.raises(RuntimeError, match='(?i)no (viable|available)'):
        model.loss(batch, [])['loss'].backward()  # in fp32, which UNUSABLE cannot take
