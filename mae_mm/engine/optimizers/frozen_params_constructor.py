"""Frozen parameters reported in one grouped log line instead of one line per parameter."""
import logging
import re
from typing import List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor

from mae_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

_NUMBERED = re.compile(r'^(.*\.)(\d+)(\.\*)$')


def summarize_frozen(named_params: Sequence[Tuple[str, bool]], limit: int = 8) -> str:
    """Name the frozen parameters compactly: a module whose parameters are all frozen is written
    ``module.*``, consecutive numbered siblings are merged (``backbone.blocks.0-4.*``).

    Args:
        named_params: ``(name, requires_grad)`` of every parameter of the model, in order.
        limit (int): At most this many entries; the rest are counted (``... and 3 more``).

    Returns:
        str: e.g. ``'backbone.*'`` or ``'backbone.cls_token, backbone.blocks.0-4.*'``.
    """
    names = [name for name, _ in named_params]
    frozen = {name for name, trainable in named_params if not trainable}

    def all_frozen(prefix: str) -> bool:
        inside = [n for n in names if n.startswith(prefix)]
        return bool(inside) and all(n in frozen for n in inside)

    entries: List[str] = []
    covered: set = set()
    for name in names:
        if name not in frozen or name in covered:
            continue
        parts = name.split('.')
        entry = name
        for depth in range(1, len(parts)):  # the shortest all-frozen module holding it
            prefix = '.'.join(parts[:depth]) + '.'
            if all_frozen(prefix):
                entry = prefix + '*'
                break
        covered.update(n for n in names if n == name or (entry.endswith('*')
                                                           and n.startswith(entry[:-1])))
        entries.append(entry)
    merged: List[list] = []  # [head, first, last] for numbered modules, else [entry]
    for entry in entries:  # blocks.0.*, blocks.1.*, ... -> blocks.0-4.*
        match = _NUMBERED.match(entry)
        if match:
            head, number = match.group(1), int(match.group(2))
            if merged and len(merged[-1]) == 3 and merged[-1][0] == head \
                    and merged[-1][2] + 1 == number:
                merged[-1][2] = number
            else:
                merged.append([head, number, number])
        else:
            merged.append([entry])
    merged = [item[0] if len(item) == 1 else
              f'{item[0]}{item[1]}{"" if item[1] == item[2] else f"-{item[2]}"}.*'
              for item in merged]
    if len(merged) > limit:
        merged = merged[:limit] + [f'... and {len(merged) - limit} more']
    return ', '.join(merged)


def log_frozen_parameters(module: nn.Module) -> int:
    """Log one line naming the parameters of ``module`` left out of the optimizer because
    ``requires_grad=False``; nothing when there are none. Returns their number."""
    named = [(name, param.requires_grad) for name, param in module.named_parameters()]
    count = sum(not trainable for _, trainable in named)
    if count:
        MMLogger.get_current_instance().info(
            f'{count} frozen parameters (requires_grad=False) are not optimized: '
            f'{summarize_frozen(named)}')
    return count


class _DropPerParameterFrozenWarnings(logging.Filter):
    """Drops mmengine's ``... is skipped since its requires_grad=False`` lines (only while
    :class:`FrozenAwareOptimWrapperConstructor` builds the parameter groups)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'since its requires_grad=False' not in record.getMessage()


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's ``DefaultOptimWrapperConstructor`` (same parameter groups, same
    ``paramwise_cfg``) that reports frozen parameters in one grouped line,
    ``N frozen parameters (requires_grad=False) are not optimized: backbone.*``, instead of one
    warning per parameter (``... is skipped since its requires_grad=False``: 78 lines for the
    toy linear probe's frozen ViT, hundreds for ViT-L).

    mmengine builds the groups as always; while it does, a filter on the current logger drops
    its per-parameter lines (and nothing else), and is removed afterwards. Without
    ``paramwise_cfg`` mmengine gives the optimizer ``model.parameters()`` (frozen ones
    included, unused) and logs nothing; this constructor does the same.

    Opt in with ``optim_wrapper=dict(constructor='FrozenAwareOptimWrapperConstructor', ...)``
    (``'mae_mm.FrozenAwareOptimWrapperConstructor'`` from another scope).
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[bool] = None) -> None:
        """Add the trainable parameters of ``module`` as mmengine does; log frozen ones once."""
        if prefix:  # mmengine's recursion into a child: already inside the filtered call
            return super().add_params(params, module, prefix=prefix,
                                      is_dcn_module=is_dcn_module)
        log_frozen_parameters(module)
        logger = MMLogger.get_current_instance()
        quiet = _DropPerParameterFrozenWarnings()
        logger.addFilter(quiet)
        try:
            super().add_params(params, module, prefix=prefix, is_dcn_module=is_dcn_module)
        finally:
            logger.removeFilter(quiet)
