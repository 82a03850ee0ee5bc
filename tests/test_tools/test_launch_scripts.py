"""Fast tests of the command-line tools: train.py/test.py argument handling and the launchers.

Nothing here trains: the launch scripts run with a fake interpreter (``PYTHON``) or a fake
``srun`` that print the command they were given.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from mmengine.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / 'tools'
SCRIPTS = ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh')

# Prints its environment's PYTHONPATH, then one argument per line.
FAKE_EXE = '#!/usr/bin/env bash\nprintf "%s\\n" "PYTHONPATH=$PYTHONPATH" "$@"\n'


def _load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f'_tools_{name}', TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def train_tool() -> ModuleType:
    return _load_tool('train')


@pytest.fixture(scope='module')
def test_tool() -> ModuleType:
    return _load_tool('test')


@pytest.fixture(autouse=True)
def _keep_local_rank(monkeypatch):
    """parse_args() sets LOCAL_RANK when absent; keep that inside each test."""
    monkeypatch.delenv('LOCAL_RANK', raising=False)


def _cfg(**extra) -> Config:
    base = dict(
        model=dict(type='ToyNet'),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)),
        val_cfg=dict(), val_dataloader=dict(batch_size=1), val_evaluator=dict(type='Acc'),
        env_cfg=dict(dist_cfg=dict(backend='nccl')))
    base.update(extra)
    return Config(base)


def _merge(tool: ModuleType, argv: list, cfg: Config = None) -> Config:
    return tool.merge_args(cfg if cfg is not None else _cfg(), tool.parse_args(argv))


# ---------------------------------------------------------------------------- train.py --help
@pytest.mark.parametrize('tool', ['train', 'test'])
def test_help_lists_standard_flags(tool):
    out = subprocess.run([sys.executable, str(TOOLS / f'{tool}.py'), '--help'],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    common = ['--work-dir', '--cfg-options', '--launcher', '--local_rank', '--local-rank']
    specific = {'train': ['--resume', '--amp', '--auto-scale-lr', '--no-validate'],
                'test': ['checkpoint', '--out', '--show-dir']}[tool]
    for flag in common + specific:
        assert flag in out, f'{flag} missing from tools/{tool}.py --help'
    assert '{none,pytorch,slurm,mpi}' in out


# ---------------------------------------------------------------------------- train.py merging
def test_work_dir_default_config_and_flag(train_tool):
    assert _merge(train_tool, ['configs/mae_vit-l_1600e.py']).work_dir == \
        os.path.join('./work_dirs', 'mae_vit-l_1600e')
    assert _merge(train_tool, ['a.py'], _cfg(work_dir='from_cfg')).work_dir == 'from_cfg'
    assert _merge(train_tool, ['a.py', '--work-dir', 'cli'], _cfg(work_dir='x')).work_dir == 'cli'


def test_resume_absent_bare_and_with_path(train_tool):
    cfg = _merge(train_tool, ['a.py'], _cfg(resume=False, load_from='init.pth'))
    assert (cfg.resume, cfg.load_from) == (False, 'init.pth')
    cfg = _merge(train_tool, ['a.py', '--resume'], _cfg(load_from='init.pth'))
    assert (cfg.resume, cfg.load_from) == (True, None)
    cfg = _merge(train_tool, ['a.py', '--resume', 'w/epoch_3.pth'])
    assert (cfg.resume, cfg.load_from) == (True, 'w/epoch_3.pth')


def test_amp_switches_to_mixed_precision_wrapper(train_tool):
    wrapper = _merge(train_tool, ['a.py', '--amp']).optim_wrapper
    assert wrapper.type == 'mae_mm.MixedPrecisionOptimWrapper'
    assert wrapper.loss_scale == 'dynamic' and wrapper.optimizer.lr == 0.1
    cfg = _cfg(optim_wrapper=dict(type='OptimWrapper', loss_scale=512.0, optimizer={}))
    assert _merge(train_tool, ['a.py', '--amp'], cfg).optim_wrapper.loss_scale == 512.0
    cfg = _cfg(optim_wrapper=dict(type='AmpOptimWrapper', dtype='bfloat16', optimizer={}))
    with pytest.warns(UserWarning, match='already'):
        assert _merge(train_tool, ['a.py', '--amp'], cfg).optim_wrapper.dtype == 'bfloat16'
    cfg = _cfg(optim_wrapper=dict(type='MyWrapper', optimizer={}))
    with pytest.raises(ValueError, match='MyWrapper'):
        _merge(train_tool, ['a.py', '--amp'], cfg)
    assert _merge(train_tool, ['a.py']).optim_wrapper.type == 'OptimWrapper'


def test_auto_scale_lr(train_tool):
    cfg = _merge(train_tool, ['a.py', '--auto-scale-lr'],
                 _cfg(auto_scale_lr=dict(base_batch_size=4096)))
    assert cfg.auto_scale_lr == dict(base_batch_size=4096, enable=True)
    cfg = _merge(train_tool, ['a.py'], _cfg(auto_scale_lr=dict(base_batch_size=4096)))
    assert 'enable' not in cfg.auto_scale_lr
    with pytest.raises(ValueError, match='base_batch_size'):
        _merge(train_tool, ['a.py', '--auto-scale-lr'])


def test_no_validate_clears_all_three_entries(train_tool):
    cfg = _merge(train_tool, ['a.py', '--no-validate'])
    assert cfg.val_cfg is None and cfg.val_dataloader is None and cfg.val_evaluator is None
    assert _merge(train_tool, ['a.py']).val_dataloader == dict(batch_size=1)


def test_cfg_options_are_merged_last(train_tool):
    cfg = _merge(train_tool, ['a.py', '--work-dir', 'cli', '--resume', '--cfg-options',
                              'work_dir=opt', 'optim_wrapper.optimizer.lr=0.5',
                              'model.depths=[1,2]', 'resume=False'])
    assert cfg.work_dir == 'opt' and cfg.resume is False
    assert cfg.optim_wrapper.optimizer.lr == 0.5 and cfg.model.depths == [1, 2]


def test_launcher_and_local_rank(train_tool):
    args = train_tool.parse_args(['a.py', '--launcher', 'pytorch', '--local-rank', '3'])
    assert args.launcher == 'pytorch' and os.environ['LOCAL_RANK'] == '3'
    os.environ['LOCAL_RANK'] = '1'  # set by torchrun: never overwritten
    assert train_tool.parse_args(['a.py', '--local_rank', '5']).local_rank == 5
    assert os.environ['LOCAL_RANK'] == '1'
    with pytest.raises(SystemExit):
        train_tool.parse_args(['a.py', '--launcher', 'ssh'])


def test_cpu_distributed_uses_gloo_and_cpu_ddp(train_tool, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = _merge(train_tool, ['a.py', '--launcher', 'pytorch'])
    assert cfg.launcher == 'pytorch' and cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None
    no_env_cfg = Config(dict(model=dict(type='ToyNet'), find_unused_parameters=True))
    cfg = _merge(train_tool, ['a.py', '--launcher', 'slurm'], no_env_cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.find_unused_parameters is True
    own = _cfg(model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=[0]))
    assert _merge(train_tool, ['a.py', '--launcher', 'pytorch'],
                  own).model_wrapper_cfg.device_ids == [0]  # explicit choice kept
    # Single-process CPU runs are left alone.
    cfg = _merge(train_tool, ['a.py'])
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg


def test_cuda_distributed_is_left_alone(train_tool, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = _merge(train_tool, ['a.py', '--launcher', 'pytorch'])
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg


def test_init_cpu_distributed_noop_without_launcher(train_tool):
    train_tool.init_cpu_distributed(Config(dict(launcher='none')))
    assert not torch.distributed.is_initialized()
    original = torch.cuda.set_device
    with train_tool._no_cuda_set_device():
        torch.cuda.set_device(7)  # would raise without a GPU
    assert torch.cuda.set_device is original


# ---------------------------------------------------------------------------- test.py merging
def test_test_tool_merge(test_tool, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    args = test_tool.parse_args(['configs/x.py', 'ckpt.pth', '--launcher', 'pytorch',
                                 '--cfg-options', 'model.depth=2'])
    cfg = test_tool.merge_args(_cfg(resume=True), args)
    assert cfg.load_from == 'ckpt.pth' and cfg.resume is False
    assert cfg.work_dir == os.path.join('./work_dirs', 'x') and cfg.model.depth == 2
    assert cfg.env_cfg.dist_cfg.backend == 'gloo' and cfg.model_wrapper_cfg.device_ids is None
    vis = _cfg(default_hooks=dict(visualization=dict(type='VisualizationHook', enable=False)))
    cfg = test_tool.merge_args(vis, test_tool.parse_args(['x.py', 'c.pth', '--show-dir', 'vis']))
    assert cfg.default_hooks.visualization.enable is True
    assert cfg.default_hooks.visualization.out_dir == 'vis'
    with pytest.raises(ValueError, match='visualization'):
        test_tool.merge_args(_cfg(), test_tool.parse_args(['x.py', 'c.pth', '--show-dir', 'v']))


# ---------------------------------------------------------------------------- shell launchers
@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_parse_and_are_executable(script):
    path = TOOLS / script
    assert os.access(path, os.X_OK), f'{script} is not executable'
    subprocess.run(['bash', '-n', str(path)], check=True, timeout=30)


def _run(script: str, args: list, tmp_path: Path, **env) -> list:
    fake = tmp_path / 'fake_exe'
    fake.write_text(FAKE_EXE)
    fake.chmod(0o755)
    (tmp_path / 'srun').write_text(FAKE_EXE)
    (tmp_path / 'srun').chmod(0o755)
    full_env = {k: v for k, v in os.environ.items()
                if k not in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT', 'PYTHONPATH', 'GPUS',
                             'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS')}
    full_env.update(PYTHON=str(fake), PATH=f'{tmp_path}{os.pathsep}{os.environ["PATH"]}', **env)
    out = subprocess.run(['bash', str(TOOLS / script)] + args, env=full_env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.splitlines()


def test_dist_train_defaults(tmp_path):
    lines = _run('dist_train.sh', ['cfg.py', '2'], tmp_path)
    assert lines == [f'PYTHONPATH={REPO_ROOT}', '-m', 'torch.distributed.run', '--nnodes=1',
                     '--node_rank=0', '--master_addr=127.0.0.1', '--nproc_per_node=2',
                     '--master_port=29500', str(TOOLS / 'train.py'), 'cfg.py', '--launcher',
                     'pytorch']


def test_dist_train_honours_env_and_forwards_args(tmp_path):
    lines = _run('dist_train.sh', ['cfg.py', '8', '--amp', '--cfg-options', 'a=1 2'], tmp_path,
                 NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.7', PORT='12345',
                 PYTHONPATH='/elsewhere')
    assert lines[0] == f'PYTHONPATH={REPO_ROOT}:/elsewhere'
    for expected in ('--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.7',
                     '--nproc_per_node=8', '--master_port=12345'):
        assert expected in lines
    assert lines[-6:] == ['cfg.py', '--launcher', 'pytorch', '--amp', '--cfg-options', 'a=1 2']


def test_dist_test(tmp_path):
    lines = _run('dist_test.sh', ['cfg.py', 'ck.pth', '4', '--out', 'r.pkl'], tmp_path,
                 PORT='29999')
    assert '--master_port=29999' in lines and '--nproc_per_node=4' in lines
    assert lines[-7:] == [str(TOOLS / 'test.py'), 'cfg.py', 'ck.pth', '--launcher', 'pytorch',
                          '--out', 'r.pkl']


def test_dist_scripts_need_their_arguments(tmp_path):
    for script, args in (('dist_train.sh', ['cfg.py']), ('dist_test.sh', ['cfg.py', 'c.pth'])):
        result = subprocess.run(['bash', str(TOOLS / script)] + args, capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 2 and 'usage' in result.stderr


def test_slurm_train(tmp_path):
    lines = _run('slurm_train.sh', ['part', 'job', 'cfg.py', 'wd', '--amp'], tmp_path,
                 GPUS='16', SRUN_ARGS='--quotatype=auto --time=1')
    assert lines[0] == f'PYTHONPATH={REPO_ROOT}'
    for expected in ('-p', 'part', '--job-name=job', '--gres=gpu:8', '--ntasks=16',
                     '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1',
                     '--quotatype=auto', '--time=1'):
        assert expected in lines
    assert lines[-7:] == [str(tmp_path / 'fake_exe'), '-u', str(TOOLS / 'train.py'), 'cfg.py',
                          '--work-dir=wd', '--launcher=slurm', '--amp']


def test_slurm_test_small_job(tmp_path):
    lines = _run('slurm_test.sh', ['part', 'job', 'cfg.py', 'ck.pth'], tmp_path, GPUS='2',
                 CPUS_PER_TASK='3')
    for expected in ('--gres=gpu:2', '--ntasks=2', '--ntasks-per-node=2', '--cpus-per-task=3'):
        assert expected in lines
    assert lines[-4:] == [str(TOOLS / 'test.py'), 'cfg.py', 'ck.pth', '--launcher=slurm']


# ------------------------------------------------------------------ the launchers' interpreter
# A `python` without torch first on PATH: what a shell without the venv activated finds.
NO_TORCH_PYTHON = ('#!/usr/bin/env bash\n'
                   'echo "No module named \'torch\'" >&2\nexit 1\n')
LAUNCHERS = {'dist_train.sh': ['cfg.py', '2'], 'dist_test.sh': ['cfg.py', 'ck.pth', '2'],
             'slurm_train.sh': ['part', 'job', 'cfg.py', 'wd'],
             'slurm_test.sh': ['part', 'job', 'cfg.py', 'ck.pth']}


def _fake_checkout(tmp_path: Path, with_venv: bool) -> Path:
    """The launch scripts copied into a checkout of their own, with a torch-less ``python``
    and ``srun`` on a bin folder, and (``with_venv``) a ``.venv/bin/python`` that prints its
    arguments."""
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    for name in ('dist_train.sh', 'dist_test.sh', 'torchrun.sh', 'slurm_train.sh',
                 'slurm_test.sh', 'srun.sh', 'python_interpreter.sh'):
        (repo / 'tools' / name).write_text((TOOLS / name).read_text())
    if with_venv:
        (repo / '.venv' / 'bin').mkdir(parents=True)
        (repo / '.venv' / 'bin' / 'python').write_text(FAKE_EXE)
        (repo / '.venv' / 'bin' / 'python').chmod(0o755)
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('python', NO_TORCH_PYTHON), ('srun', FAKE_EXE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return repo


def _launch(repo: Path, script: str, python=None):
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'PYTHONPATH')}
    env['PATH'] = f'{repo.parent / "bin"}{os.pathsep}{os.environ["PATH"]}'
    if python is not None:
        env['PYTHON'] = python
    return subprocess.run(['bash', str(repo / 'tools' / script)] + LAUNCHERS[script], env=env,
                          cwd=repo.parent, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize('script', sorted(LAUNCHERS))
def test_launchers_use_the_checkouts_venv_when_python_is_unset(script, tmp_path):
    repo = _fake_checkout(tmp_path, with_venv=True)
    result = _launch(repo, script)
    assert result.returncode == 0, result.stderr
    venv_python = str(repo / '.venv' / 'bin' / 'python')
    first = result.stderr.splitlines()[0]
    assert venv_python in first and "the repository's .venv" in first, first
    lines = result.stdout.splitlines()
    assert lines[0] == f'PYTHONPATH={repo}'
    if script.startswith('dist_'):  # the .venv interpreter ran torchrun
        assert lines[1:3] == ['-m', 'torch.distributed.run']
    else:  # srun was handed the .venv interpreter
        assert venv_python in lines and lines[lines.index(venv_python) + 1] == '-u'


@pytest.mark.parametrize('script', ['dist_train.sh', 'slurm_test.sh'])
def test_launchers_use_python_env_var_first(script, tmp_path):
    repo = _fake_checkout(tmp_path, with_venv=True)
    mine = tmp_path / 'my_python'
    mine.write_text(FAKE_EXE.replace('PYTHONPATH=', 'MINE PYTHONPATH='))
    mine.chmod(0o755)
    result = _launch(repo, script, python=str(mine))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0].endswith(f'interpreter: {mine} ($PYTHON)')
    if script.startswith('dist_'):
        assert result.stdout.startswith('MINE PYTHONPATH=')
    else:
        assert str(mine) in result.stdout.splitlines()


def test_launchers_fall_back_to_python_on_path_and_say_so(tmp_path):
    repo = _fake_checkout(tmp_path, with_venv=False)
    result = _launch(repo, 'dist_train.sh')
    first = result.stderr.splitlines()[0]
    assert f'python on PATH: {tmp_path / "bin" / "python"}' in first, first
    assert result.returncode == 1 and "No module named 'torch'" in result.stderr


@pytest.mark.skipif(not (REPO_ROOT / '.venv' / 'bin' / 'python').exists(),
                    reason='this checkout has no .venv')
def test_dist_train_runs_the_real_venv_without_activation(tmp_path):
    """The README's bare `bash tools/dist_train.sh CONFIG 1` from a shell whose `python` lacks
    torch: torchrun and train.py run from the checkout's .venv (train.py prints its help)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'python').write_text(NO_TORCH_PYTHON)
    (bin_dir / 'python').chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHON', 'PYTHONPATH', 'VIRTUAL_ENV')}
    env.update(PATH=f'{bin_dir}{os.pathsep}/usr/bin:/bin', OMP_NUM_THREADS='1',
               PORT=str(29500 + os.getpid() % 1000))
    result = subprocess.run(['bash', str(TOOLS / 'dist_train.sh'), 'cfg.py', '1', '--help'],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(REPO_ROOT / '.venv' / 'bin' / 'python') in result.stderr.splitlines()[0]
    assert '--cfg-options' in result.stdout and '--launcher' in result.stdout
