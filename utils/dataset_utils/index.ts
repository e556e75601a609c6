// Per-dataset facts used by predict/evaluate: class names, palette, post-processing.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../self_test';
import { UserError } from '../errors';
import { CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, trainIdsToLabelIds } from './cityscapes';
import { CAMVID_CLASSES, CAMVID_PALETTE } from './camvid';
import { ISIC_CLASSES, ISIC_PALETTE, isicPostprocess, IsicPostprocessOptions } from './isic';

export type Rgb = [number, number, number];

export interface DatasetInfo {
  classNames: string[];
  palette: Rgb[];
  postprocess?(mask: Uint8Array, w: number, h: number, opts?: IsicPostprocessOptions): Uint8Array;
  toSubmission?(mask: Uint8Array): Uint8Array;
}

/** A palette for n classes: black, white for 2; else distinct hues (golden-angle spacing). */
export function genericPalette(n: number): Rgb[] {
  if (n <= 2) return ISIC_PALETTE.slice(0, Math.max(n, 0));
  const out: Rgb[] = [[0, 0, 0]];
  for (let i = 1; i < n; i++) {
    const h = (i * 137.508) % 360;
    const l = i % 2 ? 0.55 : 0.4;
    const c = (1 - Math.abs(2 * l - 1)) * 0.8;
    const x = c * (1 - Math.abs(((h / 60) % 2) - 1));
    const [r, g, b] = h < 60 ? [c, x, 0] : h < 120 ? [x, c, 0] : h < 180 ? [0, c, x] : h < 240 ? [0, x, c] : h < 300 ? [x, 0, c] : [c, 0, x];
    const m = l - c / 2;
    out.push([r, g, b].map((v) => Math.round((v + m) * 255)) as Rgb);
  }
  return out;
}

/**
 * name: cfg.data.name. numClasses is needed for 'folder'/'synthetic', whose classes
 * are generic ('class_0', ...); the synthetic lesion set is ISIC-like.
 */
export function getDatasetInfo(name: string, numClasses = 2): DatasetInfo {
  switch (name) {
    case 'isic':
      return { classNames: ISIC_CLASSES, palette: ISIC_PALETTE, postprocess: isicPostprocess };
    case 'cityscapes':
      return { classNames: CITYSCAPES_CLASSES, palette: CITYSCAPES_PALETTE, toSubmission: trainIdsToLabelIds };
    case 'camvid':
      return { classNames: CAMVID_CLASSES, palette: CAMVID_PALETTE };
    case 'synthetic':
      if (numClasses === 2) return { classNames: ISIC_CLASSES, palette: ISIC_PALETTE, postprocess: isicPostprocess };
      return { classNames: ['background', 'circle', 'square', 'triangle', 'ring'].slice(0, numClasses), palette: genericPalette(numClasses) };
    case 'folder':
      return { classNames: Array.from({ length: numClasses }, (_, i) => `class_${i}`), palette: genericPalette(numClasses) };
    default:
      throw new UserError(`unknown dataset '${name}': expected one of isic, cityscapes, camvid, folder, synthetic`);
  }
}

/** Class-id mask -> RGB (w*h*3); ids without a colour (ignore) become black. */
export function colorize(mask: Uint8Array, palette: Rgb[]): Uint8Array {
  const out = new Uint8Array(mask.length * 3);
  for (let i = 0; i < mask.length; i++) {
    const c = palette[mask[i]];
    if (!c) continue;
    out[3 * i] = c[0];
    out[3 * i + 1] = c[1];
    out[3 * i + 2] = c[2];
  }
  return out;
}

export const selfTest: SelfTest = {
  'every dataset has names and colours for each class'() {
    for (const [n, k] of [['isic', 2], ['cityscapes', 19], ['camvid', 11], ['folder', 5], ['synthetic', 2], ['synthetic', 4]] as const) {
      const info = getDatasetInfo(n, k);
      assert.equal(info.classNames.length, k, n);
      assert.equal(info.palette.length, k, n);
    }
    assert.throws(() => getDatasetInfo('voc'), UserError);
  },
  'generic palette colours are distinct'() {
    const p = genericPalette(12).map((c) => c.join(','));
    assert.equal(new Set(p).size, 12);
  },
  'colorize uses the palette, ignore is black'() {
    const rgb = colorize(Uint8Array.from([0, 1, 255]), CITYSCAPES_PALETTE);
    assert.deepEqual([...rgb], [128, 64, 128, 244, 35, 232, 0, 0, 0]);
  },
  'cityscapes submission maps trainIds to labelIds'() {
    assert.deepEqual([...getDatasetInfo('cityscapes').toSubmission!(Uint8Array.from([0, 18]))], [7, 33]);
  },
};

runIfMain(module, selfTest);
