# Training from scratch: the fine-tuning config with a randomly initialised encoder. Layer-wise
# lr decay (rate 1.0 = off) is a device for pretrained weights; damping the lower blocks of a
# random network would handicap the baseline, so it is the one setting that differs.
_base_ = ['./vit-mini-p4_fmnist-32px_finetune.py']

model = dict(backbone=dict(init_cfg=None))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=1.0))
