"""The attention kernel of mae-mm's Transformer blocks: ``softmax(q k^T / sqrt(d) + bias) v``.

On CUDA this is ``F.scaled_dot_product_attention``. On CPU (torch 2.14) its flash kernel is
slower in bf16 than in fp32, and slower than two plain matmuls for short sequences, so the
attention is computed in fp32 whatever the autocast dtype, by explicit matmuls up to
``CPU_EXPLICIT_ATTENTION_MAX_TOKENS`` tokens (the MAE encoder's 50) and by the fp32 flash kernel
beyond (the decoder's 197). A custom autograd function keeps only the inputs, in their own
dtype, for the backward pass (which upcasts them again), so memory is no higher than bf16
attention's.
"""
from typing import Optional

import torch
import torch.nn.functional as F

# Measured forward + backward, 2 threads, AVX-512: explicit is 2x faster at 50 tokens and still
# ahead at 150 (64-dim heads); flash wins from ~200 tokens with 32-dim heads.
CPU_EXPLICIT_ATTENTION_MAX_TOKENS = 128
# fp32 copies are made for this many bytes of q at a time (a few samples), so that they add
# little to the peak memory of a step.
_FP32_CHUNK_BYTES = 2**21


def _sample_chunks(q: torch.Tensor):
    """Slices of the batch whose fp32 queries take about ``_FP32_CHUNK_BYTES`` (the whole
    batch when the inputs are fp32 already: nothing is copied)."""
    if q.dtype == torch.float32:
        return [slice(None)]
    per_sample = q[0].numel() * 4
    step = max(1, _FP32_CHUNK_BYTES // max(per_sample, 1))
    return [slice(i, i + step) for i in range(0, q.shape[0], step)]


def _explicit(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether explicit matmuls (rather than the flash kernel) compute this attention."""
    return max(q.shape[-2], k.shape[-2]) <= CPU_EXPLICIT_ATTENTION_MAX_TOKENS


def _fp32(rows: slice, *tensors: Optional[torch.Tensor]):
    """fp32 copies of the batch ``rows`` of each (N, ...) tensor; None stays None, and a bias
    that is broadcast over the batch (fewer than 4 dims, or one sample) is taken whole."""
    return tuple(None if t is None
                 else (t[rows] if t.dim() == 4 and t.shape[0] > 1 else t).float()
                 for t in tensors)


def _probabilities(q: torch.Tensor, k: torch.Tensor,
                   attn_bias: Optional[torch.Tensor]) -> torch.Tensor:
    logits = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)
    if attn_bias is not None:
        logits = logits + attn_bias
    return logits.softmax(dim=-1)


class _CpuAttention(torch.autograd.Function):
    """fp32 attention of inputs of any float dtype, saving the inputs (not fp32 copies)."""

    @staticmethod
    def forward(ctx, q, k, v, attn_bias):
        explicit = _explicit(q, k)
        outs, lses = [], []
        with torch.autocast('cpu', enabled=False):
            for rows in _sample_chunks(q):
                q32, k32, v32, bias32 = _fp32(rows, q, k, v, attn_bias)
                if explicit:
                    outs.append((_probabilities(q32, k32, bias32) @ v32).to(q.dtype))
                else:
                    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                        q32, k32, v32, attn_mask=bias32)
                    outs.append(out.to(q.dtype))
                    lses.append(lse)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        ctx.save_for_backward(q, k, v, attn_bias, out, None if explicit else torch.cat(lses))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, attn_bias, out, logsumexp = ctx.saved_tensors
        grads = []
        with torch.autocast('cpu', enabled=False):
            for rows in _sample_chunks(q):
                q32, k32, v32, g32, bias32 = _fp32(rows, q, k, v, grad_out, attn_bias)
                if logsumexp is None:  # explicit: recompute the probabilities
                    probs = _probabilities(q32, k32, bias32)
                    grad_v = probs.transpose(-2, -1) @ g32
                    grad_probs = g32 @ v32.transpose(-2, -1)
                    grad_logits = probs * (grad_probs
                                           - (grad_probs * probs).sum(-1, keepdim=True))
                    scale = q.shape[-1]**-0.5
                    grad_q = (grad_logits @ k32) * scale
                    grad_k = (grad_logits.transpose(-2, -1) @ q32) * scale
                else:
                    grad_q, grad_k, grad_v = \
                        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                            g32, q32, k32, v32, out[rows].float(), logsumexp[rows], 0.0,
                            False, attn_mask=bias32)
                grads.append((grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype)))
        grad_q, grad_k, grad_v = (g[0] if len(g) == 1 else torch.cat(g) for g in zip(*grads))
        return grad_q, grad_k, grad_v, None


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 attn_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` with the fastest kernel for the device.

    Args:
        q (Tensor): (N, heads, Lq, head_dim) queries.
        k, v (Tensor): (N, heads, L, head_dim) keys and values.
        attn_bias (Tensor, optional): Additive bias broadcastable to (N, heads, Lq, L); a
            bias that needs a gradient takes the plain autograd path on CPU.

    Returns:
        Tensor: (N, heads, Lq, head_dim) in the dtype of ``q``.
    """
    if q.device.type != 'cpu':
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
    # Under torch.compile the plain graph is better: inductor fuses the casts into the kernels
    # around them and recomputes them in the backward instead of keeping fp32 copies.
    if (attn_bias is not None and attn_bias.requires_grad) or torch.compiler.is_compiling():
        with torch.autocast('cpu', enabled=False):
            q32, k32, v32, bias32 = _fp32(slice(None), q, k, v, attn_bias)
            if _explicit(q, k):
                out = _probabilities(q32, k32, bias32) @ v32
            else:
                out = F.scaled_dot_product_attention(q32, k32, v32, attn_mask=bias32)
        return out.to(q.dtype)
    return _CpuAttention.apply(q, k, v, attn_bias)
