// Paired augmentation on raw typed arrays. All geometric steps (scale -> crop ->
// flips -> rotate) are folded into ONE affine map from output to source pixels, then
// sampled once: bilinear for the image, nearest for the mask, so image and mask move
// identically and the mask never gets interpolated values. Pixels coming from outside
// the source are 0 in the image and the ignore index in the mask. Photometric steps
// (brightness, contrast, saturation, hue, noise) touch the image only.
// Pure JS was measured faster than sharp here: one pass over a 128x128 sample, no
// encode/decode round trips.
import assert from 'node:assert/strict';
import type { Augmentations } from '../utils/config';
import { Rng, gaussian, mulberry32, randInt, uniform } from '../utils/rng';
import { runIfMain, SelfTest } from '../utils/self_test';

export interface Sample { image: Uint8Array; mask: Uint8Array; width: number; height: number } // image HWC RGB
export interface AugmentedSample { image: Float32Array; mask: Uint8Array; width: number; height: number } // image HWC, 0..255

/** Output pixel (x, y) -> source pixel coordinates sx = ax*x + bx*y + cx, sy = ay*x + by*y + cy. */
export interface Affine { ax: number; bx: number; cx: number; ay: number; by: number; cy: number }

export interface GeometryPlan {
  outW: number;
  outH: number;
  scale: number;
  offsetX: number; // crop window origin in scaled coordinates (negative = padding)
  offsetY: number;
  hflip: boolean;
  vflip: boolean;
  angle: number; // radians
}

function chance(rng: Rng, p: number): boolean {
  return p >= 1 || (p > 0 && rng() < p);
}

function cropOffset(rng: Rng, scaled: number, out: number): number {
  const slack = Math.floor(Math.abs(scaled - out));
  const k = randInt(rng, slack + 1);
  return scaled >= out ? k : -k;
}

/** The crop offset nearest to `want` among those cropOffset can draw. */
function clampOffset(want: number, scaled: number, out: number): number {
  const slack = Math.floor(Math.abs(scaled - out));
  return scaled >= out ? Math.min(Math.max(want, 0), slack) : Math.min(Math.max(want, -slack), 0);
}

/** A random pixel index of one of `classes` present in the mask (class drawn uniformly among those present); -1 if none is. */
function focusPixel(s: Sample, classes: readonly number[], rng: Rng): number {
  const wanted = new Set(classes);
  const counts = new Map<number, number>();
  for (const c of s.mask) if (wanted.has(c)) counts.set(c, (counts.get(c) ?? 0) + 1);
  if (counts.size === 0) return -1;
  const present = [...counts.keys()].sort((a, b) => a - b);
  const c = present[randInt(rng, present.length)];
  let k = randInt(rng, counts.get(c)!);
  for (let i = 0; i < s.mask.length; i++) if (s.mask[i] === c && k-- === 0) return i;
  return -1;
}

/** Fraction of the most common class in the crop window (ignore excluded); 0 if under two classes. */
function maxClassRatio(s: Sample, plan: GeometryPlan, ignoreIndex: number): number {
  const counts = new Map<number, number>();
  for (let y = 0; y < plan.outH; y++) {
    const sy = Math.floor((y + 0.5 + plan.offsetY) / plan.scale);
    if (sy < 0 || sy >= s.height) continue;
    for (let x = 0; x < plan.outW; x++) {
      const sx = Math.floor((x + 0.5 + plan.offsetX) / plan.scale);
      if (sx < 0 || sx >= s.width) continue;
      const c = s.mask[sy * s.width + sx];
      if (c !== ignoreIndex) counts.set(c, (counts.get(c) ?? 0) + 1);
    }
  }
  if (counts.size < 2) return 1;
  let max = 0, sum = 0;
  for (const n of counts.values()) {
    max = Math.max(max, n);
    sum += n;
  }
  return max / sum;
}

