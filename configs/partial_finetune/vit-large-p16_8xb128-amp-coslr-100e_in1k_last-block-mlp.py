# MAE partial fine-tuning of ViT-L/16, MLP variant (paper Fig. 9 / walkthrough 1.12): only the
# MLP (fc1, fc2) of the last block is trained, with fc_norm and the head; everything else,
# including that block's attention and LayerNorms, is frozen. Paper: 79.1 top-1, against 73.5
# for the linear probe and 81.0 for the whole last block. Add 'norm2' to
# trainable_block_parts to train the MLP sub-block's LayerNorm as well.
#
#   tools/dist_train.sh \
#       configs/partial_finetune/vit-large-p16_8xb128-amp-coslr-100e_in1k_last-block-mlp.py 8
_base_ = ['./vit-large-p16_8xb128-amp-coslr-100e_in1k_last-k-blocks.py']

model = dict(backbone=dict(trainable_blocks=1, trainable_block_parts=('mlp', )))
