"""The ablation configs follow the MAE paper's ablation protocol (He et al. 2021, Table 1 and
Fig. 5-6), written down here from the paper rather than read from the configs:

* ViT-L/16 encoder, 800 epochs of pretraining;
* decoder depth 8, width 512;
* random-size crop (0.2-1) + horizontal flip;
* random masking, 75 %, the encoder sees visible patches only;
* the target is pixels WITHOUT per-patch normalisation (caption of Table 1); the normalised
  target is its own row of Table 1d.

Each config changes exactly the field its filename names, and nothing else.
"""
import os.path as osp
import re

import pytest
from mmengine.config import Config

from ..conftest import REPO_ROOT

ABLATIONS = osp.join(REPO_ROOT, 'configs', 'ablations')
DEFAULT = 'mae_vit-l_800e_ablation-default.py'

# The paper's ablation default, one entry per field of the protocol.
PROTOCOL = dict(
    arch='l',
    patch_size=16,
    img_size=224,
    max_epochs=800,
    decoder_depth=8,
    decoder_embed_dim=512,
    mask_strategy='random',
    mask_ratio=0.75,
    mask_token_in_encoder=False,
    norm_pix=False,
    augmentation='crop-rand-size',
)

# Where each protocol field lives in a config (dotted path). The augmentation is the pipeline.
FIELD_PATHS = dict(
    arch='model.backbone.arch',
    patch_size='model.backbone.patch_size',
    img_size='model.backbone.img_size',
    max_epochs='train_cfg.max_epochs',
    decoder_depth='model.neck.decoder_depth',
    decoder_embed_dim='model.neck.decoder_embed_dim',
    mask_strategy='model.backbone.mask_strategy',
    mask_ratio='model.backbone.mask_ratio',
    mask_token_in_encoder='model.backbone.mask_token_in_encoder',
    norm_pix='model.head.norm_pix',
    augmentation='train_dataloader.dataset.pipeline',
)

# The rows of Table 1 (a-f) and Fig. 5, as file names: every one must exist, and no other.
EXPECTED_FILES = sorted(
    [DEFAULT]
    + [f'mae_vit-l_800e_decoder-depth-{d}.py' for d in (1, 2, 4, 8, 12)]
    + [f'mae_vit-l_800e_decoder-width-{w}.py' for w in (128, 256, 512, 768, 1024)]
    + ['mae_vit-l_800e_mask-token-in-encoder.py']
    + ['mae_vit-l_800e_target-pixel-unnorm.py', 'mae_vit-l_800e_target-pixel-norm.py']
    + [f'mae_vit-l_800e_aug-{a}.py'
       for a in ('none', 'crop-fixed', 'crop-rand-size', 'crop-color-jitter')]
    + ['mae_vit-l_800e_mask-random-75.py', 'mae_vit-l_800e_mask-block-50.py',
       'mae_vit-l_800e_mask-block-75.py', 'mae_vit-l_800e_mask-grid-75.py']
    + [f'mae_vit-l_800e_mask-ratio-0.{r}.py' for r in range(1, 10)])


def named_change(filename):
    """The protocol fields (and values) that a config's file name says it changes."""
    name = filename[len('mae_vit-l_800e_'):-len('.py')]
    if name == 'ablation-default':
        return {}
    patterns = [
        (r'decoder-depth-(\d+)', lambda m: dict(decoder_depth=int(m[1]))),
        (r'decoder-width-(\d+)', lambda m: dict(decoder_embed_dim=int(m[1]))),
        (r'mask-ratio-(0\.\d+)', lambda m: dict(mask_ratio=float(m[1]))),
        (r'mask-(random|block|grid)-(\d+)',
         lambda m: dict(mask_strategy=m[1], mask_ratio=int(m[2]) / 100)),
        (r'mask-token-in-encoder', lambda m: dict(mask_token_in_encoder=True)),
        (r'target-pixel-norm', lambda m: dict(norm_pix=True)),
        (r'target-pixel-unnorm', lambda m: dict(norm_pix=False)),
        (r'aug-(none|crop-fixed|crop-rand-size|crop-color-jitter)',
         lambda m: dict(augmentation=m[1])),
    ]
    for pattern, change in patterns:
        match = re.fullmatch(pattern, name)
        if match:
            return change(match)
    raise AssertionError(f'{filename}: no ablation of the paper is named like this')