/** Draws the geometric parameters of one sample. Output size: the crop size if set, else the input size (data.size). */
export function planGeometry(s: Sample, aug: Augmentations, rng: Rng, ignoreIndex: number): GeometryPlan {
  const plan: GeometryPlan = { outW: s.width, outH: s.height, scale: 1, offsetX: 0, offsetY: 0, hflip: false, vflip: false, angle: 0 };
  if (aug.scale && chance(rng, aug.scale.p)) plan.scale = uniform(rng, aug.scale.range[0], aug.scale.range[1]);
  if (aug.crop) [plan.outH, plan.outW] = aug.crop.size;
  const sw = s.width * plan.scale;
  const sh = s.height * plan.scale;
  const focus = aug.crop?.focus && chance(rng, aug.crop.focus.p) ? focusPixel(s, aug.crop.focus.classes, rng) : -1;
  if (focus >= 0) {
    // The window holds the chosen pixel at a random place in it (clamped to the usual range).
    const px = ((focus % s.width) + 0.5) * plan.scale, py = (Math.floor(focus / s.width) + 0.5) * plan.scale;
    plan.offsetX = clampOffset(Math.floor(px - uniform(rng, 0, plan.outW)), sw, plan.outW);
    plan.offsetY = clampOffset(Math.floor(py - uniform(rng, 0, plan.outH)), sh, plan.outH);
  } else {
    // Like MMSegmentation's RandomCrop: retry (up to 10 times) crops dominated by one class.
    const tries = aug.crop && aug.crop.cat_max_ratio < 1 ? 10 : 1;
    for (let t = 0; t < tries; t++) {
      plan.offsetX = cropOffset(rng, sw, plan.outW);
      plan.offsetY = cropOffset(rng, sh, plan.outH);
      if (tries === 1 || maxClassRatio(s, plan, ignoreIndex) < aug.crop!.cat_max_ratio) break;
    }
  }
  if (aug.hflip) plan.hflip = chance(rng, aug.hflip.p);
  if (aug.vflip) plan.vflip = chance(rng, aug.vflip.p);
  if (aug.rotate && chance(rng, aug.rotate.p)) plan.angle = (uniform(rng, -aug.rotate.degrees, aug.rotate.degrees) * Math.PI) / 180;
  return plan;
}

/** Composes the plan into the inverse affine map (output pixel index -> source pixel index). */
export function planToAffine(plan: GeometryPlan): Affine {
  const cx = plan.outW / 2, cy = plan.outH / 2;
  const cos = Math.cos(plan.angle), sin = Math.sin(plan.angle);
  const map = (x: number, y: number): [number, number] => {
    let u = x + 0.5, v = y + 0.5; // pixel centre on the output canvas
    const du = u - cx, dv = v - cy; // undo rotation about the canvas centre
    u = cx + cos * du + sin * dv;
    v = cy - sin * du + cos * dv;
    if (plan.hflip) u = plan.outW - u;
    if (plan.vflip) v = plan.outH - v;
    return [(u + plan.offsetX) / plan.scale - 0.5, (v + plan.offsetY) / plan.scale - 0.5];
  };
  const [x0, y0] = map(0, 0), [x1, y1] = map(1, 0), [x2, y2] = map(0, 1);
  return { ax: x1 - x0, bx: x2 - x0, cx: x0, ay: y1 - y0, by: y2 - y0, cy: y0 };
}

export function isIdentity(plan: GeometryPlan, w: number, h: number): boolean {
  return plan.scale === 1 && !plan.offsetX && !plan.offsetY && !plan.hflip && !plan.vflip && !plan.angle && plan.outW === w && plan.outH === h;
}

