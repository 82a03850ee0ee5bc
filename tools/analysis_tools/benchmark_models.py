"""Building blocks of ``benchmark.py``: the two MAE implementations, one training step, FLOP
counting, the matmul peak and peak memory.

mae-mm's :class:`MaskedAutoencoder` is built from a mae-mm config; mmpretrain's ``MAE``
(``MAEViT`` + ``MAEPretrainDecoder`` + ``MAEPretrainHead`` + ``PixelReconstructionLoss``) is
built from mmpretrain's registry with the same arch, image size, patch, mask ratio, decoder and
``norm_pix``, so both do the same work on the same inputs.
"""
import copy
import resource
import time
import weakref
from typing import Callable, Dict, Optional

import numpy as np
import torch
from mmengine.registry import DefaultScope
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import (FlopCounterMode, sdpa_backward_flop_count,
                                      sdpa_flop_count)

import mae_mm  # noqa: F401  (registries)
from mae_mm.models.backbones.masked_vit import resolve_arch

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
IMPLS = ('mmpretrain', 'mae_mm')


def build_mae_mm(model_cfg: dict) -> torch.nn.Module:
    """mae-mm's MaskedAutoencoder from the ``model`` dict of a mae-mm config."""
    from mae_mm.registry import MODELS
    with DefaultScope.overwrite_default_scope('mae_mm'):
        model = MODELS.build(copy.deepcopy(model_cfg))
    model.init_weights()
    return model


def mmpretrain_equivalent_cfg(model_cfg: dict) -> dict:
    """mmpretrain's MAE config doing the same work as a mae-mm ``MaskedAutoencoder`` config."""
    backbone, neck, head = model_cfg['backbone'], model_cfg['neck'], model_cfg['head']
    arch = resolve_arch(backbone.get('arch', 'base'))
    img_size = backbone.get('img_size', 224)
    patch = backbone.get('patch_size', 16)
    if not isinstance(img_size, int):
        raise ValueError(f'model.backbone.img_size={img_size!r}: the mmpretrain comparison '
                         'needs a square image size (an int)')
    return dict(
        type='MAE',
        backbone=dict(type='MAEViT', arch=arch, img_size=img_size, patch_size=patch,
                      mask_ratio=backbone.get('mask_ratio', 0.75)),
        neck=dict(type='MAEPretrainDecoder', num_patches=(img_size // patch)**2,
                  patch_size=patch, in_chans=backbone.get('in_channels', 3),
                  embed_dim=arch['embed_dims'],
                  decoder_embed_dim=neck.get('decoder_embed_dim', 512),
                  decoder_depth=neck.get('decoder_depth', 8),
                  decoder_num_heads=neck.get('decoder_num_heads', 16),
                  mlp_ratio=neck.get('mlp_ratio', 4.0)),
        head=dict(type='MAEPretrainHead', norm_pix=head.get('norm_pix', True), patch_size=patch,
                  loss=dict(type='PixelReconstructionLoss', criterion='L2')),
        init_cfg=[dict(type='Xavier', layer='Linear', distribution='uniform'),
                  dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)])


def build_mmpretrain(model_cfg: dict) -> torch.nn.Module:
    """mmpretrain's MAE equivalent to the mae-mm ``model_cfg`` (see module docstring)."""
    import mmpretrain.models  # noqa: F401  (registers MAE and its parts)
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(mmpretrain_equivalent_cfg(model_cfg))
    model.init_weights()
    return model


def build_optimizer(model: torch.nn.Module, impl: str, device: torch.device,
                    fused: bool) -> torch.optim.Optimizer:
    """AdamW with the paper's betas and weight decay.

    mmpretrain's configs use torch's default AdamW; mae-mm uses the fused kernel when
    ``fused`` (one pass over all parameters instead of a loop of small ops; same update).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    use_fused = fused and impl == 'mae_mm' and device.type in ('cpu', 'cuda')
    return torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05,
                             fused=use_fused or None)


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def make_train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    dtype: torch.dtype, device: torch.device) -> Callable[[torch.Tensor], float]:
    """One full training step (forward with autocast unless fp32, backward, AdamW step)."""

    def step(images: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model.loss(images, [])['loss']
        loss.backward()
        optimizer.step()
        synchronize(device)
        return float(loss.detach())

    return step


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)  # FlopCounterMode passes shapes


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args, out_shape=None,
                             **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _cpu_attention_flop_formulas() -> dict:
    """FlopCounterMode knows the CUDA attention kernels but not CPU flash attention."""
    ops = torch.ops.aten
    mapping = {}
    if hasattr(ops, '_scaled_dot_product_flash_attention_for_cpu'):
        mapping[ops._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
    if hasattr(ops, '_scaled_dot_product_flash_attention_for_cpu_backward'):
        mapping[ops._scaled_dot_product_flash_attention_for_cpu_backward] = \
            _sdpa_cpu_backward_flops
    return mapping


def count_flops_per_image(model: torch.nn.Module, images: torch.Tensor,
                          dtype: torch.dtype) -> float:
    """Floating-point operations of one forward + backward, counted by FlopCounterMode
    (matmuls, convolutions and attention; elementwise ops are not counted), per image."""
    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_flop_formulas()) as counter:
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model.loss(images, [])['loss']
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / images.shape[0]


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, size: Optional[int] = None,
                        repeats: int = 5) -> float:
    """Best FLOP/s of a large square matmul in ``dtype`` on ``device``: the machine's practical
    dense peak, measured on the spot (the figure model throughput is compared with)."""
    size = size or (8192 if device.type == 'cuda' else 4096)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float('inf')
    for _ in range(repeats + 1):  # the first run warms up the library
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def reset_peak_rss() -> None:
    """Restart the kernel's resident high-water mark of this process (Linux: clear_refs 5)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass  # not Linux, or not allowed: the mark then covers the whole process life


