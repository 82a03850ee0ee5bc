"""Linear probing: the encoder is frozen (no gradient, eval mode, unchanged by a LARS step) and
the BatchNorm probe without affine uses batch statistics in training, running ones in eval."""
import torch
from mmengine.optim import build_optim_wrapper

from mae_mm.registry import MODELS
from ._tiny_cfg import NUM_CLASSES, tiny_eval_cfg

CONFIG = 'configs/linear_probe/vit-base-p16_8xb2048-amp-lars-coslr-90e_in1k.py'


def _probe(checkpoint, labelled_photos, tmp_path):
    cfg = tiny_eval_cfg(CONFIG, checkpoint, labelled_photos['train'], labelled_photos['val'],
                        tmp_path)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def _batch(n=6):
    from mmpretrain.structures import DataSample
    images = torch.randn(n, 3, 32, 32)
    samples = [DataSample().set_gt_label(i % NUM_CLASSES) for i in range(n)]
    return images, samples


def test_encoder_frozen_in_eval_mode_and_untouched_by_training(tiny_checkpoints,
                                                               labelled_photos, tmp_path):
    cfg, model = _probe(tiny_checkpoints['mae_mm'], labelled_photos, tmp_path)
    model.train()
    backbone = model.backbone
    assert all(not p.requires_grad for p in backbone.parameters())
    # Every computing module is in eval mode (dropout, drop path, any norm statistics); only the
    # containers (the backbone itself, its block list) keep the flag of the model.
    in_train_mode = [n for n, m in backbone.named_modules() if m.training]
    assert in_train_mode == ['', 'blocks'], in_train_mode
    assert model.neck.training and model.head.training
    bn = model.neck.bn
    assert bn.weight is None and bn.bias is None and bn.eps == 1e-6  # BN without affine

    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    trained = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    assert trained == {id(p) for p in model.head.parameters()}
    excluded = [p for g in wrapper.optimizer.param_groups if g.get('lars_exclude')
                for p in g['params']]
    assert len(excluded) == 1 and excluded[0] is model.head.fc.bias  # as official LARS: 1-D

    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head_before = model.head.fc.weight.detach().clone()
    images, samples = _batch()
    with wrapper.optim_context(model):
        losses = model(images, samples, mode='loss')
    wrapper.backward(losses['loss'])
    assert all(p.grad is None for p in backbone.parameters())
    assert model.head.fc.weight.grad.abs().sum() > 0
    wrapper.step()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.head.fc.weight, head_before)


def test_batchnorm_probe_statistics(tiny_checkpoints, labelled_photos, tmp_path):
    _, model = _probe(tiny_checkpoints['mae_mm'], labelled_photos, tmp_path)
    bn = model.neck.bn
    images, _ = _batch(8)
    model.train()
    with torch.no_grad():
        features = model.backbone(images)[0]  # cls token after the final norm, (8, D)
        normed = model.neck((features, ))[0]
    # Training: normalised with the batch statistics (biased variance) ...
    mean, var = features.mean(0), features.var(0, unbiased=False)
    torch.testing.assert_close(normed, (features - mean) / torch.sqrt(var + 1e-6))
    # ... and the running statistics move by momentum 0.1 from (0, 1), with unbiased variance.
    torch.testing.assert_close(bn.running_mean, 0.1 * mean)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * features.var(0, unbiased=True))
    assert bn.num_batches_tracked.item() == 1

    # Evaluation: the running statistics are used and left unchanged.
    running_mean, running_var = bn.running_mean.clone(), bn.running_var.clone()
    model.eval()
    with torch.no_grad():
        other = model.backbone(images[:3])[0]
        normed = model.neck((other, ))[0]
    torch.testing.assert_close(normed, (other - running_mean) / torch.sqrt(running_var + 1e-6))
    assert torch.equal(bn.running_mean, running_mean) and bn.num_batches_tracked.item() == 1
