// Paired augmentation: geometric steps move image and mask identically, photometric
// steps never touch the mask, padding uses 0 / the ignore index.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Augmentations } from '../utils/config';
import { parseConfig } from '../config/resolve';
import { mulberry32 } from '../utils/rng';
import { augment, blockySample, mismatch, photometric, planGeometry, Sample } from '../pipeline/transforms';

const IGN = 255;
const aug = (a: object, numClasses = 2): Augmentations => parseConfig({ data: { num_classes: numClasses }, training: { augmentations: a } }).training.augmentations;

test('each geometric transform keeps the thresholded image equal to the mask', () => {
  const s = blockySample(48, 40, 7);
  const exact: Record<string, object> = {
    hflip: { hflip: { p: 1 } },
    vflip: { vflip: { p: 1 } },
    crop: { crop: { size: [24, 30] } },
    'crop+flips': { crop: { size: [24, 30] }, hflip: { p: 1 }, vflip: { p: 1 } },
    'rotate 180': { rotate: { p: 1, degrees: 180 } },
  };
  const interpolated: Record<string, object> = {
    scale: { scale: { p: 1, range: [0.6, 1.6] } },
    rotate: { rotate: { p: 1, degrees: 45 } },
    all: { scale: { p: 1 }, crop: { size: [32, 32] }, hflip: {}, vflip: {}, rotate: { p: 1, degrees: 90 } },
  };
  for (const [name, a] of Object.entries(exact)) {
    for (let seed = 0; seed < 10; seed++) {
      const out = augment(s, aug(a), mulberry32(seed), IGN);
      if (name !== 'rotate 180') assert.equal(mismatch(out, IGN), 0, `${name} seed ${seed}`);
      else assert.ok(mismatch(out, IGN) < 0.03, `${name} seed ${seed}`); // non-multiple-of-90 angles interpolate
    }
  }
  for (const [name, a] of Object.entries(interpolated)) {
    for (let seed = 0; seed < 10; seed++) {
      const out = augment(s, aug(a), mulberry32(seed), IGN);
      // Only pixels on block edges may differ (bilinear image vs nearest mask).
      assert.ok(mismatch(out, IGN) < 0.03, `${name} seed ${seed}: ${mismatch(out, IGN)}`);
      assert.ok(out.mask.every((v) => v === 0 || v === 1 || v === IGN), name);
    }
  }
});

test('hflip mirrors exactly', () => {
  const s: Sample = { image: Uint8Array.from([1, 1, 1, 2, 2, 2, 3, 3, 3]), mask: Uint8Array.from([0, 1, 2]), width: 3, height: 1 };
  const out = augment(s, aug({ hflip: { p: 1 } }), mulberry32(1), IGN);
  assert.deepEqual([...out.mask], [2, 1, 0]);
  assert.deepEqual([...out.image], [3, 3, 3, 2, 2, 2, 1, 1, 1]);
});

test('crop larger than the image pads image with 0 and mask with the ignore index', () => {
  const s = blockySample(10, 10);
  for (let seed = 0; seed < 5; seed++) {
    const out = augment(s, aug({ crop: { size: [16, 14] } }), mulberry32(seed), IGN);
    assert.equal(out.mask.length, 16 * 14);
    assert.equal(out.mask.filter((v) => v === IGN).length, 16 * 14 - 100);
    for (let i = 0; i < out.mask.length; i++) if (out.mask[i] === IGN) assert.deepEqual([...out.image.slice(3 * i, 3 * i + 3)], [0, 0, 0]);
    assert.equal(mismatch(out, IGN), 0);
  }
});

test('rotation: corners coming from outside are ignore in the mask, 0 in the image', () => {
  const s = blockySample(32, 32);
  const out = augment(s, aug({ rotate: { p: 1, degrees: 45 } }), mulberry32(4), IGN);
  const plan = planGeometry(s, aug({ rotate: { p: 1, degrees: 45 } }), mulberry32(4), IGN);
  assert.ok(Math.abs(plan.angle) > 0.2, 'test needs a real rotation');
  assert.equal(out.mask[0], IGN);
  assert.equal(out.image[0], 0);
  assert.notEqual(out.mask[16 * 32 + 16], IGN);
});

test('scale without crop keeps data.size; crop sets the output size', () => {
  const s = blockySample(20, 12);
  assert.deepEqual([augment(s, aug({ scale: { p: 1 } }), mulberry32(1), IGN)].map((o) => [o.width, o.height]), [[20, 12]]);
  assert.deepEqual([augment(s, aug({ scale: { p: 1 }, crop: { size: [8, 6] } }), mulberry32(1), IGN)].map((o) => [o.width, o.height]), [[6, 8]]);
});

