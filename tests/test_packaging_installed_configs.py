"""A user's own project inherits mae-mm's recipes from an installed (non-editable) mae-mm.

The wheel is built and installed into a throwaway venv (the helpers of test_packaging_mim.py);
then, from a temporary folder outside the checkout (which is not on ``sys.path``), the two user
configs of docs/installation.md ("Inheriting mae-mm's recipes from your own project") are
written out, their example paths pointed at real data, and tiny-model overrides appended:

(a) a pretraining config, ``from mae_mm.configs.mae.<recipe> import *``: a tiny ViT on 64 px
    crops of 8 real photos, one epoch of 2 iterations;
(b) an mmdet config, ``from mae_mm.configs.vitdet.<recipe> import *``: the same tiny ViT (from the
    checkpoint of (a)) in Mask R-CNN on 128 px images of labelme-examples' COCO file, 2
    iterations.

Both are trained by the installed ``mae_mm/.mim/tools/train.py`` (what ``mim train`` runs), with
mmengine's real Runner; the test checks the log and the checkpoints.
"""
import glob
import os
import os.path as osp
import re
import shutil

from .conftest import REPO_ROOT
from .test_packaging_mim import build_wheel, run_checked, subprocess_env, throwaway_venv
from .test_projects.conftest import VOC_CLASSES, coco_set  # noqa: F401  (fixture)

DOCS = osp.join(REPO_ROOT, 'docs', 'installation.md')

# Appended to the docs' pretraining config: a tiny ViT/16 on 64 px crops, 2 iterations.
PRETRAIN_SMOKE = """
# --- smoke-test overrides (tests/test_packaging_installed_configs.py) ---
model.backbone.update(arch=dict(embed_dims=64, num_layers=2, num_heads=4,
                                feedforward_channels=128), img_size=64)
model.neck.update(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
train_dataloader.dataset.pipeline[0].scale = 64
train_dataloader.update(batch_size=4, num_workers=0, persistent_workers=False, pin_memory=False)
train_cfg.update(max_epochs=1)
default_hooks.logger.interval = 1
"""

# Appended to the docs' ViTDet config: the same tiny ViT, 32-channel heads, 128 px, 2 iterations,
# no validation (the COCO ann_file of the recipe's val set does not exist here).
VITDET_SMOKE = """
# --- smoke-test overrides (tests/test_packaging_installed_configs.py) ---
size = (128, 128)
model.backbone.update(arch=dict(embed_dims=64, num_layers=2, num_heads=4,
                                feedforward_channels=128), img_size=size, window_size=4,
                      global_attn_indexes=(1, ))
model.data_preprocessor.batch_augments[0].size = size
model.neck.update(in_channels=64, out_channels=32)
model.rpn_head.update(in_channels=32, feat_channels=32)
model.roi_head.bbox_roi_extractor.out_channels = 32
model.roi_head.bbox_head.update(in_channels=32, conv_out_channels=32, fc_out_channels=64,
                                num_classes={num_classes})
model.roi_head.mask_roi_extractor.out_channels = 32
model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32, num_classes={num_classes})
model.train_cfg.rpn.sampler.num = 64
model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
model.train_cfg.rcnn.sampler.num = 32
train_dataloader.update(batch_size=3, num_workers=0, persistent_workers=False)
train_dataloader.dataset.times = 2
pipeline = train_dataloader.dataset.dataset.pipeline
pipeline[2].update(scale=size, ratio_range=(1.0, 1.0))
pipeline[3].crop_size = size
train_cfg.update(max_iters=2, val_interval=100, dynamic_intervals=None)
param_scheduler[0].end = 2
val_dataloader = val_cfg = val_evaluator = None
default_hooks.logger.interval = 1
log_processor.window_size = 1
"""

