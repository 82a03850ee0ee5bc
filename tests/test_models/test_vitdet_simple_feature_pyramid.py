"""SimpleFeaturePyramid: strides, layer layout, the computation of each level, errors."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_mm.models.necks import SimpleFeaturePyramid
from mae_mm.models.necks.simple_feature_pyramid import LayerNorm2d


def _channel_layer_norm(x, norm):
    """LayerNorm over channels at every pixel, written out."""
    mean = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight[:, None, None] \
        + norm.bias[:, None, None]


def _output_convs(x, stage):
    """The 1x1 conv + LN, 3x3 conv + LN that end every stage, written out."""
    conv1, norm1, conv3, norm3 = stage[-4:]
    x = _channel_layer_norm(F.conv2d(x, conv1.weight), norm1)
    return _channel_layer_norm(F.conv2d(x, conv3.weight, padding=1), norm3)


def test_strides_and_channels_of_the_pyramid():
    neck = SimpleFeaturePyramid(in_channels=64, out_channels=24, num_outs=5)
    x = torch.randn(2, 64, 8, 6)  # a stride-16 map
    outs = neck((torch.randn(2, 64, 8, 6), x))  # the last map of a backbone tuple is used
    assert [o.shape for o in outs] == [(2, 24, 32, 24), (2, 24, 16, 12), (2, 24, 8, 6),
                                       (2, 24, 4, 3), (2, 24, 2, 2)]
    assert torch.equal(neck(x)[0], outs[0])
    four_x = neck.stages[0]
    assert [type(m) for m in four_x[:4]] == [nn.ConvTranspose2d, LayerNorm2d, nn.GELU,
                                             nn.ConvTranspose2d]
    assert (four_x[0].out_channels, four_x[3].out_channels) == (32, 16)
    assert isinstance(neck.stages[3][0], nn.MaxPool2d)


def test_each_level_recomputed_from_its_definition():
    neck = SimpleFeaturePyramid(in_channels=16, out_channels=8, num_outs=5)
    with torch.no_grad():
        for module in neck.modules():
            if isinstance(module, nn.LayerNorm):  # non-trivial affine parameters
                module.weight.normal_()
                module.bias.normal_()
        x = torch.randn(1, 16, 6, 4)
        outs = neck(x)
        up4, up2, same, down2 = neck.stages
        deconv_a, norm, _, deconv_b = up4[:4]
        hidden = F.gelu(_channel_layer_norm(
            F.conv_transpose2d(x, deconv_a.weight, deconv_a.bias, stride=2), norm))
        level4 = F.conv_transpose2d(hidden, deconv_b.weight, deconv_b.bias, stride=2)
        expected = [
            _output_convs(level4, up4),
            _output_convs(F.conv_transpose2d(x, up2[0].weight, up2[0].bias, stride=2), up2),
            _output_convs(x, same),
            _output_convs(F.max_pool2d(x, 2), down2),
        ]
        expected.append(expected[-1][:, :, ::2, ::2])  # the extra level: every other pixel
        for out, exp in zip(outs, expected):
            torch.testing.assert_close(out, exp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kwargs,field', [
    (dict(scale_factors=(4.0, 3.0, 1.0)), 'scale_factors'),
    (dict(scale_factors=(1.0, 2.0)), 'scale_factors'),
    (dict(num_outs=3), 'num_outs'),
    (dict(in_channels=18), 'in_channels'),
])
def test_bad_settings_raise_one_line_errors(kwargs, field):
    settings = dict(in_channels=16)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=field) as error:
        SimpleFeaturePyramid(**settings)
    assert '\n' not in str(error.value)


def test_wrong_input_width_names_the_field():
    with pytest.raises(ValueError, match='neck.in_channels'):
        SimpleFeaturePyramid(in_channels=16)(torch.randn(1, 32, 4, 4))
