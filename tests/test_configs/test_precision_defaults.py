"""The recipes' precision defaults (docs/precision.md): bf16 autocast with the dynamic loss
scale kept for the fp16 option, no gradient clipping (none of the reference recipes clips: the
official main_pretrain.py / main_finetune.py (--clip_grad None) / main_linprobe.py, mmpretrain's
MAE configs); on a GPU without native bf16 (mocked: V100) a one-line error at construction
naming ``optim_wrapper.dtype=float16``, which then builds mmengine's fp16 AmpOptimWrapper; on
CPU bf16 autocast."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper

from mae_mm.engine.optimizers import MixedPrecisionOptimWrapper
from mae_mm.registry import OPTIM_WRAPPERS
from ..conftest import REPO_ROOT

# Every recipe that trains with the MAE schedules (pretraining, fine-tuning, linear probe),
# text configs and their pure-Python twins.
PATTERNS = ('configs/mae_*.py', 'configs/mae/*.py', 'configs/ablations/*.py',
            'configs/finetune/*.py', 'configs/partial_finetune/*.py', 'configs/linear_probe/*.py',
            'mae_mm/configs/mae/*.py', 'mae_mm/configs/finetune/*.py',
            'mae_mm/configs/linear_probe/*.py')
RECIPES = sorted(osp.relpath(path, REPO_ROOT) for pattern in PATTERNS
                 for path in glob.glob(osp.join(REPO_ROOT, pattern)))
SCHEDULES = sorted(osp.relpath(path, REPO_ROOT) for pattern in (
    'configs/_base_/schedules/*.py', 'mae_mm/configs/_base_/schedules/*.py')
    for path in glob.glob(osp.join(REPO_ROOT, pattern)))
PRETRAIN = 'configs/mae_vit-b_1600e.py'
FINETUNE = 'configs/finetune/vit-base-p16_8xb128-amp-coslr-100e_in1k.py'


def _optim_wrapper_cfg(config: str) -> dict:
    return Config.fromfile(osp.join(REPO_ROOT, config)).optim_wrapper.to_dict()


def _build(optim_wrapper: dict):
    """The config's wrapper around a small model's AdamW, as the Runner builds it (its
    constructor and parameter groups aside)."""
    cfg = dict(optim_wrapper)
    for key in ('constructor', 'paramwise_cfg', 'optimizer'):
        cfg.pop(key, None)
    wrapper_type = cfg.pop('type')
    cfg['type'] = wrapper_type if isinstance(wrapper_type, type) else \
        wrapper_type.split('.')[-1]
    model = torch.nn.Linear(4, 3)
    cfg['optimizer'] = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return OPTIM_WRAPPERS.build(cfg), model


@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA machine: ``gpu(native_bf16, emulated_bf16)`` sets what it supports."""
    def make(native: bool, emulated: bool = False, name='Tesla V100-SXM2-32GB',
             capability=(7, 0), old_torch=False):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)  # for mmengine's logger
        if old_torch:  # torch < 2.4: no including_emulation argument, native only
            monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: native)
        else:
            monkeypatch.setattr(torch.cuda, 'is_bf16_supported',
                                lambda including_emulation=True: native or (
                                    including_emulation and emulated))
        monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *args: name)
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda *args: capability)
    return make


def test_recipes_found():
    assert len(RECIPES) >= 50, RECIPES
    assert len(SCHEDULES) == 6, SCHEDULES


@pytest.mark.parametrize('recipe', RECIPES)
def test_recipe_defaults_to_bf16_with_fp16_scaling_kept_and_no_clipping(recipe):
    optim_wrapper = _optim_wrapper_cfg(recipe)
    wrapper_type = optim_wrapper['type']
    assert (wrapper_type is MixedPrecisionOptimWrapper
            or wrapper_type.split('.')[-1] == 'MixedPrecisionOptimWrapper'), wrapper_type
    assert optim_wrapper['dtype'] == 'bfloat16'
    assert optim_wrapper['loss_scale'] == 'dynamic'  # used by the fp16 option
    assert optim_wrapper.get('clip_grad') is None


