"""Fixtures of the downstream-project tests.

- ``mae_checkpoint``: a tiny MAE pretrained with the real pretraining config
  (configs/mae_vit-b_1600e.py, shrunk by ``tiny_pretrain_cfg``) and the checkpoint it saves;
- ``coco_set`` / ``voc_set``: the real annotated photos of Debian's ``labelme-examples`` (3 PASCAL
  VOC photos: a COCO file with 12 instances, and VOC class masks), laid out in a short temporary
  folder;
- ``vitdet_toy_cfg`` / ``upernet_toy_cfg``: a project config loaded and merged as
  ``tools/train.py CONFIG --no-validate --cfg-options ...`` does, with options that only shrink it
  (tiny ViT, 128 px, narrow heads, a dozen iterations) and point it at the checkpoint and data.
"""
import importlib.util
import json
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from ..conftest import REPO_ROOT, TINY_ARCH, tiny_pretrain_cfg

LABELME_EXAMPLES = os.environ.get('LABELME_EX', '/usr/share/doc/labelme-examples/examples')
VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'potted plant',
               'sheep', 'sofa', 'train', 'tv/monitor')
VITDET_B = osp.join(REPO_ROOT, 'projects/vitdet/configs/vitdet_mask-rcnn_vit-b_lsj-100e_coco.py')
VITDET_L = osp.join(REPO_ROOT, 'projects/vitdet/configs/vitdet_mask-rcnn_vit-l_lsj-100e_coco.py')
UPERNET_B = osp.join(REPO_ROOT,
                     'projects/upernet/configs/upernet_vit-b_8xb2-160k_ade20k-512x512.py')
UPERNET_L = osp.join(REPO_ROOT,
                     'projects/upernet/configs/upernet_vit-l_8xb2-160k_ade20k-512x512.py')

# Pretraining: ViT of TINY_ARCH with 16 px patches on 64 px crops (a 4 x 4 grid), so that the
# downstream backbone has the stride 16 that the detection heads are built for.
PRETRAIN_IMG, PATCH = 64, 16
# Downstream: 128 px images (an 8 x 8 grid; the checkpoint's 4 x 4 table is resampled).
TOY_IMG = 128
TOY_ITERS = 12
# Toy learning rates (the recipes' 1e-4 moves a dozen iterations too little to see).
VITDET_TOY_LR, UPERNET_TOY_LR = 1e-3, 3e-3


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """One intra-op thread: these tiny models run faster, and far steadier on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tool(name: str):
    """``tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f'_mae_mm_tools_{name}',
                                                  osp.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOLS_TRAIN, TOOLS_TEST = _tool('train'), _tool('test')


def labelme_path(*parts: str) -> str:
    """A path in labelme-examples; skips the test when the Debian package is not installed."""
    path = osp.join(LABELME_EXAMPLES, *parts)
    if not osp.exists(path):
        pytest.fail(f'{path} missing: apt-get install labelme-examples (requirements/debian.txt; '
                    'tools/setup_env.sh installs it)')
    return path


@pytest.fixture(scope='session')
def mae_checkpoint(photo_folder, tmp_path_factory) -> str:
    """Pretrain the tiny MAE for 2 epochs (16 iterations) with configs/mae_vit-b_1600e.py;
    the path of the checkpoint the runner saves."""
    work_dir = tmp_path_factory.mktemp('mae')
    cfg = tiny_pretrain_cfg(photo_folder, work_dir, max_epochs=2, **{
        'model.backbone.img_size': PRETRAIN_IMG,
        'model.backbone.patch_size': PATCH,
        'train_dataloader.dataset.pipeline.0.scale': PRETRAIN_IMG,
    })
    build_runner(cfg).train()
    path = osp.join(work_dir, 'epoch_2.pth')
    assert osp.isfile(path)
    return path


@pytest.fixture(scope='session')
def coco_set(tmp_path_factory) -> str:
    """labelme-examples' COCO file, its image paths made absolute, in a fresh folder."""
    src = labelme_path('instance_segmentation', 'data_dataset_coco')
    with open(osp.join(src, 'annotations.json')) as f:
        coco = json.load(f)
    for image in coco['images']:
        image['file_name'] = osp.join(src, image['file_name'])
    root = tmp_path_factory.mktemp('coco')
    with open(root / 'annotations.json', 'w') as f:
        json.dump(coco, f)
    return str(root)


