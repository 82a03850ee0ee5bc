# Paper ablation (He et al. 2021, Table 1e: random-size crop (the default)), on the ablation default (mae_vit-l_800e_ablation-default.py:
# ViT-L/16, 800 epochs, decoder 8x512, random-size crop, random 75% masking, unnormalised pixels).
_base_ = ['./mae_vit-l_800e_ablation-default.py']

# Same pipeline as the base config: RandomResizedCrop(224, scale 0.2-1) + flip.
