"""Issue 15 (a new user's first runs), items 2, 4 (command line), 5, 9 (logs) and 10, each
through the real mmengine Runner (or mae-mm's ``tools/train.py``) on real photos."""
import glob
import logging
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper

from mae_mm.engine import build_runner
from mae_mm.registry import MODELS
from ..conftest import REPO_ROOT, TINY_ARCH, tiny_mae_cfg, tiny_pretrain_cfg

TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
RECIPE_DOC = osp.join(REPO_ROOT, 'docs', 'mmpretrain_recipe.md')


def _log_text(work_dir) -> str:
    return ''.join(open(f).read()
                   for f in glob.glob(osp.join(str(work_dir), '**', '*.log'), recursive=True))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO_ROOT)
    env.pop('LOCAL_RANK', None)
    return env


# ------------------------------------------------------------------------------------------------
# Item 10: mmpretrain's own MAE recipe with mae-mm's modules
# ------------------------------------------------------------------------------------------------
def _recipe_config() -> str:
    """The config of docs/mmpretrain_recipe.md, exactly as the page shows it."""
    text = open(RECIPE_DOC).read()
    blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
    assert blocks and "mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py" in blocks[0]
    return blocks[0]


# A tiny architecture and two iterations on top of the documented config (a separate file, so
# that the documented one is used unchanged).
TINY_OVERRIDE = f"""_base_ = './my_mae.py'
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), img_size=32, patch_size=8),
    neck=dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
"""


@pytest.fixture
def recipe_dir(tmp_path):
    """The documented config, the tiny override and a folder of 4 real photos (2 iterations)."""
    from PIL import Image
    from skimage import data as skdata
    images = tmp_path / 'data' / 'my_images' / 'part1'
    images.mkdir(parents=True)
    for i, photo in enumerate((skdata.astronaut(), skdata.coffee(), skdata.chelsea(),
                               skdata.rocket())):
        Image.fromarray(photo[:96, :96]).save(images / f'{i}.jpg')
    (tmp_path / 'my_mae.py').write_text(_recipe_config())
    (tmp_path / 'tiny.py').write_text(TINY_OVERRIDE)
    return tmp_path


