"""Frozen parameters are reported in one grouped log line (not one line per parameter, as
mmengine's DefaultOptimWrapperConstructor does), and the optimizer still holds exactly the
trainable parameters: the linear-probe configs (FrozenAwareOptimWrapperConstructor) and the
partial fine-tuning configs (LayerDecayOptimWrapperConstructor)."""
import logging
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

from mae_mm.engine.optimizers import summarize_frozen
from mae_mm.registry import MODELS
from ..conftest import REPO_ROOT

LINEAR_PROBE = 'configs/linear_probe/vit-tiny-p4_1xb64-amp-lars-coslr-15e_photo-classes-32px.py'
PARTIAL = ('configs/partial_finetune/'
           'vit-tiny-p4_1xb32-amp-coslr-15e_photo-classes-32px_last-k-blocks.py')


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _build(config, name, **optim_overrides):
    """The config's model (no checkpoint) and optimizer, with every log line of the build."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    logger = MMLogger.get_instance(f'frozen-log-{name}', log_level='DEBUG')
    handler = _Records()
    logger.addHandler(handler)
    try:
        wrapper = build_optim_wrapper(model, dict(cfg.optim_wrapper, **optim_overrides))
    finally:
        logger.removeHandler(handler)
    return model, wrapper, handler.messages


def _optimized(wrapper):
    ids = [id(p) for group in wrapper.optimizer.param_groups for p in group['params']]
    assert len(ids) == len(set(ids)), 'a parameter in two groups'
    return set(ids)


def test_linear_probe_logs_one_line_for_the_frozen_encoder():
    model, wrapper, messages = _build(LINEAR_PROBE, 'lp')
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(frozen) == 78 and all(n.startswith('backbone.') for n in frozen)
    assert not any('is skipped since' in m for m in messages), messages
    grouped = [m for m in messages if 'requires_grad' in m]
    assert grouped == [f'{len(frozen)} frozen parameters (requires_grad=False) are not '
                       'optimized: backbone.*']
    assert _optimized(wrapper) == trainable and len(trainable) == 2  # head.fc weight, bias


def test_linear_probe_groups_equal_mmengines_default_constructor():
    """Same parameter groups (lr, weight decay, LARS exclusion) as mmengine's constructor,
    which logs one line per frozen parameter (the defect: 78 lines here)."""
    model, ours, _ = _build(LINEAR_PROBE, 'ours')
    stock_model, stock, messages = _build(LINEAR_PROBE, 'stock',
                                          constructor='DefaultOptimWrapperConstructor')
    assert sum('is skipped since its requires_grad=False' in m for m in messages) == 78
    names = {id(p): n for n, p in model.named_parameters()}
    stock_names = {id(p): n for n, p in stock_model.named_parameters()}

    def settings(wrapper, names):
        return sorted((names[id(p)], tuple(sorted((k, v) for k, v in group.items()
                                                  if k != 'params')))
                      for group in wrapper.optimizer.param_groups for p in group['params'])

    assert settings(ours, names) == settings(stock, stock_names)


def test_partial_finetune_logs_one_line():
    model, wrapper, messages = _build(PARTIAL, 'partial')
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [m for m in messages if 'requires_grad' in m]
    assert len(grouped) == 1 and not any('is skipped since' in m for m in messages)
    # 6 blocks, the last one trained: cls token, position table, patch embedding, blocks 0-4,
    # and the final norm (unused: the head reads fc_norm of the pooled patches).
    assert grouped[0] == (f'{len(frozen)} frozen parameters (requires_grad=False) are not '
                          'optimized: backbone.cls_token, backbone.pos_embed, '
                          'backbone.patch_embed.*, backbone.blocks.0-4.*, backbone.norm.*')
    assert _optimized(wrapper) == trainable


@pytest.mark.parametrize('named, expected', [
    ([('a.w', False), ('a.b', False), ('h.w', True)], 'a.*'),
    ([('a.x', False), ('a.y', True)], 'a.x'),
    ([(f'b.layers.{i}.w', i not in (0, 1, 2, 5)) for i in range(7)],
     'b.layers.0-2.*, b.layers.5.*'),
    ([('w', False)], 'w'),
    ([(f'm{i}.w', False) for i in range(12)] + [('h', True)],
     'm0.*, m1.*, m2.*, m3.*, m4.*, m5.*, m6.*, m7.*, ... and 4 more'),
])
def test_summary_of_frozen_names(named, expected):
    assert summarize_frozen(named) == expected


def test_module_with_frozen_and_trainable_parameters_of_its_own():
    """A pretraining MAE: MaskedViT holds the fixed sin-cos pos_embed (frozen) next to its
    cls_token and mask token (trained); the decoder likewise. One grouped line, same groups as
    mmengine's constructor, and the model's own parameter tables untouched."""
    from ..conftest import tiny_mae_cfg
    optim = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                 paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                                    custom_keys={'cls_token': dict(decay_mult=0.0)}))
    built = {}
    for constructor in ('FrozenAwareOptimWrapperConstructor', 'DefaultOptimWrapperConstructor'):
        model = MODELS.build(tiny_mae_cfg())
        logger = MMLogger.get_instance(f'frozen-log-mixed-{constructor}', log_level='DEBUG')
        handler = _Records()
        logger.addHandler(handler)
        try:
            wrapper = build_optim_wrapper(model, dict(optim, constructor=constructor))
        finally:
            logger.removeHandler(handler)
        names = {id(p): n for n, p in model.named_parameters()}
        built[constructor] = (model, handler.messages, sorted(
            (names[id(p)], tuple(sorted((k, v) for k, v in g.items() if k != 'params')))
            for g in wrapper.optimizer.param_groups for p in g['params']))
    model, messages, groups = built['FrozenAwareOptimWrapperConstructor']
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ['backbone.pos_embed', 'neck.decoder_pos_embed']
    assert [m for m in messages if 'requires_grad' in m] == [
        '2 frozen parameters (requires_grad=False) are not optimized: backbone.pos_embed, '
        'neck.decoder_pos_embed']
    assert groups == built['DefaultOptimWrapperConstructor'][2]
    assert {n for n, _ in groups} == {n for n, p in model.named_parameters() if p.requires_grad}
    assert 'pos_embed' in model.backbone._parameters  # the model is not changed
    assert sum('is skipped since' in m for m in built['DefaultOptimWrapperConstructor'][1]) == 2
