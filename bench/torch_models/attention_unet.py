"""Twin of models/attention_unet.ts: unet.py's U-Net (padded DoubleConvs, widths base*2^min(i,3),
max-pool down, x2 up by nearest/bilinear or a 2x2 transposed conv, cropped to the skip) with an
additive attention gate (Oktay et al. 2018) on every skip before the concat, as
LeeJunHyun/Image_Segmentation's Attention_block: g = the upsampled decoder map at the skip's
resolution, psi = sigmoid(BN(conv1x1(ReLU(BN(W_g g) + BN(W_x x))))), 1 channel; the skip is
multiplied by psi, then cat([gated skip, up]) and DoubleConv. F_int = skip channels // 2 (at
least 1). Convs followed by BN have no bias; without batch norm the gate convs have one."""
import importlib.util, os
import torch, torch.nn as nn, torch.nn.functional as F

_spec = importlib.util.spec_from_file_location("_unet_twin", os.path.join(os.path.dirname(os.path.abspath(__file__)), "unet.py"))
_unet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_unet)


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


class AttentionUNet(_unet.UNet):
    def __init__(self, cin, cout, base=16, depth=4, up_mode="nearest", batch_norm=True):
        super().__init__(cin, cout, base, depth, up_mode, batch_norm)
        ch = [base * 2 ** min(i, 3) for i in range(depth + 1)]
        self.gates = nn.ModuleList([AttentionGate(ch[i + 1], ch[i], max(1, ch[i] // 2), batch_norm) for i in range(depth)])

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
            gated, _ = self.gates[i](x, skips[i])
            x = self.dec[i](torch.cat([gated, x], 1))
        return self.head(x)


def build(in_channels, out_channels, **o):
    return AttentionUNet(in_channels, out_channels, **o)
