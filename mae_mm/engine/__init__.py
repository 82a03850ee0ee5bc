"""Training-time machinery: runners, hooks, optimizer wrappers and constructors."""
from .exact_resume_hook import ExactResumeHook
from .hooks import NonFiniteGuardHook, ReconstructionVisualizationHook
from .optimizers import *  # noqa: F401,F403
from .runner import MAEFlexibleRunner, MAERunner, build_runner

__all__ = ['ExactResumeHook', 'NonFiniteGuardHook', 'ReconstructionVisualizationHook',
           'MAEFlexibleRunner', 'MAERunner', 'build_runner']
