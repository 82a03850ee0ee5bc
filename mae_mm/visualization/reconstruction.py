"""Reconstruction figures: original | masked | reconstruction | reconstruction + visible."""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

COLUMNS = ('original', 'masked', 'reconstruction', 'recon. + visible')
NORM_PIX_NOTE = ('norm-pix model: reconstruction de-normalised\n'
                 'with the hidden patches\' true mean/std')


def to_uint8_images(imgs: torch.Tensor, mean: Sequence[float],
                    std: Sequence[float]) -> np.ndarray:
    """Undo the data preprocessor's normalisation: (N, C, H, W) -> (N, H, W, C) uint8 RGB."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = imgs.detach().float().cpu() * std_t + mean_t
    return pixels.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def reconstruction_panels(imgs: torch.Tensor, outputs: Dict[str, torch.Tensor],
                          mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The four panels of every image, (N, 4, H, W, C) uint8; masked patches shown gray."""
    original = to_uint8_images(imgs, mean, std)
    hidden = outputs['mask'].cpu().permute(0, 2, 3, 1).numpy().astype(bool)  # (N, H, W, 1)
    masked = np.where(hidden, np.uint8(127), original)
    recon = to_uint8_images(outputs['reconstruction'], mean, std)
    pasted = to_uint8_images(outputs['pasted'], mean, std)
    return np.stack([original, masked, recon, pasted], axis=1)


