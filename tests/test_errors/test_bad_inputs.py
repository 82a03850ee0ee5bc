"""Every bad input of issue 7 stops the run before any compute, with one line that names the
config field and the fix. Each test goes through the real Runner built from the real pretraining
config (shrunk by ``tiny_pretrain_cfg``), as ``tools/train.py`` does."""
import os

import pytest
import torch
from mmengine.runner import Runner

from mae_mm.engine import MAERunner, build_runner
from mae_mm.engine.checkpoint_key_check import CheckpointKeyMismatchError
from mae_mm.utils.compat import CheckpointLoadError
from ..conftest import tiny_pretrain_cfg


def _one_line_error(error: pytest.ExceptionInfo, *fragments: str) -> str:
    """The message, checked to be one line containing every fragment (field and fix)."""
    message = str(error.value)
    assert '\n' not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def _cfg(photo_folder, tmp_path, **overrides):
    return tiny_pretrain_cfg(photo_folder, tmp_path / 'work', experiment_name=tmp_path.name,
                             **overrides)


def _train_until_error(cfg, expected=Exception):
    """Build the runner and start training; the error must come before the first iteration."""
    with pytest.raises(expected) as error:
        runner = build_runner(cfg)
        runner.train()
    assert not os.path.exists(os.path.join(cfg.work_dir, 'epoch_1.pth'))
    return error


def test_image_size_not_divisible_by_patch_size(photo_folder, tmp_path):
    cfg = _cfg(photo_folder, tmp_path, **{'model.backbone.img_size': 30})
    error = _train_until_error(cfg, ValueError)
    _one_line_error(error, 'img_size=(30, 30)', 'patch_size=8', 'use a multiple of 8')


@pytest.mark.parametrize('ratio', [1.0, -0.1])
def test_mask_ratio_outside_unit_interval(photo_folder, tmp_path, ratio):
    cfg = _cfg(photo_folder, tmp_path, **{'model.backbone.mask_ratio': ratio})
    error = _train_until_error(cfg, ValueError)
    _one_line_error(error, f'mask_ratio={ratio}', 'outside [0, 1)', 'set backbone.mask_ratio')


@pytest.mark.parametrize('field, value', [('grid_size', 14), ('embed_dim', 768),
                                          ('patch_size', 16)])
def test_decoder_disagreeing_with_the_encoder(photo_folder, tmp_path, field, value):
    """The paper's ViT-B/16 decoder settings left in a config whose encoder was changed."""
    cfg = _cfg(photo_folder, tmp_path, **{f'model.neck.{field}': value})
    error = _train_until_error(cfg, ValueError)
    _one_line_error(error, f'neck.{field}={value}', 'disagrees with the backbone',
                    f'remove neck.{field}', 'derived from the backbone')


def test_unknown_arch(photo_folder, tmp_path):
    cfg = _cfg(photo_folder, tmp_path)
    cfg.model.backbone.arch = 'xl'
    error = _train_until_error(cfg, ValueError)
    _one_line_error(error, "arch='xl' is unknown", "'base'", "'huge'", 'or a dict')


@pytest.mark.parametrize('strategy, ratio, reason', [
    ('grid', 0.5, 'ratio must be 1 - 1/s**2'),
    ('block', 0.5, 'lower min_block_patches'),
])
def test_mask_strategy_that_cannot_reach_the_ratio(photo_folder, tmp_path, strategy, ratio,
                                                   reason):
    cfg = _cfg(photo_folder, tmp_path, **{'model.backbone.mask_strategy': strategy,
                                          'model.backbone.mask_ratio': ratio})
    error = _train_until_error(cfg, ValueError)
    _one_line_error(error, f"mask_strategy='{strategy}' cannot reach mask_ratio={ratio}",
                    reason)


def test_missing_data_root(photo_folder, tmp_path):
    missing = str(tmp_path / 'no_such_folder')
    cfg = _cfg(photo_folder, tmp_path, **{'train_dataloader.dataset.data_root': missing})
    error = _train_until_error(cfg, FileNotFoundError)
    _one_line_error(error, missing, 'does not exist', 'train_dataloader.dataset.data_root')


