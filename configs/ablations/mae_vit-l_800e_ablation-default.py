# The MAE paper's ablation setting (He et al. 2021, Table 1), stated once; every config in this
# folder inherits it and changes one field. This file is itself the default row of every table
# in Table 1 (84.9 FT / 73.5 LIN in the paper):
#   ViT-L/16 encoder, 800 epochs of pretraining (configs/mae/..._800e_in1k.py),
#   decoder depth 8, width 512 (the recipe's decoder),
#   random-size crop (0.2-1) + flip (the recipe's pipeline),
#   random masking, 75% (the recipe's backbone),
#   target: UNNORMALISED pixels -- Table 1's caption: "the reconstruction target is pixels
#   without normalization" -- unlike the recipes in configs/mae/, which keep norm_pix=True
#   (the paper's final choice, row (d) "pixel (w/ norm)": mae_vit-l_800e_target-pixel-norm.py).
_base_ = ['../mae/mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py']

model = dict(head=dict(norm_pix=False))
