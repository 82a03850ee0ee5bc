"""``model.compile=True`` (``MaskedAutoencoder(compile=...)``, torch.compile of the training
loss with inductor) gives the eager model's losses: same initial weights, batches and masks
(the noise is drawn outside the compiled graph from the same seeds), three AdamW steps. On
CUDA the model is ViT-S wide with 4 encoder and 2 decoder blocks at 224 px (``SHALLOW``):
inductor's compilation takes longer with every block, and the two compilations (fp32, bf16)
must fit the accelerator check's time box.

Tolerances. fp32: inductor fuses the element-wise ops and reductions (LayerNorm, GELU, the
loss) into its own kernels, which sum in another order than eager's, and leaves the matmuls,
convolution and attention to the same library kernels; such reassociation changes a float32
result by a few units of its last place (~1e-7 relative) per op, ~1e-6 after the model's
blocks and three optimizer steps. 1e-4 relative is far above that and far below what a real
difference does (another mask, a block skipped or run twice, a missing loss term move the loss
by percents). bf16 (CUDA, first step only): eager rounds every op's output to bf16 (unit
roundoff 2^-8 = 0.39%) where a fused kernel keeps float32 in registers, so single values differ
by up to ~0.4%; the loss is a mean over ~10^6 squared errors in which these roundings average
out, so 1% on the loss still separates rounding from a wrong computation.

Off CUDA (``MAE_MM_TEST_CUDA_DEVICE=cpu``): the fp32 comparison on the tiny model, compiled with
``backend='aot_eager'`` (Dynamo's graph capture and AOT autograd without inductor's C++
compilation, seconds instead of minutes on a small CPU).
"""
import pytest
import torch

from ._device import DEVICE, ON_CUDA, cuda_only, requires_device
from ._models import SHALLOW, build_mae, images, mae_cfg

pytestmark = requires_device

COMPILE = True if ON_CUDA else dict(backend='aot_eager')
BATCH = 16 if ON_CUDA else 4


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _losses(compile, steps, dtype=None):
    cfg = mae_cfg(**SHALLOW)
    model = build_mae(dict(cfg, compile=compile))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                  weight_decay=0.05)
    losses = []
    for step in range(steps):
        batch = images(cfg, BATCH, seed=step)
        torch.manual_seed(100 + step)  # the mask noise of this step, in both runs
        with torch.autocast(DEVICE.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model.loss(batch, [])['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return model, losses


def test_compiled_losses_equal_eager_fp32():
    _, eager = _losses(False, steps=3)
    model, compiled = _losses(COMPILE, steps=3)
    assert model._compiled_forward_loss is not None  # the compiled path ran
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert eager[0] != eager[1]  # the steps changed the model: a comparison of three states


def test_compiled_loss_equals_eager_bf16():
    cuda_only('bf16 autocast with inductor')
    _, eager = _losses(False, steps=1, dtype=torch.bfloat16)
    _, compiled = _losses(True, steps=1, dtype=torch.bfloat16)
    assert compiled == pytest.approx(eager, rel=1e-2)
