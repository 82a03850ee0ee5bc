"""Issue 15, item 1: a ``Pretrained`` init_cfg checkpoint of another architecture stops the run.

The defect: a linear probe loaded a checkpoint of a 4-block, patch-8 encoder into its 6-block,
patch-4 encoder with only a warning (``MISSING blocks.{4-5}... / SHAPE MISMATCH
patch_embed.proj.weight``) and trained a frozen, partly random encoder. Now it is a one-line
error naming the field and the fix before any iteration, unless
``init_cfg.allow_partial=True``. The keys a pretraining checkpoint may lack are listed here
independently of the code, from the reference semantics (official MAE fine-tuning creates
``fc_norm`` for global pooling; ViTDet adds zero-initialised ``rel_pos_h/w`` tables).
"""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mae_mm.engine import build_runner
from mae_mm.registry import MODELS
from mae_mm.utils.checkpoint import PretrainedKeyMismatchError
from ..conftest import REPO_ROOT, TINY_ARCH
from ..test_evaluation._labelled_folder import write_labelled_photo_folder

LINEAR_PROBE = 'configs/linear_probe/vit-tiny-p4_1xb64-amp-lars-coslr-15e_photo-classes-32px.py'
PROBE_ARCH = dict(embed_dims=192, num_layers=6, num_heads=3, feedforward_channels=768)


def _pretraining_checkpoint(path, arch, img_size, patch_size):
    """A checkpoint as MAE pretraining writes it (``backbone.*``, ``neck.*``, ``head.*``)."""
    from ..conftest import tiny_mae_cfg
    cfg = tiny_mae_cfg(img_size=img_size, patch_size=patch_size)
    cfg['backbone']['arch'] = arch
    model = MODELS.build(cfg)
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, str(path))
    return str(path)


@pytest.fixture(scope='module')
def probe_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('probe_data')
    for split, seed in (('train', 0), ('val', 1)):
        write_labelled_photo_folder(str(root / split), split, per_class=4, seed=seed)
    return str(root)


def _probe_cfg(data_root, work_dir, checkpoint, **init_cfg):
    cfg = Config.fromfile(osp.join(REPO_ROOT, LINEAR_PROBE))
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'model.backbone.init_cfg.checkpoint': checkpoint,
        'model.data_preprocessor.num_classes': 3,
        'model.head.num_classes': 3,
        'train_dataloader.batch_size': 4,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.data_root': data_root,
        'train_cfg.max_epochs': 1,
        'default_hooks.logger.interval': 1,
    })
    cfg.model.backbone.init_cfg.update(init_cfg)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
    return cfg


def _log_text(work_dir) -> str:
    return ''.join(open(f).read() for f in glob.glob(osp.join(str(work_dir), '*', '*.log')))


def test_linear_probe_refuses_a_checkpoint_of_another_architecture(probe_data, tmp_path):
    """The issue's case with the real Runner: the error comes before the first iteration."""
    ckpt = _pretraining_checkpoint(tmp_path / 'other_arch.pth',
                                   dict(PROBE_ARCH, num_layers=4), img_size=32, patch_size=8)
    cfg = _probe_cfg(probe_data, tmp_path / 'work', ckpt)
    runner = build_runner(cfg)
    with pytest.raises(PretrainedKeyMismatchError) as error:
        runner.train()
    message = str(error.value)
    assert '\n' not in message
    for fragment in ('model.backbone.init_cfg', ckpt, 'blocks.{4-5}.', 'model keys missing',
                     'patch_embed.proj.weight [192, 3, 8, 8] vs model [192, 3, 4, 4]',
                     'allow_partial=True'):
        assert fragment in message, (fragment, message)
    assert runner.iter == 0
    assert not glob.glob(osp.join(str(tmp_path / 'work'), '*.pth'))
    log = _log_text(tmp_path / 'work')
    assert 'MISSING in the checkpoint' in log and 'SHAPE MISMATCH' in log  # the grouped report


