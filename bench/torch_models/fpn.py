"""Twin of models/fpn.ts and models/encoders/resnet.ts: segmentation_models.pytorch's FPN
decoder (Kirillov et al. 2019) over the shared encoders of parts.py (ResNet-18/34,
MobileNetV2). As the TypeScript model: batch norm where smp's segmentation blocks use
GroupNorm (same parameter count), crops after each x2 so odd sizes work."""
import torch.nn as nn, torch.nn.functional as F
from parts import conv_bn_act, encoder as make_encoder


def up_like(x, ref, factor, mode):
    x = F.interpolate(x, scale_factor=factor, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    return x[:, :, : ref.shape[2], : ref.shape[3]]


class SegBlock(nn.Module):
    """smp's SegmentationBlock: max(n, 1) x (3x3 conv, norm, ReLU), each followed by x2 bilinear while n > 0."""

    def __init__(self, i, o, n):
        super().__init__()
        self.n = n
        self.convs = nn.ModuleList([conv_bn_act(i if j == 0 else o, o, 3) for j in range(max(n, 1))])

    def forward(self, x, refs):
        for j, c in enumerate(self.convs):
            x = c(x)
            if j < self.n:
                x = up_like(x, refs[j], 2, "bilinear")
        return x


class FPN(nn.Module):
    def __init__(self, cin, cout, encoder="resnet18", pyramid_channels=128, segmentation_channels=64, dropout=0.2):
        super().__init__()
        self.encoder = make_encoder(encoder, cin)
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
