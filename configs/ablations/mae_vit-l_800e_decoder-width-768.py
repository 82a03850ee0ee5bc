# Paper ablation (He et al. 2021, Table 1b: decoder width), on the ablation setting: ViT-L/16, 800 epochs.
_base_ = ['../mae/mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py']

model = dict(neck=dict(decoder_embed_dim=768))
