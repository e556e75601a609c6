"""Blocks and encoders the PyTorch twins share, as the TypeScript models share
models/layers/mobilenet_parts.ts and models/encoders/: conv + BN + activation, the
depthwise-separable conv, MobileNetV2's inverted residual, and the MobileNetV2 and
ResNet-18/34 encoders (written out: torchvision may be absent), at output stride 32 or 16
(the last stage keeps stride 1, without dilation, as the TypeScript encoders do).

  /usr/bin/python3 bench/torch_models/parts.py mobilenet_v2 [in_channels]   # an encoder's parameter count
"""
import sys
import torch.nn as nn, torch.nn.functional as F


def conv_bn_act(cin, cout, k=1, stride=1, groups=1, dilation=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, dilation * (k // 2), dilation=dilation, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act(inplace=True)] if act else []))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (none when t = 1), 3x3 depthwise, 1x1 linear project."""

    def __init__(self, cin, cout, t, stride):
        super().__init__()
        hidden = cin * t
        layers = [conv_bn_act(cin, hidden, act=nn.ReLU6)] if t != 1 else []
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn_act(hidden, cout, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


# (t, c, n, s) of Sandler et al. 2018, Table 2.
MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2().features[:-1] (no 1280-channel conv); maps at strides 2..32."""
    channels = [16, 24, 32, 96, 320]

    def __init__(self, cin, output_stride=32):
        super().__init__()
        self.stem = conv_bn_act(cin, 32, 3, 2, act=nn.ReLU6)
        self.stages, c = nn.ModuleList(), 32
        for i, (t, cout, n, s) in enumerate(MOBILENET_V2):
            if i == 5 and output_stride == 16:
                s = 1  # no dilation, as in the TypeScript encoder
            self.stages.append(nn.Sequential(*[InvertedResidual(c if j == 0 else cout, cout, t, s if j == 0 else 1) for j in range(n)]))
            c = cout

    def forward(self, x):
        x, maps = self.stem(x), []
        for i, s in enumerate(self.stages):
            x = s(x)
            if i in (0, 1, 2, 4, 6):
                maps.append(x)
        return maps


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn_act(cin, cout, 3, stride), conv_bn_act(cout, cout, 3, act=None))
        self.down = conv_bn_act(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None

    def forward(self, x):
        return F.relu(self.body(x) + (self.down(x) if self.down is not None else x))


class ResNet(nn.Module):
    """torchvision's resnet18/34 without avgpool and fc; maps at strides 2..32."""

    def __init__(self, cin, blocks, output_stride=32):
        super().__init__()
        self.channels = [64, 64, 128, 256, 512]
        self.stem = conv_bn_act(cin, 64, 7, 2)
        self.stages, c = nn.ModuleList(), 64
        for i, (cout, n) in enumerate(zip([64, 128, 256, 512], blocks)):
            s = 1 if i == 0 or (i == 3 and output_stride == 16) else 2
            self.stages.append(nn.Sequential(*[BasicBlock(c if j == 0 else cout, cout, s if j == 0 else 1) for j in range(n)]))
            c = cout

    def forward(self, x):
        x = self.stem(x)
        maps = [x]
        x = F.max_pool2d(x, 3, 2, 1)
        for s in self.stages:
            x = s(x)
            maps.append(x)
        return maps


def encoder(name, cin, output_stride=32):
    if name == "mobilenet_v2":
        return MobileNetV2(cin, output_stride)
    return ResNet(cin, {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}[name], output_stride)


def ds_conv(cin, cout, stride=1):
    """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU (mobilenet_parts.ts dsConv)."""
    return nn.Sequential(conv_bn_act(cin, cin, 3, stride, groups=cin), conv_bn_act(cin, cout))


if __name__ == "__main__":
    e = encoder(sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2", int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    print(sum(p.numel() for p in e.parameters() if p.requires_grad))
