"""mae-mm pretraining works where current transformers is installed, although mmpretrain 1.2's
``mmpretrain.models`` cannot be imported there (docs/installation.md, "Compatibility with
transformers").

Each transformers release is installed once into a private folder (:mod:`tests.private_installs`)
that the child processes add to ``sys.path`` after the venv's site-packages: the result is what
``pip install transformers`` into the venv gives, the venv's packages kept and transformers,
huggingface_hub, tokenizers... added.
"""
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time

import pytest

from ..conftest import REPO_ROOT
from ..private_installs import TRANSFORMERS_RELEASES, install_private

QUICKSTART = osp.join(REPO_ROOT, 'configs', 'quickstart',
                      'mae_vit-tiny-p4_1xb64-1000i_photos-32px.py')


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', PIP_DISABLE_PIP_VERSION_CHECK='1')
    return env


def _run(script: str, *args: str, cwd: str) -> dict:
    """Run ``script`` in a fresh interpreter; its last stdout line is a JSON result."""
    start = time.time()
    proc = subprocess.run([sys.executable, '-c', script, *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=180)
    output = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, output
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result['seconds'] = time.time() - start
    result['output'] = output
    return result


_PROBE = r'''
import json, sys
sys.path.append(sys.argv[1])
import transformers
result = dict(transformers=transformers.__version__, transformers_file=transformers.__file__)
try:
    import mmpretrain.models  # noqa: F401
except TypeError as err:
    result['error'] = f'TypeError: {err}'
else:
    result['error'] = None
print(json.dumps(result))
'''

_TRAIN = r'''
import json, math, sys
target, config, data_root, work_dir = sys.argv[1:5]
sys.path.append(target)
import transformers  # importable in this environment, as where the bug shows
from mmengine.config import Config
from mae_mm.engine import build_runner

iters = 3
cfg = Config.fromfile(config)
cfg.work_dir = work_dir
cfg.model.backbone.arch = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)
cfg.model.backbone.patch_size = 8
cfg.model.neck.update(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
cfg.train_dataloader.update(batch_size=8, num_workers=0, persistent_workers=False)
cfg.train_dataloader.dataset.update(data_root=data_root, data_prefix='')
cfg.train_cfg.max_iters = iters
cfg.param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1),
    dict(type='CosineAnnealingLR', T_max=iters - 1, by_epoch=False, begin=1, end=iters)]
cfg.default_hooks.checkpoint.interval = iters
cfg.default_hooks.logger.interval = 1
cfg.randomness = dict(seed=0)
runner = build_runner(cfg)
runner.train()
losses = runner.message_hub.get_scalar('train/loss').data[0].tolist()
print(json.dumps(dict(
    transformers_file=transformers.__file__,
    losses=losses,
    preprocessor=type(runner.model.data_preprocessor).__module__ + '.' +
    type(runner.model.data_preprocessor).__name__,
    mmpretrain_models=sorted(m for m in sys.modules
                             if m == 'mmpretrain.models' or m.startswith('mmpretrain.models.')),
    mmpretrain_packages=sorted(m for m in sys.modules
                               if m.startswith('mmpretrain.') and m.count('.') == 1),
)))
'''


@pytest.mark.parametrize('name', list(TRANSFORMERS_RELEASES))
def test_quickstart_pretraining_next_to_current_transformers(name, photo_folder, tmp_path):
    target = install_private(name, TRANSFORMERS_RELEASES[name])

    # The environment reproduces the bug: transformers imports, mmpretrain.models does not.
    probe = _run(_PROBE, target, cwd=str(tmp_path))
    assert probe['transformers_file'].startswith(target), probe
    release = '5.' if name == 'transformers-5' else '4.57.'
    assert probe['transformers'].startswith(release), probe
    assert probe['error'] == 'TypeError: NoneType takes no arguments', probe

    # The quick-start config trains there, and mmpretrain.models is never imported.
    run = _run(_TRAIN, target, QUICKSTART, photo_folder, str(tmp_path / 'work'),
               cwd=str(tmp_path))
    print(f'{name}: probe {probe["seconds"]:.1f} s, training {run["seconds"]:.1f} s')
    assert run['transformers_file'].startswith(target)
    assert run['preprocessor'] == \
        'mae_mm.models.data_preprocessors.mae_data_preprocessor.MAEDataPreprocessor'
    assert len(run['losses']) == 3 and all(map(math.isfinite, run['losses'])), run['output']
    assert run['mmpretrain_models'] == [], run['mmpretrain_models']
    # mmpretrain is used all the same: its transforms (PackInputs, RandomFlip).
    assert 'mmpretrain.datasets' in run['mmpretrain_packages']
    assert (tmp_path / 'work' / 'iter_3.pth').is_file()