@pytest.fixture(scope='session')
def voc_set(tmp_path_factory) -> str:
    """labelme-examples' VOC photos and class masks (0-20, 255 = ignore), linked into a folder."""
    src = labelme_path('semantic_segmentation', 'data_dataset_voc')
    root = tmp_path_factory.mktemp('voc')
    for name in ('JPEGImages', 'SegmentationClassPNG'):
        os.symlink(osp.join(src, name), root / name)
    return str(root)


def load_state(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def _common_options(checkpoint: str, lr: float) -> dict:
    """Checkpoint, image size, fp32, learning rate, seed, single-process loaders, logging."""
    options = {
        'model.backbone.img_size': (TOY_IMG, TOY_IMG),
        'model.backbone.init_cfg.checkpoint': checkpoint,
        'optim_wrapper.type': 'OptimWrapper',  # fp32: the toy run is on CPU
        'optim_wrapper.optimizer.lr': lr,
        'default_hooks.logger.interval': 1,
        'log_processor.window_size': 1,
        'randomness': dict(seed=0),  # the upstream runtimes leave the seed random
    }
    for loader in ('train_dataloader', 'test_dataloader'):
        options[f'{loader}.num_workers'] = 0
        options[f'{loader}.persistent_workers'] = False
    return options


def vitdet_toy_options(checkpoint: str, coco_root: str) -> dict:
    """Options shrinking the ViTDet config to toy scale on the labelme COCO set."""
    size = (TOY_IMG, TOY_IMG)
    dataset = dict(data_root=coco_root, ann_file='annotations.json', data_prefix=dict(img=''),
                   metainfo=dict(classes=VOC_CLASSES))
    return {
        **_common_options(checkpoint, VITDET_TOY_LR),
        'model.backbone.window_size': 4,
        'model.backbone.global_attn_indexes': (1, ),
        'model.neck.in_channels': TINY_ARCH['embed_dims'],
        'model.neck.out_channels': 32,
        'model.data_preprocessor.batch_augments.0.size': size,
        'model.rpn_head.in_channels': 32,
        'model.rpn_head.feat_channels': 32,
        'model.roi_head.bbox_roi_extractor.out_channels': 32,
        'model.roi_head.bbox_head.in_channels': 32,
        'model.roi_head.bbox_head.conv_out_channels': 32,
        'model.roi_head.bbox_head.fc_out_channels': 64,
        'model.roi_head.bbox_head.num_classes': len(VOC_CLASSES),
        'model.roi_head.mask_roi_extractor.out_channels': 32,
        'model.roi_head.mask_head.in_channels': 32,
        'model.roi_head.mask_head.conv_out_channels': 32,
        'model.roi_head.mask_head.num_classes': len(VOC_CLASSES),
        'model.train_cfg.rpn.sampler.num': 64,
        'model.train_cfg.rpn_proposal.nms_pre': 200,
        'model.train_cfg.rpn_proposal.max_per_img': 100,
        'model.train_cfg.rcnn.sampler.num': 32,
        'model.test_cfg.rpn.nms_pre': 200,
        'model.test_cfg.rpn.max_per_img': 100,
        'model.test_cfg.rcnn.max_per_img': 20,
        'model.test_cfg.rcnn.score_thr': 0.0,  # a toy model's scores are low; keep its boxes
        # The same 3 photos in every batch: the LSJ pipeline with its randomness set to the
        # identity, and one epoch of the RepeatDataset holding every iteration (each new epoch
        # of an iteration-based loop costs mmengine a 2 s pause).
        'train_dataloader.batch_size': 3,
        'train_dataloader.sampler.shuffle': False,
        'train_dataloader.dataset.times': TOY_ITERS,
        'train_dataloader.dataset.dataset': dataset,
        'train_dataloader.dataset.dataset.pipeline.2.scale': size,
        'train_dataloader.dataset.dataset.pipeline.2.ratio_range': (1.0, 1.0),
        'train_dataloader.dataset.dataset.pipeline.3.crop_size': size,
        'train_dataloader.dataset.dataset.pipeline.5.prob': 0.0,
        'test_dataloader.dataset': dataset,
        'test_dataloader.dataset.pipeline.1.scale': size,
        'test_evaluator.ann_file': osp.join(coco_root, 'annotations.json'),
        'param_scheduler.0.end': 2,
        'train_cfg.max_iters': TOY_ITERS,
        'train_cfg.val_interval': 10 * TOY_ITERS,
        'train_cfg.dynamic_intervals': None,
    }


def upernet_toy_options(checkpoint: str, voc_root: str) -> dict:
    """Options shrinking the UperNet config to toy scale on the labelme VOC masks."""
    size = (TOY_IMG, TOY_IMG)
    classes = ('background', ) + VOC_CLASSES
    dataset = dict(type='BaseSegDataset', data_root=voc_root, reduce_zero_label=False,
                   data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassPNG'),
                   metainfo=dict(classes=classes))
    width = TINY_ARCH['embed_dims']
    return {
        **_common_options(checkpoint, UPERNET_TOY_LR),
        'model.backbone.out_indices': (0, 1, 1, 1),  # 4 maps from the 2 blocks
        'model.data_preprocessor.size': size,
        'model.neck.embed_dim': width,
        'model.decode_head.in_channels': [width] * 4,
        'model.decode_head.channels': 32,
        'model.decode_head.num_classes': len(classes),
        'model.auxiliary_head.in_channels': width,
        'model.auxiliary_head.channels': 16,
        'model.auxiliary_head.num_classes': len(classes),
        'model.test_cfg.crop_size': size,
        'model.test_cfg.stride': (96, 96),
        # The ADE20K pipeline on the VOC masks at the toy size, flip switched off.
        'train_dataloader.batch_size': 3,
        'train_dataloader.dataset': dataset,
        'train_dataloader.dataset.pipeline.1.reduce_zero_label': False,
        'train_dataloader.dataset.pipeline.2.scale': size,
        'train_dataloader.dataset.pipeline.2.ratio_range': (1.0, 1.0),
        'train_dataloader.dataset.pipeline.3.crop_size': size,
        'train_dataloader.dataset.pipeline.4.prob': 0.0,
        'test_dataloader.dataset': dataset,
        'test_dataloader.dataset.pipeline.1.scale': (2 * TOY_IMG, TOY_IMG),
        'test_dataloader.dataset.pipeline.2.reduce_zero_label': False,
        'param_scheduler.0.end': 2,
        'param_scheduler.1.begin': 2,
        'param_scheduler.1.end': TOY_ITERS,
        'train_cfg.max_iters': TOY_ITERS,
        'train_cfg.val_interval': 10 * TOY_ITERS,
        'default_hooks.checkpoint.interval': TOY_ITERS,
    }


def toy_cfg(config: str, options: dict, work_dir) -> Config:
    """``config`` as ``tools/train.py CONFIG --work-dir W --no-validate --cfg-options ...``
    makes it, plus the tiny arch (a dict, which ``--cfg-options`` cannot set over ``'b'``)."""
    args = TOOLS_TRAIN.parse_args([config, '--work-dir', str(work_dir), '--no-validate'])
    cfg = Config.fromfile(args.config)
    args.cfg_options = options
    TOOLS_TRAIN.merge_args(cfg, args)
    cfg.model.backbone.arch = dict(TINY_ARCH)
    cfg.optim_wrapper.pop('loss_scale')  # an option of the mixed-precision wrapper only
    return cfg


def build_runner(cfg: Config):
    """The runner that ``tools/train.py`` builds for ``cfg``."""
    return TOOLS_TRAIN.build_runner(cfg)


def build_test_runner(config: str, options: dict, checkpoint: str, work_dir) -> Runner:
    """The runner of ``tools/test.py CONFIG CHECKPOINT --work-dir W --cfg-options ...`` (the
    same shrinking options, and the tiny arch)."""
    args = TOOLS_TEST.parse_args([config, checkpoint, '--work-dir', str(work_dir)])
    cfg = Config.fromfile(args.config)
    args.cfg_options = options
    TOOLS_TEST.merge_args(cfg, args)
    cfg.model.backbone.arch = dict(TINY_ARCH)
    return build_runner(cfg)


class RecordHook(Hook):
    """Keeps the backbone weights at the start of training, every training loss, and the test
    loop's outputs."""

    def __init__(self):
        self.initial_backbone = None
        self.losses = []
        self.test_outputs = []

    def before_train(self, runner) -> None:
        self.initial_backbone = {k: v.detach().clone()
                                 for k, v in runner.model.backbone.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses.append(float(outputs['loss'].detach()))

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.test_outputs.extend(outputs)


def backbone_part(state: dict) -> dict:
    """The ``backbone.*`` entries of a state dict, prefix removed."""
    return {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}


def bicubic_grid_resize(pos_embed: torch.Tensor, src: int, dst: int) -> torch.Tensor:
    """The cls row kept, the src x src grid rows resampled to dst x dst (bicubic, recomputed
    here independently of mae-mm's helper)."""
    dim = pos_embed.shape[-1]
    grid = pos_embed[0, 1:].reshape(src, src, dim).permute(2, 0, 1)[None]
    grid = torch.nn.functional.interpolate(grid, size=(dst, dst), mode='bicubic',
                                           align_corners=False)
    return torch.cat([pos_embed[0, :1], grid[0].permute(1, 2, 0).reshape(dst * dst, dim)])[None]


def assert_backbone_is_checkpoint(backbone_state: dict, checkpoint: str) -> None:
    """Every backbone tensor equals the checkpoint's; the position table equals its bicubic
    resampling to the toy grid; the relative tables (absent from MAE) are zero."""
    ckpt = backbone_part(load_state(checkpoint))
    rel_pos = {k for k in backbone_state if '.attn.rel_pos_' in k}
    assert rel_pos and set(backbone_state) - set(ckpt) == rel_pos
    assert set(ckpt) <= set(backbone_state)
    for key in rel_pos:
        assert not backbone_state[key].any(), key
    src, dst = PRETRAIN_IMG // PATCH, TOY_IMG // PATCH
    torch.testing.assert_close(backbone_state['pos_embed'],
                               bicubic_grid_resize(ckpt['pos_embed'], src, dst))
    for key, value in ckpt.items():
        if key != 'pos_embed':
            assert torch.equal(backbone_state[key], value), key


def expected_layer_id(name: str, num_layers: int) -> int:
    """Layer-decay depth, recomputed from the parameter name: embeddings 0, block i -> i + 1,
    anything else (heads, necks) num_layers + 1."""
    if not name.startswith('backbone.'):
        return num_layers + 1
    local = name[len('backbone.'):]
    if local.startswith(('patch_embed.', 'pos_embed', 'cls_token')):
        return 0
    if local.startswith('blocks.'):
        return int(local.split('.')[1]) + 1
    return num_layers + 1


def assert_layer_decay(model, optimizer, base_lr: float, decay: float, weight_decay: float):
    """Every trainable parameter is in exactly one group, with ``lr = base_lr * decay **
    (L + 1 - layer_id)`` and no weight decay on 1-D parameters, position and relative tables."""
    names = {id(p): n for n, p in model.named_parameters()}
    num_layers = model.backbone.num_layers
    seen = set()
    for group in optimizer.param_groups:
        for param in group['params']:
            name = names[id(param)]
            assert name not in seen, name
            seen.add(name)
            lr = base_lr * decay**(num_layers + 1 - expected_layer_id(name, num_layers))
            assert group['initial_lr'] == pytest.approx(lr, rel=1e-6), name
            no_decay = param.ndim <= 1 or 'pos_embed' in name or 'rel_pos' in name
            assert group['weight_decay'] == (0.0 if no_decay else weight_decay), name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert seen == trainable
    # Unused by the downstream backbone, hence frozen and out of the optimizer.
    assert 'backbone.cls_token' not in seen and 'backbone.norm.weight' not in seen


def assert_falling(losses: list) -> None:
    """Finite, and the last three iterations clearly below the first three."""
    assert len(losses) == TOY_ITERS and all(torch.isfinite(torch.tensor(losses))), losses
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.95 * first, losses


def train_then_test(config: str, options: dict, work_dir, checkpoint: str, lr: float,
                    layer_decay: float, weight_decay: float, name: str):
    """Train ``config`` at toy scale through tools/train.py's runner, check the start (backbone
    = checkpoint), the losses (finite, falling) and the layer-decay groups; then evaluate the
    saved model through tools/test.py's runner, a fresh one.

    Returns:
        tuple: The test metrics and the test loop's outputs (one data sample per photo).
    """
    runner = build_runner(toy_cfg(config, options, work_dir / 'train'))
    record = RecordHook()
    runner.register_hook(record)
    runner.train()
    assert_backbone_is_checkpoint(record.initial_backbone, checkpoint)
    print(f'\n{name} toy losses ({TOY_ITERS} iterations):',
          ' '.join(f'{v:.3f}' for v in record.losses))
    assert_falling(record.losses)
    assert_layer_decay(runner.model, runner.optim_wrapper.optimizer, base_lr=lr,
                       decay=layer_decay, weight_decay=weight_decay)

    saved = str(work_dir / 'train' / f'iter_{TOY_ITERS}.pth')
    tester = build_test_runner(config, options, saved, work_dir / 'test')
    tester.register_hook(record)
    metrics = tester.test()
    trained = runner.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in tester.model.state_dict().items())
    assert len(record.test_outputs) == 3  # one prediction per photo
    return metrics, record.test_outputs
