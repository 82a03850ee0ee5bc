"""ReconstructionVisualizationHook: MAE reconstructions of fixed images during training."""
import os.path as osp
from typing import Optional, Sequence, Union

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from mae_mm.registry import HOOKS

DATA_BATCH = Optional[Union[dict, tuple, list]]


@HOOKS.register_module()
class ReconstructionVisualizationHook(Hook):
    """Every ``interval`` iterations, draw the reconstruction grid (original | masked |
    reconstruction | reconstruction + visible) of a fixed set of images under a fixed mask, and
    write it through the runner's visualizer: ``Visualizer.add_image`` reaches every configured
    backend (``LocalVisBackend`` writes ``<work_dir>/<timestamp>/vis_data/vis_image/
    <name>_<iter>.png``; ``TensorboardVisBackend`` / ``WandbVisBackend`` log it when configured).

    The same images and the same mask at every step make the figures comparable over training.
    Drawing uses its own random generator and restores the model's train mode, so the training
    run itself is unchanged by the hook. It runs on rank 0 with the unwrapped model (single
    process or DDP); FSDP-sharded models are refused before training starts.

    Example::

        custom_hooks = [dict(type='ReconstructionVisualizationHook', interval=1000)]

    Args:
        interval (int): Draw every ``interval`` training iterations (and after the last one).
        num_images (int): How many images of the training set to show, spread evenly over it.
            Ignored when ``image_paths`` is given.
        image_paths (Sequence[str], optional): Show these files instead.
        img_size (int | Sequence[int], optional): Resize to this size, int or (H, W); default:
            the backbone's training size.
        seed (int): Seed of the fixed mask.
        name (str): Image name given to the visualizer (file prefix of LocalVisBackend).
        draw_before_train (bool): Also draw once before the first iteration (step 0).
    """

    priority = 'LOW'

    def __init__(self, interval: int = 1000, num_images: int = 4,
                 image_paths: Optional[Sequence[str]] = None,
                 img_size: Optional[Union[int, Sequence[int]]] = None, seed: int = 0,
                 name: str = 'reconstruction', draw_before_train: bool = False) -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'ReconstructionVisualizationHook.interval must be a positive int, '
                             f'got {interval!r}')
        if image_paths is None and num_images < 1:
            raise ValueError('ReconstructionVisualizationHook.num_images must be at least 1, '
                             f'got {num_images}')
        if image_paths is not None:
            missing = [path for path in image_paths if not osp.isfile(path)]
            if not image_paths or missing:
                raise FileNotFoundError(
                    'ReconstructionVisualizationHook.image_paths: '
                    f'{missing[:3] if missing else "empty list"} not found; give existing '
                    'image files, or leave image_paths unset to use the training set')
        self.interval = interval
        self.num_images = num_images
        self.image_paths = list(image_paths) if image_paths is not None else None
        self.img_size = img_size
        self.seed = seed
        self.name = name
        self.draw_before_train = draw_before_train
        self._noise: Optional[torch.Tensor] = None

    def _training_images(self, runner) -> list:
        """``num_images`` image paths spread evenly over the training set."""
        dataset = runner.train_dataloader.dataset
        size = len(dataset)
        count = min(self.num_images, size)
        indices = [round(i * (size - 1) / max(1, count - 1)) for i in range(count)]
        paths = [dataset.get_data_info(i).get('img_path') for i in indices] \
            if hasattr(dataset, 'get_data_info') else [None]
        if any(path is None for path in paths):
            raise ValueError('ReconstructionVisualizationHook: the training set '
                             f'({type(dataset).__name__}) gives no img_path per sample; set '
                             'image_paths=[...] in the hook config')
        return paths

    def before_train(self, runner) -> None:
        """Fix the images (checked now, not at the first drawing)."""
        from torch.distributed.fsdp import FullyShardedDataParallel
        if any(isinstance(m, FullyShardedDataParallel) for m in runner.model.modules()):
            # Rank 0 alone cannot run a sharded model: the others would not join its gathers.
            raise ValueError('ReconstructionVisualizationHook does not support FSDP-sharded '
                             'models: remove it from custom_hooks and draw saved checkpoints '
                             'with tools/visualization/reconstruct.py')
        if self.image_paths is None:
            self.image_paths = self._training_images(runner)
        if self.draw_before_train:
            self._draw(runner, step=0)

    def after_train_iter(self, runner, batch_idx: int, data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        """Draw at every ``interval``-th iteration and after the last one."""
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            self._draw(runner, step=runner.iter + 1)

    @torch.no_grad()
    def _draw(self, runner, step: int) -> None:
        if not is_main_process():
            return  # visualizer backends write on rank 0 only; spare the others the forward
        from mae_mm.visualization import (load_images_for_model, mask_noise,
                                          reconstruct_with_seed, reconstruction_figure_array)
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        was_training = model.training
        model.eval()
        try:
            imgs = load_images_for_model(model, self.image_paths,
                                         self.img_size or model.backbone.img_size)
            if self._noise is None or self._noise.shape[0] != imgs.shape[0]:
                self._noise = mask_noise(model, imgs.shape[0], model.patch_grid(imgs),
                                         self.seed)
            _, panels = reconstruct_with_seed(model, imgs, noise=self._noise)
        finally:
            model.train(was_training)
        figure = reconstruction_figure_array(
            panels, title=f'iteration {step}, mask ratio {model.backbone.mask_ratio}',
            norm_pix=model.head.norm_pix)
        runner.visualizer.add_image(self.name, figure, step=step)
