"""Optimizer wrappers and constructors registered in mae_mm's scope."""
from .layer_decay_constructor import (LayerDecayOptimWrapperConstructor, is_no_decay,
                                      vit_layer_id)
from .mixed_precision_optim_wrapper import MixedPrecisionOptimWrapper

__all__ = [
    'LayerDecayOptimWrapperConstructor', 'MixedPrecisionOptimWrapper', 'is_no_decay',
    'vit_layer_id'
]