/** Samples image (bilinear) and mask (nearest) through `m`; `inside` marks pixels that came from the source. */
export function warpAffine(s: Sample, m: Affine, outW: number, outH: number, ignoreIndex: number): AugmentedSample & { inside: Uint8Array } {
  const { width: w, height: h, image: src, mask: msrc } = s;
  const image = new Float32Array(outW * outH * 3);
  const mask = new Uint8Array(outW * outH).fill(ignoreIndex);
  const inside = new Uint8Array(outW * outH);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const sx = m.ax * x + m.bx * y + m.cx;
      const sy = m.ay * x + m.by * y + m.cy;
      const nx = Math.floor(sx + 0.5), ny = Math.floor(sy + 0.5);
      if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
      const o = y * outW + x;
      inside[o] = 1;
      mask[o] = msrc[ny * w + nx];
      // Bilinear with edge clamping; at integer positions it returns the exact source value.
      let x0 = Math.floor(sx), y0 = Math.floor(sy);
      let fx = sx - x0, fy = sy - y0;
      if (x0 < 0) { x0 = 0; fx = 0; } else if (x0 >= w - 1) { x0 = w - 1; fx = 0; }
      if (y0 < 0) { y0 = 0; fy = 0; } else if (y0 >= h - 1) { y0 = h - 1; fy = 0; }
      const x1 = fx > 0 ? x0 + 1 : x0, y1 = fy > 0 ? y0 + 1 : y0;
      const p00 = (y0 * w + x0) * 3, p01 = (y0 * w + x1) * 3, p10 = (y1 * w + x0) * 3, p11 = (y1 * w + x1) * 3;
      const w00 = (1 - fx) * (1 - fy), w01 = fx * (1 - fy), w10 = (1 - fx) * fy, w11 = fx * fy;
      const q = o * 3;
      image[q] = src[p00] * w00 + src[p01] * w01 + src[p10] * w10 + src[p11] * w11;
      image[q + 1] = src[p00 + 1] * w00 + src[p01 + 1] * w01 + src[p10 + 1] * w10 + src[p11 + 1] * w11;
      image[q + 2] = src[p00 + 2] * w00 + src[p01 + 2] * w01 + src[p10 + 2] * w10 + src[p11 + 2] * w11;
    }
  }
  return { image, mask, inside, width: outW, height: outH };
}

const LUMA = [0.299, 0.587, 0.114];

/**
 * Brightness, contrast, saturation and hue folded into one 3x4 colour matrix (they are
 * all affine per pixel), then gaussian noise and clamping to [0, 255]. In place; only
 * where `inside` (padding stays 0).
 */