def doc_block(name: str) -> str:
    """The ```python block after ``<!-- tested: NAME -->`` in docs/installation.md."""
    with open(DOCS, encoding='utf-8') as f:
        text = f.read()
    match = re.search(rf'<!-- tested: {name} -->\s*```python\n(.*?)```', text, re.S)
    assert match, f'docs/installation.md has no block marked <!-- tested: {name} -->'
    return match.group(1)


def test_the_docs_blocks_inherit_from_the_package():
    assert 'from mae_mm.configs.mae.' in doc_block('user_pretrain_config')
    assert 'from mae_mm.configs.vitdet.' in doc_block('user_vitdet_config')


def test_a_user_project_inherits_the_installed_recipes(tmp_path, photo_folder, coco_set):
    env = subprocess_env()
    wheel, build_s = build_wheel(tmp_path, env)
    venv, python, site = throwaway_venv(tmp_path)
    run_checked([str(python), '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', wheel],
                tmp_path, env)
    # The configs are in the installed package, as files (no import of mae_mm.configs).
    packaged = osp.join(site, 'mae_mm', 'configs')
    assert osp.isfile(osp.join(packaged, 'vitdet', 'vitdet_mask_rcnn_vit_b_lsj_100e_coco.py'))
    assert not osp.exists(osp.join(packaged, '__init__.py'))

    project = tmp_path / 'my_project'  # the user's project: outside the checkout
    project.mkdir()
    where, _ = run_checked([str(python), '-c', 'import mae_mm; print(mae_mm.__file__)'],
                           project, env)
    assert where.strip() == osp.join(site, 'mae_mm', '__init__.py')
    train_py = osp.join(site, 'mae_mm', '.mim', 'tools', 'train.py')

    # (a) pretraining, on 8 real photos (2 iterations of 4)
    images = project / 'images'
    images.mkdir()
    for path in sorted(glob.glob(osp.join(photo_folder, '*.jpg')))[:8]:
        shutil.copy(path, images)
    block = doc_block('user_pretrain_config')
    assert "'data/my_images'" in block
    (project / 'my_mae.py').write_text(
        block.replace("'data/my_images'", repr(str(images))) + PRETRAIN_SMOKE)
    mae_dir = project / 'work_dirs' / 'my_mae'
    out, mae_s = run_checked([str(python), train_py, 'my_mae.py', '--work-dir', str(mae_dir)],
                             project, env, timeout=600)
    assert 'Epoch(train) [1][2/2]' in out, out[-3000:]
    checkpoint = mae_dir / 'epoch_1.pth'
    assert checkpoint.is_file()

    # (b) ViTDet in mmdet, from that checkpoint, on labelme-examples' COCO file
    block = doc_block('user_vitdet_config')
    for example in ("'work_dirs/my_mae/epoch_1600.pth'", "'data/my_coco/'",
                    "'annotations/train.json'", "'images/'"):
        assert example in block, example
    block = (block.replace("'work_dirs/my_mae/epoch_1600.pth'", repr(str(checkpoint)))
             .replace("'data/my_coco/'", repr(coco_set + '/'))
             .replace("'annotations/train.json'", "'annotations.json'")
             .replace("'images/'", "''")
             .replace('classes=MY_CLASSES', f'classes={VOC_CLASSES!r}'))
    (project / 'my_vitdet.py').write_text(
        block + VITDET_SMOKE.format(num_classes=len(VOC_CLASSES)))
    det_dir = project / 'work_dirs' / 'my_vitdet'
    out, det_s = run_checked([str(python), train_py, 'my_vitdet.py', '--work-dir',
                              str(det_dir)], project, env, timeout=600)
    assert 'Iter(train) [2/2]' in out, out[-3000:]
    assert (det_dir / 'iter_2.pth').is_file()
    # the backbone started from the pretraining checkpoint of (a)
    assert str(checkpoint) in out
    print(f'installed-config timings (s): build wheel {build_s:.1f}, pretrain {mae_s:.1f}, '
          f'vitdet {det_s:.1f}')
    assert not os.path.exists(osp.join(REPO_ROOT, 'my_project'))
