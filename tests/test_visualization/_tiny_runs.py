"""Short real pretraining runs (mmengine Runner, tiny ViT, 32 px photo crops) shared by the
visualization and tool tests, and a loader for the command-line tools."""
import importlib.util
import os.path as osp
import uuid

from ..conftest import REPO_ROOT, tiny_pretrain_cfg


def run_tiny_pretraining(data_root, work_dir, epochs: int = 1, images: int = 8,
                         batch_size: int = 4, custom_hooks=(), seed: int = 0):
    """Train the real pretraining config, shrunk, for ``epochs`` x ``images / batch_size``
    iterations; returns the finished Runner (checkpoints ``epoch_N.pth`` in ``work_dir``)."""
    from mae_mm.engine import build_runner
    cfg = tiny_pretrain_cfg(data_root, work_dir, max_epochs=epochs, batch_size=batch_size,
                            **{'train_dataloader.dataset.indices': images})
    # Added to the runtime's own hooks, as a user config would.
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [dict(hook) for hook in custom_hooks]
    cfg.randomness = dict(seed=seed)
    # Runners created within the same second would otherwise share a visualizer instance.
    cfg.experiment_name = f'tiny_{uuid.uuid4().hex[:8]}'
    runner = build_runner(cfg)
    runner.train()
    return runner


def load_tool(*relative_path: str):
    """A script under ``tools/`` as a module (its ``main(argv)`` runs it in-process)."""
    path = osp.join(REPO_ROOT, 'tools', *relative_path)
    name = 'mae_mm_tool_' + osp.splitext(relative_path[-1])[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
