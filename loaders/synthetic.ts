// The demo dataset: a deterministic, seeded generator written to disk on first use
// under data.root in the ISIC layout (so the isic file listing is reused).
//   lesion:     irregular dark blobs on textured skin-coloured backgrounds, with hair-like
//               lines, vignetting and varying contrast; soft edges in the image while the
//               mask (0/255, like ISIC) stays exact.
//   multiclass: circles (1), squares (2) and triangles (3) with random colours on a
//               textured background; masks hold class ids 0-3.
// Written into a temporary folder, then renamed, so an interrupted run leaves no half dataset.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { z } from 'zod';
import type { Config } from '../utils/config';
import { parseSchema } from '../utils/config';
import { UserError } from '../utils/errors';
import { Rng, rngFor, uniform, randInt } from '../utils/rng';
import { runIfMain, SelfTest } from '../utils/self_test';
import { binaryThresholdLut, isicSplitDir, listIsicLayout } from './isic';
import { syntheticMeta } from '../utils/dataset_utils/synthetic';
import { DatasetDefinition, identityLut, PairRef, registerDataset } from './registry';
import { warning } from '../utils/warnings';

const GENERATOR_VERSION = 1;
const GEN_SEED = 20180; // the data set is fixed; training seeds must not change it
const MARKER = 'synthetic.json';

// The synthetic loader's own key of `data:` (config/resolve.ts checks it when it is chosen):
// data.synthetic, what to generate.
const options = z.object({
  synthetic: z
    .object({
      kind: z.enum(['lesion', 'multiclass']).default('lesion'),
      train: z.number().finite().int().positive().default(240),
      val: z.number().finite().int().positive().default(60),
      image_size: z.number().finite().int().positive().default(128),
    })
    .strict()
    .default({}),
});
type SyntheticOptions = z.infer<typeof options>;

type Kind = 'lesion' | 'multiclass';
export type SyntheticSpec = SyntheticOptions['synthetic'];

/** Smooth random field in [-1, 1]: bilinear interpolation of a random grid with `cells` cells per side. */
function valueNoise(rng: Rng, s: number, cells: number): Float32Array {
  const g = cells + 2;
  const grid = Float32Array.from({ length: g * g }, () => rng() * 2 - 1);
  const out = new Float32Array(s * s);
  for (let y = 0; y < s; y++) {
    const gy = (y / s) * cells, y0 = Math.floor(gy), fy = gy - y0;
    const sy = fy * fy * (3 - 2 * fy);
    for (let x = 0; x < s; x++) {
      const gx = (x / s) * cells, x0 = Math.floor(gx), fx = gx - x0;
      const sx = fx * fx * (3 - 2 * fx);
      const a = grid[y0 * g + x0], b = grid[y0 * g + x0 + 1], c = grid[(y0 + 1) * g + x0], d = grid[(y0 + 1) * g + x0 + 1];
      out[y * s + x] = (a * (1 - sx) + b * sx) * (1 - sy) + (c * (1 - sx) + d * sx) * sy;
    }
  }
  return out;
}

