"""NormalizedPixelLoss: the reconstruction error of MAE, on masked patches only."""
import torch
import torch.nn as nn

from mae_mm.registry import MODELS


@MODELS.register_module()
class NormalizedPixelLoss(nn.Module):
    """Per-patch mean error, averaged over masked patches.

    ``loss = sum_i(mask_i * mean_j err(pred_ij, target_ij)) / sum_i(mask_i)``, with
    ``err`` squared (``'L2'``, the paper's) or absolute (``'L1'``). Visible patches have weight
    0 and so get no gradient. The target is normalised per patch by
    :class:`PixelReconstructionHead` when ``norm_pix`` is on (hence the name); computed in fp32
    so that a bf16/fp16 forward does not lose the small differences.

    Args:
        criterion (str): 'L2' or 'L1'.
        loss_weight (float): Multiplier of the loss.
    """

    def __init__(self, criterion: str = 'L2', loss_weight: float = 1.0):
        super().__init__()
        if criterion not in ('L1', 'L2'):
            raise ValueError(f"criterion={criterion!r} is unknown: use 'L2' or 'L1'")
        self.criterion = criterion
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Args: pred, target (N, L, K); mask (N, L), 1 = masked. Returns a scalar."""
        diff = pred.float() - target.float()
        err = diff.pow(2) if self.criterion == 'L2' else diff.abs()
        per_patch = err.mean(dim=-1)  # (N, L)
        mask = mask.float()
        return self.loss_weight * (per_patch * mask).sum() / mask.sum().clamp(min=1.0)