def augmentation_of(pipeline):
    """Table 1e's name for a pretraining pipeline, from its transforms."""
    types = [t['type'].split('.')[-1] for t in pipeline]
    assert types[-1] == 'PackInputs', types
    rrc = [t for t in pipeline
           if t['type'].split('.')[-1] in ('RandomResizedCrop', 'FastRandomResizedCrop')]
    if rrc:
        (crop,) = rrc
        assert crop['scale'] == 224 and tuple(crop['crop_ratio_range']) == (0.2, 1.0), crop
        assert crop['interpolation'] == 'bicubic', crop
        if types[1:] == ['RandomFlip', 'PackInputs']:
            return 'crop-rand-size'
        if types[1:] == ['RandomFlip', 'ColorJitter', 'PackInputs']:
            return 'crop-color-jitter'
    if types == ['LoadImageSafe', 'ResizeEdge', 'RandomCrop', 'RandomFlip', 'PackInputs']:
        assert pipeline[1]['scale'] == 256 and pipeline[2]['crop_size'] == 224
        return 'crop-fixed'
    if types == ['LoadImageSafe', 'ResizeEdge', 'CenterCrop', 'PackInputs']:
        assert pipeline[1]['scale'] == 256 and pipeline[2]['crop_size'] == 224
        return 'none'
    raise AssertionError(f'not a pipeline of Table 1e: {types}')


def lookup(cfg, path):
    node = cfg
    for key in path.split('.'):
        node = node[key] if key in node else None
        if node is None:
            return None
    return node


def protocol_of(cfg):
    """The protocol fields as a config sets them."""
    out = {}
    for field, path in FIELD_PATHS.items():
        value = lookup(cfg, path)
        if field == 'augmentation':
            value = augmentation_of(value)
        elif field == 'mask_token_in_encoder':
            value = bool(value)  # absent = the MaskedViT default, visible patches only
        out[field] = value
    return out


def flatten(node, prefix=''):
    """{dotted path: leaf} of a config; lists are leaves (a pipeline is compared whole)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f'{prefix}{key}.'))
        return out
    return {prefix[:-1]: node}


def load(name):
    return Config.fromfile(osp.join(ABLATIONS, name))


@pytest.fixture(scope='module')
def default_cfg():
    return load(DEFAULT)


def test_the_folder_holds_exactly_the_papers_rows():
    files = sorted(osp.basename(p) for p in __import__('glob').glob(osp.join(ABLATIONS, '*.py')))
    assert files == EXPECTED_FILES


def test_the_default_is_the_papers_ablation_setting(default_cfg):
    assert protocol_of(default_cfg) == PROTOCOL
    # The recipe it inherits keeps the normalised target (the paper's final choice).
    recipe = Config.fromfile(osp.join(
        REPO_ROOT, 'configs', 'mae', 'mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py'))
    assert recipe.model.head.norm_pix is True
    # The schedule really is 800 epochs: the cosine phase ends at the last epoch.
    assert default_cfg.param_scheduler[-1]['end'] == 800


@pytest.mark.parametrize('name', [n for n in EXPECTED_FILES if n != DEFAULT])
def test_every_ablation_inherits_the_default(name):
    source = open(osp.join(ABLATIONS, name)).read()
    assert re.search(r"_base_ = \['\./" + re.escape(DEFAULT) + r"'\]", source), name


@pytest.mark.parametrize('name', EXPECTED_FILES)
def test_config_follows_the_protocol_except_its_named_field(name, default_cfg):
    cfg = load(name)
    change = named_change(name)
    expected = dict(PROTOCOL, **change)
    assert protocol_of(cfg) == expected

    # Nothing outside the named field differs from the default (whole config, leaf by leaf).
    allowed = {FIELD_PATHS[field] for field in change}
    mine, default = flatten(cfg.to_dict()), flatten(default_cfg.to_dict())
    differing = {path for path in set(mine) | set(default)
                 if mine.get(path, '<absent>') != default.get(path, '<absent>')}
    assert differing <= allowed, (name, sorted(differing - allowed))
    # ... and the named field differs unless the row is the default's own value.
    for field, value in change.items():
        if value != PROTOCOL[field]:
            assert FIELD_PATHS[field] in differing, (name, field)


def test_the_pixel_norm_row_is_the_only_normalised_target():
    normalised = [n for n in EXPECTED_FILES if load(n).model.head.norm_pix]
    assert normalised == ['mae_vit-l_800e_target-pixel-norm.py']
