# Paper ablation (He et al. 2021, Table 1e: random-size crop + color jitter), on the ablation default (mae_vit-l_800e_ablation-default.py:
# ViT-L/16, 800 epochs, decoder 8x512, random-size crop, random 75% masking, unnormalised pixels).
_base_ = ['./mae_vit-l_800e_ablation-default.py']

train_dataloader = dict(dataset=dict(pipeline=[
    # LoadImageSafe + mmpretrain's RandomResizedCrop(backend='pillow'), decoding only the crop:
    # mmpretrain's pixels exactly. Faster, not the same pixels (figures in docs/benchmarks.md,
    # "Data pipeline"): backend='cv2' (OpenCV's bicubic, mmpretrain's backend='cv2', not
    # antialiased) or, for photos over twice the output size, draft=True.
    dict(type='FastRandomResizedCrop', scale=224, crop_ratio_range=(0.2, 1.0),
         interpolation='bicubic'),
    dict(type='mmpretrain.RandomFlip', prob=0.5),
    dict(type='mmpretrain.ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='mmpretrain.PackInputs'),
]))
