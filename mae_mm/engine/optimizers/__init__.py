"""Optimizer wrappers and constructors registered in mae_mm's scope."""
from .frozen_params_constructor import (FrozenAwareOptimWrapperConstructor,
                                         log_frozen_parameters, summarize_frozen)
from .layer_decay_constructor import (LayerDecayOptimWrapperConstructor, is_no_decay,
                                      vit_layer_id)
from .mixed_precision_optim_wrapper import MixedPrecisionOptimWrapper

__all__ = [
    'FrozenAwareOptimWrapperConstructor', 'LayerDecayOptimWrapperConstructor',
    'MixedPrecisionOptimWrapper', 'is_no_decay', 'log_frozen_parameters', 'summarize_frozen',
    'vit_layer_id'
]
