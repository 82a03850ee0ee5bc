"""Partial fine-tuning freezes exactly what the config says: the last k blocks (or only the MLP
of the last block), fc_norm and the head train; the rest gets no gradient and stays in eval."""
import re

import pytest
import torch
from mmengine.optim import build_optim_wrapper

from mae_mm.registry import MODELS
from ._tiny_cfg import NUM_CLASSES, TINY_LAYERS, tiny_eval_cfg

LAST_K = 'configs/partial_finetune/vit-large-p16_8xb128-amp-coslr-100e_in1k_last-k-blocks.py'
MLP_ONLY = 'configs/partial_finetune/vit-large-p16_8xb128-amp-coslr-100e_in1k_last-block-mlp.py'


def _model(config, paths, photos, tmp_path, **backbone):
    cfg = tiny_eval_cfg(config, paths['mae_mm'], photos['train'], photos['val'], tmp_path)
    cfg.model.backbone.update(backbone)
    model = MODELS.build(cfg.model)
    model.init_weights()  # loading must not undo the freezing
    model.train()
    return cfg, model


def _expected_trainable(name: str, k: int, parts=None) -> bool:
    """Written from the protocol, not from the implementation."""
    if not name.startswith('backbone.'):
        return True  # head
    if name.startswith('backbone.fc_norm.'):
        return True
    block = re.match(r'backbone\.blocks\.(\d+)\.(\w+)\.', name)
    if block:
        index, part = int(block.group(1)), block.group(2)
        return index >= TINY_LAYERS - k and (parts is None or part in parts)
    if k == TINY_LAYERS and parts is None:  # full fine-tuning: embeddings train as well
        return not name.startswith('backbone.norm.')  # unused with average pooling
    return False


def _one_step(cfg, model):
    from mmpretrain.structures import DataSample
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    images = torch.randn(4, 3, 32, 32)
    samples = [DataSample().set_gt_label(i % NUM_CLASSES) for i in range(4)]
    with wrapper.optim_context(model):
        loss = model(images, samples, mode='loss')['loss']
    wrapper.backward(loss)
    return wrapper


@pytest.mark.parametrize('k', [0, 1, TINY_LAYERS])
def test_last_k_blocks(k, tiny_checkpoints, labelled_photos, tmp_path):
    cfg, model = _model(LAST_K, tiny_checkpoints, labelled_photos, tmp_path, trainable_blocks=k)
    for name, param in model.named_parameters():
        assert param.requires_grad == _expected_trainable(name, k), name
    for index, block in enumerate(model.backbone.blocks):
        assert block.training == (index >= TINY_LAYERS - k), index
    wrapper = _one_step(cfg, model)
    in_optimizer = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    for name, param in model.named_parameters():
        trainable = _expected_trainable(name, k)
        assert (id(param) in in_optimizer) == trainable, name
        assert (param.grad is not None) == trainable, name  # every trained parameter is used


def test_only_the_mlp_of_the_last_block(tiny_checkpoints, labelled_photos, tmp_path):
    cfg, model = _model(MLP_ONLY, tiny_checkpoints, labelled_photos, tmp_path)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    last = TINY_LAYERS - 1
    assert trainable == {f'backbone.blocks.{last}.mlp.fc1.weight',
                         f'backbone.blocks.{last}.mlp.fc1.bias',
                         f'backbone.blocks.{last}.mlp.fc2.weight',
                         f'backbone.blocks.{last}.mlp.fc2.bias', 'backbone.fc_norm.weight',
                         'backbone.fc_norm.bias', 'head.fc.weight', 'head.fc.bias'}
    block = model.backbone.blocks[last]
    assert block.mlp.training and not block.attn.training and not block.norm2.training
    state = torch.load(tiny_checkpoints['mae_mm'], map_location='cpu')['state_dict']
    # The frozen parameters hold the checkpoint's values.
    assert torch.equal(block.attn.qkv.weight, state[f'backbone.blocks.{last}.attn.qkv.weight'])
    wrapper = _one_step(cfg, model)
    names = {n for g in wrapper.optimizer.param_groups for n in g['param_names']}
    assert names == trainable
    assert block.attn.qkv.weight.grad is None and block.mlp.fc1.weight.grad is not None


def test_mode_switches_keep_the_frozen_parts_in_eval(tiny_checkpoints, labelled_photos,
                                                     tmp_path):
    _, model = _model(MLP_ONLY, tiny_checkpoints, labelled_photos, tmp_path)
    model.eval()
    model.train()
    block = model.backbone.blocks[-1]
    assert block.mlp.training and not block.attn.training and not model.backbone.norm.training


def test_bad_settings_name_the_field():
    base = dict(type='PartialFinetuneViT', arch='b', img_size=32, patch_size=8, mask_ratio=0.0)
    with pytest.raises(ValueError, match=r'model\.backbone\.trainable_blocks=13'):
        MODELS.build(dict(base, trainable_blocks=13))
    with pytest.raises(ValueError, match='trainable_block_parts'):
        MODELS.build(dict(base, trainable_blocks=1, trainable_block_parts=('ffn', )))
    with pytest.raises(ValueError, match='remove frozen_stages'):
        MODELS.build(dict(base, trainable_blocks=1, frozen_stages=3))
