"""Twin of models/fpn.ts and models/encoders/resnet.ts: segmentation_models.pytorch's FPN
decoder (Kirillov et al. 2019) over a torchvision ResNet-18/34 written out here (torchvision
may not be installed). As the TypeScript model: batch norm where smp's segmentation blocks
use GroupNorm (same parameter count), crops after each x2 so odd sizes work."""
import torch.nn as nn, torch.nn.functional as F


def conv_bn(i, o, k, s):
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, bias=False), nn.BatchNorm2d(o))


class BasicBlock(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.c1, self.c2 = conv_bn(i, o, 3, s), conv_bn(o, o, 3, 1)
        self.down = conv_bn(i, o, 1, s) if s != 1 or i != o else None

    def forward(self, x):
        y = self.c2(F.relu(self.c1(x)))
        return F.relu(y + (self.down(x) if self.down is not None else x))


class ResNet(nn.Module):
    """torchvision's ResNet without avgpool and fc; forward returns the maps at strides 2, 4, 8, 16, 32."""
    BLOCKS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}
    channels = [64, 64, 128, 256, 512]

    def __init__(self, name, cin):
        super().__init__()
        self.stem = conv_bn(cin, 64, 7, 2)
        layers, i = [], 64
        for o, n, s in zip([64, 128, 256, 512], self.BLOCKS[name], [1, 2, 2, 2]):
            layers.append(nn.Sequential(*[BasicBlock(i if b == 0 else o, o, s if b == 0 else 1) for b in range(n)]))
            i = o
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        x = F.relu(self.stem(x))
        maps = [x]
        x = F.max_pool2d(x, 3, 2, 1)
        for layer in self.layers:
            x = layer(x)
            maps.append(x)
        return maps


def up_like(x, ref, factor, mode):
    x = F.interpolate(x, scale_factor=factor, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    return x[:, :, : ref.shape[2], : ref.shape[3]]


class SegBlock(nn.Module):
    """smp's SegmentationBlock: max(n, 1) x (3x3 conv, norm, ReLU), each followed by x2 bilinear while n > 0."""

    def __init__(self, i, o, n):
        super().__init__()
        self.n = n
        self.convs = nn.ModuleList([conv_bn(i if j == 0 else o, o, 3, 1) for j in range(max(n, 1))])

    def forward(self, x, refs):
        for j, c in enumerate(self.convs):
            x = F.relu(c(x))
            if j < self.n:
                x = up_like(x, refs[j], 2, "bilinear")
        return x


class FPN(nn.Module):
    def __init__(self, cin, cout, encoder="resnet18", pyramid_channels=128, segmentation_channels=64, dropout=0.2):
        super().__init__()
        if encoder not in ResNet.BLOCKS:
            raise SystemExit(f"fpn twin: encoder '{encoder}' is not written here; expected one of {', '.join(ResNet.BLOCKS)}")
        self.encoder = ResNet(encoder, cin)
        p, s = pyramid_channels, segmentation_channels
        # Laterals on the stride 32, 16, 8, 4 maps (smp's p5 conv and FPNBlock skip convs), with bias.
        self.lateral = nn.ModuleList([nn.Conv2d(c, p, 1) for c in self.encoder.channels[:0:-1]])
        self.seg = nn.ModuleList([SegBlock(p, s, n) for n in (3, 2, 1, 0)])
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(s, cout, 1)

    def forward(self, x):
        c = self.encoder(x)[:0:-1]  # stride 32, 16, 8, 4
        ps = [self.lateral[0](c[0])]
        for lat, skip in zip(self.lateral[1:], c[1:]):
            ps.append(up_like(ps[-1], skip, 2, "nearest") + lat(skip))
        y = sum(blk(p, ps[k + 1:]) for k, (blk, p) in enumerate(zip(self.seg, ps)))
        return up_like(self.head(self.dropout(y)), x, 4, "bilinear")


def build(in_channels, out_channels, **o):
    return FPN(in_channels, out_channels, **o)
