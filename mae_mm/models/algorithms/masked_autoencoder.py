"""MaskedAutoencoder: the MAE algorithm as an MMEngine model."""
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from mmengine.logging import MessageHub
from mmengine.model import BaseModel

from mae_mm.registry import MODELS
from ..layers import layer_norm_eps, patchify, unpatchify


def _build(cfg: dict):
    """Build a component in mae_mm's scope unless its config names another."""
    cfg = dict(cfg)
    cfg.setdefault('_scope_', 'mae_mm')
    return MODELS.build(cfg)


def _fill_from_backbone(cfg: dict, component: str, derived: dict) -> dict:
    """Fill ``derived`` settings the component does not set; refuse ones that disagree."""
    cfg = dict(cfg)
    for key, value in derived.items():
        given = cfg.setdefault(key, value)
        normalised = tuple(given) if isinstance(given, (list, tuple)) else given
        if isinstance(value, tuple) and isinstance(normalised, int):
            normalised = (normalised, normalised)
        if normalised != value:
            raise ValueError(f'{component}.{key}={given!r} disagrees with the backbone '
                             f'({value!r}): remove {component}.{key} from the config, it is '
                             'derived from the backbone')
    return cfg


@MODELS.register_module()
class MaskedAutoencoder(BaseModel):
    """MAE (He et al., 2021): encode visible patches, decode all, score the masked ones.

    ``loss()`` and everything else that needs the loss go through :meth:`forward_loss`: backbone
    (masked) -> neck (decoder) -> head (target + loss on the backbone's mask). The neck's widths,
    patch grid and the head's patch size are derived from the backbone, so a config changes the
    image size or patch size in one place.

    Args:
        backbone (dict): Config of the encoder, e.g. :class:`MaskedViT`.
        neck (dict): Config of the decoder, e.g. :class:`MAEDecoder`.
        head (dict): Config of the head, e.g. :class:`PixelReconstructionHead`.
        data_preprocessor (dict, optional): e.g. ``mae_mm.MAEDataPreprocessor`` (or
            mmpretrain's ``SelfSupDataPreprocessor``, which takes the same keys).
        mask_seed (int, optional): Draw each sample's mask from a generator seeded by
            ``(mask_seed, iteration, sample_idx)`` instead of the global RNG. Masks then depend
            only on the sample and the step, not on how a batch is split over processes, so runs
            on 1 or N processes with the same global batch are identical. None (default): the
            usual per-process random stream (``randomness.diff_rank_seed`` gives each rank its
            own).
        compile (bool | dict): ``torch.compile`` :meth:`forward_loss` for ``loss()`` (encoder,
            decoder, loss; not the optimizer step), with these keyword arguments if a dict. It is
            compiled on the first training step, which then takes longer. The mask noise is
            drawn outside the compiled graph, so masks and losses are those of the eager model
            for the same seed. Use this rather than the Runner's ``compile=True``, which in
            MMEngine 0.10 also traces the optimizer step and fails there.
        init_cfg (dict, optional): MMEngine init config.
    """

    def __init__(self, backbone: dict, neck: dict, head: dict,
                 data_preprocessor: Optional[dict] = None, mask_seed: Optional[int] = None,
                 compile: Union[bool, dict] = False, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.mask_seed = mask_seed
        if not isinstance(compile, (bool, dict)):
            raise TypeError(f'model.compile={compile!r}: use True, False or a dict of '
                            'torch.compile arguments (e.g. dict(mode="max-autotune"))')
        # None: eager; otherwise the torch.compile keyword arguments ({} for compile=True).
        self.compile_kwargs = (None if compile is False
                               else {} if compile is True else dict(compile))
        self._compiled_forward_loss = None  # built on first use
        self.backbone = _build(backbone)
        if not getattr(self.backbone, 'mask_ratio', 0) > 0:
            raise ValueError('backbone.mask_ratio must be in (0, 1) for MAE pretraining, got '
                             f'{getattr(self.backbone, "mask_ratio", None)}: e.g. 0.75')
        patch, grid = self.backbone.patch_size, self.backbone.grid_size
        neck = dict(neck)
        num_patches = neck.pop('num_patches', None)  # mmpretrain's MAEPretrainDecoder keyword
        if num_patches is not None and num_patches != grid[0] * grid[1]:
            raise ValueError(f'neck.num_patches={num_patches} disagrees with the backbone '
                             f'({grid[0] * grid[1]} patches of a {grid[0]}x{grid[1]} grid): '
                             'remove neck.num_patches from the config, it is derived from the '
                             'backbone')
        self.neck = _build(_fill_from_backbone(neck, 'neck', dict(
            embed_dim=self.backbone.embed_dims, patch_size=patch,
            in_channels=self.backbone.in_channels, grid_size=grid)))
        self.head = _build(_fill_from_backbone(head, 'head', dict(patch_size=patch)))
        self._register_load_state_dict_pre_hook(self._accept_foreign_formats)

    def _accept_foreign_formats(self, state_dict, prefix, local_metadata=None, *args) -> None:
        """Let ``load_from`` take official MAE (``{'model': ...}``), timm, mmpretrain and Hugging
        Face ViTMAE checkpoints as they are: their keys are rewritten to mae-mm's before loading.

        A Hugging Face checkpoint's LayerNorm eps (``layer_norm_eps`` of its ``config.json``,
        which :func:`~mae_mm.utils.checkpoint.read_checkpoint` passes in the state dict's
        metadata; transformers' 1e-12 when absent) is compared with the model's: when they
        differ, one warning names the config fields to set. The modules are not changed."""
        if prefix or any(k.startswith(('backbone.', 'neck.')) for k in state_dict):
            return
        from mae_mm.utils.checkpoint import convert_state_dict, detect_format, norm_eps_note
        from mae_mm.utils.checkpoint.hf import METADATA_KEY
        try:
            fmt = detect_format(state_dict)
        except ValueError:
            return  # not a format we know: let the normal key report speak
        converted = convert_state_dict(state_dict, 'mae_mm', source=fmt).state_dict
        state_dict.clear()
        state_dict.update(converted)
        if fmt != 'hf':
            return
        config = local_metadata.get(METADATA_KEY) if isinstance(local_metadata, dict) else None
        note = norm_eps_note(config, {f'model.{name}.norm_eps': layer_norm_eps(getattr(self, name))
                                      for name in ('backbone', 'neck')})
        if note:
            from mmengine.logging import MMLogger
            MMLogger.get_current_instance().warning(note)

    @staticmethod
    def _images(inputs: Union[torch.Tensor, List[torch.Tensor]]) -> torch.Tensor:
        # SelfSupDataPreprocessor returns a list of views; MAE uses the first.
        return inputs[0] if isinstance(inputs, (list, tuple)) else inputs

    def forward(self, inputs, data_samples: Optional[list] = None, mode: str = 'tensor'):
        """MMEngine entry point: ``mode`` is 'loss', 'predict' (reconstructions) or 'tensor'."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.reconstruct(self._images(inputs))
        if mode == 'tensor':
            return self.backbone(self._images(inputs), mask=False)
        raise RuntimeError(f'invalid mode {mode!r}: use loss, predict or tensor')

    def patch_grid(self, imgs: torch.Tensor) -> Tuple[int, int]:
        """The (rows, cols) patch grid of ``imgs``, as the backbone's patch embedding sees it."""
        return self.backbone.patch_embed.grid(imgs)

    def forward_loss(self, imgs: torch.Tensor, noise: Optional[torch.Tensor] = None):
        """Encode, decode, score: the one loss path of training and of everything else.

        Args:
            imgs (Tensor): (N, C, H, W) images.
            noise (Tensor, optional): (N, L) per-patch noise fixing the mask (lowest kept);
                drawn by the backbone when None.

        Returns:
            tuple: ``loss`` (scalar, mean over the masked patches of the ``mask`` the backbone
            returns), ``pred`` (N, L, p*p*C), ``mask`` (N, L), 1 = masked.
        """
        latent, mask, ids_restore = self.backbone(imgs, mask=True, noise=noise)
        pred = self.neck(latent, ids_restore, self.patch_grid(imgs))  # (N, L, p*p*C)
        return self.head.loss(pred, imgs, mask), pred, mask

    def loss(self, inputs, data_samples: Optional[list] = None) -> Dict[str, torch.Tensor]:
        """The reconstruction loss of one batch, as MMEngine expects it."""
        imgs = self._images(inputs)
        if self.mask_seed is not None:
            noise = self._seeded_noise(imgs, data_samples)
        elif self.compile_kwargs is not None:  # drawn eagerly: the eager model's random stream
            noise = self.backbone.make_noise(imgs.shape[0], self.patch_grid(imgs), imgs.device)
        else:
            noise = None
        return dict(loss=self._forward_loss_fn()(imgs, noise)[0])

    def _forward_loss_fn(self):
        """``forward_loss``, compiled on first use when ``compile`` is set."""
        if self.compile_kwargs is None:
            return self.forward_loss
        if self._compiled_forward_loss is None:
            self._compiled_forward_loss = torch.compile(self.forward_loss, **self.compile_kwargs)
        return self._compiled_forward_loss

    def _seeded_noise(self, imgs: torch.Tensor, data_samples: Optional[list]) -> torch.Tensor:
        """Per-sample noise from ``(mask_seed, iteration, sample_idx)`` (see ``mask_seed``)."""
        if not data_samples or 'sample_idx' not in data_samples[0]:
            raise ValueError('model.mask_seed needs data samples with sample_idx (the default of '
                             'mmpretrain.PackInputs); remove mask_seed or pack sample_idx')
        step = MessageHub.get_current_instance().get_info('iter', 0)
        grid = self.patch_grid(imgs)
        rows = []
        with torch.random.fork_rng(devices=[]):
            for sample in data_samples:
                torch.manual_seed(hash((self.mask_seed, step, int(sample.sample_idx))) % 2**63)
                rows.append(self.backbone.make_noise(1, grid, torch.device('cpu')))
        return torch.cat(rows).to(imgs.device)

    def parse_losses(self, losses: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, dict]:
        """As MMEngine's, but the *logged* values are averaged over processes, so the log shows
        the loss of the global batch (the optimised loss stays the local one; DDP averages the
        gradients)."""
        loss, log_vars = super().parse_losses(losses)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            names = list(log_vars)
            values = torch.stack([log_vars[k].detach().float().reshape(()) for k in names])
            dist.all_reduce(values)
            values /= dist.get_world_size()
            log_vars = type(log_vars)(zip(names, values.unbind()))
        return loss, log_vars

    @torch.no_grad()
    def reconstruct(self, imgs: torch.Tensor,
                    noise: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Images of the reconstruction, in the preprocessor's (normalised) space.

        For ``norm_pix`` models the prediction is de-normalised with the mean and std of the
        *true* patches (hidden ones included), as in the official demo.

        Returns:
            dict: ``masked_input`` (hidden patches zeroed), ``reconstruction``, ``pasted``
            (visible patches from the input, hidden ones predicted) and ``mask`` (N, 1, H, W),
            1 = hidden; each (N, C, H, W).
        """
        _, pred, mask = self.forward_loss(imgs, noise)
        pred = pred.float()
        if self.head.norm_pix:
            mean, std = self.head.patch_statistics(imgs)
            pred = pred * std + mean
        p, channels, grid = self.backbone.patch_size, imgs.shape[1], self.patch_grid(imgs)
        mask_patches = mask.unsqueeze(-1).expand(-1, -1, p * p * channels)
        pixel_mask = unpatchify(mask_patches, p, grid, channels)
        reconstruction = unpatchify(pred, p, grid, channels)
        target = patchify(imgs.float(), p)
        pasted = unpatchify(target * (1 - mask_patches) + pred * mask_patches, p, grid, channels)
        return dict(masked_input=imgs.float() * (1 - pixel_mask), reconstruction=reconstruction,
                    pasted=pasted, mask=pixel_mask[:, :1])
