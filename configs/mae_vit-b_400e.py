# Alias of mae/mae_vit-base-p16_8xb512-amp-coslr-400e_in1k.py (the paper's recipe).
_base_ = ['./mae/mae_vit-base-p16_8xb512-amp-coslr-400e_in1k.py']
