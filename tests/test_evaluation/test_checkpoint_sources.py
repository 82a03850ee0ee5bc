"""A mae-mm pretraining checkpoint, an official MAE file and a timm state dict load into the same
classifier (the real fine-tuning and linear-probe configs) and give identical features."""
import pytest
import torch

from mae_mm.registry import MODELS
from ._tiny_cfg import tiny_eval_cfg

FINETUNE = 'configs/finetune/vit-base-p16_8xb128-amp-coslr-100e_in1k.py'
LINEAR = 'configs/linear_probe/vit-base-p16_8xb2048-amp-lars-coslr-90e_in1k.py'


def _features(config, checkpoint, photos, tmp_path, images):
    cfg = tiny_eval_cfg(config, checkpoint, photos['train'], photos['val'], tmp_path)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    with torch.no_grad():
        return model.extract_feat(images, stage='backbone')[0]


@pytest.mark.parametrize('config', [FINETUNE, LINEAR])
def test_three_sources_give_identical_features(config, tiny_checkpoints, labelled_photos,
                                               tmp_path):
    images = torch.randn(3, 3, 32, 32)
    features = {name: _features(config, path, labelled_photos, tmp_path, images)
                for name, path in tiny_checkpoints.items()}
    assert set(features) == {'mae_mm', 'official', 'timm'}
    for name, value in features.items():
        torch.testing.assert_close(value, features['mae_mm'], rtol=0, atol=0, msg=name)
    if config == LINEAR:
        # cls token after the final norm: what the pretrained MAE encoder itself computes.
        from ..conftest import tiny_mae_cfg
        mae = MODELS.build(tiny_mae_cfg(img_size=32, patch_size=8))
        state = torch.load(tiny_checkpoints['mae_mm'], map_location='cpu')['state_dict']
        mae.load_state_dict(state)
        with torch.no_grad():
            tokens = mae.backbone(images, mask=False)[0]
        torch.testing.assert_close(features['mae_mm'], tokens[:, 0], rtol=0, atol=0)


def test_randomly_initialised_encoder_differs(tiny_checkpoints, labelled_photos, tmp_path):
    """The comparison above can fail: an encoder that loads nothing gives other features."""
    images = torch.randn(3, 3, 32, 32)
    loaded = _features(FINETUNE, tiny_checkpoints['timm'], labelled_photos, tmp_path, images)
    cfg = tiny_eval_cfg(FINETUNE, tiny_checkpoints['timm'], labelled_photos['train'],
                        labelled_photos['val'], tmp_path)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        fresh = model.extract_feat(images, stage='backbone')[0]
    assert not torch.allclose(fresh, loaded)
