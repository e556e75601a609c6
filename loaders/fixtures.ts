// Tiny on-disk datasets in each supported layout, written with sharp, for tests and
// self-tests (the project's tests never read real data).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { mulberry32 } from '../utils/rng';
import { Config, parseConfig } from '../utils/config';
import { runIfMain, SelfTest } from '../utils/self_test';

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `semseg-${prefix}-`));
}

/** Writes raw pixels (1 = grey, 3 = RGB, 4 = RGBA channels) as PNG or JPEG (by extension). */
export async function writeRaw(file: string, data: Uint8Array, w: number, h: number, channels: 1 | 3 | 4): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  let s = sharp(Buffer.from(data.buffer, data.byteOffset, data.length), { raw: { width: w, height: h, channels } });
  if (channels === 1) s = s.toColourspace('b-w');
  await (file.toLowerCase().endsWith('.png') ? s.png() : s.jpeg({ quality: 95 })).toFile(file);
}

/** RGB image whose red channel is bright where mask > 0 (so image and mask can be compared). */
export function imageForMask(mask: Uint8Array, seed = 1): Uint8Array {
  const rng = mulberry32(seed);
  const img = new Uint8Array(mask.length * 3);
  for (let i = 0; i < mask.length; i++) {
    img[3 * i] = mask[i] ? 220 : 30;
    img[3 * i + 1] = 60 + Math.floor(rng() * 120);
    img[3 * i + 2] = (mask[i] * 37) & 255;
  }
  return img;
}

/** A mask of w*h filled with `values` in horizontal bands. */
export function bandMask(w: number, h: number, values: number[]): Uint8Array {
  const m = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) m.fill(values[Math.floor((y * values.length) / h)], y * w, y * w + w);
  return m;
}

export async function writeIsic(root: string, split: 'Training' | 'Validation' | 'Test', ids: string[], w = 16, h = 12, maskValues = [0, 255]): Promise<void> {
  for (const [k, id] of ids.entries()) {
    const mask = bandMask(w, h, k % 2 ? maskValues : [...maskValues].reverse());
    await writeRaw(path.join(root, `ISIC2018_Task1-2_${split}_Input`, `${id}.jpg`), imageForMask(mask, k), w, h, 3);
    await writeRaw(path.join(root, `ISIC2018_Task1_${split}_GroundTruth`, `${id}_segmentation.png`), mask, w, h, 1);
  }
}

export async function writeCityscapes(root: string, split: string, city: string, names: string[], labelIds: number[], w = 16, h = 8): Promise<void> {
  for (const n of names) {
    const mask = bandMask(w, h, labelIds);
    await writeRaw(path.join(root, 'leftImg8bit', split, city, `${n}_leftImg8bit.png`), imageForMask(mask), w, h, 3);
    await writeRaw(path.join(root, 'gtFine', split, city, `${n}_gtFine_labelIds.png`), mask, w, h, 1);
  }
}

export async function writeCamvid(root: string, split: string, names: string[], labels: number[], w = 12, h = 9): Promise<void> {
  for (const n of names) {
    const mask = bandMask(w, h, labels);
    await writeRaw(path.join(root, split, `${n}.png`), imageForMask(mask), w, h, 3);
    await writeRaw(path.join(root, `${split}annot`, `${n}.png`), mask, w, h, 1);
  }
}

/**
 * A small, fast config for tests: everything (data, checkpoints, results) under `dir`,
 * tiny U-Net, synthetic data; `over` is merged section by section.
 */
export function fixtureConfig(dir: string, over: Record<string, any> = {}): Config {
  const base: Record<string, any> = {
    name: 'fixture',
    backend: 'wasm',
    model: { base: 4, depth: 2 },
    data: { name: 'synthetic', root: path.join(dir, 'data'), size: [32, 32], synthetic: { train: 16, val: 8, image_size: 32 } },
    training: { epochs: 2, batch_size: 4, print_interval: 2, workers: 1 },
    checkpoint: { ckpt_root: path.join(dir, 'checkpoints'), best_metric: 'val.dice' },
    results: { root: path.join(dir, 'results') },
  };
  for (const [k, v] of Object.entries(over)) base[k] = v && typeof v === 'object' && !Array.isArray(v) ? { ...base[k], ...v } : v;
  return parseConfig(base, 'fixture config');
}

/**
 * A 1x1-convolution model that predicts the foreground of imageForMask() images
 * from their red channel: a known-perfect model for evaluation and prediction tests.
 */
export function redChannelModel(): tf.LayersModel {
  const kernel = tf.tensor4d([20, 0, 0], [1, 1, 3, 1]);
  const bias = tf.tensor1d([0]);
  const m = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [null, null, 3], filters: 1, kernelSize: 1, weights: [kernel, bias], name: 'red' })] });
  tf.dispose([kernel, bias]);
  return m;
}

export const selfTest: SelfTest = {
  async 'writes readable fixtures'() {
    const d = tmpDir('fx');
    await writeIsic(d, 'Training', ['ISIC_0000001'], 8, 6);
    const meta = await sharp(path.join(d, 'ISIC2018_Task1_Training_GroundTruth', 'ISIC_0000001_segmentation.png')).metadata();
    assert.equal(meta.channels, 1);
    assert.deepEqual([...bandMask(2, 4, [1, 2])], [1, 1, 1, 1, 2, 2, 2, 2]);
    fs.rmSync(d, { recursive: true });
  },
};

runIfMain(module, selfTest);
