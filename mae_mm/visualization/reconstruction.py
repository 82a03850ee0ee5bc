"""Reconstruction figures: original | masked | reconstruction | reconstruction + visible."""
from typing import Dict, Optional, Sequence

import numpy as np
import torch

COLUMNS = ('original', 'masked', 'reconstruction', 'recon. + visible')


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
        notes.append('norm-pix model: reconstruction de-normalised\n'
                     'with the hidden patches\' true mean/std')
    if notes:
        fig.suptitle('\n'.join(notes), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def load_images_for_model(model, image_paths: Sequence[str], img_size) -> torch.Tensor:
    """Read image files, resize to ``img_size`` (int or (H, W)), and normalise them exactly as
    the model's data preprocessor does in training. Returns (N, C, H, W)."""
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    init_default_scope('mae_mm')
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
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
    grid = (imgs.shape[-2] // model.backbone.patch_size,
            imgs.shape[-1] // model.backbone.patch_size)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(imgs.shape[0], grid[0] * grid[1], generator=generator)
    if model.backbone.mask_strategy != 'random':
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            noise = model.backbone.make_noise(imgs.shape[0], grid, torch.device('cpu'))
    outputs = model.reconstruct(imgs, noise=noise.to(imgs.device))
    preprocessor = model.data_preprocessor
    mean = preprocessor.mean.flatten().tolist() if preprocessor.mean is not None else [0.0] * 3
    std = preprocessor.std.flatten().tolist() if preprocessor.std is not None else [1.0] * 3
    panels = reconstruction_panels(imgs, outputs, mean, std)
    return save_reconstruction_figure(panels, out_path, title=title,
                                      norm_pix=model.head.norm_pix)
