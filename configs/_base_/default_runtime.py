# Runtime shared by every mae-mm config. Modules without a prefix resolve in mae_mm's scope,
# then in mmengine's; mmpretrain's need their prefix (``mmpretrain.PackInputs``).
default_scope = 'mae_mm'

# mae-mm's runner: mmengine's Runner with atomic checkpoint writes, auto-resume from the newest
# *complete* checkpoint (never over one it cannot read), safe loading on torch >= 2.6 and grouped
# checkpoint key checks. Delete this line to run on mmengine's stock Runner.
runner_type = 'mae_mm.MAERunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py switches to gloo on machines without CUDA.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)

log_processor = dict(window_size=10)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)

# Reliability of long runs. NonFiniteGuardHook skips updates with a NaN/Inf loss or gradient norm
# and stops a diverging run (10 in a row) with a checkpoint of its last good state;
# ExactResumeHook makes --resume continue exactly where the run stopped (random state re-derived
# from the iteration, data position inside an epoch). A config that sets its own custom_hooks
# replaces this list: repeat these two there.
custom_hooks = [
    dict(type='NonFiniteGuardHook', max_consecutive=10),
    dict(type='ExactResumeHook'),
]
