"""Twin of models/fast_scnn.ts: Fast-SCNN (Poudel et al. 2019) as MMSegmentation's FastSCNN
backbone + DepthwiseSeparableFCNHead, without the training-only auxiliary heads. Same
options and defaults as the TypeScript file. The pyramid bins use AdaptiveAvgPool2d (as
MMSeg's PPM); the TypeScript pooling equals it where the bins divide the map size and has
no parameters, so the counts are the same."""
import torch, torch.nn as nn, torch.nn.functional as F
from parts import InvertedResidual, conv_bn_act, ds_conv


class FastSCNN(nn.Module):
    def __init__(self, cin, cout, downsample_channels=(32, 48, 64), global_channels=(64, 96, 128), global_blocks=(3, 3, 3),
                 global_strides=(2, 2, 1), expand_ratio=6, pool_bins=(1, 2, 3, 6), fusion_channels=128, dropout=0.1, width=1):
        super().__init__()
        c = lambda n: max(1, int(n * width + 0.5))  # JavaScript's Math.round for positive n
        down, glob, fusion = [c(n) for n in downsample_channels], [c(n) for n in global_channels], c(fusion_channels)
        pool = max(1, glob[2] // 4)
        self.ltd = nn.Sequential(conv_bn_act(cin, down[0], 3, 2), ds_conv(down[0], down[1], 2), ds_conv(down[1], down[2], 2))
        blocks, prev = [], down[2]
        for ch, n, s in zip(glob, global_blocks, global_strides):
            for b in range(n):
                blocks.append(InvertedResidual(prev, ch, expand_ratio, s if b == 0 else 1))
                prev = ch
        self.gfe = nn.Sequential(*blocks)
        self.ppm = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn_act(glob[2], pool, 1)) for b in pool_bins])
        self.gfe_out = conv_bn_act(glob[2] + len(pool_bins) * pool, fusion, 3)
        self.ffm_lower = nn.Sequential(conv_bn_act(fusion, fusion, 3, groups=fusion), conv_bn_act(fusion, fusion, 1, act=None))
        self.ffm_higher = conv_bn_act(down[2], fusion, 1, act=None)
        self.head = nn.Sequential(ds_conv(fusion, fusion), ds_conv(fusion, fusion), nn.Dropout(dropout), nn.Conv2d(fusion, cout, 1))

    def forward(self, x):
        size = x.shape[2:]
        higher = self.ltd(x)
        y = self.gfe(higher)
        up = lambda t, s: F.interpolate(t, size=s, mode="bilinear", align_corners=False)
        if len(self.ppm):
            y = torch.cat([y] + [up(p(y), y.shape[2:]) for p in self.ppm], 1)
        lower = self.ffm_lower(up(self.gfe_out(y), higher.shape[2:]))
        y = F.relu(self.ffm_higher(higher) + lower)
        return up(self.head(y), size)


def build(in_channels, out_channels, **o):
    return FastSCNN(in_channels, out_channels, **o)