def peak_rss_mb() -> float:
    """High-water resident memory of this process since :func:`reset_peak_rss` (VmHWM)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def make_images(batch_size: int, img_size: int, device: torch.device,
                seed: int = 0) -> torch.Tensor:
    """A batch of normalised crops of real photographs (scikit-image's), the same for both."""
    from PIL import Image
    from skimage import data as skdata
    rng = np.random.default_rng(seed)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    batch = []
    for i in range(batch_size):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 2, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        batch.append(np.asarray(crop.resize((img_size, img_size), Image.BICUBIC)))
    images = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return ((images - mean) / std).contiguous().to(device)


def build_impl(impl: str, model_cfg: dict, device: torch.device, fused: bool,
               compile_model: bool = False):
    """(model, optimizer) of ``impl`` in training mode on ``device``."""
    if impl == 'mae_mm':
        # The config option users set (model.compile), not a wrapper of the benchmark's own.
        model = build_mae_mm(dict(model_cfg, compile=True) if compile_model else model_cfg)
    else:
        model = build_mmpretrain(model_cfg)
    model = model.to(device).train()
    return model, build_optimizer(model, impl, device, fused)


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside the mode while they are alive, and
    their peak: a CPU counterpart of CUDA's ``max_memory_allocated`` for one training step
    (activations, gradients, temporaries; deterministic, unlike the resident size)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._alive = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != 'cpu':
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self._alive:  # views and in-place results
                continue
            self._alive.add(key)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key, size)
        return out

    def _freed(self, key: int, size: int) -> None:
        self._alive.discard(key)
        self.live -= size


def saved_activation_mb(model: torch.nn.Module, images: torch.Tensor, dtype: torch.dtype) -> float:
    """MB of the distinct tensor storages one forward keeps for the backward pass (activations
    and casted weights): deterministic, unlike the resident size, and the part of a step's
    memory that the implementations differ in (parameters, gradients and AdamW state are the
    same)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model.loss(images, [])['loss']
    del loss
    return sum(storages.values()) / 2**20


def memory_probe(impl: str, model_cfg: dict, batch_size: int, img_size: int, dtype: str,
                 device: torch.device, fused: bool, steps: int = 2,
                 compile_model: bool = False) -> Dict[str, float]:
    """Peak memory of ``steps`` training steps of one implementation, alone in this process.

    On CPU the figure is the process's resident high-water mark (tensors live in malloc'ed
    memory, which tracemalloc does not see) and the rise over the resident size just before
    the first step; on CUDA ``max_memory_allocated``. Both also get ``saved_mb``
    (:func:`saved_activation_mb`), the deterministic part.
    """
    torch.manual_seed(0)
    images = make_images(batch_size, img_size, device)
    model, optimizer = build_impl(impl, model_cfg, device, fused, compile_model)
    step = make_train_step(model, optimizer, DTYPES[dtype], device)
    if compile_model:
        step(images)  # compiles; the peak of compilation itself is not the step's
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            step(images)
        return dict(peak_mb=torch.cuda.max_memory_allocated(device) / 2**20,
                    saved_mb=saved_activation_mb(model, images, DTYPES[dtype]))
    reset_peak_rss()
    before = current_rss_mb()
    for _ in range(steps):
        step(images)
    peak, rise = peak_rss_mb(), peak_rss_mb() - before
    # Counted after the steps, so that their own work does not move the resident figures.
    return dict(peak_mb=peak, step_rise_mb=rise, tensor_peak_mb=tensor_peak_mb(step, images),
                saved_mb=saved_activation_mb(model, images, DTYPES[dtype]))


def tensor_peak_mb(step: Callable[[torch.Tensor], float], images: torch.Tensor) -> float:
    """Peak MB of the tensors one training step allocates (see :class:`LiveTensorBytes`)."""
    with LiveTensorBytes() as counter:
        step(images)
    return counter.peak / 2**20
