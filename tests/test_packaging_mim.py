"""mim round trip in a throwaway venv, and the model index (metafiles) against the configs.

The round trip: build the mae-mm wheel (non-editable), create a venv that sees the main
environment's packages through a ``.pth`` file (torch, mmengine... are not reinstalled), install
openmim into it, then ``mim install <wheel>``, ``mim search mae_mm``, ``mim train mae_mm <config
name>`` (the config is found inside the installed package) and ``mim test mae_mm``. Everything
is installed into the throwaway venv; pip refuses to uninstall packages "outside environment",
and the test checks that the main environment is unchanged.

openmim is installed without its ``opendatalab`` dependency (dataset downloads, never imported
by these commands): it pulls ``openxlab``, which pins old setuptools/requests/rich that would
shadow the main environment's packages inside the venv (torch then fails its setuptools>=77
requirement).
"""
import glob
import importlib.metadata
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import time

import yaml

from .conftest import REPO_ROOT

OPENMIM = 'openmim==0.3.9'
# openmim 0.3.9's requirements, but opendatalab (see the module docstring).
OPENMIM_DEPS = ('click', 'colorama', 'model-index', 'pandas', 'requests', 'rich', 'tabulate')
QUICKSTART_CONFIG = 'mae_vit-tiny-p4_1xb64-1000i_photos-32px.py'

EVAL_CONFIG = """
# A linear classifier on the MaskedViT encoder trained by `mim train`, with a zero classifier:
# every score ties, every image is predicted as class 0, so top-1 is exactly 50 % on 3 + 3.
default_scope = 'mae_mm'
model = dict(
    type='mmpretrain.ImageClassifier',
    data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor', num_classes=2,
                           mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           to_rgb=True),
    backbone=dict(type='mae_mm.MaskedViT', img_size=32, patch_size=4, mask_ratio=0.0,
                  out_type='cls_token',
                  arch=dict(embed_dims=192, num_layers=6, num_heads=3,
                            feedforward_channels=768)),
    head=dict(type='mmpretrain.LinearClsHead', num_classes=2, in_channels=192,
              loss=dict(type='mmpretrain.CrossEntropyLoss')))
test_dataloader = dict(
    batch_size=3, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ImageFolder', data_root={data_root!r}, with_label=True, test_mode=True,
                 pipeline=[dict(type='LoadImageSafe'),
                           dict(type='mmpretrain.Resize', scale=(32, 32)),
                           dict(type='mmpretrain.PackInputs')]))
test_evaluator = dict(type='mmpretrain.Accuracy', topk=(1, ))
test_cfg = dict()
"""


def _load_yaml(path):
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def _indexed_models():
    """Every model entry of every metafile that model-index.yml imports."""
    index = _load_yaml(osp.join(REPO_ROOT, 'model-index.yml'))
    return [model for path in index['Import']
            for model in _load_yaml(osp.join(REPO_ROOT, path)).get('Models') or []]


def test_every_metafile_entry_points_to_an_existing_config():
    index = _load_yaml(osp.join(REPO_ROOT, 'model-index.yml'))
    metafiles = {path: _load_yaml(osp.join(REPO_ROOT, path))  # a YAML error breaks mim search
                 for path in index['Import']}
    assert metafiles
    collections = {c['Name']: c for meta in metafiles.values()
                   for c in meta.get('Collections') or []}
    for collection in collections.values():
        if collection.get('README'):
            assert osp.isfile(osp.join(REPO_ROOT, collection['README'])), collection['README']
    names = []
    for path, meta in metafiles.items():
        assert meta.get('Models'), f'{path} lists no models'
        for model in meta['Models']:
            names.append(model['Name'])
            assert osp.isfile(osp.join(REPO_ROOT, model['Config'])), \
                f'{path}: {model["Name"]} -> missing {model["Config"]}'
            assert model['In Collection'] in collections, f'{path}: {model["Name"]}'
            # OpenMMLab convention: the name is the config's file name (mim's "config id")
            assert osp.splitext(osp.basename(model['Config']))[0] == model['Name']
    assert len(names) == len(set(names)), 'model names must be unique across metafiles'


def _distributions(site_packages):
    return {(d.metadata['Name'] or '').lower(): d.version
            for d in importlib.metadata.distributions(path=[site_packages])}


