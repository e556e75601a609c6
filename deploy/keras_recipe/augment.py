"""The project's paired augmentation (pipeline/transforms.ts) in numpy: scale, crop, flips and
rotation folded into one affine map from output to source pixels, sampled once (bilinear with
edge clamping for the image, nearest for the mask; pixels from outside the source are 0 in the
image and the ignore index in the mask); then brightness, contrast, saturation and hue folded
into one colour matrix, gaussian noise and clamping to 0..255, on the image only (where it came
from the source). The draws come from numpy, not the project's mulberry32: the same
distributions, not the same samples.
"""
import math

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])


def chance(rng, p):
    return p >= 1 or (p > 0 and rng.random() < p)


def uniform(rng, a, b):
    return a + (b - a) * rng.random()


def rand_int(rng, n):
    return int(math.floor(rng.random() * n))


def crop_offset(rng, scaled, out):
    slack = math.floor(abs(scaled - out))
    k = rand_int(rng, slack + 1)
    return k if scaled >= out else -k


def max_class_ratio(mask, plan, ignore):
    h, w = mask.shape
    ys = np.floor((np.arange(plan["out_h"]) + 0.5 + plan["oy"]) / plan["scale"]).astype(int)
    xs = np.floor((np.arange(plan["out_w"]) + 0.5 + plan["ox"]) / plan["scale"]).astype(int)
    ys, xs = ys[(ys >= 0) & (ys < h)], xs[(xs >= 0) & (xs < w)]
    v = mask[ys[:, None], xs[None, :]].ravel()
    v = v[v != ignore]
    counts = np.unique(v, return_counts=True)[1]
    return 1 if len(counts) < 2 else counts.max() / counts.sum()


def plan_geometry(mask, aug, rng, ignore):
    """planGeometry: the output size is the crop size if set, else the input's (data.size)."""
    h, w = mask.shape
    plan = {"out_w": w, "out_h": h, "scale": 1.0, "ox": 0, "oy": 0, "hflip": False, "vflip": False, "angle": 0.0}
    if aug.get("scale") and chance(rng, aug["scale"].get("p", 1)):
        lo, hi = aug["scale"].get("range", [0.75, 1.25])
        plan["scale"] = uniform(rng, lo, hi)
    crop = aug.get("crop")
    if crop:
        plan["out_h"], plan["out_w"] = crop["size"]
    sw, sh = w * plan["scale"], h * plan["scale"]
    ratio = crop.get("cat_max_ratio", 1) if crop else 1
    tries = 10 if crop and ratio < 1 else 1
    for _ in range(tries):
        plan["ox"] = crop_offset(rng, sw, plan["out_w"])
        plan["oy"] = crop_offset(rng, sh, plan["out_h"])
        if tries == 1 or max_class_ratio(mask, plan, ignore) < ratio:
            break
    if aug.get("hflip"):
        plan["hflip"] = chance(rng, aug["hflip"].get("p", 0.5))
    if aug.get("vflip"):
        plan["vflip"] = chance(rng, aug["vflip"].get("p", 0.5))
    if aug.get("rotate") and chance(rng, aug["rotate"].get("p", 0.5)):
        d = aug["rotate"].get("degrees", 30)
        plan["angle"] = uniform(rng, -d, d) * math.pi / 180
    return plan


def plan_to_affine(p):
    """planToAffine: output pixel index -> source pixel index, (ax, bx, cx, ay, by, cy)."""
    cx, cy = p["out_w"] / 2, p["out_h"] / 2
    cos, sin = math.cos(p["angle"]), math.sin(p["angle"])

    def m(x, y):
        u, v = x + 0.5, y + 0.5
        du, dv = u - cx, v - cy
        u, v = cx + cos * du + sin * dv, cy - sin * du + cos * dv
        if p["hflip"]:
            u = p["out_w"] - u
        if p["vflip"]:
            v = p["out_h"] - v
        return (u + p["ox"]) / p["scale"] - 0.5, (v + p["oy"]) / p["scale"] - 0.5

    (x0, y0), (x1, y1), (x2, y2) = m(0, 0), m(1, 0), m(0, 1)
    return x1 - x0, x2 - x0, x0, y1 - y0, y2 - y0, y0


def _edge_clamped(s, n):
    """Floor index and fraction of source coordinates `s` on an axis of `n` pixels, held at the edges (fraction 0 there)."""
    i0 = np.floor(s).astype(int)
    f = s - i0
    out = (i0 < 0) | (i0 >= n - 1)
    f[out] = 0
    i0 = np.clip(i0, 0, n - 1)
    return i0, f