function clamp255(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Draws a dark curved line (quadratic Bezier) into img, never into the mask. */
function drawHair(img: Float32Array, s: number, rng: Rng): void {
  const p = Array.from({ length: 6 }, () => uniform(rng, -0.1, 1.1) * s);
  const width = uniform(rng, 0.5, 1.4);
  const dark = uniform(rng, 0.25, 0.6);
  const steps = s * 3;
  for (let k = 0; k <= steps; k++) {
    const t = k / steps, u = 1 - t;
    const cx = u * u * p[0] + 2 * u * t * p[2] + t * t * p[4];
    const cy = u * u * p[1] + 2 * u * t * p[3] + t * t * p[5];
    for (let y = Math.floor(cy - 2); y <= cy + 2; y++) {
      for (let x = Math.floor(cx - 2); x <= cx + 2; x++) {
        if (x < 0 || y < 0 || x >= s || y >= s) continue;
        const d = Math.sqrt((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2);
        const a = Math.min(1, Math.max(0, width + 0.5 - d)) * (1 - dark);
        if (a <= 0) continue;
        const o = (y * s + x) * 3;
        for (let c = 0; c < 3; c++) img[o + c] = Math.min(img[o + c], img[o + c] * (1 - a) + 40 * a);
      }
    }
  }
}

/** Skin-like textured background with vignetting. */
function background(rng: Rng, s: number): Float32Array {
  const base = [uniform(rng, 170, 235), 0, 0];
  base[1] = base[0] * uniform(rng, 0.68, 0.82);
  base[2] = base[0] * uniform(rng, 0.55, 0.72);
  const coarse = valueNoise(rng, s, 3), fine = valueNoise(rng, s, 16);
  const amp = uniform(rng, 6, 18), famp = uniform(rng, 3, 9);
  const vig = uniform(rng, 0, 0.45);
  const img = new Float32Array(s * s * 3);
  for (let y = 0; y < s; y++)
    for (let x = 0; x < s; x++) {
      const i = y * s + x;
      const r2 = ((x / s - 0.5) ** 2 + (y / s - 0.5) ** 2) * 2;
      const shade = (1 - vig * r2 * r2) + (coarse[i] * amp + fine[i] * famp) / 200;
      for (let c = 0; c < 3; c++) img[i * 3 + c] = base[c] * shade;
    }
  return img;
}

function lesionSample(rng: Rng, s: number): { image: Float32Array; mask: Uint8Array } {
  const img = background(rng, s);
  const mask = new Uint8Array(s * s);
  const cx = s * uniform(rng, 0.3, 0.7), cy = s * uniform(rng, 0.3, 0.7);
  const r0 = s * uniform(rng, 0.12, 0.3);
  const stretch = uniform(rng, 0.7, 1.3), tilt = uniform(rng, 0, Math.PI);
  const harmonics = [2, 3, 4, 5, 7].map((k) => ({ k, a: uniform(rng, 0, 0.12 / Math.sqrt(k - 1)), ph: uniform(rng, 0, 2 * Math.PI) }));
  const contrast = uniform(rng, 0.25, 0.7); // how much darker the lesion is
  const edge = uniform(rng, 0.8, 3); // soft edge width in pixels (image only)
  const tint = [uniform(rng, 0.55, 0.8), uniform(rng, 0.4, 0.6), uniform(rng, 0.3, 0.55)];
  const inner = valueNoise(rng, s, 6);
  const innerAmp = uniform(rng, 0.05, 0.3);
  const cosT = Math.cos(tilt), sinT = Math.sin(tilt);
  // Only the lesion's bounding box needs the polar test (the rest stays background).
  const rMax = r0 * (1 + harmonics.reduce((a, h) => a + h.a, 0)) * Math.max(stretch, 1 / stretch) + edge + 1;
  const y0 = Math.max(0, Math.floor(cy - rMax)), y1 = Math.min(s, Math.ceil(cy + rMax));
  const x0 = Math.max(0, Math.floor(cx - rMax)), x1 = Math.min(s, Math.ceil(cx + rMax));
  for (let y = y0; y < y1; y++)
    for (let x = x0; x < x1; x++) {
      const dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      const u = (dx * cosT + dy * sinT) / stretch, v = (-dx * sinT + dy * cosT) * stretch;
      const d = Math.sqrt(u * u + v * v), th = Math.atan2(v, u);
      let r = r0;
      for (const h of harmonics) r += r0 * h.a * Math.sin(h.k * th + h.ph);
      const i = y * s + x;
      if (d < r) mask[i] = 255;
      const alpha = Math.min(1, Math.max(0, (r - d) / edge + 0.5));
      if (alpha <= 0) continue;
      const depth = contrast * (1 + innerAmp * inner[i]) * (0.8 + 0.2 * (1 - d / Math.max(r, 1e-6))); // darker centre
      for (let c = 0; c < 3; c++) {
        const les = img[i * 3 + c] * (1 - depth) * (tint[c] + (1 - tint[c]) * (1 - contrast));
        img[i * 3 + c] = img[i * 3 + c] * (1 - alpha) + les * alpha;
      }
    }
  const hairs = randInt(rng, 5);
  for (let k = 0; k < hairs; k++) drawHair(img, s, rng);
  const noise = uniform(rng, 1, 6);
  for (let i = 0; i < img.length; i++) img[i] = clamp255(img[i] + noise * (rng() * 2 - 1));
  return { image: img, mask };
}

function multiclassSample(rng: Rng, s: number): { image: Float32Array; mask: Uint8Array } {
  const img = new Float32Array(s * s * 3);
  const tex = valueNoise(rng, s, 8);
  const bg = [uniform(rng, 40, 200), uniform(rng, 40, 200), uniform(rng, 40, 200)];
  for (let i = 0; i < s * s; i++) for (let c = 0; c < 3; c++) img[i * 3 + c] = bg[c] + 25 * tex[i];
  const mask = new Uint8Array(s * s);
  const n = 1 + randInt(rng, 4);
  for (let k = 0; k < n; k++) {
    const cls = 1 + randInt(rng, 3);
    const cx = s * uniform(rng, 0.15, 0.85), cy = s * uniform(rng, 0.15, 0.85), r = s * uniform(rng, 0.08, 0.2);
    const rot = uniform(rng, 0, Math.PI * 2), cr = Math.cos(rot), sr = Math.sin(rot);
    // Colour far enough from the background to be visible, but not tied to the class.
    const col = bg.map((b) => (b > 128 ? uniform(rng, 0, b - 60) : uniform(rng, b + 60, 255)));
    for (let y = Math.max(0, Math.floor(cy - 1.5 * r)); y < Math.min(s, cy + 1.5 * r); y++)
      for (let x = Math.max(0, Math.floor(cx - 1.5 * r)); x < Math.min(s, cx + 1.5 * r); x++) {
        const dx = x + 0.5 - cx, dy = y + 0.5 - cy;
        const u = dx * cr + dy * sr, v = -dx * sr + dy * cr;
        let inside: boolean;
        if (cls === 1) inside = u * u + v * v < r * r;
        else if (cls === 2) inside = Math.abs(u) < r * 0.85 && Math.abs(v) < r * 0.85;
        else inside = v < r * 0.5 && v > -r + 1.732 * Math.abs(u); // triangle, vertices (0,-r), (+-0.866r, 0.5r)
        if (!inside) continue;
        const i = y * s + x;
        mask[i] = cls;
        for (let c = 0; c < 3; c++) img[i * 3 + c] = col[c] + 12 * tex[i];
      }
  }
  for (let i = 0; i < img.length; i++) img[i] = clamp255(img[i] + 4 * (rng() * 2 - 1));
  return { image: img, mask };
}

export function generateSample(kind: Kind, split: 'train' | 'val', index: number, size: number): { image: Uint8Array; mask: Uint8Array } {
  const rng = rngFor(GEN_SEED, kind === 'lesion' ? 1 : 2, split === 'train' ? 1 : 2, index);
  const { image, mask } = kind === 'lesion' ? lesionSample(rng, size) : multiclassSample(rng, size);
  const bytes = new Uint8Array(image.length);
  for (let i = 0; i < image.length; i++) bytes[i] = image[i] + 0.5; // typed-array store truncates: rounds
  return { image: bytes, mask };
}


async function writeDataset(dir: string, spec: SyntheticSpec): Promise<void> {
  const s = spec.image_size;
  for (const [split, n] of [['train', spec.train], ['val', spec.val]] as const) {
    const sd = isicSplitDir(split);
    const imgDir = path.join(dir, `ISIC2018_Task1-2_${sd}_Input`);
    const maskDir = path.join(dir, `ISIC2018_Task1_${sd}_GroundTruth`);
    fs.mkdirSync(imgDir, { recursive: true });
    fs.mkdirSync(maskDir, { recursive: true });
    // Generate in JS while libvips encodes the previous few in its threads.
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < n; i++) {
      const id = `ISIC_${String(i).padStart(7, '0')}`;
      const { image, mask } = generateSample(spec.kind, split, i, s);
      pending.push(
        sharp(image, { raw: { width: s, height: s, channels: 3 } }).jpeg({ quality: 92 }).toFile(path.join(imgDir, `${id}.jpg`)),
        sharp(mask, { raw: { width: s, height: s, channels: 1 } }).toColourspace('b-w').png().toFile(path.join(maskDir, `${id}_segmentation.png`)),
      );
      if (pending.length >= 16) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
  }
  fs.writeFileSync(path.join(dir, MARKER), JSON.stringify({ generator: GENERATOR_VERSION, ...spec }, null, 1));
}

const ready = new Map<string, Promise<void>>();

/** Makes sure data.root holds the synthetic dataset described by the config (generating it once). */
export function ensureSynthetic(cfg: Config, o: SyntheticOptions): Promise<void> {
  const root = path.resolve(cfg.data.root);
  const { kind, train, val, image_size } = o.synthetic;
  const spec = { kind, train, val, image_size };
  const key = root + JSON.stringify(spec);
  if (!ready.has(key)) ready.set(key, ensure(root, spec).catch((e) => { ready.delete(key); throw e; }));
  return ready.get(key)!;
}

async function ensure(root: string, spec: SyntheticSpec): Promise<void> {
  const want = JSON.stringify({ generator: GENERATOR_VERSION, ...spec });
  const marker = path.join(root, MARKER);
  if (fs.existsSync(marker) && JSON.stringify(JSON.parse(fs.readFileSync(marker, 'utf8'))) === want) return;
  if (fs.existsSync(root) && !fs.existsSync(marker) && fs.readdirSync(root).length)
    throw new UserError(`${root} exists but is not a synthetic dataset (no ${MARKER}); point data.root at an empty or new folder`);
  fs.mkdirSync(path.dirname(root), { recursive: true });
  const tmp = `${root}.tmp-${process.pid}-${Date.now()}`;
  try {
    await writeDataset(tmp, spec);
    // A dataset with other settings (or an empty folder) is replaced; a concurrent
    // process that finished first wins and our copy is dropped.
    if (fs.existsSync(root)) {
      if (fs.existsSync(marker) && JSON.stringify(JSON.parse(fs.readFileSync(marker, 'utf8'))) === want) return;
      const old = `${root}.old-${process.pid}-${Date.now()}`;
      fs.renameSync(root, old);
      fs.rmSync(old, { recursive: true, force: true });
    }
    fs.renameSync(tmp, root);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export const syntheticLoader: DatasetDefinition<typeof options> = registerDataset({
  name: 'synthetic',
  options,
  numClasses: (_cfg, o) => syntheticMeta(o.synthetic.kind).classes.length,
  meta: (_cfg, o) => syntheticMeta(o.synthetic.kind),
  async listPairs(cfg, split, o) {
    await ensureSynthetic(cfg, o);
    // The generator writes train and val; a test split reuses val, and says so: a test
    // score that is the validation score must not pass for a held-out one.
    if (split === 'test') warning(`warning: synthetic data has no test split; split 'test' reads the val images of ${cfg.data.root}`);
    return listIsicLayout(path.resolve(cfg.data.root), split === 'test' ? 'val' : split);
  },
  maskLut: (cfg, o) => (o.synthetic.kind === 'lesion' ? binaryThresholdLut() : identityLut(cfg)),
});

export const selfTest: SelfTest = {
  'generation is deterministic and masks are exact'() {
    const a = generateSample('lesion', 'train', 3, 64);
    const b = generateSample('lesion', 'train', 3, 64);
    assert.deepEqual(a.image, b.image);
    assert.deepEqual(a.mask, b.mask);
    assert.ok(a.mask.every((v) => v === 0 || v === 255));
    const frac = a.mask.filter((v) => v).length / a.mask.length;
    assert.ok(frac > 0.02 && frac < 0.6, String(frac));
    assert.notDeepEqual(generateSample('lesion', 'train', 4, 64).mask, a.mask);
    const m = generateSample('multiclass', 'val', 0, 64).mask;
    assert.ok(m.every((v) => v <= 3));
  },
  async 'writes the ISIC layout once, atomically'() {
    const root = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'synth-')), 'ds');
    const cfg = parseSchema({ data: { name: 'synthetic', root } });
    const o = options.parse({ synthetic: { train: 6, val: 3, image_size: 32 } });
    const pairs = (await syntheticLoader.listPairs(cfg, 'train', o)) as PairRef[];
    assert.equal(pairs.length, 6);
    assert.equal(((await syntheticLoader.listPairs(cfg, 'val', o)) as PairRef[]).length, 3);
    assert.deepEqual(fs.readdirSync(path.dirname(root)), ['ds']); // no tmp folder left
    const t = fs.statSync(pairs[0].image).mtimeMs;
    await syntheticLoader.listPairs(cfg, 'train', o);
    assert.equal(fs.statSync(pairs[0].image).mtimeMs, t);
    fs.rmSync(path.dirname(root), { recursive: true });
  },
};

runIfMain(module, selfTest);
