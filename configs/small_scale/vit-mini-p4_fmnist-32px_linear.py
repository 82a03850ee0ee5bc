# Linear probe: the frozen encoder's cls token (after the final norm), a BatchNorm without
# affine parameters (as the paper's probe) and a linear layer trained with SGD, no weight decay.
# Set model.backbone.init_cfg to the MAE checkpoint; init_cfg=None probes a random encoder.
_base_ = ['./_fmnist_classification.py']

model = dict(
    backbone=dict(out_type='cls_token', final_norm=True, frozen_stages=4),
    neck=dict(type='mmpretrain.ClsBatchNormNeck', input_features=64),
    head=dict(
        loss=dict(type='mmpretrain.CrossEntropyLoss'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.01)))

# 10k labelled training images, the same count as the raw-pixel logistic-regression bar.
train_dataloader = dict(batch_size=128, dataset=dict(subset_ratio=None, num_samples=10000))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0))
