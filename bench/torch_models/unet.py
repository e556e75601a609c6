"""Twin of models/unet.ts (as ../shared/bench/torch_unet.py): padded DoubleConvs, widths
base*2^min(i,3), max-pool down, x2 up (nearest/bilinear, or a 2x2 transposed conv), skip first."""
import torch, torch.nn as nn, torch.nn.functional as F


def double_conv(i, o, bn):
    layers = []
    for a, b in ((i, o), (o, o)):
        layers += [nn.Conv2d(a, b, 3, padding=1, bias=not bn)] + ([nn.BatchNorm2d(b)] if bn else []) + [nn.ReLU(True)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    def __init__(self, cin, cout, base=16, depth=4, up_mode="nearest", batch_norm=True):
        super().__init__()
        ch = [base * 2 ** min(i, 3) for i in range(depth + 1)]
        self.depth, self.up_mode = depth, up_mode
        self.enc = nn.ModuleList([double_conv(cin, ch[0], batch_norm)] + [double_conv(ch[i - 1], ch[i], batch_norm) for i in range(1, depth + 1)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i + 1], 2, 2) for i in range(depth)]) if up_mode == "transpose" else None
        self.dec = nn.ModuleList([double_conv(ch[i] + ch[i + 1], ch[i], batch_norm) for i in range(depth)])
        self.head = nn.Conv2d(ch[0], cout, 1)

    def forward(self, x):
        skips = []
        x = self.enc[0](x)
        for i in range(1, self.depth + 1):
            skips.append(x)
            x = self.enc[i](F.max_pool2d(x, 2, ceil_mode=True))
        for i in range(self.depth - 1, -1, -1):
            if self.up is not None:
                x = self.up[i](x)
            else:
                x = F.interpolate(x, scale_factor=2, mode=self.up_mode, **({} if self.up_mode == "nearest" else {"align_corners": False}))
            x = x[:, :, : skips[i].shape[2], : skips[i].shape[3]]
            x = self.dec[i](torch.cat([self.skip(i, skips[i], x), x], 1))
        return self.head(x)

    def skip(self, i, skip, up):
        """The skip of level i as concatenated before its decoder (attention_unet.py gates it)."""
        return skip


def build(in_channels, out_channels, **o):
    return UNet(in_channels, out_channels, **o)
