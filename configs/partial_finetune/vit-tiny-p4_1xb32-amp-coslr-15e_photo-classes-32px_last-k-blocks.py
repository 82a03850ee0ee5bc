# CPU toy run of partial fine-tuning: the toy fine-tuning with only the last k of the 6 blocks
# trained (k = model.backbone.trainable_blocks; add trainable_block_parts=('mlp',) for the MLP
# variant). See the toy fine-tuning config for how the checkpoint and folder are made.
#   python tools/train.py \
#       configs/partial_finetune/vit-tiny-p4_1xb32-amp-coslr-15e_photo-classes-32px_last-k-blocks.py
#   ... --cfg-options model.backbone.trainable_block_parts="('mlp',)"
_base_ = ['../finetune/vit-tiny-p4_1xb32-amp-coslr-15e_photo-classes-32px.py']

model = dict(backbone=dict(type='PartialFinetuneViT', trainable_blocks=1))
find_unused_parameters = False
