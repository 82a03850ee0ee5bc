"""tools/model_converters/vitdet_to_mae_mm.py: reference ViTDet detectors (mmdet's and
detectron2's, with the key names written in tests/test_utils/test_vitdet_checkpoints.py from the
public sources) converted and loaded into the mmdet Mask R-CNN of the ViTDet toy config."""
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..test_utils.test_vitdet_checkpoints import (D2_HEADS, detectron2_simfp_shapes,
                                                  mmdet_simple_fpn_shapes, random_state,
                                                  reference_vit_shapes)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / 'tools' / 'model_converters' / 'vitdet_to_mae_mm.py'
TOY = REPO_ROOT / 'projects/vitdet/configs/vitdet_mask-rcnn_vit-t_labelme-128px_toy-cpu.py'
# The toy config's architecture: ViT-T (192 wide, 12 blocks, 3 heads, MLP 768), 16 px patches
# on 128 px, 4 x 4 windows, global blocks 2/5/8/11; 64-channel pyramid and heads, fc 128,
# 20 classes.
DIM, DEPTH, HEADS, MLP, PATCH, IMG, WINDOW, GLOBAL, CH, FC, CLASSES = (
    192, 12, 3, 768, 16, 128, 4, (2, 5, 8, 11), 64, 128, 20)
# mmdet's Mask R-CNN heads as the mmdet ViTDet config builds them (RPNHead num_convs=2,
# Shared4Conv1FCBBoxHead and FCNMaskHead with norm_cfg=LN2d: the norm is ``norm_layer``).
MMDET_HEADS = OrderedDict(
    [('rpn_head.rpn_conv.0.conv.weight', (CH, CH, 3, 3)),
     ('rpn_head.rpn_conv.0.conv.bias', (CH, )),
     ('rpn_head.rpn_conv.1.conv.weight', (CH, CH, 3, 3)),
     ('rpn_head.rpn_conv.1.conv.bias', (CH, )),
     ('rpn_head.rpn_cls.weight', (3, CH, 1, 1)), ('rpn_head.rpn_cls.bias', (3, )),
     ('rpn_head.rpn_reg.weight', (12, CH, 1, 1)), ('rpn_head.rpn_reg.bias', (12, )),
     ('roi_head.bbox_head.fc_cls.weight', (CLASSES + 1, FC)),
     ('roi_head.bbox_head.fc_cls.bias', (CLASSES + 1, )),
     ('roi_head.bbox_head.fc_reg.weight', (4 * CLASSES, FC)),
     ('roi_head.bbox_head.fc_reg.bias', (4 * CLASSES, ))]
    + [(f'roi_head.bbox_head.shared_convs.{i}.{p}', s) for i in range(4)
       for p, s in (('conv.weight', (CH, CH, 3, 3)), ('norm_layer.weight', (CH, )),
                    ('norm_layer.bias', (CH, )))]
    + [('roi_head.bbox_head.shared_fcs.0.weight', (FC, CH * 7 * 7)),
       ('roi_head.bbox_head.shared_fcs.0.bias', (FC, ))]
    + [(f'roi_head.mask_head.convs.{i}.{p}', s) for i in range(4)
       for p, s in (('conv.weight', (CH, CH, 3, 3)), ('norm_layer.weight', (CH, )),
                    ('norm_layer.bias', (CH, )))]
    + [('roi_head.mask_head.upsample.weight', (CH, CH, 2, 2)),
       ('roi_head.mask_head.upsample.bias', (CH, )),
       ('roi_head.mask_head.conv_logits.weight', (CLASSES, CH, 1, 1)),
       ('roi_head.mask_head.conv_logits.bias', (CLASSES, ))])
NOT_IN_REFERENCE = {'backbone.cls_token', 'backbone.norm.weight', 'backbone.norm.bias'}


@pytest.fixture(scope='module')
def toy_model():
    import mae_mm.models  # noqa: F401
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(TOY))
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def reference_backbone(model, prefix):
    shapes = reference_vit_shapes(DIM, DEPTH, HEADS, MLP, PATCH, IMG, WINDOW, GLOBAL,
                                  model.backbone.pos_embed.shape[1])
    return OrderedDict((prefix + k, v) for k, v in random_state(shapes).items())


