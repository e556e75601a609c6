// Batching: determinism, exact resume with skipSteps, val mode, normalisation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { parseConfig } from '../config/resolve';
import { UserError } from '../utils/errors';
import { listSplit } from '../loaders/registry';
import { Batch, BatchLoader, normaliseImage } from '../pipeline/batcher';
import { tmpDir, writeIsic } from '../loaders/fixtures';
import { decodeImage } from '../pipeline/decode';
import type { Config } from '../utils/config';

async function collect(l: BatchLoader, epoch: number, skip = 0): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of l.batches(epoch, skip)) out.push(b);
  return out;
}

const AUGS = { scale: {}, crop: { size: [20, 24] }, hflip: {}, vflip: {}, rotate: {}, brightness: {}, contrast: {}, saturation: {}, hue: {}, noise: {} };

async function setup(extra: object = {}): Promise<Config> {
  const root = path.join(tmpDir('batch'), 'ds');
  return parseConfig({ data: { root, size: [24, 24], synthetic: { train: 11, val: 5, image_size: 32 } }, training: { batch_size: 3, augmentations: AUGS, ...extra } });
}

test('train: same seed -> same batches; other epoch -> other order; other seed -> other batches', async () => {
  const cfg = await setup();
  const pairs = await listSplit(cfg, 'train');
  const l = new BatchLoader(cfg, pairs, { train: true });
  assert.equal(l.stepsPerEpoch, 3); // 11 pairs, batch 3: last partial batch dropped
  const a = await collect(l, 0);
  assert.equal(a.length, 3);
  assert.deepEqual(a, await collect(new BatchLoader(cfg, pairs, { train: true }), 0));
  assert.ok(a.every((b) => b.n === 3 && b.h === 20 && b.w === 24 && b.images.length === 3 * 20 * 24 * 3 && b.masks.length === 3 * 20 * 24));
  assert.notDeepEqual((await collect(l, 1)).map((b) => b.ids), a.map((b) => b.ids));
  const other = parseConfig({ ...cfg, training: { ...cfg.training, seed: 7 } });
  assert.notDeepEqual(await collect(new BatchLoader(other, pairs, { train: true }), 0), a);
});

test('skipSteps yields exactly the uninterrupted batches from step k on', async () => {
  const cfg = await setup({ workers: 3 });
  const pairs = await listSplit(cfg, 'train');
  const l = new BatchLoader(cfg, pairs, { train: true });
  const full = await collect(l, 4);
  for (const k of [1, 2, 3]) assert.deepEqual(await collect(new BatchLoader(cfg, pairs, { train: true }), 4, k), full.slice(k), `skip ${k}`);
  const spe = l.stepsPerEpoch;
  assert.deepEqual(await collect(new BatchLoader(cfg, pairs, { train: true }), 4, spe), [], 'skipping the whole epoch');
  // Past the epoch (or negative) is a bug upstream, never a loop: it throws.
  for (const k of [spe + 1, -1]) await assert.rejects(collect(new BatchLoader(cfg, pairs, { train: true }), 4, k), /cannot skip/);
});

test('val: fixed order, no augmentation, last partial batch kept, data.size', async () => {
  const cfg = await setup();
  const pairs = await listSplit(cfg, 'val');
  const l = new BatchLoader(cfg, pairs, { train: false });
  assert.equal(l.stepsPerEpoch, 2);
  const a = await collect(l, 0);
  assert.deepEqual(a.map((b) => b.n), [3, 2]);
  assert.deepEqual(a.flatMap((b) => b.ids), pairs.map((p) => p.id));
  assert.ok(a.every((b) => b.h === 24 && b.w === 24));
  assert.deepEqual(await collect(l, 5), a); // epoch does not matter
  assert.ok(a.every((b) => b.masks.every((v) => v === 0 || v === 1)));
});

test('images are normalised by mean/std after /255', async () => {
  const root = tmpDir('norm');
  await writeIsic(root, 'Validation', ['ISIC_1'], 4, 4);
  const cfg = parseConfig({ data: { name: 'isic', root, size: [4, 4], mean: [0.5, 0.5, 0.5], std: [0.5, 0.25, 0.5] } });
  const [b] = await collect(new BatchLoader(cfg, await listSplit(cfg, 'val'), { train: false }), 0);
  const ref = await decodeImage(path.join(root, 'ISIC2018_Task1-2_Validation_Input', 'ISIC_1.jpg'), [4, 4]);
  const std = [0.5, 0.25, 0.5];
  for (let i = 0; i < 48; i++) assert.ok(Math.abs(b.images[i] - (ref.data[i] / 255 - 0.5) / std[i % 3]) < 1e-5);
  assert.ok(Math.max(...b.images.filter((_, i) => i % 3 === 1)) <= (1 - 0.5) / 0.25 + 1e-6);
});

