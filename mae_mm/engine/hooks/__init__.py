"""(filled by later modules)"""
from .nonfinite_guard_hook import NonFiniteGuardHook
from .reconstruction_visualization_hook import ReconstructionVisualizationHook

__all__ = ['NonFiniteGuardHook', 'ReconstructionVisualizationHook']
