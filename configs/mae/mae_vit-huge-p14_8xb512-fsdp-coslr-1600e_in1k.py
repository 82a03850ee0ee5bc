# MAE ViT-H/14, 1600 epochs, sharded with FSDP (mmengine FlexibleRunner + FSDPStrategy): weights,
# gradients and AdamW state are split over the processes, for users who outgrow data parallelism.
# Same recipe as the AMP config it inherits; checkpoints are saved as full state dicts.
_base_ = ['./mae_vit-huge-p14_8xb512-amp-coslr-1600e_in1k.py']

runner_type = 'mae_mm.MAEFlexibleRunner'  # mmengine's FlexibleRunner + mae-mm's crash-safe checkpoints
strategy = dict(
    type='FSDPStrategy',
    model_wrapper=dict(
        # one FSDP unit per Transformer block (ViT-H blocks hold ~31M parameters)
        auto_wrap_policy=dict(
            type='torch.distributed.fsdp.wrap.size_based_auto_wrap_policy',
            min_num_params=int(1e7))),
    state_dict_cfg='full')
optim_wrapper = dict(use_fsdp=True)