test('data.normalize image: each image of a batch by its own statistics, as predict prepares it', async () => {
  const root = tmpDir('norm-image');
  await writeIsic(root, 'Validation', ['ISIC_1', 'ISIC_2'], 6, 5);
  const cfg = parseConfig({ data: { name: 'isic', root, size: [5, 6], normalize: 'image' } });
  const [b] = await collect(new BatchLoader(cfg, await listSplit(cfg, 'val'), { train: false }), 0);
  const n = 5 * 6 * 3;
  for (const [k, id] of ['ISIC_1', 'ISIC_2'].entries()) {
    const one = b.images.subarray(k * n, (k + 1) * n);
    const mean = one.reduce((x, y) => x + y, 0) / n;
    const sd = Math.sqrt(one.reduce((x, y) => x + (y - mean) ** 2, 0) / n);
    assert.ok(Math.abs(mean) < 1e-4 && Math.abs(sd - 1) < 1e-3, `${id}: mean ${mean}, sd ${sd}`);
    const ref = normaliseImage((await decodeImage(path.join(root, 'ISIC2018_Task1-2_Validation_Input', `${id}.jpg`), [5, 6])).data, cfg.data);
    assert.ok(one.every((v, i) => Math.abs(v - ref[i]) < 1e-5));
  }
});

test('fewer training pairs than batch_size is a UserError', async () => {
  const cfg = await setup({ batch_size: 20 });
  assert.throws(() => new BatchLoader(cfg, [{ id: 'a', image: 'a', mask: 'b' }], { train: true }), UserError);
});

test('a bad file surfaces as a UserError from the generator', async () => {
  const cfg = await setup();
  const pairs = await listSplit(cfg, 'val');
  const broken = [...pairs, { id: 'gone', image: path.join(cfg.data.root, 'gone.jpg'), mask: pairs[0].mask }];
  await assert.rejects(collect(new BatchLoader(cfg, broken, { train: false }), 0), /gone\.jpg: cannot read file/);
});

test('worker threads and in-process loading give identical batches', async () => {
  const cfg = await setup({ workers: 2 });
  const pairs = await listSplit(cfg, 'train');
  const threaded = new BatchLoader(cfg, pairs, { train: true, threads: true });
  const inproc = new BatchLoader(cfg, pairs, { train: true, threads: false });
  assert.deepEqual(await collect(threaded, 1), await collect(inproc, 1));
  assert.deepEqual(await collect(threaded, 2, 2), (await collect(inproc, 2)).slice(2)); // pool reused across epochs
  await threaded.close();
});

test('augmentations.paste: batches stay determined by (seed, epoch, step), in workers as in process, and resume exactly', async () => {
  const cfg = await setup({ augmentations: { ...AUGS, paste: { p: 0.5, classes: [1] } } });
  const pairs = await listSplit(cfg, 'train');
  const inProcess = await collect(new BatchLoader(cfg, pairs, { train: true, threads: false }), 2);
  const threaded = new BatchLoader(parseConfig({ ...cfg, training: { ...cfg.training, workers: 2 } }), pairs, { train: true });
  assert.deepEqual(await collect(threaded, 2), inProcess);
  await threaded.close();
  assert.deepEqual(await collect(new BatchLoader(cfg, pairs, { train: true, threads: false }), 2, 1), inProcess.slice(1));
  // Pasting changed some samples and left the others as the run without it draws them.
  const without = await collect(new BatchLoader(await setup(), pairs, { train: true, threads: false }), 2);
  const hw = 20 * 24;
  const same = inProcess.flatMap((b, bi) => Array.from({ length: b.n }, (_, k) => b.masks.subarray(k * hw, (k + 1) * hw).every((v, i) => v === without[bi].masks[k * hw + i])));
  assert.ok(same.some((s) => s) && same.some((s) => !s), `samples unchanged by pasting: ${same}`);
});