test('photometric transforms never change the mask and stay in [0, 255]', () => {
  const s = blockySample(32, 24);
  const all = aug({ brightness: { p: 1, range: 0.6 }, contrast: { p: 1, range: 0.6 }, saturation: { p: 1, range: 0.9 }, hue: { p: 1, range: 0.5 }, noise: { p: 1, std: 0.2 } });
  for (let seed = 0; seed < 10; seed++) {
    const out = augment(s, all, mulberry32(seed), IGN);
    assert.deepEqual(out.mask, s.mask);
    assert.ok(out.image.every((v) => v >= 0 && v <= 255));
    assert.ok(out.image.some((v, i) => Math.abs(v - s.image[i]) > 1), `seed ${seed}: image unchanged`);
  }
  for (const one of ['brightness', 'contrast', 'saturation', 'hue', 'noise']) {
    const out = augment(s, aug({ [one]: { p: 1 } }), mulberry32(3), IGN);
    assert.deepEqual(out.mask, s.mask, one);
  }
});

test('brightness scales, contrast keeps the mean grey', () => {
  const img = new Float32Array([100, 100, 100, 50, 50, 50]);
  photometric(img, null, aug({ brightness: { p: 1, range: 0.5 } }), mulberry32(1));
  assert.ok(Math.abs(img[0] / img[3] - 2) < 1e-4);
  const img2 = new Float32Array([100, 100, 100, 50, 50, 50]);
  photometric(img2, null, aug({ contrast: { p: 1, range: 0.5 } }), mulberry32(1));
  assert.ok(Math.abs((img2[0] + img2[3]) / 2 - 75) < 1e-3);
});

test('same rng seed, same augmentation', () => {
  const s = blockySample(24, 24);
  const a = aug({ scale: {}, crop: { size: [16, 16] }, hflip: {}, vflip: {}, rotate: {}, brightness: {}, contrast: {}, saturation: {}, hue: {}, noise: {} });
  assert.deepEqual(augment(s, a, mulberry32(9), IGN), augment(s, a, mulberry32(9), IGN));
  assert.notDeepEqual(augment(s, a, mulberry32(9), IGN).image, augment(s, a, mulberry32(10), IGN).image);
});

test('cat_max_ratio retries crops dominated by one class', () => {
  // 80% class 0, a 12-pixel-wide stripe of class 1 at the right: a random 20-wide
  // crop holds enough of it only ~1 time in 4, so without retries ~5/20 would pass.
  const w = 60, h = 20;
  const mask = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 48; x < 60; x++) mask[y * w + x] = 1;
  const s: Sample = { image: new Uint8Array(w * h * 3), mask, width: w, height: h };
  let hits = 0;
  for (let seed = 0; seed < 20; seed++) {
    const out = augment(s, aug({ crop: { size: [20, 20], cat_max_ratio: 0.9 } }), mulberry32(seed), IGN);
    if (out.mask.includes(1)) hits++;
  }
  assert.ok(hits >= 14, `crops containing the stripe: ${hits}/20`);
});

test('gaussian noise has the configured std (in units of 255)', () => {
  const img = new Float32Array(64 * 64 * 3).fill(128);
  photometric(img, null, aug({ noise: { p: 1, std: 0.05 } }), mulberry32(5));
  const mean = img.reduce((a, b) => a + b, 0) / img.length;
  const sd = Math.sqrt(img.reduce((a, b) => a + (b - mean) ** 2, 0) / img.length);
  assert.ok(Math.abs(mean - 128) < 0.5 && Math.abs(sd - 0.05 * 255) < 0.5, `mean ${mean} sd ${sd}`);
});

test('crop.focus puts a pixel of a rare class in the window; the crop stays paired', () => {
  // A 3x3 patch of class 2 in one corner of a 64x48 image: a 16x16 crop holds it ~1 time in 12.
  const w = 64, h = 48;
  const s = blockySample(w, h, 3);
  for (let y = 40; y < 43; y++) for (let x = 58; x < 61; x++) s.mask[y * w + x] = 2;
  const count = (a: object) => {
    let hits = 0;
    for (let seed = 0; seed < 40; seed++) if (augment(s, aug(a, 3), mulberry32(seed), IGN).mask.includes(2)) hits++;
    return hits;
  };
  const plain = count({ scale: { p: 1, range: [0.8, 1.2] }, crop: { size: [16, 16] } });
  const focused = count({ scale: { p: 1, range: [0.8, 1.2] }, crop: { size: [16, 16], focus: { p: 1, classes: [2] } } });
  assert.equal(focused, 40, `focused crops holding the patch: ${focused}/40`);
  assert.ok(plain < 15, `plain crops holding the patch: ${plain}/40`);
  // Pairing: where the mask is 0/1 (class 2 pixels aside) the image still thresholds to it.
  for (let seed = 0; seed < 10; seed++) {
    const out = augment(blockySample(w, h, 3), aug({ crop: { size: [16, 16], focus: { p: 1, classes: [1] } } }), mulberry32(seed), IGN);
    assert.equal(mismatch(out, IGN), 0, `seed ${seed}`);
    assert.ok(out.mask.includes(1), `seed ${seed}: focus class in crop`);
  }
  // A sample without any of the classes gets an ordinary crop.
  const none = augment(blockySample(w, h, 3), aug({ crop: { size: [16, 16], focus: { p: 1, classes: [5] } } }, 6), mulberry32(1), IGN);
  assert.deepEqual([none.width, none.height], [16, 16]);
});

