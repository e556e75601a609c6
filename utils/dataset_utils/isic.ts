// ISIC 2018 Task 1: binary lesion masks, and the usual clean-up of a predicted mask:
// a lesion is one blob, so keep the largest connected component and fill its holes.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../self_test';
import type { DatasetMeta } from './index';


export interface IsicPostprocessOptions {
  largestComponent?: boolean; // default true
  fillHoles?: boolean; // default true
}

/** Labels 8-connected regions where `inside(i)` holds; returns labels (0 = outside) and region sizes. */
function components(w: number, h: number, inside: (i: number) => boolean, conn8: boolean): { labels: Int32Array; sizes: number[] } {
  const labels = new Int32Array(w * h);
  const sizes = [0];
  // Typed and grown by doubling: a number[] stack ran out of array length on a 12000x12000 mask.
  let stack = new Int32Array(Math.min(w * h, 1 << 16));
  let top = 0;
  for (let s = 0; s < w * h; s++) {
    if (labels[s] || !inside(s)) continue;
    const id = sizes.length;
    let n = 0;
    labels[s] = id;
    stack[top++] = s;
    while (top) {
      const p = stack[--top];
      n++;
      const x = p % w;
      const y = (p - x) / w;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          if ((!dx && !dy) || (!conn8 && dx && dy)) continue;
          const nx = x + dx;
          const ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
          const q = ny * w + nx;
          if (!labels[q] && inside(q)) {
            labels[q] = id;
            if (top === stack.length) {
              const grown = new Int32Array(Math.min(w * h, stack.length * 2)); // each pixel is pushed once at most
              grown.set(stack);
              stack = grown;
            }
            stack[top++] = q;
          }
        }
      }
    }
    sizes.push(n);
  }
  return { labels, sizes };
}

/** mask: 0/1 per pixel (row-major, w*h). Returns a new 0/1 mask. */
export function isicPostprocess(mask: Uint8Array, w: number, h: number, opts: IsicPostprocessOptions = {}): Uint8Array {
  // Loops, not Uint8Array.from(x, fn): that builds a plain array first, past V8's length limit at 12000x12000.
  let out = new Uint8Array(mask.length);
  for (let i = 0; i < mask.length; i++) out[i] = mask[i] === 1 ? 1 : 0;
  if (opts.largestComponent ?? true) {
    const { labels, sizes } = components(w, h, (i) => out[i] === 1, true);
    if (sizes.length > 2) {
      let best = 1;
      for (let i = 2; i < sizes.length; i++) if (sizes[i] > sizes[best]) best = i;
      for (let i = 0; i < labels.length; i++) out[i] = labels[i] === best ? 1 : 0;
    }
  }
  if (opts.fillHoles ?? true) {
    // Background regions (4-connected) that do not touch the border are holes.
    const { labels, sizes } = components(w, h, (i) => out[i] === 0, false);
    const touches = new Uint8Array(sizes.length);
    for (let x = 0; x < w; x++) {
      touches[labels[x]] = 1;
      touches[labels[(h - 1) * w + x]] = 1;
    }
    for (let y = 0; y < h; y++) {
      touches[labels[y * w]] = 1;
      touches[labels[y * w + w - 1]] = 1;
    }
    for (let i = 0; i < out.length; i++) if (out[i] === 0 && !touches[labels[i]]) out[i] = 1;
  }
  return out;
}

/** ISIC's metainfo; also the synthetic lesion set's, which imitates it. */
export const ISIC_META: DatasetMeta = {
  classes: ['background', 'lesion'],
  palette: [[0, 0, 0], [255, 255, 255]],
  postprocessName: 'largest lesion, holes filled',
  postprocess: (mask, w, h) => isicPostprocess(mask, w, h),
};

export const selfTest: SelfTest = {
  'keeps the largest blob and fills its hole'() {
    // 8x6: big ring with a hole at (2,2), plus a stray pixel at (7,5).
    const w = 8, h = 6;
    const m = new Uint8Array(w * h);
    for (let y = 1; y <= 3; y++) for (let x = 1; x <= 3; x++) m[y * w + x] = 1;
    m[2 * w + 2] = 0;
    m[5 * w + 7] = 1;
    const p = isicPostprocess(m, w, h);
    assert.equal(p[5 * w + 7], 0);
    assert.equal(p[2 * w + 2], 1);
    assert.equal(p.reduce((a, b) => a + b, 0), 9);
    const keep = isicPostprocess(m, w, h, { largestComponent: false, fillHoles: false });
    assert.deepEqual(keep, m);
  },
  'border-touching background is not a hole'() {
    const w = 5, h = 5;
    const m = new Uint8Array(w * h).fill(1);
    m[0] = 0;
    assert.equal(isicPostprocess(m, w, h)[0], 0);
  },
};

runIfMain(module, selfTest);
