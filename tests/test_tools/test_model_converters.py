"""The checkpoint converters of ``tools/model_converters``, run as command-line programs."""
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.logging import MessageHub

from mae_mm.registry import MODELS
from ..test_utils._foreign_layouts import (official_checkpoint, official_decoder_names,
                                           official_encoder_names)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONVERTERS = REPO_ROOT / 'tools' / 'model_converters'
TINY = dict(type='MaskedAutoencoder',
            backbone=dict(type='MaskedViT',
                          arch=dict(embed_dims=64, num_layers=2, num_heads=4,
                                    feedforward_channels=128),
                          img_size=32, patch_size=8),
            neck=dict(type='MAEDecoder', decoder_embed_dim=32, decoder_depth=1,
                      decoder_num_heads=4),
            head=dict(type='PixelReconstructionHead', norm_pix=True))
# facebookresearch/mae's key names, written by hand (tests/test_utils/_foreign_layouts.py).
ENCODER = official_encoder_names(num_layers=2)
DECODER = official_decoder_names(depth=1)


def run_tool(script, *args):
    env = dict(os.environ, PYTHONPATH='')  # the scripts must find mae_mm by themselves
    return subprocess.run([sys.executable, str(CONVERTERS / script), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=str(REPO_ROOT.parent),
                          timeout=300)


def build(seed):
    torch.manual_seed(seed)
    return MODELS.build(TINY).eval()


def official_file(model, path, encoder_only=False):
    """``mae_visualize_*.pth`` (or, ``encoder_only``, ``mae_pretrain_*.pth``) with ``model``'s
    weights: the official names and shapes, filled under the hand-written name map."""
    checkpoint = official_checkpoint(model, encoder_only=encoder_only)
    assert list(checkpoint['model']) == ENCODER + ([] if encoder_only else DECODER)
    torch.save(checkpoint, path)
    return checkpoint['model']


def training_checkpoint(model, path):
    """What CheckpointHook writes: weights plus optimizer and message hub (HistoryBuffer)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    optimizer.zero_grad()
    model.forward_loss(torch.randn(2, 3, 32, 32))[0].backward()
    optimizer.step()
    model.eval()
    hub = MessageHub.get_instance('test_model_converters')
    hub.update_scalar('train/loss', 1.5)
    ckpt = {'meta': {'epoch': 1, 'iter': 1, 'seed': 0}, 'state_dict': model.state_dict(),
            'optimizer': optimizer.state_dict(), 'message_hub': hub.state_dict(),
            'param_schedulers': []}
    torch.save(ckpt, path)
    return ckpt


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(7)
    return torch.randn(2, 3, 32, 32, generator=gen), torch.rand(2, 16, generator=gen)


def model_outputs(model, x, noise):
    with torch.no_grad():
        return model.backbone(x, mask=False)[0], model.forward_loss(x, noise=noise)[0]


def test_official_to_mae_mm_then_load_from(tmp_path, inputs):
    source = build(0)
    src, dst = tmp_path / 'mae_visualize_tiny.pth', tmp_path / 'out' / 'mae_mm.pth'
    official_file(source, src)
    proc = run_tool('mae_official_to_mae_mm.py', src, dst)
    assert proc.returncode == 0, proc.stderr
    assert 'from official to mae_mm format' in proc.stdout
    assert "added prefix 'backbone.': 30 keys" in proc.stdout
    assert "added prefix 'neck.': 20 keys" in proc.stdout
    assert 'all keys of a complete MAE encoder and decoder are present' in proc.stdout
    assert [p.name for p in dst.parent.iterdir()] == ['mae_mm.pth']  # no temporary left

    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['source_format'] == 'official'
    assert ckpt['meta']['converted_from'] == 'mae_visualize_tiny.pth'
    assert set(ckpt['state_dict']) == set(source.state_dict())

    # runner-style load_from
    from mmengine.runner import Runner
    fresh = build(1)
    runner = Runner(model=fresh, work_dir=str(tmp_path / 'work'), load_from=str(dst),
                    default_scope='mae_mm', experiment_name='test_model_converters_load_from')
    runner.load_or_resume()
    x, noise = inputs
    feats, loss = model_outputs(runner.model, x, noise)
    ref_feats, ref_loss = model_outputs(source, x, noise)
    torch.testing.assert_close(feats, ref_feats, rtol=0, atol=0)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)


def test_round_trip_through_both_tools_is_lossless(tmp_path):
    source = build(0)
    src = tmp_path / 'official.pth'
    official = official_file(source, src)
    assert run_tool('mae_official_to_mae_mm.py', src, tmp_path / 'mid.pth').returncode == 0
    proc = run_tool('mae_mm_to_official.py', tmp_path / 'mid.pth', tmp_path / 'back.pth')
    assert proc.returncode == 0, proc.stderr
    assert "removed prefix 'backbone.': 30 keys" in proc.stdout
    back = torch.load(tmp_path / 'back.pth', weights_only=True)
    assert list(back) == ['model']
    assert list(back['model']) == list(official)
    assert all(torch.equal(back['model'][k], v) for k, v in official.items())


def test_training_checkpoint_to_official_encoder_only(tmp_path):
    model = build(0)
    ckpt = training_checkpoint(model, tmp_path / 'epoch_1.pth')
    proc = run_tool('mae_mm_to_official.py', '--encoder-only', tmp_path / 'epoch_1.pth',
                    tmp_path / 'mae_pretrain_tiny.pth')
    assert proc.returncode == 0, proc.stderr
    assert 'decoder (encoder-only output)' in proc.stdout
    out = torch.load(tmp_path / 'mae_pretrain_tiny.pth', weights_only=True)
    assert list(out['model']) == ENCODER
    for name in ENCODER:
        assert torch.equal(out['model'][name], ckpt['state_dict']['backbone.' + name])

    # and back: an encoder-only official file gives a backbone-only mae-mm file
    proc = run_tool('mae_official_to_mae_mm.py', tmp_path / 'mae_pretrain_tiny.pth',
                    tmp_path / 'encoder_mae_mm.pth')
    assert proc.returncode == 0, proc.stderr
    state = torch.load(tmp_path / 'encoder_mae_mm.pth', weights_only=True)['state_dict']
    assert set(state) == {'backbone.' + n for n in ENCODER}


def test_truncated_checkpoint_fails_with_one_line(tmp_path):
    src = tmp_path / 'broken.pth'
    official_file(build(0), src)
    data = src.read_bytes()
    src.write_bytes(data[:len(data) // 3])
    for script in ('mae_official_to_mae_mm.py', 'mae_mm_to_official.py', 'publish_model.py'):
        proc = run_tool(script, src, tmp_path / 'out.pth')
        assert proc.returncode == 1, script
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('CheckpointLoadError: cannot load'), \
            proc.stderr
        assert 'truncated' in lines[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ['broken.pth']


def test_unknown_format_fails_with_one_line(tmp_path):
    src = tmp_path / 'hf.pth'
    torch.save({'vit.embeddings.cls_token': torch.zeros(1, 1, 8)}, src)
    proc = run_tool('mae_official_to_mae_mm.py', src, tmp_path / 'out.pth')
    assert proc.returncode == 1
    assert proc.stderr.startswith('ValueError: unknown checkpoint format')
    assert len(proc.stderr.strip().splitlines()) == 1


def test_publish_model(tmp_path):
    model = build(0)
    ckpt = training_checkpoint(model, tmp_path / 'epoch_1.pth')
    raw = {k: v + 1 for k, v in ckpt['state_dict'].items() if v.is_floating_point()}
    ckpt['ema_state_dict'] = {'steps': torch.tensor(3)}
    ckpt['ema_state_dict'].update({'module.' + k: v for k, v in raw.items()})
    torch.save(ckpt, tmp_path / 'epoch_1.pth')

    proc = run_tool('publish_model.py', tmp_path / 'epoch_1.pth', tmp_path / 'mae_tiny.pth',
                    '--no-date')
    assert proc.returncode == 0, proc.stderr
    published = sorted(tmp_path.glob('mae_tiny-*.pth'))
    assert len(published) == 1
    match = re.fullmatch(r'mae_tiny-([0-9a-f]{8})\.pth', published[0].name)
    sha = hashlib.sha256(published[0].read_bytes()).hexdigest()
    assert match and sha.startswith(match.group(1))
    assert sha in proc.stdout
    out = torch.load(published[0], weights_only=True)  # no HistoryBuffer any more
    assert set(out) == {'meta', 'state_dict'}
    assert out['meta']['epoch'] == 1 and 'mae_mm_version' in out['meta']
    assert all(torch.equal(out['state_dict'][k], v) for k, v in ckpt['state_dict'].items())
    assert not list(tmp_path.glob('*.unhashed.pth')) and not list(tmp_path.glob('.*.tmp'))

    proc = run_tool('publish_model.py', tmp_path / 'epoch_1.pth', tmp_path / 'raw.pth',
                    '--no-ema')
    assert proc.returncode == 0, proc.stderr
    (raw_file, ) = tmp_path.glob('raw_*-*.pth')
    assert re.fullmatch(r'raw_\d{8}-[0-9a-f]{8}\.pth', raw_file.name)
    out = torch.load(raw_file, weights_only=True)
    for key, value in raw.items():
        assert torch.equal(out['state_dict'][key], value)


def test_mae_mm_to_hf_and_back_is_lossless(tmp_path):
    """mae-mm -> Hugging Face folder (config.json, pytorch_model.bin) -> mae-mm gives the same
    tensors; config.json describes the model (heads from the config, eps 1e-6)."""
    import json
    model = build(0)
    training_checkpoint(model, tmp_path / 'epoch_1.pth')
    (tmp_path / 'tiny.py').write_text(f'model = {TINY!r}\n')
    proc = run_tool('mae_mm_to_hf.py', tmp_path / 'epoch_1.pth', tmp_path / 'hf', '--bin',
                    '--config', tmp_path / 'tiny.py')
    assert proc.returncode == 0, proc.stderr
    assert 'from mae_mm to hf format' in proc.stdout
    assert 'all keys of a complete MAE encoder and decoder are present' in proc.stdout
    # no preprocessor_config.json: this model has no normalising data preprocessor
    assert sorted(p.name for p in (tmp_path / 'hf').iterdir()) == ['config.json',
                                                                 'pytorch_model.bin']
    config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    assert config['model_type'] == 'vit_mae' and config['layer_norm_eps'] == 1e-6
    assert (config['num_attention_heads'], config['decoder_num_attention_heads']) == (4, 4)
    assert config['norm_pix_loss'] is True and config['image_size'] == 32
    hf = torch.load(tmp_path / 'hf' / 'pytorch_model.bin', weights_only=True)
    assert 'vit.encoder.layer.1.attention.attention.value.bias' in hf
    assert 'decoder.decoder_layers.0.intermediate.dense.weight' in hf

    proc = run_tool('mae_official_to_mae_mm.py', tmp_path / 'hf', tmp_path / 'back.pth')
    assert proc.returncode == 0, proc.stderr
    assert 'from hf to mae_mm format' in proc.stdout
    assert 'norm_eps' not in proc.stdout  # eps 1e-6 as mae-mm's: nothing to set
    back = torch.load(tmp_path / 'back.pth', weights_only=True)
    assert back['meta']['source_format'] == 'hf' and back['meta']['hf_config'] == config
    assert set(back['state_dict']) == set(model.state_dict())
    assert all(torch.equal(back['state_dict'][k], v) for k, v in model.state_dict().items())


def test_hf_names_of_transformers_5_convert_too(tmp_path):
    model = build(0)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'mae_mm.pth')
    (tmp_path / 'tiny.py').write_text(f'model = {TINY!r}\n')
    proc = run_tool('mae_mm_to_hf.py', tmp_path / 'mae_mm.pth', tmp_path / 'hf5', '--bin',
                    '--hf-names', 'v5', '--config', tmp_path / 'tiny.py')
    assert proc.returncode == 0, proc.stderr
    hf = torch.load(tmp_path / 'hf5' / 'pytorch_model.bin', weights_only=True)
    assert 'vit.layers.1.attention.v_proj.bias' in hf and 'vit.layers.0.mlp.fc2.weight' in hf
    assert 'decoder.decoder_layers.0.attention.o_proj.weight' in hf
    proc = run_tool('mae_official_to_mae_mm.py', tmp_path / 'hf5' / 'pytorch_model.bin',
                    tmp_path / 'back.pth')
    assert proc.returncode == 0, proc.stderr
    back = torch.load(tmp_path / 'back.pth', weights_only=True)['state_dict']
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
