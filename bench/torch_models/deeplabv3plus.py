"""Twin of models/deeplabv3plus.ts: DeepLabV3+ (Chen et al. 2018) over MobileNetV2 (written
out: torchvision may be absent) or ResNet-18/34, at output stride 16 (the last stage
keeps stride 1, without dilation, as the TypeScript encoders do) or 32.

ASPP: 1x1 conv, one dilated 3x3 conv per rate, image pooling (global mean, 1x1 conv), each
+ BN + ReLU; concat, 1x1 projection + BN + ReLU + dropout 0.1. Decoder: stride-4 features
1x1 -> 48 + BN + ReLU; ASPP output bilinearly upsampled to them, concat [aspp, low], two
separable 3x3 convs (depthwise + BN + ReLU, pointwise + BN + ReLU, as DeepLab's
split_separable_conv2d), 1x1 to the classes, bilinear x4 to the input.

  /usr/bin/python3 bench/torch_models.py deeplabv3plus --params           # the model
  /usr/bin/python3 bench/torch_models/parts.py mobilenet_v2                # its encoder alone
"""
import torch, torch.nn as nn, torch.nn.functional as F


from parts import conv_bn_act, ds_conv, encoder


class ASPP(nn.Module):
    def __init__(self, cin, c, rates):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_act(cin, c)] + [conv_bn_act(cin, c, 3, dilation=r) for r in rates])
        self.pool = conv_bn_act(cin, c)
        self.project = nn.Sequential(conv_bn_act(c * (len(rates) + 2), c), nn.Dropout(0.1))

    def forward(self, x):
        p = self.pool(x.mean((2, 3), keepdim=True)).expand(-1, -1, x.shape[2], x.shape[3])
        return self.project(torch.cat([b(x) for b in self.branches] + [p], 1))


class DeepLabV3Plus(nn.Module):
    def __init__(self, cin, classes, encoder="mobilenet_v2", output_stride=16, aspp_rates=(6, 12, 18), aspp_channels=128, decoder_channels=None):
        super().__init__()
        d = decoder_channels or aspp_channels
        self.encoder = globals()["encoder"](encoder, cin, output_stride)
        ch = self.encoder.channels
        self.aspp = ASPP(ch[4], aspp_channels, aspp_rates)
        self.low = conv_bn_act(ch[1], 48)
        self.decoder = nn.Sequential(ds_conv(aspp_channels + 48, d), ds_conv(d, d))
        self.head = nn.Conv2d(d, classes, 1)

    def forward(self, x):
        maps = self.encoder(x)
        low = self.low(maps[1])
        a = F.interpolate(self.aspp(maps[4]), size=low.shape[2:], mode="bilinear", align_corners=False)
        y = self.head(self.decoder(torch.cat([a, low], 1)))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)


def build(in_channels, out_channels, **o):
    if isinstance(o.get("aspp_rates"), str):  # --opt aspp_rates=6,12,18
        o["aspp_rates"] = [int(r) for r in o["aspp_rates"].split(",")]
    if o.get("decoder_channels") == "null":  # as in the YAML: aspp_channels
        o["decoder_channels"] = None
    return DeepLabV3Plus(in_channels, out_channels, **o)

