// What every dataset declares about itself (MMSegmentation's METAINFO): class names,
// palette, and optionally post-processing and a submission format. Each dataset's
// facts live in utils/dataset_utils/<name>.ts; its loader (loaders/<name>.ts)
// registers them with its file layout. Generic helpers for palettes are here.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../self_test';

export type Rgb = [number, number, number];

export interface DatasetMeta {
  classes: string[];
  /** One colour per class, used by overlays, colour masks, the report legend and exports. */
  palette: Rgb[];
  /** Name of the post-processing (shown in reports and exports), when there is one. */
  postprocessName?: string;
  /** Clean-up of a predicted class map (w*h), e.g. ISIC: keep the largest lesion. */
  postprocess?(mask: Uint8Array, w: number, h: number): Uint8Array;
  /** Class ids -> the values the benchmark expects in submitted masks (e.g. Cityscapes label ids). */
  toSubmission?(mask: Uint8Array): Uint8Array;
}

/** A palette for n classes: black, white for 2; else distinct hues (golden-angle spacing). */
export function genericPalette(n: number): Rgb[] {
  if (n <= 2) return ([[0, 0, 0], [255, 255, 255]] as Rgb[]).slice(0, Math.max(n, 0));
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

/** Metainfo of a dataset that names no classes (the `folder` loader): class_0, class_1, ... */
export function genericMeta(numClasses: number): DatasetMeta {
  return { classes: Array.from({ length: numClasses }, (_, i) => `class_${i}`), palette: genericPalette(numClasses) };
}

export const selfTest: SelfTest = {
  'generic palette colours are distinct'() {
    const p = genericPalette(12).map((c) => c.join(','));
    assert.equal(new Set(p).size, 12);
  },
  'generic metainfo names each class'() {
    const m = genericMeta(3);
    assert.deepEqual(m.classes, ['class_0', 'class_1', 'class_2']);
    assert.equal(m.palette.length, 3);
  },
};

runIfMain(module, selfTest);
