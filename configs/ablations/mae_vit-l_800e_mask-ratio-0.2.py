# Paper ablation (He et al. 2021, Fig. 5: mask ratio), on the ablation default (mae_vit-l_800e_ablation-default.py:
# ViT-L/16, 800 epochs, decoder 8x512, random-size crop, random 75% masking, unnormalised pixels).
_base_ = ['./mae_vit-l_800e_ablation-default.py']

model = dict(backbone=dict(mask_ratio=0.2))
