# Alias of mae/mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py (the paper's recipe).
_base_ = ['./mae/mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py']
