"""Fixtures of the downstream-project tests.

- ``mae_checkpoint``: a tiny MAE pretrained with the projects' shipped toy pretraining config
  (projects/vitdet/configs/mae_vit-t-p16_photos-64px_toy-cpu.py: ViT-T, 16 px patches, 64 px)
  on real photos, and the checkpoint it saves;
- ``coco_set`` / ``voc_set``: the folders of Debian's ``labelme-examples`` that the shipped toy
  configs read in place (3 PASCAL VOC photos: a COCO file with 12 instances, and VOC class
  masks); missing, the tests fail with the apt-get line;
- ``toy_cfg``: a shipped ``*_toy-cpu.py`` config loaded and merged as ``tools/train.py CONFIG
  --no-validate --cfg-options ...`` does, with options that only point it at the checkpoint and
  shorten it (a dozen iterations, the data randomness set to the identity).
"""
import importlib.util
import math
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from ..conftest import REPO_ROOT

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
# The shipped toy configs (CPU, labelme-examples, ViT-T) and their pretraining.
MAE_TOY = osp.join(REPO_ROOT, 'projects/vitdet/configs/mae_vit-t-p16_photos-64px_toy-cpu.py')
VITDET_TOY = osp.join(REPO_ROOT,
                      'projects/vitdet/configs/vitdet_mask-rcnn_vit-t_labelme-128px_toy-cpu.py')
UPERNET_TOY = osp.join(REPO_ROOT,
                       'projects/upernet/configs/upernet_vit-t_labelme-128px_toy-cpu.py')
# Where the toy configs look for the checkpoint of the toy pretraining (relative to the cwd).
MAE_TOY_CHECKPOINT = 'work_dirs/mae_vit-t-p16_photos-64px_toy-cpu/iter_300.pth'

# Pretraining (the toy config's): ViT-T with 16 px patches on 64 px crops (a 4 x 4 grid), so
# that the downstream backbone has the stride 16 that the detection heads are built for.
PRETRAIN_IMG, PATCH = 64, 16
PRETRAIN_ITERS = 16
# Downstream (the toy configs'): 128 px images (an 8 x 8 grid; the 4 x 4 table is resampled).
TOY_IMG = 128
TOY_ITERS = 12
# The toy configs' learning rates.
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
    """A path in labelme-examples; fails the test when the Debian package is not installed."""
    path = osp.join(LABELME_EXAMPLES, *parts)
    if not osp.exists(path):
        pytest.fail(f'{path} missing: apt-get install labelme-examples (requirements/debian.txt; '
                    'tools/setup_env.sh installs it)')
    return path


@pytest.fixture(scope='session')
def mae_checkpoint(photo_folder, tmp_path_factory) -> str:
    """Pretrain with the shipped toy pretraining config for 16 iterations on real photos; the
    path of the checkpoint the runner saves."""
    work_dir = tmp_path_factory.mktemp('mae')
    cfg = Config.fromfile(MAE_TOY)
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.data_root': photo_folder,
        'train_cfg.max_iters': PRETRAIN_ITERS,
        'default_hooks.checkpoint.interval': PRETRAIN_ITERS,
        'randomness': dict(seed=0),
    })
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
                                end=4)]
    build_runner(cfg).train()
    path = osp.join(work_dir, f'iter_{PRETRAIN_ITERS}.pth')
    assert osp.isfile(path)
    return path


@pytest.fixture(scope='session')
def coco_set() -> str:
    """labelme-examples' COCO folder, which the ViTDet toy config reads in place."""
    return labelme_path('instance_segmentation', 'data_dataset_coco')


@pytest.fixture(scope='session')
def voc_set() -> str:
    """labelme-examples' VOC photos and class masks, which the UperNet toy config reads."""
    return labelme_path('semantic_segmentation', 'data_dataset_voc')


