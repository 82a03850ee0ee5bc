# MAE with a ViT-B/16 encoder and the paper's light decoder (512 wide, 8 blocks, 16 heads).
# The decoder's widths and patch grid, and the head's patch size, are derived from the backbone.
# The preprocessor is mae-mm's (same output as mmpretrain.SelfSupDataPreprocessor), so that
# pretraining never imports mmpretrain.models (docs/installation.md, transformers >= 4.57).
model = dict(
    type='MaskedAutoencoder',
    data_preprocessor=dict(
        type='mae_mm.MAEDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='MaskedViT',
        arch='b',
        img_size=224,
        patch_size=16,
        mask_ratio=0.75,
        mask_strategy='random'),
    neck=dict(
        type='MAEDecoder',
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16),
    head=dict(
        type='PixelReconstructionHead',
        norm_pix=True,
        loss=dict(type='NormalizedPixelLoss', criterion='L2')))