export function photometric(img: Float32Array, inside: Uint8Array | null, aug: Augmentations, rng: Rng): void {
  // M (3x3, row-major) and bias t: out = M * rgb + t.
  let M = [1, 0, 0, 0, 1, 0, 0, 0, 1];
  let t = [0, 0, 0];
  const mul = (A: number[], B: number[]) => A.map((_, i) => { const r = Math.floor(i / 3), c = i % 3; return A[r * 3] * B[c] + A[r * 3 + 1] * B[3 + c] + A[r * 3 + 2] * B[6 + c]; });
  const then = (A: number[], b: number[]) => { // apply (A, b) after the current (M, t)
    t = [0, 1, 2].map((r) => A[r * 3] * t[0] + A[r * 3 + 1] * t[1] + A[r * 3 + 2] * t[2] + b[r]);
    M = mul(A, M);
  };
  let changed = false;
  if (aug.brightness && chance(rng, aug.brightness.p)) {
    const f = uniform(rng, 1 - aug.brightness.range, 1 + aug.brightness.range);
    then([f, 0, 0, 0, f, 0, 0, 0, f], [0, 0, 0]);
    changed = true;
  }
  if (aug.contrast && chance(rng, aug.contrast.p)) {
    const f = uniform(rng, 1 - aug.contrast.range, 1 + aug.contrast.range);
    // Blend towards the mean grey level of the image after the steps so far (as
    // torchvision does); the steps are linear, so that is luma(M * mean_rgb + t).
    const avg = [0, 0, 0];
    let n = 0;
    for (let i = 0, p = 0; p < img.length; i++, p += 3) {
      if (inside && !inside[i]) continue;
      avg[0] += img[p];
      avg[1] += img[p + 1];
      avg[2] += img[p + 2];
      n++;
    }
    const gm = LUMA.reduce((acc, l, r) => acc + l * ((M[r * 3] * avg[0] + M[r * 3 + 1] * avg[1] + M[r * 3 + 2] * avg[2]) / Math.max(n, 1) + t[r]), 0);
    then([f, 0, 0, 0, f, 0, 0, 0, f], [(1 - f) * gm, (1 - f) * gm, (1 - f) * gm]);
    changed = true;
  }
  if (aug.saturation && chance(rng, aug.saturation.p)) {
    const f = uniform(rng, 1 - aug.saturation.range, 1 + aug.saturation.range);
    const A = [0, 1, 2].flatMap((r) => [0, 1, 2].map((c) => (1 - f) * LUMA[c] + (r === c ? f : 0)));
    then(A, [0, 0, 0]);
    changed = true;
  }
  if (aug.hue && chance(rng, aug.hue.p)) {
    // Rotate chroma around the grey axis (YIQ), by a fraction of the colour circle.
    const a = uniform(rng, -aug.hue.range, aug.hue.range) * 2 * Math.PI;
    const c = Math.cos(a), s = Math.sin(a);
    const T = [0.299, 0.587, 0.114, 0.596, -0.274, -0.322, 0.211, -0.523, 0.312];
    const Ti = [1, 0.956, 0.621, 1, -0.272, -0.647, 1, -1.106, 1.703];
    const R = [1, 0, 0, 0, c, -s, 0, s, c];
    then(mul(Ti, mul(R, T)), [0, 0, 0]);
    changed = true;
  }
  const noiseStd = aug.noise && chance(rng, aug.noise.p) ? aug.noise.std * 255 : 0;
  if (!changed && !noiseStd) return;
  const [m0, m1, m2, m3, m4, m5, m6, m7, m8] = M;
  const [t0, t1, t2] = t;
  // Noise: a window of a fixed table of normals at a random start and odd stride,
  // instead of a Box-Muller draw per value (that was a third of the augmentation time).
  const table = noiseStd ? normalTable() : null;
  const mask = NORMALS - 1;
  let k = randInt(rng, NORMALS);
  const stride = 2 * randInt(rng, 512) + 1;
  for (let i = 0, p = 0; p < img.length; i++, p += 3) {
    if (inside !== null && inside[i] === 0) continue;
    const r = img[p], g = img[p + 1], b = img[p + 2];
    let v0 = m0 * r + m1 * g + m2 * b + t0, v1 = m3 * r + m4 * g + m5 * b + t1, v2 = m6 * r + m7 * g + m8 * b + t2;
    if (table !== null) {
      v0 += noiseStd * table[k];
      v1 += noiseStd * table[(k + stride) & mask];
      v2 += noiseStd * table[(k + 2 * stride) & mask];
      k = (k + 3 * stride) & mask;
    }
    img[p] = v0 < 0 ? 0 : v0 > 255 ? 255 : v0;
    img[p + 1] = v1 < 0 ? 0 : v1 > 255 ? 255 : v1;
    img[p + 2] = v2 < 0 ? 0 : v2 > 255 ? 255 : v2;
  }
}

const NORMALS = 1 << 16;
let normals: Float32Array | null = null;
function normalTable(): Float32Array {
  if (!normals) {
    const rng = mulberry32(0x6a55);
    normals = new Float32Array(NORMALS);
    for (let i = 0; i < NORMALS; i++) normals[i] = gaussian(rng);
  }
  return normals;
}

