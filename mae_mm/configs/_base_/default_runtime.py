# Runtime shared by every mae-mm recipe; pure-Python twin of configs/_base_/default_runtime.py
# (tests/test_configs/test_pure_python_configs.py keeps the two equal).
from mmengine.hooks import (CheckpointHook, DistSamplerSeedHook, IterTimerHook, LoggerHook,
                            ParamSchedulerHook)
from mmengine.visualization import LocalVisBackend, Visualizer

from mae_mm.engine import ExactResumeHook, MAERunner, NonFiniteGuardHook

default_scope = 'mae_mm'

# mae-mm's runner: mmengine's Runner with atomic checkpoint writes, auto-resume from the newest
# *complete* checkpoint, safe loading on torch >= 2.6 and grouped checkpoint key checks. Build it
# with mae_mm.engine.build_runner(cfg) (or mmengine's RUNNERS.build(cfg)); delete the key
# (`del runner_type` in a child config) to run on mmengine's stock Runner.
runner_type = MAERunner

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, interval=100),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=CheckpointHook, interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type=DistSamplerSeedHook),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type=LocalVisBackend)]
visualizer = dict(type=Visualizer, vis_backends=vis_backends)

log_processor = dict(window_size=10)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)

# NaN/Inf guard and exact resume (see the text config). A config that sets its own custom_hooks
# replaces this list: repeat these two there.
custom_hooks = [
    dict(type=NonFiniteGuardHook, max_consecutive=10),
    dict(type=ExactResumeHook),
]
