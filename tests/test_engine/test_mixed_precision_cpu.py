"""MixedPrecisionOptimWrapper without a GPU: bf16 autocast by default (the MAE recipes), fp32
with ``cpu_dtype=None`` (the downstream projects: mmcv's CPU nms has no bf16 kernel, and the
ViTDet RPN crashed with "expected scalar type Float but found BFloat16"), logged once; on GPUs
mmengine's AmpOptimWrapper, whatever ``cpu_dtype`` says."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper

from mae_mm.engine.optimizers import MixedPrecisionOptimWrapper
from mae_mm.registry import OPTIM_WRAPPERS

from ..conftest import REPO_ROOT

PROJECT_CONFIGS = ('projects/vitdet/configs/vitdet_mask-rcnn_vit-b_lsj-100e_coco.py',
                   'projects/upernet/configs/upernet_vit-b_8xb2-160k_ade20k-512x512.py')
FP32_NOTE = 'MixedPrecisionOptimWrapper: no GPU: training in fp32 on CPU'


def _wrapper(model, **cfg):
    cfg = dict(cfg)
    cfg.pop('constructor', None)
    cfg.pop('paramwise_cfg', None)
    cfg['type'] = cfg['type'].split('.')[-1]
    cfg['optimizer'] = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return OPTIM_WRAPPERS.build(cfg)


def _autocast_inside(wrapper, model) -> tuple:
    with wrapper.optim_context(model):
        out = model(torch.ones(2, 4))
        return torch.is_autocast_enabled('cpu'), out.dtype


@pytest.mark.parametrize('config', PROJECT_CONFIGS)
def test_project_wrapper_runs_fp32_on_cpu_and_says_so(config, tmp_path):
    optim_wrapper = Config.fromfile(osp.join(REPO_ROOT, config)).optim_wrapper
    assert optim_wrapper.type == 'mae_mm.MixedPrecisionOptimWrapper'
    log = tmp_path / 'run.log'
    MMLogger.get_instance(f'fp32_{tmp_path.name}', log_file=str(log))
    model = torch.nn.Linear(4, 3)
    wrapper = _wrapper(model, **optim_wrapper.to_dict())
    assert _autocast_inside(wrapper, model) == (False, torch.float32)
    loss = model(torch.ones(2, 4)).sum()
    before = model.weight.detach().clone()
    wrapper.update_params(loss)
    assert not torch.equal(before, model.weight)
    assert log.read_text().count(FP32_NOTE) == 1


def test_default_stays_bf16_autocast_on_cpu():
    model = torch.nn.Linear(4, 3)
    wrapper = _wrapper(model, type='MixedPrecisionOptimWrapper')
    assert _autocast_inside(wrapper, model) == (True, torch.bfloat16)
    # dtype='bfloat16' asks for autocast even where cpu_dtype says fp32.
    wrapper = _wrapper(model, type='MixedPrecisionOptimWrapper', dtype='bfloat16', cpu_dtype=None)
    assert _autocast_inside(wrapper, model) == (True, torch.bfloat16)


def test_bad_cpu_dtype_is_one_line():
    with pytest.raises(ValueError, match=r"cpu_dtype='float16' is not valid") as err:
        MixedPrecisionOptimWrapper(optimizer=torch.optim.SGD([torch.nn.Parameter(
            torch.zeros(1))], lr=0.1), cpu_dtype='float16')
    assert '\n' not in str(err.value)


def test_gpu_path_is_mmengines_amp_whatever_cpu_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    model = torch.nn.Linear(4, 3)
    for cpu_dtype in (None, 'bfloat16'):
        wrapper = _wrapper(model, type='MixedPrecisionOptimWrapper', loss_scale='dynamic',
                           cpu_dtype=cpu_dtype)
        assert isinstance(wrapper, AmpOptimWrapper) and not wrapper._fp32
        assert wrapper.cast_dtype is None  # fp16 autocast, as AmpOptimWrapper
        assert type(wrapper.loss_scaler).__name__ == 'GradScaler'