/** The geometric steps of one sample; `inside` null when nothing moved (every pixel is the source's). */
function geometry(s: Sample, aug: Augmentations, rng: Rng, ignoreIndex: number): AugmentedSample & { inside: Uint8Array | null } {
  const plan = planGeometry(s, aug, rng, ignoreIndex);
  if (isIdentity(plan, s.width, s.height)) return { image: Float32Array.from(s.image), mask: Uint8Array.from(s.mask), width: s.width, height: s.height, inside: null };
  return warpAffine(s, planToAffine(plan), plan.outW, plan.outH, ignoreIndex);
}

/** Copies image and mask of the donor's pixels of `classes` onto `out` (same size), in place. */
export function pasteClasses(out: AugmentedSample & { inside: Uint8Array | null }, donor: AugmentedSample, classes: readonly number[]): void {
  assert.deepEqual([donor.width, donor.height], [out.width, out.height], 'paste: donor and sample differ in size');
  const wanted = new Uint8Array(256);
  for (const c of classes) wanted[c] = 1;
  for (let i = 0; i < out.mask.length; i++) {
    if (!wanted[donor.mask[i]]) continue;
    out.mask[i] = donor.mask[i];
    out.image.set(donor.image.subarray(i * 3, i * 3 + 3), i * 3);
    if (out.inside) out.inside[i] = 1;
  }
}

/**
 * The whole training-time augmentation of one sample (input at data.size). With a `donor`
 * (the caller drew augmentations.paste's chance), its pixels of the paste classes are laid
 * over the sample after both are moved, and the photometric steps then see one picture.
 */
export function augment(s: Sample, aug: Augmentations, rng: Rng, ignoreIndex: number, donor?: { sample: Sample; rng: Rng }): AugmentedSample {
  const out = geometry(s, aug, rng, ignoreIndex);
  if (donor && aug.paste) {
    // The donor's own scale, crop and flips, its window on a pixel of a pasted class where it has one.
    const placed = aug.crop ? { ...aug, crop: { ...aug.crop, focus: { p: 1, classes: aug.paste.classes } } } : aug;
    pasteClasses(out, geometry(donor.sample, placed, donor.rng, ignoreIndex), aug.paste.classes);
  }
  photometric(out.image, out.inside, aug, rng);
  return { image: out.image, mask: out.mask, width: out.width, height: out.height };
}

/** Test helper: blocky image whose red channel thresholded at 128 equals the mask. */
export function blockySample(w: number, h: number, seed = 1): Sample {
  const rng = mulberry32(seed);
  const image = new Uint8Array(w * h * 3);
  const mask = new Uint8Array(w * h);
  const bs = 6;
  const cells = Array.from({ length: Math.ceil(w / bs) * Math.ceil(h / bs) }, () => (rng() < 0.5 ? 1 : 0));
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const c = cells[Math.floor(y / bs) * Math.ceil(w / bs) + Math.floor(x / bs)];
      mask[y * w + x] = c;
      image.fill(c ? 230 : 20, (y * w + x) * 3, (y * w + x) * 3 + 3);
    }
  return { image, mask, width: w, height: h };
}

/** Fraction of non-ignored pixels where threshold(image red) != mask. */
export function mismatch(a: AugmentedSample, ignoreIndex: number): number {
  let bad = 0, n = 0;
  for (let i = 0; i < a.mask.length; i++) {
    if (a.mask[i] === ignoreIndex) continue;
    n++;
    if ((a.image[i * 3] >= 125 ? 1 : 0) !== a.mask[i]) bad++;
  }
  return n ? bad / n : 0;
}

export const selfTest: SelfTest = {
  'hue and saturation keep greys grey'() {
    const img = new Float32Array([100, 100, 100, 200, 200, 200]);
    photometric(img, null, { hue: { p: 1, range: 0.4 }, saturation: { p: 1, range: 0.9 } }, mulberry32(2));
    for (const v of img.slice(0, 3)) assert.ok(Math.abs(v - 100) < 1.5, String(v));
  },
};

runIfMain(module, selfTest);