test('crop.focus classes must be real classes', () => {
  const bad = (classes: number[]) => () => parseConfig({ data: { num_classes: 3 }, training: { augmentations: { crop: { size: [8, 8], focus: { classes } } } } });
  assert.throws(bad([3]), /training\.augmentations\.crop\.focus\.classes' has 3; expected class indices below data\.num_classes \(3\)/);
  assert.throws(bad([255]), /crop\.focus\.classes/);
  assert.doesNotThrow(bad([1, 2]));
});

/** A w x h sample of class 0 with rectangles of other classes; each class has its own colour. */
const COLOURS: Record<number, number[]> = { 0: [20, 20, 20], 1: [230, 230, 230], 2: [40, 200, 90], 3: [0, 0, 255], [IGN]: [120, 60, 0] };
function paintedSample(w: number, h: number, rects: [cls: number, x0: number, y0: number, x1: number, y1: number][]): Sample {
  const mask = new Uint8Array(w * h);
  for (const [c, x0, y0, x1, y1] of rects) for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) mask[y * w + x] = c;
  const image = new Uint8Array(w * h * 3);
  mask.forEach((c, i) => image.set(COLOURS[c], i * 3));
  return { image, mask, width: w, height: h };
}

test('paste: the donor pixels of the paste classes arrive with their own image values; nothing else of the donor does', () => {
  const w = 40, h = 30;
  const target = paintedSample(w, h, [[1, 0, 0, 20, 30]]);
  // Donor: a class-2 patch in a corner, class 3 (not pasted) beside it, the rest ignored.
  const donor = paintedSample(w, h, [[IGN, 0, 0, 40, 30], [2, 30, 22, 36, 27], [3, 20, 5, 30, 15]]);
  const a = aug({ crop: { size: [16, 20] }, hflip: { p: 0.5 }, vflip: { p: 0.5 }, paste: { p: 1, classes: [2] } }, 4);
  for (let seed = 0; seed < 12; seed++) {
    const out = augment(target, a, mulberry32(seed), IGN, { sample: donor, rng: mulberry32(100 + seed) });
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < out.mask.length; i++) {
      const c = out.mask[i];
      assert.ok(c <= 2, `seed ${seed}: class ${c} at ${i} (only classes 0-2 may appear: no class 3, no ignored donor pixel)`);
      counts[c]++;
      assert.deepEqual(Array.from(out.image.subarray(i * 3, i * 3 + 3)), COLOURS[c], `seed ${seed}: pixel ${i} of class ${c}`);
    }
    // The donor's window was placed on a pixel of its 30-pixel patch (crop.focus on the paste classes).
    assert.ok(counts[2] >= 1 && counts[2] <= 30, `seed ${seed}: ${counts[2]} pasted pixels`);
  }
  // Without a donor (the caller drew no paste) the sample is augmented as before, draw for draw.
  const plain = augment(target, aug({ crop: { size: [16, 20] }, hflip: { p: 0.5 }, vflip: { p: 0.5 } }, 4), mulberry32(5), IGN);
  assert.deepEqual(augment(target, a, mulberry32(5), IGN), plain);
});

test('paste: photometric steps come after and change the image only, pasted pixels included', () => {
  const w = 40, h = 30;
  const target = blockySample(w, h, 2);
  const donor = paintedSample(w, h, [[2, 5, 5, 25, 20]]);
  const geo = { scale: { p: 1, range: [0.8, 1.3] }, crop: { size: [20, 24] }, rotate: { p: 1, degrees: 20 }, paste: { p: 1, classes: [2] } };
  const photo = { brightness: { p: 1, range: 0.4 }, contrast: { p: 1, range: 0.4 }, hue: { p: 1, range: 0.1 }, noise: { p: 1, std: 0.05 } };
  for (let seed = 0; seed < 6; seed++) {
    const bare = augment(target, aug(geo, 3), mulberry32(seed), IGN, { sample: donor, rng: mulberry32(seed + 50) });
    const jittered = augment(target, aug({ ...geo, ...photo }, 3), mulberry32(seed), IGN, { sample: donor, rng: mulberry32(seed + 50) });
    assert.ok(bare.mask.includes(2), `seed ${seed}: something was pasted`);
    assert.deepEqual(jittered.mask, bare.mask, `seed ${seed}: the mask is the same with photometric steps`);
    const pasted = [...bare.mask.keys()].filter((i) => bare.mask[i] === 2);
    assert.ok(pasted.some((i) => Math.abs(jittered.image[i * 3 + 1] - bare.image[i * 3 + 1]) > 1), `seed ${seed}: pasted pixels are jittered too`);
  }
});

test('paste classes must be real classes', () => {
  const bad = (classes: number[]) => () => parseConfig({ data: { num_classes: 3 }, training: { augmentations: { paste: { classes } } } });
  assert.throws(bad([3]), /^UserError: .*key 'training\.augmentations\.paste\.classes' has 3; expected class indices below data\.num_classes \(3\), not the ignore index$/);
  assert.throws(bad([255]), /paste\.classes/);
  assert.doesNotThrow(bad([1, 2]));
});
