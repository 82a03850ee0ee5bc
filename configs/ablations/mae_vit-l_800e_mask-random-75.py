# Paper ablation (He et al. 2021, Table 1f / Fig. 6: random masking, 75% (the default)), on the ablation setting: ViT-L/16, 800 epochs.
_base_ = ['../mae/mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py']

model = dict(backbone=dict(mask_strategy='random', mask_ratio=0.75))
