// Raw mask values to class ids: the checks and the value table of the mask rules, and the
// nearest-neighbour resize masks get. No file access (decode.ts reads the files), so the
// browser training page (deploy/web_train) applies the very same rules.
import assert from 'node:assert/strict';
import type { MaskLut } from '../loaders/registry';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';

export interface MaskRules { lut: MaskLut; numClasses: number; ignoreIndex: number }

/** Throws, naming the file and the first pixel value that is not a known class. */
export function checkMaskValues(values: Uint8Array | Uint16Array, rules: MaskRules, file: string): void {
  const { lut, numClasses, ignoreIndex } = rules;
  const ok = (v: number) => {
    const c = v < 256 ? lut[v] : -1;
    return c >= 0 && (c < numClasses || c === ignoreIndex);
  };
  // Which values occur (cheap pass), then only if one is bad, find the first bad pixel.
  const seen = new Uint8Array(values instanceof Uint16Array ? 65536 : 256);
  for (let i = 0; i < values.length; i++) seen[values[i]] = 1;
  let bad = false;
  for (let v = 0; v < seen.length && !bad; v++) bad = seen[v] === 1 && !ok(v);
  if (!bad) return;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (ok(v)) continue;
    const c = v < 256 ? lut[v] : -1;
    const why = c < 0 ? 'is not a known class value' : `maps to class ${c} but data.num_classes is ${numClasses}`;
    throw new UserError(`${file}: mask value ${v} (first bad pixel #${i}) ${why} (ignore index is ${ignoreIndex})`);
  }
}

/** Applies the loader's value -> class table (values must have been checked). */
export function applyLut(values: Uint8Array | Uint16Array, lut: MaskLut): Uint8Array {
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = lut[values[i]];
  return out;
}

/** Checks and maps raw mask values to class ids. */
export function mapMask(values: Uint8Array | Uint16Array, rules: MaskRules, file: string): Uint8Array {
  checkMaskValues(values, rules, file);
  return applyLut(values, rules.lut);
}

/** Nearest-neighbour resize generic over the element type (raw 8/16-bit values or class ids). */
export function resizeNearestAny<T extends Uint8Array | Uint16Array>(src: T, sw: number, sh: number, dw: number, dh: number, out: T): T {
  const xs = new Int32Array(dw);
  for (let x = 0; x < dw; x++) xs[x] = Math.min(sw - 1, Math.floor(((x + 0.5) * sw) / dw));
  for (let y = 0; y < dh; y++) {
    const row = Math.min(sh - 1, Math.floor(((y + 0.5) * sh) / dh)) * sw;
    const o = y * dw;
    for (let x = 0; x < dw; x++) out[o + x] = src[row + xs[x]];
  }
  return out;
}

/** Nearest-neighbour resize (pixel centres), for masks. */
export function resizeNearest(src: Uint8Array, sw: number, sh: number, dw: number, dh: number): Uint8Array {
  if (sw === dw && sh === dh) return src;
  return resizeNearestAny(src, sw, sh, dw, dh, new Uint8Array(dw * dh));
}

export interface LabelMask { data: Uint8Array; width: number; height: number }

/**
 * A pair's mask from its raw values, as both decoders (Node's pipeline/decode.ts and the
 * training page's) make it: the same size as its image (upright, by their EXIF orientations),
 * every source value checked, resized by nearest to `size` [h, w] and then mapped (the
 * resized mask is usually the smaller); with `full`, also mapped at its own size.
 */
export function pairMask(
  pair: { image: string; mask: string },
  image: { srcWidth: number; srcHeight: number; orientation: number },
  raw: { values: Uint8Array | Uint16Array; width: number; height: number; orientation: number },
  rules: MaskRules,
  size: readonly [number, number],
  full = false,
): { mask: LabelMask; fullMask?: LabelMask } {
  if (raw.width !== image.srcWidth || raw.height !== image.srcHeight) {
    const turned = (o: number) => (o !== 1 ? ` (upright, by its EXIF orientation ${o})` : '');
    throw new UserError(
      `image ${pair.image} is ${image.srcWidth}x${image.srcHeight}${turned(image.orientation)} but its mask ${pair.mask} is ${raw.width}x${raw.height}${turned(raw.orientation)}; they must be the same size`,
    );
  }
  checkMaskValues(raw.values, rules, pair.mask);
  const [h, w] = size;
  const small = raw.width === w && raw.height === h ? raw.values : resizeNearestAny(raw.values, raw.width, raw.height, w, h, raw.values instanceof Uint16Array ? new Uint16Array(w * h) : new Uint8Array(w * h));
  const data = applyLut(small, rules.lut);
  const fullMask = full ? (small === raw.values ? { data, width: w, height: h } : { data: applyLut(raw.values, rules.lut), width: raw.width, height: raw.height }) : undefined;
  return { mask: { data, width: w, height: h }, fullMask };
}

export const selfTest: SelfTest = {
  'values map through the table; an unknown value names the file and the first bad pixel'() {
    const lut = new Int16Array(256).fill(-1);
    lut[0] = 0;
    lut[255] = 1;
    const rules = { lut, numClasses: 2, ignoreIndex: 255 };
    assert.deepEqual([...mapMask(Uint8Array.from([0, 255, 0]), rules, 'm.png')], [0, 1, 0]);
    assert.throws(() => mapMask(Uint8Array.from([0, 7]), rules, 'm.png'), (e: Error) => e instanceof UserError && /^m\.png: mask value 7 \(first bad pixel #1\) is not a known class value/.test(e.message));
    assert.deepEqual([...resizeNearest(Uint8Array.from([1, 2, 3, 4]), 2, 2, 4, 4)], [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
  },
  'a pair\'s mask: sizes checked against the upright image, resized by nearest, then mapped; at its own size on request'() {
    const lut = new Int16Array(256).fill(-1);
    lut[0] = 0;
    lut[255] = 1;
    const rules = { lut, numClasses: 2, ignoreIndex: 255 };
    const pair = { image: 'i.jpg', mask: 'm.png' };
    const raw = { values: Uint8Array.from([0, 255, 255, 0]), width: 2, height: 2, orientation: 1 };
    const { mask, fullMask } = pairMask(pair, { srcWidth: 2, srcHeight: 2, orientation: 1 }, raw, rules, [1, 4], true);
    assert.deepEqual([mask.width, mask.height, [...mask.data]], [4, 1, [1, 1, 0, 0]]);
    assert.deepEqual([fullMask!.width, fullMask!.height, [...fullMask!.data]], [2, 2, [0, 1, 1, 0]]);
    assert.throws(() => pairMask(pair, { srcWidth: 3, srcHeight: 2, orientation: 6 }, raw, rules, [2, 2]), (e: Error) => e.message === 'image i.jpg is 3x2 (upright, by its EXIF orientation 6) but its mask m.png is 2x2; they must be the same size');
    assert.throws(() => pairMask(pair, { srcWidth: 2, srcHeight: 2, orientation: 1 }, { ...raw, values: Uint8Array.from([0, 7, 0, 0]) }, rules, [2, 2]), /m\.png: mask value 7/);
  },
};

runIfMain(module, selfTest);
