"""Weighted k-NN: a hand-checkable case, and the tool on a real labelled photo folder."""
import json
import math
import os
import os.path as osp

import pytest
import torch

from mae_mm.evaluation import knn_class_scores, knn_evaluate, topk_accuracy
from mae_mm.registry import MODELS
from ..conftest import REPO_ROOT
from ..test_utils._foreign_layouts import official_checkpoint, official_shapes
from ._tiny_cfg import load_tool

TOY = 'configs/finetune/vit-tiny-p4_1xb32-amp-coslr-15e_photo-classes-32px.py'


def _unit(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# Training features at 0, 60, 90 and 180 degrees (labels 0, 1, 1, 0); the query at 0 degrees
# has cosine similarities 1, 0.5, 0 and -1 with them.
TRAIN = torch.tensor([_unit(0), _unit(60), _unit(90), _unit(180)])
LABELS = torch.tensor([0, 1, 1, 0])
QUERY = torch.tensor([_unit(0)])


def test_votes_by_hand():
    # k=3: neighbours cos 1 (class 0), 0.5 and 0 (class 1). Weights exp(cos / T).
    scores = knn_class_scores(TRAIN, LABELS, QUERY, num_classes=2, k=3, temperature=0.5)
    assert scores[0, 0].item() == pytest.approx(math.exp(2.0))
    assert scores[0, 1].item() == pytest.approx(math.exp(1.0) + math.exp(0.0))
    assert scores.argmax(1).item() == 0  # 7.39 > 3.72
    # A higher temperature flattens the weights: two weaker votes now beat one strong one.
    scores = knn_class_scores(TRAIN, LABELS, QUERY, num_classes=2, k=3, temperature=2.0)
    assert scores[0, 0].item() == pytest.approx(math.exp(0.5))
    assert scores[0, 1].item() == pytest.approx(math.exp(0.25) + 1.0)
    assert scores.argmax(1).item() == 1  # 1.65 < 2.28
    # Cosine similarity: feature scale does not matter; k above N uses every sample.
    scaled = knn_class_scores(5 * TRAIN, LABELS, 0.1 * QUERY, 2, k=3, temperature=2.0)
    torch.testing.assert_close(scaled, knn_class_scores(TRAIN, LABELS, QUERY, 2, 3, 2.0))
    everything = knn_class_scores(TRAIN, LABELS, QUERY, 2, k=50, temperature=1.0)
    assert everything[0, 0].item() == pytest.approx(math.exp(1) + math.exp(-1))


def test_leave_one_out_and_accuracy():
    # Leave-one-out with k=1: sample 0 (0 deg) -> 60 deg (class 1, wrong); 60 -> 90 (right);
    # 90 -> 60 (right); 180 -> 90 (cos 0 vs -0.5 for 60; class 1, wrong).
    result = knn_evaluate(TRAIN, LABELS, TRAIN, LABELS, num_classes=2, ks=(1, ),
                          exclude_self=True)
    assert result == {1: {'top1': 50.0}}
    # Without leaving out, each sample is its own nearest neighbour.
    assert knn_evaluate(TRAIN, LABELS, TRAIN, LABELS, 2, ks=(1, ))[1]['top1'] == 100.0
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.2, 0.1]])
    acc = topk_accuracy(scores, torch.tensor([1, 0, 1]), topk=(1, 2, 5))
    # Rows 1 and 2 have ties; the lower class index ranks first, so row 2 (label 1) misses at
    # top-1 and both hit at top-2. Top-5 is left out with 3 classes.
    assert acc == {'top1': pytest.approx(100 / 3), 'top2': pytest.approx(100.0)}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match='labels must lie'):
        knn_class_scores(TRAIN, torch.tensor([0, 1, 2, 0]), QUERY, num_classes=2)
    with pytest.raises(ValueError, match='temperature'):
        knn_class_scores(TRAIN, LABELS, QUERY, num_classes=2, temperature=0)


def test_tool_on_a_real_photo_folder(labelled_photos, tmp_path):
    """The toy config's encoder (random weights, official checkpoint format) on real photo
    crops: every image is its own nearest neighbour when the query folder is the reference
    folder, and the JSON output matches the returned numbers."""
    from mmengine.config import Config
    backbone = Config.fromfile(osp.join(REPO_ROOT, TOY)).model.backbone
    encoder = MODELS.build(dict(type='MaskedViT', arch=backbone.arch, img_size=backbone.img_size,
                                patch_size=backbone.patch_size, mask_ratio=0.0))
    checkpoint = tmp_path / 'official.pth'
    # mae_pretrain_vit_*.pth layout: models_mae.py's encoder names and shapes, by hand
    state = {'backbone.' + k: v for k, v in encoder.state_dict().items()}
    shapes = official_shapes(num_layers=6, embed_dims=192, mlp_dims=768, patch_size=4,
                             num_patches=64)
    torch.save(official_checkpoint(state, encoder_only=True, num_layers=6, shapes=shapes),
               checkpoint)
    tool = load_tool('tools/analysis_tools/knn_eval.py')
    common = [osp.join(REPO_ROOT, TOY), str(checkpoint), '--num-workers', '0',
              '--batch-size', '10']
    same = tool.main(common + ['--train', labelled_photos['train'], '--val',
                               labelled_photos['train'], '--k', '1'])
    assert same == {1: {'top1': 100.0}}
    # Known answers: a query folder of byte-identical copies of training images (cosine 1 with
    # their original, the unique nearest neighbour), 2 per class filed under their own class
    # and 1 per class under the next class: k=1 must give exactly 2 / 3 right.
    import glob
    import shutil
    classes = sorted(os.listdir(labelled_photos['train']))
    query = tmp_path / 'query'
    for i, name in enumerate(classes):
        files = sorted(glob.glob(osp.join(labelled_photos['train'], name, '*.jpg')))[:3]
        for j, src in enumerate(files):
            folder = query / (name if j < 2 else classes[(i + 1) % len(classes)])
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, folder / f'copy_{name}_{j}.jpg')
    out = tmp_path / 'knn.json'
    for feature in ('cls_token', 'avg_featmap'):
        result = tool.main(common + ['--train', labelled_photos['train'], '--val', str(query),
                                     '--k', '1', '--feature', feature, '--out', str(out)])
        assert result == {1: {'top1': pytest.approx(100 * 2 / 3)}}, feature
        assert json.loads(out.read_text()) == {str(k): v for k, v in result.items()}
    # Leave-one-out on a folder holding every image twice: the other copy is the neighbour.
    twice = tmp_path / 'twice'
    for name in classes:
        (twice / name).mkdir(parents=True)
        for src in sorted(glob.glob(osp.join(labelled_photos['train'], name, '*.jpg')))[:4]:
            for copy in range(2):
                shutil.copy(src, twice / name / f'{copy}_{osp.basename(src)}')
    assert tool.main(common + ['--train', str(twice), '--k', '1']) == {1: {'top1': 100.0}}


def test_tool_refuses_a_missing_folder(tmp_path):
    tool = load_tool('tools/analysis_tools/knn_eval.py')
    with pytest.raises(FileNotFoundError, match='--train'):
        tool.main([osp.join(REPO_ROOT, TOY), 'x.pth', '--train', str(tmp_path / 'no')])