def load_state(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def _common_options(checkpoint: str) -> dict:
    """The checkpoint, logging every iteration, and the toy length."""
    return {
        'model.backbone.init_cfg.checkpoint': checkpoint,
        'default_hooks.logger.interval': 1,
        'log_processor.window_size': 1,
        'train_cfg.max_iters': TOY_ITERS,
        'default_hooks.checkpoint.interval': TOY_ITERS,
    }


def vitdet_toy_options(checkpoint: str) -> dict:
    """The ViTDet toy config for ``TOY_ITERS`` iterations on the same 3 photos in every batch:
    the LSJ randomness set to the identity, 2 warm-up steps."""
    return {
        **_common_options(checkpoint),
        'train_dataloader.sampler.shuffle': False,
        'train_dataloader.dataset.times': TOY_ITERS,
        'train_dataloader.dataset.dataset.pipeline.2.ratio_range': (1.0, 1.0),
        'train_dataloader.dataset.dataset.pipeline.5.prob': 0.0,
        'param_scheduler.0.end': 2,
    }


def upernet_toy_options(checkpoint: str) -> dict:
    """The UperNet toy config for ``TOY_ITERS`` iterations, scale jitter and flip off."""
    return {
        **_common_options(checkpoint),
        'train_dataloader.dataset.pipeline.2.ratio_range': (1.0, 1.0),
        'train_dataloader.dataset.pipeline.4.prob': 0.0,
        'param_scheduler.0.end': 2,
        'param_scheduler.1.begin': 2,
        'param_scheduler.1.end': TOY_ITERS,
    }


def toy_cfg(config: str, options: dict, work_dir) -> Config:
    """``config`` as ``tools/train.py CONFIG --work-dir W --no-validate --cfg-options ...``
    makes it."""
    args = TOOLS_TRAIN.parse_args([config, '--work-dir', str(work_dir), '--no-validate'])
    cfg = Config.fromfile(args.config)
    args.cfg_options = options
    TOOLS_TRAIN.merge_args(cfg, args)
    return cfg


def build_runner(cfg: Config):
    """The runner that ``tools/train.py`` builds for ``cfg``."""
    return TOOLS_TRAIN.build_runner(cfg)


def build_test_runner(config: str, options: dict, checkpoint: str, work_dir) -> Runner:
    """The runner of ``tools/test.py CONFIG CHECKPOINT --work-dir W --cfg-options ...``."""
    args = TOOLS_TEST.parse_args([config, checkpoint, '--work-dir', str(work_dir)])
    cfg = Config.fromfile(args.config)
    args.cfg_options = options
    TOOLS_TEST.merge_args(cfg, args)
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
    resampling to the model's table grid (ViTDetBackbone's: that of ``pretrain_img_size``, or of
    ``img_size`` with ``pos_embed_resample_at_load``; the table itself when it is the
    checkpoint's grid); the relative tables (absent from MAE) are zero."""
    ckpt = backbone_part(load_state(checkpoint))
    rel_pos = {k for k in backbone_state if '.attn.rel_pos_' in k}
    assert rel_pos and set(backbone_state) - set(ckpt) == rel_pos
    assert set(ckpt) <= set(backbone_state)
    for key in rel_pos:
        assert not backbone_state[key].any(), key
    src = PRETRAIN_IMG // PATCH
    dst = math.isqrt(backbone_state['pos_embed'].shape[1] - 1)
    expected = ckpt['pos_embed'] if dst == src else bicubic_grid_resize(ckpt['pos_embed'], src,
                                                                         dst)
    torch.testing.assert_close(backbone_state['pos_embed'], expected)
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
    (L + 1 - layer_id)`` and weight decay where the project's reference puts it (detectron2's
    ViTDet split for a detector, BEiT/mmseg's for a segmentor: tests/reference_weight_decay.py)."""
    from ..reference_weight_decay import reference_split
    no_decay_names = reference_split(model)['no_decay']
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
            no_decay = name in no_decay_names
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
