"""Pre-norm Transformer blocks with timm/official-MAE parameter names.

Keeping the names of the official checkpoints (``blocks.i.norm1``, ``attn.qkv``, ``mlp.fc1``...)
makes official MAE, timm and mae-mm checkpoints differ only by a prefix. Layers are plain
``nn.Module``s built directly (never looked up in a registry), so they are the same whichever
OpenMMLab scope builds the model that contains them.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class Attention(nn.Module):
    """Multi-head self-attention ``softmax(q k^T / sqrt(d) + bias) v``.

    Computed by ``F.scaled_dot_product_attention`` on every device, which picks the device's
    fused kernel.

    Args:
        dim (int): Token width.
        num_heads (int): Heads; ``dim`` must be divisible by it.
        qkv_bias (bool): Bias on the fused qkv projection (True in MAE).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'embed_dims={dim} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, L, C) -> (N, L, C); ``attn_bias``, broadcastable to (N, heads, L, L), is added to
        the scaled logits."""
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, L, head_dim)
        if attn_bias is not None and attn_bias.is_floating_point():
            attn_bias = attn_bias.to(q.dtype)  # an fp32 table under fp16/bf16 autocast
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # (N, heads, L, hd)
        return self.proj(x.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, each branch with drop path.

    Args:
        dim (int): Token width.
        num_heads (int): Attention heads.
        mlp_dim (int): Hidden width of the MLP.
        drop_path (float): Stochastic-depth probability of this block.
        qkv_bias (bool): Bias on qkv.
        norm_eps (float): LayerNorm epsilon (1e-6 in MAE).
        attn (nn.Module, optional): A replacement attention module (e.g. windowed attention
            with relative position for downstream backbones); same parameter prefix ``attn``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, drop_path: float = 0.0,
                 qkv_bias: bool = True, norm_eps: float = 1e-6,
                 attn: Optional[nn.Module] = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn if attn is not None else Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, C) -> (N, L, C), or (N, H, W, C) for a grid attention such as ViTDet's."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def layer_norm_eps(module: nn.Module) -> Optional[float]:
    """The eps of the first LayerNorm inside ``module`` (None without one)."""
    return next((m.eps for m in module.modules() if isinstance(m, nn.LayerNorm)), None)


def init_mae_weights(module: nn.Module) -> None:
    """The official MAE initialisation: Xavier-uniform Linear weights, zero biases, LN (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
