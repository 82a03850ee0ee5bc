# Fine-tuning of the small-scale study: the MAE encoder (set the checkpoint in
# model.backbone.init_cfg) with average-pooled patch tokens + fc_norm, a linear head,
# label smoothing, drop path, AdamW with layer-wise lr decay 0.75.
_base_ = ['./_fmnist_classification.py']

model = dict(
    backbone=dict(out_type='avg_featmap', final_norm=False, drop_path_rate=0.1),
    neck=None,
    head=dict(
        loss=dict(type='mmpretrain.LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=2e-5)))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.75))
