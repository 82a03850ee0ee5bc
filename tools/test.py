"""Evaluate a checkpoint with the test loop of an MMEngine config.

Examples::

    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --out results.pkl --work-dir work_dirs/eval
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import functools
import os
import os.path as osp
import sys
from typing import List, Optional

# See tools/train.py: make the in-tree ``mae_mm`` and ``projects.*`` importable.
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import importlib.util  # noqa: E402

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line of ``tools/test.py``.

    Args:
        argv (list[str], optional): Arguments without the program name. Defaults to
            ``sys.argv[1:]``.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='directory for the evaluation logs '
                        '(default: cfg.work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--out', help='dump the predictions to this pickle file')
    parser.add_argument('--show-dir', help='save visualized predictions under '
                        '<work_dir>/<timestamp>/<show_dir> (needs a `visualization` hook)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, "key=value" pairs; lists as key="[a,b]" (no spaces)')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command-line options to the loaded config, in place.

    Args:
        cfg (Config): The config read from ``args.config``.
        args (argparse.Namespace): Arguments from :func:`parse_args`.

    Returns:
        Config: ``cfg``, modified.
    """
    cfg.launcher = args.launcher
    # A config inheriting another package's: resolve the _scope_ of its collate functions.
    _train_tool().normalize_inherited_cfg(cfg)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False

    if args.show_dir is not None:
        vis_hook = cfg.get('default_hooks', {}).get('visualization')
        if vis_hook is None:
            raise ValueError('--show-dir needs a `default_hooks.visualization` hook in the config')
        vis_hook.enable = True
        vis_hook.out_dir = args.show_dir

    if args.launcher != 'none' and not torch.cuda.is_available():
        _train_tool().adapt_cfg_to_cpu_distributed(cfg)

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


@functools.lru_cache(maxsize=None)
def _train_tool():
    """``tools/train.py`` as a module (its CPU-distributed helpers are shared, not copied)."""
    spec = importlib.util.spec_from_file_location(
        'mae_mm_tools_train', osp.join(osp.dirname(osp.abspath(__file__)), 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: parse arguments, build the runner, run the test loop."""
    args = parse_args(argv)
    from mae_mm.engine import build_runner

    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise SystemExit(f'--out must name a .pkl/.pickle file, got {args.out!r}')
    cfg = merge_args(Config.fromfile(args.config), args)
    _train_tool().init_cpu_distributed(cfg)
    runner = build_runner(cfg)
    if args.out is not None:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
