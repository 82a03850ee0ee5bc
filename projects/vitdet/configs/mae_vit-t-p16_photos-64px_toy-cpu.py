# Toy MAE pretraining for the downstream toy configs (ViTDet and UperNet *_toy-cpu.py): ViT-T
# ('t': 192 wide, 12 blocks) with the 16 px patches of the real recipes, on 64 px crops of the
# photographs bundled with scikit-image. A few minutes on a laptop CPU:
#
#   python tools/quickstart.py \
#       --config projects/vitdet/configs/mae_vit-t-p16_photos-64px_toy-cpu.py \
#       --work-dir work_dirs/mae_vit-t-p16_photos-64px_toy-cpu --iters 300
#
# (quickstart.py writes the photo crops to data/quickstart, trains, and draws reconstructions;
# the checkpoint is work_dirs/mae_vit-t-p16_photos-64px_toy-cpu/iter_300.pth.)
_base_ = ['../../../configs/quickstart/mae_vit-tiny-p4_1xb64-1000i_photos-32px.py']

model = dict(
    backbone=dict(arch='t', img_size=64, patch_size=16),
    neck=dict(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4))

train_dataloader = dict(
    batch_size=32,
    dataset=dict(pipeline=[
        dict(type='FastRandomResizedCrop', scale=64, crop_ratio_range=(0.2, 1.0),
             interpolation='bicubic'),
        dict(type='mmpretrain.RandomFlip', prob=0.5),
        dict(type='mmpretrain.PackInputs'),
    ]))
