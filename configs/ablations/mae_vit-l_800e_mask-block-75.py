# Paper ablation (He et al. 2021, Table 1f / Fig. 6: block-wise masking, 75%), on the ablation default (mae_vit-l_800e_ablation-default.py:
# ViT-L/16, 800 epochs, decoder 8x512, random-size crop, random 75% masking, unnormalised pixels).
_base_ = ['./mae_vit-l_800e_ablation-default.py']

model = dict(backbone=dict(mask_strategy='block', mask_ratio=0.75))
