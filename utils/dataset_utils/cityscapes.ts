// Cityscapes facts: official label ids (0-33) -> the 19 standard train ids, names, palette.
// Source: cityscapesScripts/helpers/labels.py.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../self_test';
import type { DatasetMeta, Rgb } from './index';

const CLASSES = [
  'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign', 'vegetation',
  'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle', 'bicycle',
];

const PALETTE: Rgb[] = [
  [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
  [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
  [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32],
];

/** trainId -> official labelId (for submissions to the benchmark server). */
export const TRAIN_ID_TO_LABEL_ID = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33];

export const NUM_LABEL_IDS = 34;

/** labelId (0-33) -> trainId; ids without a train id map to `ignore`. */
export function labelIdToTrainId(ignore = 255): number[] {
  const t = new Array<number>(NUM_LABEL_IDS).fill(ignore);
  TRAIN_ID_TO_LABEL_ID.forEach((labelId, trainId) => (t[labelId] = trainId));
  return t;
}

/** trainId mask -> labelId mask; ignored/unknown pixels become 0 ('unlabeled'). */
export function trainIdsToLabelIds(mask: Uint8Array): Uint8Array {
  const out = new Uint8Array(mask.length);
  for (let i = 0; i < mask.length; i++) out[i] = TRAIN_ID_TO_LABEL_ID[mask[i]] ?? 0;
  return out;
}

export const CITYSCAPES_META: DatasetMeta = { classes: CLASSES, palette: PALETTE, toSubmission: trainIdsToLabelIds };

export const selfTest: SelfTest = {
  'tables are consistent'() {
    const t = labelIdToTrainId();
    assert.equal(t[7], 0); // road
    assert.equal(t[26], 13); // car
    assert.equal(t[33], 18); // bicycle
    assert.equal(t[0], 255);
    assert.equal(t[29], 255); // caravan is not trained
    assert.equal(t.filter((v) => v !== 255).length, 19);
  },
  'trainId -> labelId round trip'() {
    const m = Uint8Array.from([0, 13, 18, 255]);
    assert.deepEqual([...trainIdsToLabelIds(m)], [7, 26, 33, 0]);
    const t = labelIdToTrainId();
    assert.deepEqual([...trainIdsToLabelIds(m)].slice(0, 3).map((l) => t[l]), [0, 13, 18]);
  },
};

runIfMain(module, selfTest);
