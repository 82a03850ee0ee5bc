"""Hugging Face ``ViTMAE`` checkpoints, made by the real transformers (4.57 and 5.x), load into
mae-mm everywhere other formats load and give transformers' numbers.

transformers runs only in subprocesses: it is installed (``pip install --target``, once: about
25 s per version from a local index) into ``.cache/hf-test/transformers-<version>`` and put on
those subprocesses' path *after* the virtual environment's packages, so the test process never
imports it (with it importable, ``import mmpretrain.models`` breaks) and it cannot shadow the
environment's torch or numpy. ``safetensors`` (optional for mae-mm) is installed on its own into
``.cache/hf-test/safetensors`` for the test process when the environment lacks it. 
"""
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger

from mae_mm.engine import MAERunner
from mae_mm.registry import MODELS
from mae_mm.utils.checkpoint import (convert_state_dict, detect_format, hf_key_to_official,
                                     load_backbone_state_dict, official_key_to_hf,
                                     read_checkpoint)
from ..conftest import REPO_ROOT, TINY_ARCH
from ..private_installs import TRANSFORMERS_RELEASES, install_private

CONVERTERS = Path(REPO_ROOT) / 'tools' / 'model_converters'
RECONSTRUCT = Path(REPO_ROOT) / 'tools' / 'visualization' / 'reconstruct.py'
ATOL = 1e-5

# The tiny model of the brief, as transformers' ViTMAEConfig arguments.
HF_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=128, image_size=32, patch_size=8, decoder_hidden_size=32,
               decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
               decoder_intermediate_size=128, mask_ratio=0.75, norm_pix_loss=True)


def mae_cfg(norm_eps=1e-6):
    """The same model in mae-mm (sizes of ``HF_TINY``)."""
    return dict(type='MaskedAutoencoder',
                backbone=dict(type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8,
                              norm_eps=norm_eps),
                neck=dict(type='MAEDecoder', decoder_embed_dim=32, decoder_depth=1,
                          decoder_num_heads=4, norm_eps=norm_eps),
                head=dict(type='PixelReconstructionHead', norm_pix=True))


HF_SCRIPT = textwrap.dedent('''
    import json, os, sys
    sys.path.append(os.environ['HF_TEST_SITE'])  # after the venv: torch/numpy stay the venv's
    import torch
    import transformers
    from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel
    assert 'mmpretrain' not in sys.modules

    def run(model, pixels, noise):
        with torch.no_grad():
            out = model(pixel_values=pixels, noise=noise)
        return dict(loss=out.loss, logits=out.logits, mask=out.mask, ids_restore=out.ids_restore)

    out, inputs, mae_mm_folder = sys.argv[1], torch.load(sys.argv[2]), sys.argv[3]
    pixels, noise = inputs['pixels'], inputs['noise']
    torch.manual_seed(0)
    model = ViTMAEForPreTraining(ViTMAEConfig(**json.loads(sys.argv[4]))).eval()
    with torch.no_grad():  # every parameter random, so that a wrong name map shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    results = run(model, pixels, noise)
    with torch.no_grad():
        results['latent'] = model.vit(pixel_values=pixels, noise=noise).last_hidden_state
    st_dir, bin_dir = os.path.join(out, 'hf_safetensors'), os.path.join(out, 'hf_bin')
    model.save_pretrained(st_dir)  # model.safetensors + config.json
    os.makedirs(bin_dir)
    torch.save(model.state_dict(), os.path.join(bin_dir, 'pytorch_model.bin'))
    model.config.to_json_file(os.path.join(bin_dir, 'config.json'))
    # the bare encoder, unmasked: mask_ratio 0 and noise that keeps the patches' order
    encoder = ViTMAEModel.from_pretrained(st_dir, mask_ratio=0.0).eval()
    order = torch.arange(16, dtype=torch.float32).expand(2, 16)
    with torch.no_grad():
        results['features'] = encoder(pixel_values=pixels, noise=order).last_hidden_state
    torch.save(results, os.path.join(out, 'outputs.pt'))
    # a folder written by tools/model_converters/mae_mm_to_hf.py, run on the same inputs
    theirs, loading = ViTMAEForPreTraining.from_pretrained(mae_mm_folder, output_loading_info=True)
    torch.save(run(theirs.eval(), pixels, noise), os.path.join(out, 'mae_mm_folder_outputs.pt'))
    from safetensors.torch import load_file
    info = dict(version=transformers.__version__,
                safetensors_keys=list(load_file(os.path.join(st_dir, 'model.safetensors'))),
                state_dict_keys=list(model.state_dict()),
                layer_norm_eps=model.config.layer_norm_eps,
                mae_mm_folder_eps=theirs.config.layer_norm_eps,
                mae_mm_folder_loading={k: sorted(map(str, v)) for k, v in loading.items()})
    with open(os.path.join(out, 'info.json'), 'w') as f:
        json.dump(info, f)
''')


