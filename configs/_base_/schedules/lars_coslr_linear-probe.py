# MAE linear-probing optimisation (official main_linprobe.py; paper Table 10): LARS, lr = 0.1 x
# batch / 256 (6.4 at the global batch 16384), momentum 0.9, no weight decay, 10 warm-up epochs
# then cosine to 0, 90 epochs. The head's bias is excluded from the LARS trust ratio, as the
# official LARS does for every 1-D parameter. The frozen encoder has no trainable parameter:
# mae-mm's FrozenAwareOptimWrapperConstructor (mmengine's default constructor otherwise) reports
# the frozen parameters it leaves out in one log line, where mmengine logs one line each.
#
# Precision (docs/precision.md): bf16 autocast on GPUs with native bf16 (Ampere or newer) and on
# CPU; GPUs without bf16 (V100, T4): --cfg-options optim_wrapper.dtype=float16. No gradient
# clipping, as the official main_linprobe.py and mmpretrain's MAE linear-probe configs.
global_batch_size = 16384
lr = 0.1 * global_batch_size / 256
warmup_epochs = 10
max_epochs = 90

optim_wrapper = dict(
    type='MixedPrecisionOptimWrapper',
    loss_scale='dynamic',  # fp16 needs it; with bf16 it only skips an overflowing step
    dtype='bfloat16',
    optimizer=dict(type='mmpretrain.LARS', lr=lr, momentum=0.9, weight_decay=0.0),
    constructor='FrozenAwareOptimWrapperConstructor',
    paramwise_cfg=dict(custom_keys={'head.fc.bias': dict(lars_exclude=True)}))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

auto_scale_lr = dict(base_batch_size=global_batch_size)