def test_empty_image_folder(photo_folder, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('not an image')
    cfg = _cfg(photo_folder, tmp_path, **{'train_dataloader.dataset.data_root': str(empty)})
    error = _train_until_error(cfg, FileNotFoundError)
    _one_line_error(error, str(empty), 'train_dataloader.dataset')


def _save_model_checkpoint(photo_folder, tmp_path, name, **overrides):
    """A real checkpoint file of a (possibly differently configured) tiny MAE."""
    cfg = _cfg(photo_folder, tmp_path / name, **overrides)
    runner = build_runner(cfg)
    path = tmp_path / f'{name}.pth'
    torch.save({'meta': {}, 'state_dict': runner.model.state_dict()}, path)
    return str(path)


def test_checkpoint_whose_keys_do_not_match(photo_folder, tmp_path):
    """A two-block decoder's checkpoint as load_from of a one-block decoder: the keys of the
    extra block are named as unexpected."""
    path = _save_model_checkpoint(photo_folder, tmp_path, 'deeper',
                                  **{'model.neck.decoder_depth': 2})
    cfg = _cfg(photo_folder, tmp_path, load_from=path)
    error = _train_until_error(cfg, CheckpointKeyMismatchError)
    message = _one_line_error(error, repr(path), 'unexpected keys',
                              'neck.decoder_blocks.1.', 'load_from / --resume',
                              'tools/model_converters/', "prefix='backbone.'")
    assert 'missing' not in message  # everything the model has is in the file


def test_checkpoint_missing_keys_are_listed(photo_folder, tmp_path):
    """An encoder-only checkpoint as load_from of the whole MAE: the decoder keys are missing."""
    path = _save_model_checkpoint(photo_folder, tmp_path, 'full')
    state = torch.load(path, weights_only=True)['state_dict']
    encoder_only = {k: v for k, v in state.items() if k.startswith('backbone.')}
    torch.save({'state_dict': encoder_only}, tmp_path / 'encoder_only.pth')
    cfg = _cfg(photo_folder, tmp_path, load_from=str(tmp_path / 'encoder_only.pth'))
    error = _train_until_error(cfg, CheckpointKeyMismatchError)
    _one_line_error(error, 'model keys missing', 'neck.decoder_blocks.0.', 'mask_token')


def test_checkpoint_with_keys_of_another_shape(photo_folder, tmp_path):
    """A 32 px model's checkpoint into a 64 px model: the position tables are named with both
    shapes (they are not silently left at their initial values)."""
    path = _save_model_checkpoint(photo_folder, tmp_path, 'small_images')
    cfg = _cfg(photo_folder, tmp_path, load_from=path, **{'model.backbone.img_size': 64})
    error = _train_until_error(cfg, CheckpointKeyMismatchError)
    _one_line_error(error, '2 keys of another shape',
                    'backbone.pos_embed [1, 17, 64] vs model [1, 65, 64]',
                    'neck.decoder_pos_embed [1, 17, 32] vs model [1, 65, 32]')


@pytest.mark.parametrize('damage', ['truncated', 'not_a_checkpoint'])
def test_truncated_or_non_checkpoint_file(photo_folder, tmp_path, damage):
    path = _save_model_checkpoint(photo_folder, tmp_path, 'good')
    bad = tmp_path / f'{damage}.pth'
    if damage == 'truncated':
        data = open(path, 'rb').read()
        bad.write_bytes(data[:len(data) // 2])
    else:
        bad.write_bytes(open(os.path.join(photo_folder, 'img_000.jpg'), 'rb').read())
    cfg = _cfg(photo_folder, tmp_path, load_from=str(bad))
    error = _train_until_error(cfg, CheckpointLoadError)
    _one_line_error(error, str(bad), 'truncated or not a torch checkpoint',
                    'use an earlier checkpoint')


def test_torch_file_that_holds_no_checkpoint(photo_folder, tmp_path):
    path = tmp_path / 'tensor.pth'
    torch.save(torch.zeros(3), path)
    cfg = _cfg(photo_folder, tmp_path, load_from=str(path))
    error = _train_until_error(cfg, CheckpointLoadError)
    _one_line_error(error, str(path), 'is not a checkpoint', 'holds a Tensor')


def test_relative_position_tables_are_expected_missing(tmp_path, capsys):
    """A downstream backbone with relative-position tables (mmpretrain's BEiT ViT) loads a
    checkpoint without them, as every MAE checkpoint is, in mae-mm's runner: reported, not an
    error."""
    backbone = dict(type='mmpretrain.BEiTViT', img_size=32, patch_size=8,
                    arch=dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128),
                    use_rel_pos_bias=True, use_abs_pos_emb=False)
    model = dict(type='mmpretrain.ImageClassifier', backbone=backbone,
                 data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor'))
    source = Runner(model=model, work_dir=str(tmp_path / 'a'), default_scope='mae_mm',
                    experiment_name=f'{tmp_path.name}_a')
    state = {k: v for k, v in source.model.state_dict().items() if 'relative_position' not in k}
    torch.save({'state_dict': state}, tmp_path / 'no_rel_pos.pth')
    runner = MAERunner(model=model, work_dir=str(tmp_path / 'b'), default_scope='mae_mm',
                       load_from=str(tmp_path / 'no_rel_pos.pth'),
                       experiment_name=f'{tmp_path.name}_b')
    runner.load_or_resume()
    log = capsys.readouterr().out
    report = log[log.index('no_rel_pos.pth: 35 of 39 model keys loaded'):]
    assert 'expected missing (not in this checkpoint format, fine): 4 keys' in report
    assert 'backbone.layers.{0-1}.attn.{relative_position_bias_table,relative_position_index}' \
        in report
    assert 'MISSING' not in report and 'UNEXPECTED' not in report
    for key, value in state.items():
        assert torch.equal(runner.model.state_dict()[key], value), key
