// The generated demo datasets (loaders/synthetic.ts): 'lesion' imitates ISIC and uses
// its metainfo; 'multiclass' draws circles, squares and triangles.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../self_test';
import { DatasetMeta, genericPalette } from './index';
import { ISIC_META } from './isic';

export const SHAPES_META: DatasetMeta = { classes: ['background', 'circle', 'square', 'triangle'], palette: genericPalette(4) };

export function syntheticMeta(kind: 'lesion' | 'multiclass'): DatasetMeta {
  return kind === 'lesion' ? ISIC_META : SHAPES_META;
}

export const selfTest: SelfTest = {
  'each kind names and colours its classes'() {
    assert.deepEqual(syntheticMeta('lesion').classes, ['background', 'lesion']);
    const m = syntheticMeta('multiclass');
    assert.equal(m.classes.length, 4);
    assert.equal(m.palette.length, 4);
  },
};

runIfMain(module, selfTest);