def test_allow_partial_loads_what_fits_and_trains(probe_data, tmp_path):
    ckpt = _pretraining_checkpoint(tmp_path / 'other_arch.pth',
                                   dict(PROBE_ARCH, num_layers=4), img_size=32, patch_size=8)
    saved = torch.load(ckpt)['state_dict']
    cfg = _probe_cfg(probe_data, tmp_path / 'work', ckpt, allow_partial=True)
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 3  # 12 images, batch 4
    backbone = runner.model.backbone
    # What fits is loaded (the encoder is frozen, so it still holds the checkpoint's values)...
    assert torch.equal(backbone.blocks[3].attn.qkv.weight,
                       saved['backbone.blocks.3.attn.qkv.weight'])
    # ...and the report says what was not, with the option that let it through.
    log = _log_text(tmp_path / 'work')
    assert 'MISSING in the checkpoint (left as initialised)' in log
    assert 'blocks.{4-5}.' in log and 'SHAPE MISMATCH' in log and 'allow_partial=True' in log


def _backbone(cfg, ckpt):
    cfg = dict(cfg, init_cfg=dict(type='Pretrained', checkpoint=ckpt, prefix='backbone.'))
    return MODELS.build(cfg)


@pytest.mark.parametrize('backbone, expected_missing', [
    # Linear probe: cls token, final norm; a pretraining checkpoint has every key.
    (dict(type='MaskedViT', out_type='cls_token', final_norm=True, mask_ratio=0.0), set()),
    # Fine-tuning with global pooling: fc_norm is new (official main_finetune.py creates it).
    (dict(type='MaskedViT', out_type='avg_featmap', final_norm=False, mask_ratio=0.0),
     {'fc_norm.weight', 'fc_norm.bias'}),
    # ViTDet: decomposed relative-position tables, zero-initialised, in every block.
    (dict(type='ViTDetBackbone', window_size=2, global_attn_indexes=(1, )),
     {f'blocks.{i}.attn.rel_pos_{a}' for i in range(2) for a in 'hw'}),
])
def test_expected_missing_keys_load_without_error(tmp_path, backbone, expected_missing):
    ckpt = _pretraining_checkpoint(tmp_path / 'same_arch.pth', TINY_ARCH, 32, 8)
    model = _backbone(dict(backbone, arch=TINY_ARCH, img_size=32, patch_size=8), ckpt)
    model.init_weights()
    model_keys = set(model.state_dict())
    ckpt_keys = {k[len('backbone.'):] for k in torch.load(ckpt)['state_dict']
                 if k.startswith('backbone.')}
    assert model_keys - ckpt_keys == expected_missing
    report = model.load_pretrained(ckpt)
    assert 'MISSING' not in report.replace('expected missing', '') and 'UNEXPECTED' not in report


def test_a_missing_final_norm_is_an_error_when_the_norm_is_used(tmp_path):
    """``norm`` may be absent (official fine-tuned checkpoints drop it) only when unused."""
    ckpt = _pretraining_checkpoint(tmp_path / 'ckpt.pth', TINY_ARCH, 32, 8)
    state = torch.load(ckpt)
    for key in ('backbone.norm.weight', 'backbone.norm.bias'):
        state['state_dict'].pop(key)
    torch.save(state, ckpt)
    used = _backbone(dict(type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8,
                          out_type='cls_token', final_norm=True, mask_ratio=0.0), ckpt)
    with pytest.raises(PretrainedKeyMismatchError, match=r'2 model keys missing \(norm'):
        used.init_weights()
    unused = _backbone(dict(type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8,
                            out_type='avg_featmap', final_norm=False, mask_ratio=0.0), ckpt)
    unused.init_weights()


def test_a_misspelt_option_is_not_ignored(tmp_path):
    ckpt = _pretraining_checkpoint(tmp_path / 'ckpt.pth', TINY_ARCH, 32, 8)
    cfg = dict(type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8, mask_ratio=0.0,
               init_cfg=dict(type='Pretrained', checkpoint=ckpt, allow_partail=True))
    with pytest.raises(ValueError, match=r"unknown keys \['allow_partail'\]"):
        MODELS.build(cfg).init_weights()
