"""Twin of models/attention_unet.ts: unet.py's U-Net (padded DoubleConvs, widths base*2^min(i,3),
max-pool down, x2 up by nearest/bilinear or a 2x2 transposed conv, cropped to the skip) with an
additive attention gate (Oktay et al. 2018) on every skip before the concat, as
LeeJunHyun/Image_Segmentation's Attention_block: g = the upsampled decoder map at the skip's
resolution, psi = sigmoid(BN(conv1x1(ReLU(BN(W_g g) + BN(W_x x))))), 1 channel; the skip is
multiplied by psi, then cat([gated skip, up]) and DoubleConv. F_int = skip channels // 2 (at
least 1). Convs followed by BN have no bias; without batch norm the gate convs have one."""
import torch.nn as nn, torch.nn.functional as F
from unet import UNet


class AttentionGate(nn.Module):
    def __init__(self, f_g, f_l, f_int, bn):
        super().__init__()
        norm = (lambda c: [nn.BatchNorm2d(c)]) if bn else (lambda c: [])
        self.W_g = nn.Sequential(nn.Conv2d(f_g, f_int, 1, bias=not bn), *norm(f_int))
        self.W_x = nn.Sequential(nn.Conv2d(f_l, f_int, 1, bias=not bn), *norm(f_int))
        self.psi = nn.Sequential(nn.Conv2d(f_int, 1, 1, bias=not bn), *norm(1), nn.Sigmoid())

    def forward(self, g, x):
        psi = self.psi(F.relu(self.W_g(g) + self.W_x(x)))
        return x * psi, psi


class AttentionUNet(UNet):
    def __init__(self, cin, cout, base=16, depth=4, up_mode="nearest", batch_norm=True):
        super().__init__(cin, cout, base, depth, up_mode, batch_norm)
        ch = [base * 2 ** min(i, 3) for i in range(depth + 1)]
        self.gates = nn.ModuleList([AttentionGate(ch[i + 1], ch[i], max(1, ch[i] // 2), batch_norm) for i in range(depth)])

    def skip(self, i, skip, up):
        return self.gates[i](up, skip)[0]


def build(in_channels, out_channels, **o):
    return AttentionUNet(in_channels, out_channels, **o)
