# MAE partial fine-tuning of ViT-B/16: only the last k blocks (k = trainable_blocks, 0..12),
# fc_norm and the head are trained, with the ViT-B fine-tuning recipe (AdamW lr 2e-3, layer
# decay 0.65, drop path 0.1, 100 epochs). See the ViT-L config for the paper's numbers.
#
#   tools/dist_train.sh \
#       configs/partial_finetune/vit-base-p16_8xb128-amp-coslr-100e_in1k_last-k-blocks.py 8 \
#       --cfg-options model.backbone.trainable_blocks=2
_base_ = ['../finetune/vit-base-p16_8xb128-amp-coslr-100e_in1k.py']

model = dict(backbone=dict(type='PartialFinetuneViT', trainable_blocks=1))
find_unused_parameters = False