def test_mmpretrain_recipe_trains_with_mae_mm_tools_train(recipe_dir):
    """The documented config (no runner_type: mmengine's stock Runner) with mae-mm's
    tools/train.py, from the config's folder; --no-amp because mmpretrain's AmpOptimWrapper
    needs a GPU."""
    result = subprocess.run(
        [sys.executable, TRAIN, 'tiny.py', '--no-amp', '--work-dir', 'work',
         '--cfg-options', 'train_dataloader.dataset.pipeline.1.scale=32'],
        cwd=str(recipe_dir), env=_env(), capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    log = _log_text(recipe_dir / 'work')
    assert re.search(r'Epoch\(train\)\s+\[1\]\[2/2\].*loss: \d', log), log[-2000:]
    assert osp.isfile(recipe_dir / 'work' / 'epoch_1.pth')


def test_mmpretrain_recipe_trains_with_mae_runner(recipe_dir):
    """The same config with ``runner_type='mae_mm.MAERunner'`` built in-process, as
    mmpretrain's own tools/train.py would build it: the runner resolves ``_scope_`` itself."""
    cfg = Config.fromfile(str(recipe_dir / 'tiny.py'))
    assert cfg.train_dataloader.collate_fn == dict(type='default_collate', _scope_='mmpretrain')
    cfg.runner_type = 'mae_mm.MAERunner'
    cfg.work_dir = str(recipe_dir / 'work_runner')
    cfg.train_dataloader.dataset.data_root = str(recipe_dir / 'data' / 'my_images')
    cfg.train_dataloader.dataset.pipeline[1].scale = 32
    cfg.optim_wrapper = dict(type='OptimWrapper', optimizer=cfg.optim_wrapper.optimizer)
    runner = build_runner(cfg)
    runner.train()
    assert type(runner).__name__ == 'MAERunner' and runner.iter == 2


# ------------------------------------------------------------------------------------------------
# Item 4: --no-amp
# ------------------------------------------------------------------------------------------------
def test_no_amp_turns_a_mixed_precision_recipe_into_fp32(photo_folder, tmp_path):
    """mae-mm's ViT-B pretraining recipe (mixed precision) shrunk by a child config; --no-amp
    builds a plain OptimWrapper and trains; the --cfg-options way still fails as in the issue."""
    sys.path.insert(0, osp.dirname(TRAIN))
    try:
        import train as train_tool
    finally:
        sys.path.remove(osp.dirname(TRAIN))
    config = osp.join(REPO_ROOT, 'configs', 'mae_vit-b_1600e.py')
    assert 'MixedPrecision' in Config.fromfile(config).optim_wrapper.type \
        or 'Amp' in Config.fromfile(config).optim_wrapper.type
    child = tmp_path / 'child.py'
    child.write_text(f"""_base_ = {config!r}
model = dict(backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), img_size=32, patch_size=8),
             neck=dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4))
train_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False, pin_memory=False,
                        dataset=dict(data_root={photo_folder!r}, data_prefix=''))
train_cfg = dict(max_epochs=1)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
auto_scale_lr = dict(enable=False)
""")
    common = [str(child), '--work-dir', str(tmp_path / 'work'), '--cfg-options',
              'train_dataloader.dataset.pipeline.0.scale=32', 'resume=False']
    args = train_tool.parse_args([common[0], '--no-amp'] + common[1:])
    cfg = train_tool.merge_args(Config.fromfile(str(child)), args)
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert not {'loss_scale', 'dtype', 'use_fsdp', 'cpu_dtype'} & set(cfg.optim_wrapper)
    runner = build_runner(cfg)
    runner.train()
    assert type(runner.optim_wrapper) is OptimWrapper and runner.iter == 2

    # What the issue tried: the amp-only keys stay and OptimWrapper refuses them.
    args = train_tool.parse_args(common + ['optim_wrapper.type=OptimWrapper'])
    cfg = train_tool.merge_args(Config.fromfile(str(child)), args)
    with pytest.raises(TypeError, match='loss_scale'):
        build_runner(cfg).train()
    with pytest.raises(SystemExit):  # --amp and --no-amp together
        train_tool.parse_args([common[0], '--amp', '--no-amp'])


# ------------------------------------------------------------------------------------------------
# Item 5: a training set smaller than one batch with drop_last=True
# ------------------------------------------------------------------------------------------------
def test_training_set_smaller_than_a_batch_is_a_one_line_error(photo_folder, tmp_path):
    cfg = tiny_pretrain_cfg(photo_folder, tmp_path / 'work', batch_size=100,
                            experiment_name=tmp_path.name,
                            **{'train_dataloader.drop_last': True})
    with pytest.raises(ValueError) as error:
        build_runner(cfg).train()  # the runner's hooks build the train loop already
    message = str(error.value)
    assert '\n' not in message
    for fragment in ('64 samples', 'train_dataloader.batch_size=100', 'drop_last=True',
                     'at most 64', 'drop_last=False'):
        assert fragment in message, (fragment, message)
    assert 'epoch_length' not in message
    assert not glob.glob(osp.join(str(tmp_path / 'work'), '*.pth'))


# ------------------------------------------------------------------------------------------------
# Item 2 and item 9: crop size against img_size; resampling logged once
# ------------------------------------------------------------------------------------------------
def test_crop_size_differing_from_img_size_is_said_once(photo_folder, tmp_path):
    """A 24 px crop with img_size=32 (the issue: 48 px with 64): one start-up warning naming
    both fields; the per-step resampling is logged once, not at each of the 4 steps."""
    cfg = tiny_pretrain_cfg(photo_folder, tmp_path / 'work', batch_size=16, max_epochs=1,
                            experiment_name=tmp_path.name,
                            **{'train_dataloader.dataset.pipeline.0.scale': 24})
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 4
    log = _log_text(tmp_path / 'work')
    warnings = [line for line in log.splitlines() if 'differs from model.backbone.img_size' in line]
    assert len(warnings) == 1, warnings
    assert 'WARNING' in warnings[0]
    assert 'train_dataloader.dataset.pipeline.0.scale=24' in warnings[0]
    assert 'model.backbone.img_size=32' in warnings[0]
    resampled = [line for line in log.splitlines() if 'position table resampled' in line]
    assert len(resampled) == 1 and 'from its 4 x 4 grid' in resampled[0] \
        and 'to 3 x 3' in resampled[0], resampled


def test_matching_crop_size_says_nothing(photo_folder, tmp_path):
    cfg = tiny_pretrain_cfg(photo_folder, tmp_path / 'work', batch_size=32, max_epochs=1,
                            experiment_name=tmp_path.name)
    runner = build_runner(cfg)
    runner.train()
    log = _log_text(tmp_path / 'work')
    assert 'differs from model.backbone.img_size' not in log
    assert 'position table resampled' not in log


def test_checkpoint_loading_logs(photo_folder, tmp_path):
    """No 'Loads checkpoint by l backend' (mmengine names the backend after the loader
    function's name, minus 'load_from_'), and the position-table resampling of a Pretrained
    load is one line of the key report, as projects/vitdet/README.md says."""
    from mmengine.runner.checkpoint import CheckpointLoader
    # No loader of mae-mm's is registered with mmengine: every scheme's loader is mmengine's
    # own, named load_from_<backend>.
    for loader in CheckpointLoader._schemes.values():
        assert loader.__module__.startswith('mmengine'), loader
        assert loader.__name__.startswith('load_from_'), loader.__name__

    first = tiny_pretrain_cfg(photo_folder, tmp_path / 'first', batch_size=32, max_epochs=1,
                              experiment_name=f'{tmp_path.name}-first')
    runner = build_runner(first)
    runner.train()
    ckpt = str(tmp_path / 'first' / 'epoch_1.pth')
    # mmengine's stock Runner cannot read training checkpoints on torch >= 2.6 (HistoryBuffer):
    # the weights alone for it.
    weights = str(tmp_path / 'weights.pth')
    torch.save({'state_dict': runner.model.state_dict()}, weights)
    for runner_type in ('mae_mm.MAERunner', None):  # mae-mm's runner and mmengine's
        name = 'stock' if runner_type is None else 'mae'
        cfg = tiny_pretrain_cfg(photo_folder, tmp_path / name, batch_size=32, max_epochs=1,
                                experiment_name=f'{tmp_path.name}-{name}',
                                load_from=ckpt if runner_type else weights)
        if runner_type is None:
            cfg.pop('runner_type')
            cfg.custom_hooks = []
        build_runner(cfg).train()
        log = _log_text(tmp_path / name)
        backends = re.findall(r'Loads checkpoint by (\S*) backend', log)
        assert all(b in ('local', 'http', 'pavi', 'ceph', 'torchvision', 'openmmlab')
                   for b in backends), backends
        assert 'Load checkpoint from' in log

    # A backbone loading a 32 px checkpoint at 64 px: the resampling is in the report, once.
    logger = MMLogger.get_instance(f'resample-{tmp_path.name}', log_level='DEBUG')
    records = _Records()
    logger.addHandler(records)
    try:
        backbone = MODELS.build(dict(
            type='ViTDetBackbone', arch=TINY_ARCH, img_size=64, patch_size=8, window_size=4,
            pos_embed_resample_at_load=True,  # the table at img_size: resampled at load
            init_cfg=dict(type='Pretrained', checkpoint=ckpt, prefix='backbone.')))
        backbone.init_weights()
        for size in (48, 40, 48):  # other input sizes: resampled in every forward
            backbone(torch.rand(1, 3, size, size))
    finally:
        logger.removeHandler(records)
    lines = [line for m in records.messages for line in m.splitlines()
             if 'position table resampled' in line]
    assert len(lines) == 2, lines  # one at load, one at the first forward of another size
    assert "resampled from the checkpoint's 4 x 4 grid to 8 x 8" in lines[0]
    assert 'model.backbone.img_size=64' in lines[0]
    assert 'logged once' in lines[1]


def test_position_table_resampling_of_the_pretraining_model_is_logged_once():
    model = MODELS.build(tiny_mae_cfg(img_size=32, patch_size=8))
    logger = MMLogger.get_instance('resample-once', log_level='DEBUG')
    records = _Records()
    logger.addHandler(records)
    try:
        for _ in range(3):
            model.loss(torch.rand(2, 3, 24, 24))
    finally:
        logger.removeHandler(records)
    assert sum('position table resampled' in m for m in records.messages) == 1


@pytest.mark.parametrize('runner_name', ['MAERunner', 'MAEFlexibleRunner'])
def test_both_runners_resolve_scoped_collate_functions(photo_folder, runner_name):
    """``build_dataloader`` of both runners (staticmethods, as in mmengine) with the
    ``collate_fn`` that inheriting an mmpretrain config produces."""
    from mae_mm import engine
    loader_cfg = dict(
        batch_size=4, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False, _scope_='mmpretrain'),
        collate_fn=dict(type='default_collate', _scope_='mmpretrain'),
        dataset=dict(type='ImageFolder', data_root=photo_folder, data_prefix='',
                     with_label=False, pipeline=[
                         dict(type='FastRandomResizedCrop', scale=32),
                         dict(type='mmpretrain.PackInputs')]))
    loader = getattr(engine, runner_name).build_dataloader(loader_cfg, seed=0)
    batch = next(iter(loader))
    assert batch['inputs'].shape == (4, 3, 32, 32)  # default_collate stacked the images
    assert loader_cfg['collate_fn'] == dict(type='default_collate', _scope_='mmpretrain')


def test_tools_test_resolves_inherited_collate_functions(recipe_dir):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'mae_mm_tools_test', osp.join(REPO_ROOT, 'tools', 'test.py'))
    test_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_tool)
    args = test_tool.parse_args([str(recipe_dir / 'tiny.py'), 'ckpt.pth'])
    cfg = test_tool.merge_args(Config.fromfile(str(recipe_dir / 'tiny.py')), args)
    assert cfg.train_dataloader.collate_fn == dict(type='default_collate')