def _render_figure(panels: np.ndarray, title: Optional[str], norm_pix: bool, dpi: int):
    """The matplotlib figure of :func:`save_reconstruction_figure` (caller closes it)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, cols, height, width = panels.shape[:4]
    scale = max(1.0, 96 / max(height, width))
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(cols * width * scale / dpi + 0.4,
                                      rows * height * scale / dpi + 0.9))
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(panels[r, c], interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=8)
    notes = [title] if title else []
    if norm_pix:
        notes.append(NORM_PIX_NOTE)
    if notes:
        fig.suptitle('\n'.join(notes), fontsize=7)
    fig.tight_layout()
    return fig


def save_reconstruction_figure(panels: np.ndarray, path: str, title: Optional[str] = None,
                               norm_pix: bool = False, dpi: int = 100) -> str:
    """Write the panels as a PNG grid, one row per image, with column titles.

    Args:
        panels (np.ndarray): (N, 4, H, W, C) from :func:`reconstruction_panels`.
        path (str): Output PNG path.
        title (str, optional): Figure title.
        norm_pix (bool): Say on the figure that the reconstruction was de-normalised with the
            hidden patches' true mean/std (a norm-pix model predicts normalised patches only).
        dpi (int): Resolution.

    Returns:
        str: ``path``.
    """
    import matplotlib.pyplot as plt
    fig = _render_figure(panels, title, norm_pix, dpi)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def reconstruction_figure_array(panels: np.ndarray, title: Optional[str] = None,
                                norm_pix: bool = False, dpi: int = 100) -> np.ndarray:
    """The figure of :func:`save_reconstruction_figure` as an RGB image, for visualizer
    backends (``Visualizer.add_image``) that take arrays rather than files.

    Args:
        panels (np.ndarray): (N, 4, H, W, C) from :func:`reconstruction_panels`.
        title (str, optional): Figure title.
        norm_pix (bool): Add the note on norm-pix de-normalisation.
        dpi (int): Resolution.

    Returns:
        np.ndarray: (H', W', 3) uint8 RGB.
    """
    import matplotlib.pyplot as plt
    fig = _render_figure(panels, title, norm_pix, dpi)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return np.ascontiguousarray(rgba[..., :3])


def mask_noise(model, batch_size: int, grid_size: Tuple[int, int], seed: int) -> torch.Tensor:
    """Reproducible per-patch noise (N, L) for ``model``'s masking strategy, drawn from
    ``seed`` without touching the global random state (training runs are not perturbed).

    Args:
        model: A :class:`MaskedAutoencoder` (its backbone's ``mask_strategy`` is used).
        batch_size (int): Number of images.
        grid_size (tuple[int, int]): Patch grid (rows, cols).
        seed (int): Seed of the mask.

    Returns:
        torch.Tensor: (N, rows * cols) on the CPU; the lowest scores are kept visible.
    """
    if model.backbone.mask_strategy == 'random':
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch_size, grid_size[0] * grid_size[1], generator=generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model.backbone.make_noise(batch_size, grid_size, torch.device('cpu'))


def preprocessor_mean_std(model) -> Tuple[List[float], List[float]]:
    """The data preprocessor's per-channel mean and std (identity when it has none)."""
    preprocessor = model.data_preprocessor
    channels = model.backbone.in_channels
    mean = getattr(preprocessor, 'mean', None)
    std = getattr(preprocessor, 'std', None)
    return (mean.flatten().tolist() if mean is not None else [0.0] * channels,
            std.flatten().tolist() if std is not None else [1.0] * channels)


def reconstruct_with_seed(model, imgs: torch.Tensor, seed: int = 0,
                          noise: Optional[torch.Tensor] = None
                          ) -> Tuple[Dict[str, torch.Tensor], np.ndarray]:
    """Reconstruct preprocessed images under a reproducible mask.

    Args:
        model: A :class:`MaskedAutoencoder`, in eval mode.
        imgs (torch.Tensor): (N, C, H, W) as the data preprocessor outputs them; H and W
            multiples of the patch size (rectangles are fine).
        seed (int): Seed of the mask when ``noise`` is None.
        noise (torch.Tensor, optional): (N, L) fixed noise (see :func:`mask_noise`).

    Returns:
        tuple: ``outputs`` of :meth:`MaskedAutoencoder.reconstruct` (on the CPU, with
        ``input``, the images themselves, added) and the uint8 ``panels``
        (N, 4, H, W, C) of :func:`reconstruction_panels`.
    """
    if noise is None:
        noise = mask_noise(model, imgs.shape[0], model.patch_grid(imgs), seed)
    outputs = model.reconstruct(imgs, noise=noise.to(imgs.device))
    outputs = {key: value.detach().float().cpu() for key, value in outputs.items()}
    outputs['input'] = imgs.detach().float().cpu()
    mean, std = preprocessor_mean_std(model)
    return outputs, reconstruction_panels(outputs['input'], outputs, mean, std)


def unreadable_images(image_paths: Sequence[str]) -> List[Tuple[str, str]]:
    """The files among ``image_paths`` that cannot be read or decoded as images (missing,
    corrupt, truncated JPEG...), as ``(path, reason)``; decoded as :func:`load_images_for_model`
    decodes them, so that a caller can report or leave them out before loading."""
    from mae_mm.datasets.transforms import LoadImageSafe
    loader = LoadImageSafe(on_error='raise')
    found = []
    for path in image_paths:
        try:
            loader._decode(path)
        except OSError as err:
            found.append((path, str(err)))
    return found


def load_images_for_model(model, image_paths: Sequence[str], img_size) -> torch.Tensor:
    """Read image files, resize to ``img_size`` (int or (H, W)), and normalise them exactly as
    the model's data preprocessor does in training. Returns (N, C, H, W)."""
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    # A temporary scope: called from a hook, this must not change the running job's scope.
    with DefaultScope.overwrite_default_scope('mae_mm'):
        pipeline = Compose([
            dict(type='LoadImageSafe', on_error='raise'),
            dict(type='mmpretrain.Resize', scale=(size[1], size[0]), backend='pillow',
                 interpolation='bicubic'),
            dict(type='mmpretrain.PackInputs'),
        ])
    samples = [pipeline(dict(img_path=path)) for path in image_paths]
    # Collated like training batches (default_collate stacks; a list would mean "views").
    batch = dict(inputs=torch.stack([s['inputs'] for s in samples]),
                 data_samples=[s['data_samples'] for s in samples])
    inputs = model.data_preprocessor(batch, training=False)['inputs']
    return inputs[0] if isinstance(inputs, (list, tuple)) else inputs


def draw_reconstructions(model, image_paths: Sequence[str], out_path: str, img_size=None,
                         seed: int = 0, title: Optional[str] = None) -> str:
    """Reconstruct ``image_paths`` with ``model`` (a :class:`MaskedAutoencoder`) and save the
    figure to ``out_path``; the mask is drawn from ``seed``, so figures are reproducible."""
    model.eval()
    img_size = img_size or model.backbone.img_size
    imgs = load_images_for_model(model, image_paths, img_size)
    _, panels = reconstruct_with_seed(model, imgs, seed=seed)
    return save_reconstruction_figure(panels, out_path, title=title,
                                      norm_pix=model.head.norm_pix)
