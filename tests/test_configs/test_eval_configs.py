"""Every evaluation config (fine-tuning, linear probing, partial fine-tuning, 448 px) builds and
trains two iterations through tools/train.py's merge path and the real mmengine Runner, on a
tiny labelled folder of real photo crops, from a mae-mm pretraining checkpoint."""
import glob
import json
import math
import os
import os.path as osp

import pytest
import torch

from mae_mm.registry import MODELS
from ..conftest import REPO_ROOT
from ..test_evaluation._labelled_folder import write_labelled_photo_folder
from ..test_evaluation._tiny_cfg import load_tool, tiny_eval_cfg, write_tiny_checkpoints

CONFIGS = sorted(
    osp.relpath(path, REPO_ROOT)
    for folder in ('finetune', 'linear_probe', 'partial_finetune')
    for path in glob.glob(osp.join(REPO_ROOT, 'configs', folder, '*.py')))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('eval_cfgs')
    train = write_labelled_photo_folder(str(root / 'train'), 'train', per_class=8, seed=0)
    val = write_labelled_photo_folder(str(root / 'val'), 'val', per_class=4, seed=1)
    checkpoint = write_tiny_checkpoints(root)['mae_mm']
    return dict(train=train, val=val, checkpoint=checkpoint)


def test_every_protocol_has_configs():
    names = [osp.basename(c) for c in CONFIGS]
    assert len([n for n in names if n.startswith('vit-')]) >= 10
    assert any('448px' in n for n in names)
    assert any('last-block-mlp' in n for n in names)


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_and_trains_two_iterations(config, setup, tmp_path):
    cfg = tiny_eval_cfg(config, setup['checkpoint'], setup['train'], setup['val'], tmp_path)
    model = MODELS.build(cfg.model)  # the config's model, built the way the Runner builds it
    assert type(model).__name__ == 'ImageClassifier'
    del model

    train_tool = load_tool('tools/train.py')
    args = train_tool.parse_args([osp.join(REPO_ROOT, config), '--work-dir', str(tmp_path)])
    train_tool.merge_args(cfg, args)
    runner = train_tool.build_runner(cfg)
    runner.train()

    assert runner.iter == 2  # 24 images / batch 12, one epoch
    logs = sorted(glob.glob(osp.join(str(tmp_path), '*', 'vis_data', '*.json')))
    records = [json.loads(line) for line in open(logs[-1])]
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    accuracy = [r['accuracy/top1'] for r in records if 'accuracy/top1' in r]
    assert len(accuracy) == 1
    # The logged top-1 recomputed here from the trained model's own scores on every validation
    # image: argmax of the head's logits against the label of the image's class folder.
    correct, seen = _val_predictions_correct(runner, setup['val'])
    assert seen == 12  # 3 classes x 4 images, each once
    # (mmpretrain's Accuracy computes in float32: 7/12 is logged as 58.33333206; one image
    # more or less moves it by 8.3.)
    assert accuracy[0] == pytest.approx(100.0 * correct / seen, rel=1e-6)
    assert osp.isfile(osp.join(str(tmp_path), 'epoch_1.pth'))

    # The encoder really started from the pretraining checkpoint: the blocks that the
    # protocol freezes are exactly the checkpoint's.
    state = torch.load(setup['checkpoint'], map_location='cpu')['state_dict']
    backbone = runner.model.backbone
    for name, param in backbone.named_parameters():
        if not param.requires_grad and 'backbone.' + name in state:
            assert torch.equal(param.detach(), state['backbone.' + name]), name
    if cfg.model.backbone.get('frozen_stages', -1) > 0 or 'trainable_blocks' in cfg.model.backbone:
        assert any(not p.requires_grad for p in backbone.parameters())


@torch.no_grad()
def _val_predictions_correct(runner, val_root):
    """(correct, seen) of the runner's trained model over the validation folder, in plain torch:
    the model's preprocessing and a forward to the head's logits (``mode='tensor'``), argmax,
    compared with the index of the image's class folder among the sorted folder names."""
    model = runner.model
    model.eval()
    classes = sorted(entry for entry in os.listdir(val_root)
                     if osp.isdir(osp.join(val_root, entry)))
    correct = seen = 0
    for batch in runner.val_loop.dataloader:
        data = model.data_preprocessor(batch, False)
        logits = model(data['inputs'], mode='tensor')
        assert logits.shape == (len(data['data_samples']), len(classes))
        labels = torch.tensor([
            classes.index(osp.basename(osp.dirname(sample.img_path)))
            for sample in data['data_samples']])
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
    return correct, seen
