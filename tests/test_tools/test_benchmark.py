"""tools/analysis_tools/benchmark.py: smoke runs of every mode (tiny arch, 2 steps), so the tool
cannot rot. Nothing here is timed: the timings are only checked for being well formed; the FLOP
counts are checked against MAE's formula."""
import importlib.util
import json
import os.path as osp

import pytest
import torch

from ..conftest import REPO_ROOT

TOOLS = osp.join(REPO_ROOT, 'tools', 'analysis_tools')


@pytest.fixture(scope='module')
def benchmark():
    spec = importlib.util.spec_from_file_location('mae_mm_benchmark',
                                                  osp.join(TOOLS, 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mae_step_flops_per_image(cfg):
    """FLOPs of one MAE forward + backward per image, as ``FlopCounterMode`` counts them (the
    formula of tests/test_models/test_fast_paths.py, which counts matmuls and convolutions,
    plus the attention kernels that the benchmark's counter also counts): the convolution embeds
    all L patches (forward, and the weight gradient only: images need none); the encoder blocks
    run on the V + 1 visible tokens, the decoder blocks and prediction on all L + 1 tokens; every
    Linear costs 3x its forward (forward, input and weight gradients); attention costs
    2 matmuls forward and 5 backward (torch's count recomputes the scores), each 2 t^2 w."""
    arch, neck = cfg['backbone']['arch'], cfg['neck']
    img, patch = cfg['backbone']['img_size'], cfg['backbone']['patch_size']
    length = (img // patch)**2
    visible = int(length * (1 - cfg['backbone']['mask_ratio']))
    dim, hidden, patch_dim = arch['embed_dims'], arch['feedforward_channels'], 3 * patch**2
    d_dim = neck['decoder_embed_dim']
    d_hidden = int(d_dim * neck.get('mlp_ratio', 4.0))

    def linear(tokens, width_in, width_out):
        return 3 * 2 * tokens * width_in * width_out

    def block(tokens, width, mlp):
        attention = (2 + 5) * 2 * tokens**2 * width
        return linear(tokens, width, 3 * width) + linear(tokens, width, width) + \
            attention + linear(tokens, width, mlp) + linear(tokens, mlp, width)

    return (2 * 2 * length * patch_dim * dim
            + arch['num_layers'] * block(visible + 1, dim, hidden)
            + linear(visible + 1, dim, d_dim)
            + neck['decoder_depth'] * block(length + 1, d_dim, d_hidden)
            + linear(length + 1, d_dim, patch_dim))


def test_train_step_smoke(benchmark, tmp_path):
    out = tmp_path / 'result.json'
    result = benchmark.main(['--smoke', '--no-memory', '--json', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result['impls']) == {'mmpretrain', 'mae_mm'}
    flops = {}
    for impl, r in result['impls'].items():
        assert len(r['step_times_s']) == 2 and r['img_per_s'] > 0
        assert len(r['losses']) == 3 and all(0 < v < 10 for v in r['losses'])
        assert 0 < r['fraction_of_peak'] < 1
        flops[impl] = r['gflops_per_image']
    # Both implementations do the same work (mae-mm has one plain loss path: all patches
    # embedded, the encoder on the visible tokens, the whole decoder on all tokens), so both
    # count exactly the FLOPs of one MAE training step, recomputed here from the smoke sizes.
    expected = mae_step_flops_per_image(benchmark.model_config(benchmark.parse_args(['--smoke'])))
    # (The JSON holds GFLOPs; rel=1e-9 is far below one FLOP in 4.9 million.)
    assert flops == {impl: pytest.approx(expected / 1e9, rel=1e-9, abs=0) for impl in flops}
    assert result['speedup'] > 0 and result['matmul_peak_gflops'] > 0


def test_memory_probe_and_cli_errors(benchmark):
    args = benchmark.parse_args(['--smoke'])
    probe = benchmark.memory_probe('mae_mm', benchmark.model_config(args), 2, 32, 'fp32',
                                   torch.device('cpu'), fused=True)
    assert probe['peak_mb'] > 0 and probe['step_rise_mb'] >= 0 and probe['saved_mb'] > 0
    assert probe['tensor_peak_mb'] > probe['saved_mb'] * 0.5
    with pytest.raises(SystemExit, match='fp16'):
        benchmark.parse_args(['--dtype', 'fp16', '--device', 'cpu'])


def test_live_tensor_bytes_counts_allocations_and_frees(benchmark):
    """Independent check of the step-memory counter on known allocations."""
    import importlib
    models = importlib.import_module('benchmark_models')
    with models.LiveTensorBytes() as counter:
        a = torch.zeros(1000)            # 4000 bytes
        b = torch.zeros(500)             # + 2000
        view = a[:10]                    # same storage: nothing
        del a, view                      # - 4000
        c = torch.ones(250)              # + 1000
        assert counter.live == 3000
    assert counter.peak == 6000 and b.numel() + c.numel() == 750


def test_loss_check_smoke(benchmark):
    result = benchmark.main(['--smoke', '--loss-check', '3', '--dtype', 'bf16'])
    assert len(result['curves']['fp32']) == len(result['curves']['bf16']) == 3
    assert result['relative_difference_mean'] < 0.05


def test_pipeline_smoke(benchmark, photo_folder):
    result = benchmark.main(['--pipeline', '--smoke', '--data-dir', photo_folder])
    # mmpretrain's pipeline on the folder (both resize backends), mae-mm's on the folder (each
    # decode option), on shards and on LMDB: the same images from every source
    assert set(result['img_per_s']) == {
        'mmpretrain folder', 'mmpretrain folder, cv2', 'mae_mm folder',
        'mae_mm folder, region decode off', 'mae_mm folder, draft', 'mae_mm folder, cv2',
        'mae_mm shards', 'mae_mm lmdb'}
    assert result['num_images'] == 8 and all(v > 0 for v in result['img_per_cpu_s'].values())
    assert result['speedup_cpu']['mmpretrain folder'] == 1.0


def test_pixel_difference_smoke(benchmark, photo_folder):
    """Same boxes: mae-mm's default loader is mmpretrain's recipe exactly, and its cv2 option
    exactly mmpretrain's cv2 backend (the same difference to the reference, not zero)."""
    result = benchmark.main(['--pixel-difference', '--smoke', '--data-dir', photo_folder])
    rows = result['sets'][photo_folder]
    assert rows["mmpretrain, backend='pillow'"]['mean_abs'] == 0  # the reference itself
    for name in ('mae_mm folder', 'mae_mm folder, region decode off'):
        assert rows[name]['mean_abs'] == 0 and rows[name]['identical_images'] == 4
    cv2_rows = rows['mae_mm folder, cv2'], rows["mmpretrain, backend='cv2'"]
    assert cv2_rows[0] == cv2_rows[1] and cv2_rows[0]['mean_abs'] > 0


def test_performance_table_smoke(tmp_path):
    """tools/benchmarks/performance_table.py drives benchmark.py and writes the docs' table."""
    spec = importlib.util.spec_from_file_location(
        'mae_mm_performance_table', osp.join(REPO_ROOT, 'tools', 'benchmarks',
                                             'performance_table.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(['--out', str(tmp_path), '--smoke'])
    assert set(results) == {'fp32', 'loss_check', 'pipeline_500x375'}
    table = (tmp_path / 'table.md').read_text()
    assert table.count('\n| fp32 |') == 1 and 'mmpretrain' in table and 'CPU-second' in table
    assert all((tmp_path / f'{name}.json').is_file() for name in results)
