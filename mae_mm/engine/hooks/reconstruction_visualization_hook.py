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

    A figure never stops training: unreadable images (that the data loader skips) are replaced
    by the next readable ones of the training set (or dropped from ``image_paths``), and any
    failure while drawing or writing is logged as one warning (once per distinct error) and
    training goes on.

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
        #: Figures that could not be drawn or written (each distinct error is logged once).
        self.num_failures = 0
        self._reported: set = set()

    def _training_images(self, runner) -> list:
        """``num_images`` readable image paths spread evenly over the training set: an
        unreadable image is replaced by the next readable one after it."""
        dataset = runner.train_dataloader.dataset
        size = len(dataset)
        count = min(self.num_images, size)
        if not size:
            return []
        if not hasattr(dataset, 'get_data_info') or dataset.get_data_info(0).get(
                'img_path') is None:
            raise ValueError('ReconstructionVisualizationHook: the training set '
                             f'({type(dataset).__name__}) gives no img_path per sample; set '
                             'image_paths=[...] in the hook config')
        starts = [round(i * (size - 1) / max(1, count - 1)) for i in range(count)]
        paths, tried, unreadable = [], set(), []
        budget = min(size, 10 * count + 100)  # a mostly unreadable data set: give up, not scan
        for start in starts:
            for index in (start + step for step in range(size)):
                index %= size
                if index in tried or len(tried) >= budget:
                    continue
                tried.add(index)
                path = dataset.get_data_info(index).get('img_path')
                if _unreadable(path):
                    unreadable.append(path)
                    continue
                paths.append(path)
                break
        if unreadable:
            runner.logger.warning(
                f'ReconstructionVisualizationHook: {len(unreadable)} unreadable training '
                f'image(s) passed over (first: {unreadable[0]}); drawing {len(paths)} images')
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
        else:
            readable = [path for path in self.image_paths if not _unreadable(path)]
            if len(readable) < len(self.image_paths):
                runner.logger.warning(
                    'ReconstructionVisualizationHook: unreadable image_paths left out: '
                    f'{[p for p in self.image_paths if p not in readable][:3]}')
            self.image_paths = readable
        if not self.image_paths:
            runner.logger.warning('ReconstructionVisualizationHook: no readable image to draw; '
                                  'no reconstruction figures in this run')
        if self.draw_before_train:
            self._draw(runner, step=0)

    def after_train_iter(self, runner, batch_idx: int, data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        """Draw at every ``interval``-th iteration and after the last one."""
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            self._draw(runner, step=runner.iter + 1)

    def _draw(self, runner, step: int) -> None:
        """Draw and write the figure; a failure is logged (once per distinct error), never
        raised: a figure is not worth a training run."""
        if not is_main_process() or not self.image_paths:
            return  # visualizer backends write on rank 0 only; spare the others the forward
        try:
            self._draw_figure(runner, step)
        except Exception as err:  # anything: decoding, the model, a visualizer backend
            reason = f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'
            self.num_failures += 1
            if reason not in self._reported:
                self._reported.add(reason)
                runner.logger.warning(
                    f'ReconstructionVisualizationHook: no figure at iteration {step} '
                    f'({reason}); training goes on (the same error is not logged again)')

    @torch.no_grad()
    def _draw_figure(self, runner, step: int) -> None:
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


def _unreadable(path: str) -> bool:
    """Whether the data loader's ``LoadImageSafe`` would skip ``path``."""
    from mae_mm.datasets.transforms import LoadImageSafe
    try:
        LoadImageSafe(on_error='raise').transform(dict(img_path=path))
    except OSError:
        return True
    return False