def warp_affine(image, mask, a, out_w, out_h, ignore):
    """warpAffine, vectorised: bilinear (edges clamped) for the image, nearest for the mask."""
    h, w = mask.shape
    ax, bx, cx, ay, by, cy = a
    yy, xx = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    sx, sy = ax * xx + bx * yy + cx, ay * xx + by * yy + cy
    nx, ny = np.floor(sx + 0.5).astype(int), np.floor(sy + 0.5).astype(int)
    inside = (nx >= 0) & (ny >= 0) & (nx < w) & (ny < h)
    out_mask = np.full((out_h, out_w), ignore, mask.dtype)
    out_mask[inside] = mask[ny[inside], nx[inside]]
    x0, fx = _edge_clamped(sx, w)
    y0, fy = _edge_clamped(sy, h)
    x1 = np.where(fx > 0, x0 + 1, x0)
    y1 = np.where(fy > 0, y0 + 1, y0)
    img = image.astype(np.float64)
    fx, fy = fx[..., None], fy[..., None]
    out = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x1] * fx * (1 - fy) + img[y1, x0] * (1 - fx) * fy + img[y1, x1] * fx * fy)
    out[~inside] = 0
    return out.astype(np.float32), out_mask, inside


def photometric(img, inside, aug, rng):
    """photometric: one 3x4 colour matrix, then noise and clamping; in place where `inside`."""
    M, t = np.eye(3), np.zeros(3)

    def then(A, b):
        nonlocal M, t
        t = A @ t + b
        M = A @ M

    changed = False
    if aug.get("brightness") and chance(rng, aug["brightness"].get("p", 0.5)):
        r = aug["brightness"].get("range", 0.2)
        then(np.eye(3) * uniform(rng, 1 - r, 1 + r), np.zeros(3))
        changed = True
    if aug.get("contrast") and chance(rng, aug["contrast"].get("p", 0.5)):
        r = aug["contrast"].get("range", 0.2)
        f = uniform(rng, 1 - r, 1 + r)
        px = img[inside] if inside is not None else img.reshape(-1, 3)
        avg = px.astype(np.float64).mean(0) if len(px) else np.zeros(3)
        gm = float(LUMA @ (M @ avg + t))
        then(np.eye(3) * f, np.full(3, (1 - f) * gm))
        changed = True
    if aug.get("saturation") and chance(rng, aug["saturation"].get("p", 0.5)):
        r = aug["saturation"].get("range", 0.2)
        f = uniform(rng, 1 - r, 1 + r)
        then((1 - f) * np.tile(LUMA, (3, 1)) + f * np.eye(3), np.zeros(3))
        changed = True
    if aug.get("hue") and chance(rng, aug["hue"].get("p", 0.5)):
        r = aug["hue"].get("range", 0.05)
        a = uniform(rng, -r, r) * 2 * math.pi
        c, s = math.cos(a), math.sin(a)
        T = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        Ti = np.array([[1, 0.956, 0.621], [1, -0.272, -0.647], [1, -1.106, 1.703]])
        R = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        then(Ti @ R @ T, np.zeros(3))
        changed = True
    noise = aug["noise"].get("std", 0.03) * 255 if aug.get("noise") and chance(rng, aug["noise"].get("p", 0.3)) else 0
    if not changed and not noise:
        return img
    out = img.astype(np.float64) @ M.T + t
    if noise:
        out = out + noise * rng.standard_normal(out.shape)
    out = np.clip(out, 0, 255).astype(np.float32)
    if inside is not None:
        out[~inside] = img[~inside]
    return out


def augment(image, mask, aug, rng, ignore):
    """augment (without paste): image H x W x 3 float 0..255, mask H x W class ids."""
    plan = plan_geometry(mask, aug, rng, ignore)
    h, w = mask.shape
    identity = plan["scale"] == 1 and not plan["ox"] and not plan["oy"] and not plan["hflip"] and not plan["vflip"] and not plan["angle"] and (plan["out_w"], plan["out_h"]) == (w, h)
    inside = None
    if not identity:
        image, mask, inside = warp_affine(image, mask, plan_to_affine(plan), plan["out_w"], plan["out_h"], ignore)
    return photometric(image, inside, aug, rng), mask