def run_tool(*args):
    env = dict(os.environ, PYTHONPATH='')  # the script must find mae_mm by itself
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=str(REPO_ROOT.parent), timeout=300)


def load_converted(model, path):
    ckpt = torch.load(path, weights_only=False)
    incompatible = model.load_state_dict(ckpt['state_dict'], strict=False)
    return ckpt, set(incompatible.missing_keys), set(incompatible.unexpected_keys)


def test_mmdet_vitdet_round_trip(toy_model, tmp_path):
    state = reference_backbone(toy_model, 'backbone.')
    state.update(random_state(mmdet_simple_fpn_shapes(DIM, CH), seed=1))
    state.update(random_state(MMDET_HEADS, seed=2))
    src, dst = tmp_path / 'vitdet_mmdet.pth', tmp_path / 'converted.pth'
    torch.save({'meta': {}, 'state_dict': state}, src)
    proc = run_tool(src, dst)
    assert proc.returncode == 0, proc.stderr
    ckpt, missing, unexpected = load_converted(toy_model, dst)
    # backbone, neck and heads: every key of the model but those the reference does not have
    assert missing == NOT_IN_REFERENCE and not unexpected
    assert ckpt['meta']['source_format'] == 'mmdet_vitdet' and not ckpt['meta']['left_out']
    sd = toy_model.state_dict()
    assert torch.equal(sd['backbone.blocks.2.attn.rel_pos_w'],
                       state['backbone.blocks.2.attn.rel_pos_w'])
    assert torch.equal(sd['neck.stages.0.1.weight'], state['neck.fpn1.1.weight'])
    assert torch.equal(sd['roi_head.mask_head.convs.3.ln.bias'],
                       state['roi_head.mask_head.convs.3.norm_layer.bias'])
    assert 'all keys of a complete ViTDet backbone are present' in proc.stdout
    assert 'norm_layer -> ln' in proc.stdout


def test_detectron2_vitdet_round_trip(toy_model, tmp_path):
    state = reference_backbone(toy_model, 'backbone.net.')
    state.update(random_state(detectron2_simfp_shapes(DIM, CH), seed=1))
    state.update(random_state(D2_HEADS, seed=2))
    src, dst = tmp_path / 'model_final.pkl', tmp_path / 'converted.pth'
    with open(src, 'wb') as f:
        pickle.dump({'model': {k: v.numpy() for k, v in state.items()},
                     '__author__': 'Detectron2 Model Zoo'}, f)
    proc = run_tool(src, dst)
    assert proc.returncode == 0, proc.stderr
    ckpt, missing, unexpected = load_converted(toy_model, dst)
    assert not unexpected
    heads = {k for k in missing if k.startswith(('rpn_head.', 'roi_head.'))}
    # backbone and neck strictly: only what the reference has no counterpart for is missing
    assert missing - heads == NOT_IN_REFERENCE
    assert heads == {k for k in toy_model.state_dict()
                     if k.startswith(('rpn_head.', 'roi_head.'))}
    assert set(ckpt['meta']['left_out']) == set(D2_HEADS)
    sd = toy_model.state_dict()
    assert torch.equal(sd['backbone.blocks.11.attn.qkv.weight'],
                       state['backbone.net.blocks.11.attn.qkv.weight'])
    assert torch.equal(sd['neck.stages.3.4.weight'], state['backbone.simfp_5.2.norm.weight'])
    assert 'left out (8 keys)' in proc.stdout and 'detectron2 RPN / RoI heads' in proc.stdout
    assert 'backbone.simfp_2 (stride 4) -> neck.stages.0' in proc.stdout


def test_refusals_are_one_line(tmp_path):
    src = tmp_path / 'vitdet_mmdet.pth'
    torch.save({'state_dict': random_state(mmdet_simple_fpn_shapes(DIM, CH))}, src)
    proc = run_tool('--format', 'detectron2', src, tmp_path / 'out.pth')
    assert proc.returncode == 1 and 'drop --format' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    mae = tmp_path / 'mae.pth'
    torch.save({'model': {'blocks.0.attn.qkv.weight': torch.zeros(3, 1),
                          'cls_token': torch.zeros(1)}}, mae)
    proc = run_tool(mae, tmp_path / 'out.pth')
    assert proc.returncode == 1 and 'not a ViTDet detector' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'out.pth').exists()
