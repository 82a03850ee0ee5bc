# MAE with a ViT-B/16 encoder and the paper's light decoder (512 wide, 8 blocks, 16 heads); twin
# of configs/_base_/models/mae_vit-base-p16.py. The preprocessor is mae-mm's, so that
# pretraining never imports mmpretrain.models.
from mae_mm.models import (MAEDataPreprocessor, MAEDecoder, MaskedAutoencoder, MaskedViT,
                           NormalizedPixelLoss, PixelReconstructionHead)

model = dict(
    type=MaskedAutoencoder,
    data_preprocessor=dict(
        type=MAEDataPreprocessor,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type=MaskedViT,
        arch='b',
        img_size=224,
        patch_size=16,
        mask_ratio=0.75,
        mask_strategy='random'),
    neck=dict(
        type=MAEDecoder,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16),
    head=dict(
        type=PixelReconstructionHead,
        norm_pix=True,
        loss=dict(type=NormalizedPixelLoss, criterion='L2')))