def subprocess_env():
    """The environment of the subprocesses: no PYTHONPATH (the checkout is not importable), one
    OpenMP thread, no pip version check."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', PIP_DISABLE_PIP_VERSION_CHECK='1')
    return env


def build_wheel(tmp_path, env):
    """A non-editable mae-mm wheel built from a copy of the checkout (the build writes .mim/ and
    build/); its path, and the seconds it took."""
    src = tmp_path / 'src'
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(
        '.venv', '.git', '.cache', 'work_dirs', 'data', 'build', '*.egg-info', '__pycache__',
        '.mim', '.pytest_cache'))
    _, seconds = run_checked(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
         str(tmp_path / 'dist'), str(src)], tmp_path, env)
    return glob.glob(str(tmp_path / 'dist' / 'mae_mm-*.whl'))[0], seconds


def run_checked(cmd, cwd, env, timeout=300):
    start = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{" ".join(map(str, cmd))} failed:\n{output[-4000:]}'
    return output, time.time() - start


def throwaway_venv(root):
    """A venv without pip of its own that sees the main environment through a .pth file."""
    venv = root / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    python = venv / 'bin' / 'python'
    site = subprocess.run([str(python), '-c',
                           'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Appended after the venv's own site-packages: what is installed here takes precedence.
    with open(osp.join(site, 'main_env.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    return venv, python, site


def _labelled_folder(photo_folder, root):
    photos = sorted(glob.glob(osp.join(photo_folder, '*.jpg')))
    for label, chunk in (('a', photos[:3]), ('b', photos[3:6])):
        os.makedirs(root / label)
        for path in chunk:
            shutil.copy(path, root / label)
    return root


def _classifier_checkpoint(pretrain_checkpoint, path):
    """The trained encoder plus a zero 2-class linear head, as a checkpoint of EVAL_CONFIG."""
    import torch

    from mae_mm.utils.checkpoint import mae_mm_checkpoint, save_checkpoint_atomic
    from mae_mm.utils.compat import load_checkpoint_file
    state = load_checkpoint_file(str(pretrain_checkpoint))['state_dict']
    state = {k: v for k, v in state.items() if k.startswith('backbone.')}
    state.update({'head.fc.weight': torch.zeros(2, 192), 'head.fc.bias': torch.zeros(2)})
    save_checkpoint_atomic(mae_mm_checkpoint(state), path)


def test_mim_round_trip_in_a_throwaway_venv(tmp_path, photo_folder):
    timings = {}
    main_site = sysconfig.get_paths()['purelib']
    main_before = _distributions(main_site)
    env = subprocess_env()

    wheel, timings['build wheel'] = build_wheel(tmp_path, env)

    venv, python, site = throwaway_venv(tmp_path)
    mim = str(venv / 'bin' / 'mim')
    start = time.time()
    proc = subprocess.run([str(python), '-m', 'pip', 'install', '-q', '--no-deps', OPENMIM],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (f'cannot install {OPENMIM} (is the package index reachable?): '
                                  f'{(proc.stdout + proc.stderr).strip().splitlines()[-1:]}')
    run_checked([str(python), '-m', 'pip', 'install', '-q', *OPENMIM_DEPS], tmp_path, env)
    timings['install openmim'] = time.time() - start

    # `mim install` of the local wheel; the mmcv find-link it adds points nowhere (offline).
    install_env = dict(env, MMCV_BASE_URL=f'file://{tmp_path / "no_mmcv_mirror"}')
    _, timings['mim install'] = run_checked([mim, 'install', '--no-index', wheel], tmp_path,
                                     install_env)
    where, _ = run_checked([str(python), '-c', 'import mae_mm; print(mae_mm.__file__)'],
                           tmp_path, env)
    assert where.strip() == osp.join(site, 'mae_mm', '__init__.py')
    assert osp.isfile(osp.join(site, 'mae_mm', '.mim', 'tools', 'train.py'))

    out, timings['mim search'] = run_checked([mim, 'search', 'mae_mm'], tmp_path, env)
    for model in _indexed_models():
        assert f'config id: {model["Name"]}' in out

    # The config is given by name only: mim finds it inside the installed package.
    work_dir = tmp_path / 'train'
    out, timings['mim train'] = run_checked(
        [mim, 'train', 'mae_mm', QUICKSTART_CONFIG, '--gpus', '0', '--work-dir', str(work_dir),
         '--cfg-options', 'train_cfg.max_iters=2', 'train_dataloader.batch_size=4',
         'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
         f'train_dataloader.dataset.data_root={photo_folder}', 'default_hooks.logger.interval=1'],
        tmp_path, env)
    packaged = osp.join(site, 'mae_mm', '.mim', 'configs', 'quickstart', QUICKSTART_CONFIG)
    assert f'will use {packaged} instead' in out
    assert osp.join(site, 'mae_mm', '.mim', 'tools', 'train.py') in out
    assert 'Iter(train) [2/2]' in out and (work_dir / 'iter_2.pth').is_file()

    eval_config = tmp_path / 'linear_eval.py'
    eval_config.write_text(EVAL_CONFIG.format(
        data_root=str(_labelled_folder(photo_folder, tmp_path / 'labelled'))))
    classifier = tmp_path / 'classifier.pth'
    _classifier_checkpoint(work_dir / 'iter_2.pth', classifier)
    out, timings['mim test'] = run_checked(
        [mim, 'test', 'mae_mm', str(eval_config), '--checkpoint', str(classifier), '--gpus', '0',
         '--work-dir', str(tmp_path / 'test')], tmp_path, env)
    assert osp.join(site, 'mae_mm', '.mim', 'tools', 'test.py') in out
    assert 'Epoch(test) [2/2]' in out and 'accuracy/top1: 50.0000' in out

    # The main environment is untouched: nothing removed, changed or added by the test.
    main_after = _distributions(main_site)
    assert {k: v for k, v in main_after.items() if k in main_before} == main_before
    assert not {'openmim', 'colorama', 'tabulate', 'pandas'} & (set(main_after) -
                                                                 set(main_before))
    print('mim round trip timings (s): ' + ', '.join(f'{k} {v:.1f}' for k, v in
                                                    timings.items()))
