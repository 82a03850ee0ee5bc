"""Train a model from an MMEngine config (single process or one process of a distributed job).

Examples::

    python tools/train.py configs/mae_vit-b_400e.py
    python tools/train.py CONFIG --amp --work-dir work_dirs/run1 --cfg-options model.x=1
    python tools/train.py CONFIG --no-amp                      # fp32, whatever the config says
    python tools/train.py CONFIG --resume                       # latest checkpoint in work_dir
    python tools/train.py CONFIG --resume work_dirs/run1/epoch_10.pth
    bash tools/dist_train.sh CONFIG 8 --amp                    # 8 processes via torchrun
"""
import argparse
import os
import os.path as osp
import sys
import warnings
from contextlib import contextmanager
from typing import List, Optional

# From a source checkout ``sys.path[0]`` is ``tools/``; put the repository root first so that the
# in-tree ``mae_mm`` and ``projects.*`` (``custom_imports`` of downstream configs) import without
# PYTHONPATH. Installed under ``mae_mm/.mim/tools`` this adds ``.mim``, which holds no packages.
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from torch.distributed.elastic.multiprocessing.errors import record  # noqa: E402
from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line of ``tools/train.py``.

    Args:
        argv (list[str], optional): Arguments without the program name. Defaults to
            ``sys.argv[1:]``.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='Train a model with an MMEngine config')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints '
                        '(default: cfg.work_dir, else ./work_dirs/<config name>)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume training: from the given checkpoint, or, without a value, from the latest '
        'checkpoint in the work directory')
    amp = parser.add_mutually_exclusive_group()
    amp.add_argument('--amp', action='store_true', default=None,
                     help='automatic mixed precision: fp16 + dynamic loss scale on GPUs, bf16 on '
                     'CPU')
    amp.add_argument('--no-amp', dest='amp', action='store_false', default=None,
                     help='full precision: a mixed-precision optim_wrapper of the config '
                     '(AmpOptimWrapper, MixedPrecisionOptimWrapper) becomes a plain OptimWrapper '
                     'and its loss_scale / dtype / use_fsdp / cpu_dtype are dropped')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual/base batch size ratio '
                        '(needs auto_scale_lr.base_batch_size in the config)')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate during training')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, "key=value" pairs; lists as key="[a,b]" or key=a,b '
        '(no spaces); quote tuples, key="(a,b)"')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch (and so `mim train --launcher pytorch`) passes --local-rank;
    # torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command-line options to the loaded config, in place.

    ``--cfg-options`` is merged last, so it overrides everything else.

    Args:
        cfg (Config): The config read from ``args.config``.
        args (argparse.Namespace): Arguments from :func:`parse_args`.

    Returns:
        Config: ``cfg``, modified.

    Raises:
        ValueError: ``--amp`` / ``--no-amp`` with a non-standard optimizer wrapper type, or
            ``--auto-scale-lr`` without ``auto_scale_lr.base_batch_size`` in the config.
    """
    cfg.launcher = args.launcher
    normalize_inherited_cfg(cfg)

    # work_dir: command line > config > ./work_dirs/<config stem>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None  # the runner finds the latest checkpoint
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    if args.amp:
        _enable_amp(cfg)
    elif args.amp is False:
        _disable_amp(cfg)

    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr')
        if not scale_cfg or 'base_batch_size' not in scale_cfg:
            raise ValueError('--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=N)` '
                             'in the config (N: the total batch size its lr was tuned for)')
        cfg.auto_scale_lr.enable = True

    if args.no_validate:
        # mmengine requires the three validation entries to be all set or all None.
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None

    if args.launcher != 'none' and not torch.cuda.is_available():
        adapt_cfg_to_cpu_distributed(cfg)

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def _enable_amp(cfg: Config) -> None:
    """Switch ``cfg.optim_wrapper`` to mixed precision.

    ``MixedPrecisionOptimWrapper`` is mmengine's ``AmpOptimWrapper`` on GPUs (fp16, dynamic loss
    scale) and bf16 autocast on CPU, where mmengine's wrapper refuses to start.
    """
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None:
        raise ValueError('--amp needs an `optim_wrapper` in the config')
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type.split('.')[-1] in ('AmpOptimWrapper', 'MixedPrecisionOptimWrapper'):
        warnings.warn(f'--amp: the config already uses {wrapper_type}; left as it is')
        return
    if wrapper_type not in ('OptimWrapper', 'mmengine.OptimWrapper'):
        raise ValueError(f'--amp only converts OptimWrapper, but the config uses '
                         f'{wrapper_type!r}; set its mixed-precision options in the config')
    optim_wrapper.type = 'mae_mm.MixedPrecisionOptimWrapper'
    optim_wrapper.setdefault('loss_scale', 'dynamic')


#: The optimizer wrappers ``--no-amp`` turns into ``OptimWrapper``, and the arguments only they
#: take (mmengine's ``AmpOptimWrapper`` and mae-mm's ``MixedPrecisionOptimWrapper``).
AMP_WRAPPERS = ('AmpOptimWrapper', 'MixedPrecisionOptimWrapper')
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp', 'cpu_dtype')


def _disable_amp(cfg: Config) -> None:
    """Switch a mixed-precision ``cfg.optim_wrapper`` to a plain ``OptimWrapper`` (``--no-amp``).

    ``--cfg-options optim_wrapper.type=OptimWrapper`` alone cannot do it: the mixed-precision
    arguments stay and ``OptimWrapper`` refuses them (``unexpected keyword argument
    'loss_scale'``).
    """
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None:
        raise ValueError('--no-amp needs an `optim_wrapper` in the config')
    wrapper_type = str(optim_wrapper.get('type', 'OptimWrapper'))
    name = wrapper_type.split('.')[-1]
    if name == 'OptimWrapper':
        warnings.warn(f'--no-amp: the config already uses {wrapper_type}; left as it is')
        return
    if name not in AMP_WRAPPERS:
        raise ValueError(f'--no-amp only converts {" / ".join(AMP_WRAPPERS)}, but the config '
                         f'uses optim_wrapper.type={wrapper_type!r}; set its precision options '
                         'in the config')
    optim_wrapper.type = 'OptimWrapper'
    for key in AMP_ONLY_KEYS:
        optim_wrapper.pop(key, None)


def normalize_inherited_cfg(cfg: Config) -> None:
    """Make a config that inherits another package's (``_base_ = 'mmpretrain::...'``) build on
    mmengine's stock Runner too, in place: the ``_scope_`` keys that the inheritance adds to
    ``collate_fn`` / ``worker_init_fn`` are resolved (see
    :func:`mae_mm.engine.runner.resolve_scoped_functions`; mae-mm's runners do it themselves).
    """
    from mae_mm.engine.runner import resolve_scoped_functions
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if isinstance(cfg.get(key), dict):
            cfg[key] = resolve_scoped_functions(cfg[key])


def adapt_cfg_to_cpu_distributed(cfg: Config) -> None:
    """Make a distributed config runnable on CPU-only machines (gloo + DDP on CPU), in place.

    Configs default to ``dist_cfg.backend='nccl'``, which needs GPUs, and mmengine 0.10.7's
    ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to DDP, which DDP rejects for a
    module on CPU. ``device_ids=None`` is set on the wrapper config so that it wins over that
    default. (The other CPU obstacle, ``torch.cuda.set_device`` in ``init_dist``, is handled by
    :func:`init_cpu_distributed`.)

    Args:
        cfg (Config): The config; changed in place.
    """
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel

    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    env_cfg.setdefault('dist_cfg', ConfigDict())
    env_cfg.dist_cfg.backend = 'gloo'

    strategy = cfg.get('strategy')
    if 'FlexibleRunner' in str(cfg.get('runner_type', '')) and isinstance(strategy, dict):
        # FlexibleRunner strategies pass device_id(s)=LOCAL_RANK (a GPU index) to the wrapper;
        # FSDP needs the CPU named explicitly, DDP no device ids.
        wrapper = strategy.setdefault('model_wrapper', ConfigDict())
        if 'FSDP' in str(strategy.get('type', '')):
            wrapper.setdefault('device_id', 'cpu')
        else:
            wrapper.setdefault('device_ids', None)
        return
    wrapper_cfg = cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:  # the runner's default wrapper, spelled out
        cfg.model_wrapper_cfg = ConfigDict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        return
    wrapper_type = MODEL_WRAPPERS.get(wrapper_cfg.get('type', 'MMDistributedDataParallel'))
    if isinstance(wrapper_type, type) and issubclass(wrapper_type, DistributedDataParallel):
        wrapper_cfg.setdefault('device_ids', None)


@contextmanager
def _no_cuda_set_device():
    """Make ``torch.cuda.set_device`` a no-op inside the block (it raises without a GPU)."""
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def init_cpu_distributed(cfg: Config) -> None:
    """Initialize the process group on a CPU-only machine before the runner does.

    mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally for every
    launcher, which raises "Found no NVIDIA driver" without a GPU. The runner skips its own
    ``init_dist`` when a process group already exists, so initializing it here (with that call
    disabled) is enough. Does nothing with CUDA, with ``launcher='none'`` or when a process
    group exists.

    Args:
        cfg (Config): The merged config (``launcher``, ``env_cfg.dist_cfg``).
    """
    from mmengine.dist import init_dist, is_distributed
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available() or is_distributed():
        return
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    with _no_cuda_set_device():
        init_dist(cfg.launcher, **dist_cfg)


def build_runner(cfg: Config):
    """Build the runner: ``cfg.runner_type`` through the RUNNERS registry, else ``Runner``."""
    from mae_mm.engine import build_runner as build
    return build(cfg)


@record  # under torchrun, the failing rank's exception text reaches the job summary
def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: parse arguments, build the runner from the merged config, train."""
    args = parse_args(argv)
    import mae_mm  # noqa: F401  registries
    cfg = Config.fromfile(args.config)
    merge_args(cfg, args)
    init_cpu_distributed(cfg)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