@pytest.mark.parametrize('schedule', SCHEDULES)
def test_schedules_document_precision_and_clipping(schedule):
    text = open(osp.join(REPO_ROOT, schedule)).read()
    assert 'docs/precision.md' in text
    assert 'clipping' in text
    if schedule.startswith('configs/'):
        assert 'optim_wrapper.dtype=float16' in text  # the fp16 option, as a command line


def test_precision_doc_exists_and_names_its_sources():
    text = open(osp.join(REPO_ROOT, 'docs', 'precision.md')).read()
    for needle in ('facebookresearch/mae#65', 'open-mmlab/mmpretrain#1632', 'EVA',
                   'optim_wrapper.dtype=float16', 'cpu_dtype', 'main_finetune.py'):
        assert needle in text, needle


def test_on_cpu_the_recipes_train_in_bf16_autocast(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for recipe in (PRETRAIN, FINETUNE):
        wrapper, model = _build(_optim_wrapper_cfg(recipe))
        with wrapper.optim_context(model):
            assert torch.is_autocast_enabled('cpu')
            assert model(torch.ones(2, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize('recipe', [PRETRAIN, FINETUNE])
def test_gpu_with_bf16_builds_mmengines_amp_wrapper_in_bf16(gpu, recipe):
    gpu(native=True, name='NVIDIA H200', capability=(9, 0))
    wrapper, _ = _build(_optim_wrapper_cfg(recipe))
    assert isinstance(wrapper, AmpOptimWrapper)
    assert wrapper.cast_dtype == torch.bfloat16


@pytest.mark.parametrize('recipe', [PRETRAIN, FINETUNE])
def test_gpu_without_bf16_is_a_one_line_error_naming_the_fp16_option(gpu, recipe):
    gpu(native=False)
    with pytest.raises(ValueError) as err:
        _build(_optim_wrapper_cfg(recipe))
    message = str(err.value)
    assert '\n' not in message
    for needle in ("optim_wrapper.dtype='bfloat16'", 'Tesla V100-SXM2-32GB', '7.0',
                   '--cfg-options optim_wrapper.dtype=float16', 'docs/precision.md'):
        assert needle in message, message


def test_emulated_bf16_counts_as_none(gpu):
    """torch >= 2.4 reports bf16 on a V100 / T4 by default (emulated, slower than fp32): the
    wrapper asks for native support."""
    gpu(native=False, emulated=True)
    assert torch.cuda.is_bf16_supported()  # what torch says by default
    with pytest.raises(ValueError, match='native bfloat16'):
        _build(_optim_wrapper_cfg(PRETRAIN))


def test_torch_without_the_emulation_argument(gpu):
    gpu(native=False, old_torch=True)
    with pytest.raises(ValueError, match='native bfloat16'):
        _build(_optim_wrapper_cfg(PRETRAIN))
    gpu(native=True, old_torch=True)
    assert _build(_optim_wrapper_cfg(PRETRAIN))[0].cast_dtype == torch.bfloat16


@pytest.mark.parametrize('recipe', [PRETRAIN, FINETUNE])
def test_the_fp16_option_builds_fp16_with_dynamic_loss_scaling(gpu, recipe):
    gpu(native=False)
    cfg = Config.fromfile(osp.join(REPO_ROOT, recipe))
    cfg.merge_from_dict({'optim_wrapper.dtype': 'float16'})  # what --cfg-options does
    wrapper, _ = _build(cfg.optim_wrapper.to_dict())
    assert isinstance(wrapper, AmpOptimWrapper)
    assert wrapper.cast_dtype == torch.float16
    assert type(wrapper.loss_scaler).__name__ == 'GradScaler'
    assert not wrapper.clip_grad_kwargs
    # clipping with it, as docs/precision.md suggests for fp16 fine-tuning
    cfg.merge_from_dict({'optim_wrapper.clip_grad.max_norm': 5.0})
    assert _build(cfg.optim_wrapper.to_dict())[0].clip_grad_kwargs == dict(max_norm=5.0)


def test_fp16_on_cpu_stays_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = dict(_optim_wrapper_cfg(PRETRAIN), dtype='float16')
    with pytest.raises(ValueError, match="dtype='float16' is not supported on CPU"):
        _build(cfg)