def run_tool(capsys, script: Path, *args):
    """A tool's ``main(argv)`` in this process: ``(return code, stdout, stderr)``."""
    from ..test_visualization._tiny_runs import load_tool
    tool = load_tool(script.parent.name, script.name)
    capsys.readouterr()
    try:
        code = tool.main(list(map(str, args)))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        if not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    gen = torch.Generator().manual_seed(7)
    data = dict(pixels=torch.randn(2, 3, 32, 32, generator=gen),
                noise=torch.rand(2, 16, generator=gen))
    path = tmp_path_factory.mktemp('inputs') / 'inputs.pt'
    torch.save(data, path)
    return dict(data, path=path)


@pytest.fixture(scope='module')
def mae_mm_folder(tmp_path_factory, inputs):
    """A random mae-mm model (eps 1e-6) written as a Hugging Face folder by
    tools/model_converters/mae_mm_to_hf.py, and its outputs on ``inputs``."""
    from ..test_visualization._tiny_runs import load_tool
    root = tmp_path_factory.mktemp('mae_mm_folder')
    torch.manual_seed(3)
    model = MODELS.build(mae_cfg()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save({'state_dict': model.state_dict()}, root / 'mae_mm.pth')
    (root / 'tiny.py').write_text(f'model = {mae_cfg()!r}\n')
    tool = load_tool('model_converters', 'mae_mm_to_hf.py')
    assert tool.main([str(root / 'mae_mm.pth'), str(root / 'hf'), '--config',
                      str(root / 'tiny.py'), '--quiet']) == 0
    with torch.no_grad():
        loss, pred, mask = model.forward_loss(inputs['pixels'], noise=inputs['noise'])
    return dict(folder=root / 'hf', outputs=dict(loss=loss, logits=pred, mask=mask))


@pytest.fixture(scope='module', params=sorted(TRANSFORMERS_RELEASES))
def hf_export(request, tmp_path_factory, inputs, mae_mm_folder):
    """A tiny ViTMAEForPreTraining made by transformers: its folders and outputs; and
    transformers' outputs for the folder mae-mm wrote."""
    site = install_private(request.param, TRANSFORMERS_RELEASES[request.param])
    out = tmp_path_factory.mktemp(f'hf_{request.param}')
    env = dict(os.environ, HF_TEST_SITE=str(site), OMP_NUM_THREADS='1', PYTHONPATH='',
               HF_HUB_OFFLINE='1', TRANSFORMERS_VERBOSITY='error')
    proc = subprocess.run([sys.executable, '-c', HF_SCRIPT, str(out), str(inputs['path']),
                           str(mae_mm_folder['folder']), json.dumps(HF_TINY)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / 'info.json').read_text())
    assert info['version'].startswith(request.param.split('-', 1)[1])
    outputs = torch.load(out / 'outputs.pt', weights_only=True)
    outputs.update(pixels=inputs['pixels'], noise=inputs['noise'])
    return dict(site=site, dir=out, st=out / 'hf_safetensors', bin=out / 'hf_bin',
                outputs=outputs, info=info,
                mae_mm_folder=torch.load(out / 'mae_mm_folder_outputs.pt', weights_only=True))


def assert_same_outputs(model, ref):
    """mae-mm's loss, prediction and mask against transformers', same pixels and noise."""
    with torch.no_grad():
        loss, pred, mask = model.forward_loss(ref['pixels'], noise=ref['noise'])
    torch.testing.assert_close(mask, ref['mask'], rtol=0, atol=0)
    torch.testing.assert_close(pred, ref['logits'], rtol=0, atol=ATOL)
    torch.testing.assert_close(loss, ref['loss'], rtol=0, atol=ATOL)


class LogLines(logging.Handler):

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        MMLogger.get_current_instance().addHandler(self)
        return self

    def __exit__(self, *exc):
        MMLogger.get_current_instance().removeHandler(self)


# ------------------------------------------------------------------------------------------------
# Names (no transformers needed)
# ------------------------------------------------------------------------------------------------
# Written by hand from transformers/models/vit_mae/modeling_vit_mae.py: 4.57.6 (ViTMAELayer with
# ViTMAEAttention(attention=ViTMAESelfAttention(query,key,value), output=ViTMAESelfOutput(dense)),
# intermediate.dense, output.dense; ViTMAEModel.encoder.layer) and 5.18.0 (ViTMAELayer with
# attention.{q,k,v,o}_proj and mlp.fc1/fc2; ViTMAEModel.layers).
V4_LAYER = ['layernorm_before', 'attention.attention.query', 'attention.attention.key',
            'attention.attention.value', 'attention.output.dense', 'layernorm_after',
            'intermediate.dense', 'output.dense']
V5_LAYER = ['layernorm_before', 'attention.q_proj', 'attention.k_proj', 'attention.v_proj',
            'attention.o_proj', 'layernorm_after', 'mlp.fc1', 'mlp.fc2']
OFFICIAL_LAYER = ['norm1', 'attn.qkv', 'attn.qkv', 'attn.qkv', 'attn.proj', 'norm2', 'mlp.fc1',
                  'mlp.fc2']


# transformers 5.24.0's save_pretrained writes 4.x names back, with the decoder's layer list as
# 'decoder_encoder.layer' (its reverse of the 'encoder.layer.' -> 'layers.' rename); seen in the
# safetensors file of test_files_are_detected_and_every_key_is_converted[transformers-5].
@pytest.mark.parametrize('version,layers,decoder_layers,names', [
    ('v4', 'encoder.layer', 'decoder_layers', V4_LAYER),
    ('v5', 'layers', 'decoder_layers', V5_LAYER),
    ('v5_saved', 'encoder.layer', 'decoder_encoder.layer', V4_LAYER)])
def test_key_names_both_ways(version, layers, decoder_layers, names):
    for hf, official in zip(names, OFFICIAL_LAYER):
        for param in ('weight', 'bias'):
            key = f'vit.{layers}.1.{hf}.{param}'
            dec = f'decoder.{decoder_layers}.0.{hf}.{param}'
            assert hf_key_to_official(key)[0] == f'blocks.1.{official}.{param}'
            assert hf_key_to_official(dec)[0] == f'decoder_blocks.0.{official}.{param}'
            assert key in official_key_to_hf(f'blocks.1.{official}.{param}', version)
            assert dec in official_key_to_hf(f'decoder_blocks.0.{official}.{param}', version)
            assert f'{layers}.1.{hf}.{param}' in official_key_to_hf(
                f'blocks.1.{official}.{param}', version, encoder_prefix='')
    assert official_key_to_hf('blocks.0.attn.qkv.weight', version) == [
        f'vit.{layers}.0.{names[i]}.weight' for i in (1, 2, 3)]
    assert hf_key_to_official('vit.embeddings.patch_embeddings.projection.weight') == (
        'patch_embed.proj.weight', None)
    assert hf_key_to_official('embeddings.position_embeddings') == ('pos_embed', None)
    assert hf_key_to_official('vit.layernorm.bias') == ('norm.bias', None)
    assert hf_key_to_official('decoder.decoder_pos_embed') == ('decoder_pos_embed', None)
    assert hf_key_to_official('decoder.mask_token') == ('mask_token', None)
    assert hf_key_to_official('classifier.weight') is None


def test_qkv_rows_are_query_key_value_and_split_back():
    q, k, v = (torch.full((4, 4), float(i)) for i in range(3))
    state = {'vit.encoder.layer.0.attention.attention.query.weight': q,
             'vit.encoder.layer.0.attention.attention.key.weight': k,
             'vit.encoder.layer.0.attention.attention.value.weight': v,
             'vit.embeddings.patch_embeddings.projection.weight': torch.zeros(4, 3, 2, 2)}
    result = convert_state_dict(state, 'mae_mm')
    assert result.source_format == 'hf'
    assert torch.equal(result.state_dict['backbone.blocks.0.attn.qkv.weight'],
                       torch.cat([q, k, v]))
    assert ('vit.encoder.layer.0.attention.attention.{query,key,value}.weight',
            'backbone.blocks.0.attn.qkv.weight') in result.renamed
    back = convert_state_dict(result.state_dict, 'hf', source='mae_mm').state_dict
    assert all(torch.equal(back[key], value) for key, value in state.items())
    incomplete = dict(state)
    del incomplete['vit.encoder.layer.0.attention.attention.value.weight']
    with pytest.raises(ValueError, match='not all three of query, key and value'):
        convert_state_dict(incomplete, 'mae_mm')
    with pytest.raises(ValueError, match='unknown checkpoint format'):
        detect_format({'vit.embeddings.cls_token': torch.zeros(1)})  # a cls token is not enough


def test_folder_without_weights_fails_in_one_line(tmp_path, capsys):
    from PIL import Image
    folder, images = tmp_path / 'vit-mae-empty', tmp_path / 'images'
    folder.mkdir()
    images.mkdir()
    Image.new('RGB', (32, 32), (90, 120, 200)).save(images / 'a.jpg')
    (folder / 'config.json').write_text(json.dumps(dict(HF_TINY, model_type='vit_mae')))
    with pytest.raises(FileNotFoundError) as err:
        read_checkpoint(folder)
    message = str(err.value)
    assert '\n' not in message and 'holds no weights' in message
    assert 'model.safetensors or pytorch_model.bin' in message
    for script, args in ((CONVERTERS / 'mae_official_to_mae_mm.py', [folder, tmp_path / 'out.pth']),
                         (RECONSTRUCT, [folder, images, '--out', tmp_path / 'x.png'])):
        code, _, err = run_tool(capsys, script, *args)
        assert code == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and 'holds no weights' in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['images', 'vit-mae-empty']


def test_safetensors_missing_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / 'model.safetensors'
    path.write_bytes(b'\0' * 16)
    monkeypatch.setitem(sys.modules, 'safetensors', None)
    monkeypatch.setitem(sys.modules, 'safetensors.torch', None)
    with pytest.raises(ImportError) as err:
        read_checkpoint(path)
    assert 'pip install safetensors' in str(err.value) and '\n' not in str(err.value)


# ------------------------------------------------------------------------------------------------
# Against the real transformers
# ------------------------------------------------------------------------------------------------
def test_files_are_detected_and_every_key_is_converted(hf_export):
    info = hf_export['info']
    for path in (hf_export['st'], hf_export['st'] / 'model.safetensors', hf_export['bin'],
                 hf_export['bin'] / 'pytorch_model.bin'):
        ckpt = read_checkpoint(path)
        assert detect_format(ckpt) == 'hf'
        assert ckpt['meta']['hf_config']['model_type'] == 'vit_mae'
        assert ckpt['meta']['hf_config'].get('layer_norm_eps', 1e-12) == info['layer_norm_eps']
        assert info['layer_norm_eps'] == 1e-12
        result = convert_state_dict(ckpt, 'mae_mm')
        assert not result.dropped, result.report()
        assert not any('no mae-mm counterpart' in note for note in result.notes), result.notes
        assert set(result.state_dict) == set(MODELS.build(mae_cfg()).state_dict())
        assert 'all keys of a complete MAE encoder and decoder are present' in result.report()
    # transformers 5 keeps its new names in memory (and, in this version, in the .bin saved
    # from its state dict); both spellings are read
    v5 = any('.layers.0.attention.q_proj.' in k for k in info['state_dict_keys'])
    assert v5 == info['version'].startswith('5')
    assert any('.encoder.layer.0.attention.attention.query.' in k
               for k in info['safetensors_keys']) or v5


def test_build_from_checkpoint_reproduces_transformers(hf_export):
    from mae_mm.visualization import build_mae_from_checkpoint
    ref = hf_export['outputs']
    for path in (hf_export['st'], hf_export['bin'] / 'pytorch_model.bin'):
        model, source = build_mae_from_checkpoint(str(path))
        assert 'config.json' in source and '1e-12' in source
        eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
        assert eps == {1e-12}
        assert model.head.norm_pix and model.backbone.mask_ratio == 0.75
        assert_same_outputs(model, ref)
        with torch.no_grad():
            latent, _, _ = model.backbone(ref['pixels'], mask=True, noise=ref['noise'])
        torch.testing.assert_close(latent, ref['latent'], rtol=0, atol=ATOL)


def test_load_from_into_a_built_model(hf_export, tmp_path):
    from mmengine.runner import Runner
    ref = hf_export['outputs']
    # load_from of a .bin through mmengine's Runner: the model's pre-hook converts the keys
    model = MODELS.build(mae_cfg(norm_eps=1e-12))
    runner = Runner(model=model, work_dir=str(tmp_path / 'work'), default_scope='mae_mm',
                    load_from=str(hf_export['bin'] / 'pytorch_model.bin'),
                    experiment_name=f'test_hf_load_from_{hf_export["info"]["version"]}')
    with LogLines() as log:
        runner.load_or_resume()
    assert not any('norm_eps' in line for line in log.lines)
    assert_same_outputs(runner.model, ref)

    # load_from of the model folder (model.safetensors + config.json) through mae-mm's runner
    runner = MAERunner(model=MODELS.build(mae_cfg(norm_eps=1e-12)),
                       work_dir=str(tmp_path / 'work_folder'), default_scope='mae_mm',
                       load_from=str(hf_export['st']),
                       experiment_name=f'test_hf_folder_{hf_export["info"]["version"]}')
    runner.load_or_resume()
    assert_same_outputs(runner.model, ref)

    # a folder read by read_checkpoint into a model with MAE's eps: loads, and one line says
    # which fields to set (the modules keep their eps)
    model = MODELS.build(mae_cfg())
    with LogLines() as log:
        model.load_state_dict(read_checkpoint(hf_export['st'])['state_dict'])
    notes = [line for line in log.lines if 'norm_eps' in line]
    assert len(notes) == 1 and '\n' not in notes[0], log.lines
    assert 'layer_norm_eps' in notes[0] and '(its config.json' in notes[0]
    assert 'model.backbone.norm_eps=1e-12 model.neck.norm_eps=1e-12' in notes[0]
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    with torch.no_grad():
        loss = model.forward_loss(ref['pixels'], noise=ref['noise'])[0]
    torch.testing.assert_close(loss, ref['loss'], rtol=0, atol=1e-3)  # eps: close, not equal


def test_init_cfg_pretrained_gives_vitmaemodel_features(hf_export):
    ref = hf_export['outputs']
    for eps in (1e-12, 1e-6):
        backbone = MODELS.build(dict(
            type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8, norm_eps=eps,
            mask_ratio=0., init_cfg=dict(type='Pretrained', checkpoint=str(hf_export['st']))))
        with LogLines() as log:
            backbone.init_weights()
        notes = [line for line in log.lines if 'norm_eps' in line]
        if eps == 1e-12:
            assert not notes
            with torch.no_grad():
                feats = backbone(ref['pixels'])[0]
            torch.testing.assert_close(feats, ref['features'], rtol=0, atol=ATOL)
        else:
            assert len(notes) == 1 and 'set model.backbone.norm_eps=1e-12' in notes[0], log.lines
    assert set(load_backbone_state_dict(str(hf_export['bin']))) == set(backbone.state_dict())


def test_converters_round_trip(hf_export, tmp_path, capsys):
    """Hugging Face -> mae-mm -> Hugging Face with the two converters: the same tensors, the same
    config."""
    mid, out = tmp_path / 'mae_mm.pth', tmp_path / 'hf_again'
    code, report, err = run_tool(capsys, CONVERTERS / 'mae_official_to_mae_mm.py',
                                 hf_export['st'], mid)
    assert code == 0, err
    assert 'from hf to mae_mm format' in report
    assert 'set model.backbone.norm_eps=1e-12 model.neck.norm_eps=1e-12' in report
    code, report, err = run_tool(capsys, CONVERTERS / 'mae_mm_to_hf.py', mid, out)
    assert code == 0, err
    assert 'from mae_mm to hf format' in report and 'layer_norm_eps 1e-12' in report
    assert 'all keys of a complete MAE encoder and decoder are present' in report
    # tensors: the same as the original file (compared in mae-mm names: transformers 5 writes
    # its decoder layers under another name)
    original = convert_state_dict(read_checkpoint(hf_export['st']), 'mae_mm').state_dict
    again = read_checkpoint(out)
    assert any('attention.attention.query' in k for k in again['state_dict'])
    again_mae = convert_state_dict(again, 'mae_mm').state_dict
    assert set(again_mae) == set(original) == set(MODELS.build(mae_cfg()).state_dict())
    assert all(torch.equal(again_mae[k], v) for k, v in original.items())
    config = again['meta']['hf_config']
    assert {k: config[k] for k in HF_TINY} == HF_TINY and config['layer_norm_eps'] == 1e-12


def test_transformers_reads_the_folder_mae_mm_writes(hf_export, mae_mm_folder):
    """tools/model_converters/mae_mm_to_hf.py's folder (transformers 4.x names, eps 1e-6 in
    config.json): transformers 4.57 and 5.x load it without missing or unexpected keys and give
    mae-mm's loss, prediction and mask."""
    info = hf_export['info']
    loading = info['mae_mm_folder_loading']
    assert not loading.get('missing_keys') and not loading.get('unexpected_keys'), loading
    assert info['mae_mm_folder_eps'] == 1e-6
    theirs, ours = hf_export['mae_mm_folder'], mae_mm_folder['outputs']
    torch.testing.assert_close(theirs['mask'], ours['mask'], rtol=0, atol=0)
    for key in ('loss', 'logits'):
        torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=ATOL)
