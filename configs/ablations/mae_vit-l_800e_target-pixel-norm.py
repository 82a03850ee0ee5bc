# Paper ablation (He et al. 2021, Table 1d: pixels with per-patch normalisation (the recipes' target, the paper's final choice; not Table 1's default)), on the ablation default (mae_vit-l_800e_ablation-default.py:
# ViT-L/16, 800 epochs, decoder 8x512, random-size crop, random 75% masking, unnormalised pixels).
_base_ = ['./mae_vit-l_800e_ablation-default.py']

model = dict(head=dict(norm_pix=True))
