"""ResNet backbone: torchvision key names, shapes/strides, pretrained loading, freezing; FPN."""

import pytest
import torch

from selfocc_core.model.fpn import FPN
from selfocc_core.model.resnet import ResNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix):
    return [f"{prefix}.{s}" for s in BN]


def torchvision_resnet18_keys():
    """torchvision.models.resnet18().state_dict().keys(), written out from its naming scheme."""
    keys = ["conv1.weight", *_bn("bn1")]
    for layer in (1, 2, 3, 4):
        for block in (0, 1):
            p = f"layer{layer}.{block}"
            keys += [f"{p}.conv1.weight", *_bn(f"{p}.bn1"), f"{p}.conv2.weight", *_bn(f"{p}.bn2")]
            if layer > 1 and block == 0:
                keys += [f"{p}.downsample.0.weight", *_bn(f"{p}.downsample.1")]
    keys += ["fc.weight", "fc.bias"]
    return keys


def test_resnet18_state_dict_keys_match_torchvision():
    keys = list(ResNet(18).state_dict().keys())
    expected = torchvision_resnet18_keys()
    assert len(expected) == 122
    assert keys == expected


def test_resnet50_bottleneck_key_names_and_shapes():
    sd = ResNet(50).state_dict()
    assert sd["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer4.2.bn3.running_var"].shape == (2048,)
    assert sd["fc.weight"].shape == (1000, 2048)
    assert "layer3.5.conv2.weight" in sd and "layer3.6.conv2.weight" not in sd


@pytest.mark.parametrize("depth,channels", [(18, (128, 256, 512)), (50, (512, 1024, 2048))])
def test_output_shapes_and_strides(depth, channels):
    net = ResNet(depth, out_indices=(1, 2, 3)).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, c, 64 // s, 96 // s) for c, s in zip(channels, (8, 16, 32))]
    assert net.out_channels == channels and net.out_strides == (8, 16, 32)


def test_load_pretrained_roundtrip_and_errors(tmp_path):
    src = ResNet(18)
    torch.nn.init.normal_(src.layer3[1].conv2.weight)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    dst = ResNet(18, frozen_stages=1)
    dst.load_pretrained(path)
    torch.testing.assert_close(dst.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    assert not dst.layer1[0].conv1.weight.requires_grad  # freezing survives loading

    # a checkpoint wrapping the dict under "state_dict" and without fc also loads
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": sd}, tmp_path / "wrapped.pth")
    ResNet(18).load_pretrained(tmp_path / "wrapped.pth")

    bad = dict(src.state_dict())
    bad["layer9.weight"] = bad.pop("layer2.0.downsample.0.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as e:
        ResNet(18).load_pretrained(tmp_path / "bad.pth")
    assert "layer2.0.downsample.0.weight" in str(e.value) and "layer9.weight" in str(e.value)

    with pytest.raises(ValueError, match="shape mismatch|missing"):
        ResNet(34).load_pretrained(path)  # resnet18 weights into resnet34: missing blocks
    with pytest.raises(FileNotFoundError):
        ResNet(18).load_pretrained(tmp_path / "nope.pth")


def test_frozen_stages_and_norm_eval():
    net = ResNet(18, frozen_stages=1, norm_eval=True).train()
    assert not net.conv1.weight.requires_grad and not net.layer1[1].conv2.weight.requires_grad
    assert net.layer2[0].conv1.weight.requires_grad
    assert not net.bn1.training and not net.layer3[0].bn1.training
    net2 = ResNet(18, frozen_stages=-1, norm_eval=False).train()
    assert net2.conv1.weight.requires_grad and net2.layer1[0].bn1.training
    with pytest.raises(ValueError, match="depth"):
        ResNet(42)
    # stages after the last output are never run: no gradients requested, forward stops early
    short = ResNet(18, out_indices=(0, 1))
    assert not any(p.requires_grad for p in short.layer3.parameters())
    assert not any(p.requires_grad for p in short.fc.parameters())
    assert all(p.requires_grad for p in short.layer2.parameters())
    outs = short(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [64, 128]


def test_fpn_shapes_and_top_down_path():
    fpn = FPN((8, 16), 4, num_extra=1)
    c3, c4 = torch.randn(1, 8, 8, 12), torch.randn(1, 16, 4, 6)
    outs = fpn([c3, c4])
    assert [tuple(o.shape) for o in outs] == [(1, 4, 8, 12), (1, 4, 4, 6), (1, 4, 2, 3)]
    # the fine level depends on the coarse input (top-down), not vice versa
    outs2 = fpn([c3, c4 + 1.0])
    assert not torch.allclose(outs2[0], outs[0])
    outs3 = fpn([c3 + 1.0, c4])
    torch.testing.assert_close(outs3[1], outs[1])
