# Paper ablation (He et al. 2021, Table 1e: random-size crop (the default)), on the ablation setting: ViT-L/16, 800 epochs.
_base_ = ['../mae/mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py']

# Same pipeline as the base config: RandomResizedCrop(224, scale 0.2-1) + flip.
