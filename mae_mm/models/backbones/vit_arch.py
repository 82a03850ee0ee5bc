"""ViT sizes: the arch presets of the paper and mmpretrain, by name or as a custom dict."""
from typing import Dict, Union

ARCH_ZOO: Dict[str, dict] = {
    'tiny': dict(embed_dims=192, num_layers=12, num_heads=3, feedforward_channels=768),
    'small': dict(embed_dims=384, num_layers=12, num_heads=6, feedforward_channels=1536),
    'base': dict(embed_dims=768, num_layers=12, num_heads=12, feedforward_channels=3072),
    'large': dict(embed_dims=1024, num_layers=24, num_heads=16, feedforward_channels=4096),
    'huge': dict(embed_dims=1280, num_layers=32, num_heads=16, feedforward_channels=5120),
}
ARCH_ALIASES = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large', 'h': 'huge'}


def resolve_arch(arch: Union[str, dict]) -> dict:
    """An arch name (``'b'``, ``'base'``...) or a custom dict -> the full settings dict."""
    if isinstance(arch, str):
        name = ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_ZOO:
            raise ValueError(f'arch={arch!r} is unknown: use one of {sorted(ARCH_ZOO)} '
                             f'(or {sorted(ARCH_ALIASES)}), or a dict with embed_dims, '
                             'num_layers, num_heads, feedforward_channels')
        return dict(ARCH_ZOO[name])
    arch = dict(arch)
    if 'feedforward_channels' not in arch and 'embed_dims' in arch:
        arch['feedforward_channels'] = int(arch['embed_dims'] * arch.pop('mlp_ratio', 4))
    missing = {'embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'} - set(arch)
    if missing:
        raise ValueError(f'custom arch dict lacks {sorted(missing)}: give embed_dims, '
                         'num_layers, num_heads and feedforward_channels (or mlp_ratio)')
    return arch
