"""mae-mm's own registry scope, ``mae_mm``.

Every registry here is a direct child of the corresponding MMEngine root registry (not of
mmpretrain's), so that a config running in any scope (``mmdet``, ``mmseg``, ``mmpretrain``) can
reach a mae-mm module by prefix, ``type='mae_mm.MaskedViT'``: MMEngine resolves a foreign prefix
only among the root's direct children. ``locations`` makes registration lazy: the modules are
imported the first time a registry is searched.

Inside mae-mm's own configs (``default_scope='mae_mm'``), modules of mmengine itself (``AdamW``,
``CheckpointHook``, ``CosineAnnealingLR``...) resolve by walking up to the root; modules of
mmpretrain need their prefix (``mmpretrain.PackInputs``).
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

SCOPE = 'mae_mm'


def _child(name: str, parent: Registry, locations: tuple = ()) -> Registry:
    return Registry(name, parent=parent, scope=SCOPE, locations=list(locations))


# Runner-level components: mae-mm's runners and hooks, and mmengine's; the children exist so that
# building them while ``default_scope='mae_mm'`` finds a registry of that scope instead of warning
# and falling back.
RUNNERS = _child('runner', MMENGINE_RUNNERS, ('mae_mm.engine',))
RUNNER_CONSTRUCTORS = _child('runner constructor', MMENGINE_RUNNER_CONSTRUCTORS)
LOOPS = _child('loop', MMENGINE_LOOPS)
HOOKS = _child('hook', MMENGINE_HOOKS, ('mae_mm.engine',))
STRATEGIES = _child('strategy', MMENGINE_STRATEGIES)
LOG_PROCESSORS = _child('log processor', MMENGINE_LOG_PROCESSORS)

DATASETS = _child('dataset', MMENGINE_DATASETS, ('mae_mm.datasets',))
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS)
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, ('mae_mm.datasets.transforms',))

MODELS = _child('model', MMENGINE_MODELS, ('mae_mm.models',))
MODEL_WRAPPERS = _child('model_wrapper', MMENGINE_MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child('weight initializer', MMENGINE_WEIGHT_INITIALIZERS)

OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS)
OPTIM_WRAPPERS = _child('optim_wrapper', MMENGINE_OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                    ('mae_mm.engine.optimizers',))
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS)

METRICS = _child('metric', MMENGINE_METRICS, ('mae_mm.evaluation',))
EVALUATOR = _child('evaluator', MMENGINE_EVALUATOR)

VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS, ('mae_mm.visualization',))
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS)

ALL_REGISTRIES = (RUNNERS, RUNNER_CONSTRUCTORS, LOOPS, HOOKS, STRATEGIES, LOG_PROCESSORS,
                  DATASETS, DATA_SAMPLERS, TRANSFORMS, MODELS, MODEL_WRAPPERS,
                  WEIGHT_INITIALIZERS, OPTIMIZERS, OPTIM_WRAPPERS, OPTIM_WRAPPER_CONSTRUCTORS,
                  PARAM_SCHEDULERS, METRICS, EVALUATOR, VISUALIZERS, VISBACKENDS)
