// One file adds a part of each pluggable kind (a loss with a parameter, an optimizer, a
// schedule, an encoder with a pretrained-weights source, a dataset with an option): here each is written to a
// temporary file that registers itself, then used from a config (parse and build). A
// misspelt name or an unknown option of each kind is one line at parse time naming the key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '../backends/tf';
import { parseConfig, resolveRun } from '../config/resolve';
import { UserError } from '../utils/errors';
import { buildLoss } from '../training/losses';
import { createOptimizer } from '../training/optimizers';
import { lrAt } from '../training/lr_schedule';
import { getModel } from '../models/registry';
import { pretrainedWeights } from '../models/encoders/index';
import { datasetMeta, listSplit } from '../loaders/registry';
import { Batch, BatchLoader } from '../pipeline/batcher';
import sharp from 'sharp';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'registries-'));
const lib = (m: string) => JSON.stringify(require.resolve(m));

/** Writes a part's file and loads it (it registers itself), as a file in its folder would be. */
function addPart(name: string, body: string): void {
  const file = path.join(dir, `${name}.js`);
  fs.writeFileSync(file, `const tf = require(${lib('../backends/tf')});\nconst { z } = require(${lib('zod')});\n${body}\n`);
  require(file);
}

addPart('tversky', `
const { registerLoss } = require(${lib('../training/losses')});
const { softOverlap, oneMinusMean, EPS } = require(${lib('../training/loss_context')});
// Tversky (Salehi 2017): false positives weigh alpha, false negatives beta; 0.5 each is Dice.
registerLoss({
  name: 'tversky',
  summary: 'Tversky loss: Dice with false positives and false negatives weighed apart.',
  options: z.object({ alpha: z.number().min(0).default(0.5), smooth: z.number().min(0).default(1) }),
  compute(ctx, o) {
    const { inter, sums } = softOverlap(ctx, false);
    const p = ctx.c === 1 ? tf.sum(tf.mul(ctx.probs(), ctx.valid())) : null;
    const fp = tf.sub(p, inter), fn = tf.sub(tf.sub(sums, p), inter);
    const s = o.smooth + EPS;
    return oneMinusMean(ctx, tf.div(tf.add(inter, s), tf.add(tf.add(tf.add(inter, tf.mul(fp, o.alpha)), tf.mul(fn, 1 - o.alpha)), s)));
  },
});`);

addPart('signsgd', `
const { registerOptimizer } = require(${lib('../training/optimizers')});
registerOptimizer({
  name: 'signsgd',
  summary: 'Steps by -lr * scale * sign(gradient).',
  options: z.object({ scale: z.number().positive().default(1) }),
  slots: () => [],
  update: (g, o) => tf.sub(g.w, tf.mul(tf.sign(g.grad), g.lr * o.scale)),
});`);

addPart('halving', `
const { registerSchedule } = require(${lib('../training/lr_schedule')});
registerSchedule({
  name: 'halving',
  summary: 'Halves the rate every \`every\` iterations.',
  options: z.object({ every: z.number().int().positive().default(10) }),
  rate: (o, at) => at.baseLr * Math.pow(0.5, Math.floor(at.iter / o.every)),
});`);

addPart('tiny', `
const { registerEncoder } = require(${lib('../models/encoders/index')});
// Five 3x3 stride-2 convolutions of 4 filters: maps at strides 2 to 32.
registerEncoder({
  name: 'tiny',
  channels: [4, 4, 4, 4, 4],
  build(x, o) {
    const maps = [];
    for (let i = 0; i < 5; i++) maps.push((x = tf.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2, padding: 'same', name: o.prefix + '_c' + i }).apply(x)));
    return { maps, strides: [2, 4, 8, 16, 32], channels: [4, 4, 4, 4, 4] };
  },
  paramCount: (cin) => cin * 36 + 4 + 4 * 148,
  activationFloats: (cin, h, w) => [2, 4, 8, 16, 32].reduce((n, s) => n + 4 * Math.ceil(h / s) * Math.ceil(w / s), 0),
  pretrained: { toy: async (prefix) => [{ name: prefix + '_c0/bias', shape: [4], values: new Float32Array([1, 2, 3, 4]) }] },
});`);

addPart('listed', `
const fs = require('node:fs');
const path = require('node:path');
const { registerDataset, identityLut } = require(${lib('../loaders/registry')});
// Pairs listed in a text file under data.root, one "image mask" line each; mask value
// data.foreground is class 1.
registerDataset({
  name: 'listed',
  options: z.object({ list: z.string().default('{split}.txt'), foreground: z.number().int().min(1).max(255).default(255) }),
  numClasses: 2,
  meta: () => ({ classes: ['background', 'thing'], palette: [[0, 0, 0], [255, 0, 0]] }),
  listPairs(cfg, split, o) {
    const lines = fs.readFileSync(path.join(cfg.data.root, o.list.replace('{split}', split)), 'utf8').trim().split('\\n');
    return lines.map((l) => l.split(' ')).map(([image, mask]) => ({ id: path.parse(image).name, image: path.join(cfg.data.root, image), mask: path.join(cfg.data.root, mask) }));
  },
  maskLut(cfg, o) {
    const lut = identityLut(cfg);
    lut[1] = -1;
    lut[o.foreground] = 1;
    return lut;
  },
});`);

const near = (a: number, b: number, tol = 1e-5) => assert.ok(Math.abs(a - b) < tol, `${a} vs ${b}`);

test('a loss with a parameter, from its own file, is used from a config', () => {
  const logits = tf.tensor4d([2, -1, 0.5, -3], [1, 2, 2, 1]);
  const labels = tf.tensor3d([1, 0, 1, 1], [1, 2, 2], 'int32');
  const cfg = parseConfig({ training: { loss: { name: 'bce+tversky', weights: [0, 1], alpha: 0.5, smooth: 0.5 } } });
  assert.deepEqual(cfg.training.loss, { name: 'bce+tversky', weights: [0, 1], alpha: 0.5, smooth: 0.5 });
  const dice = buildLoss(parseConfig({ training: { loss: { name: 'dice' } } }))(logits, labels).dataSync()[0];
  near(buildLoss(cfg)(logits, labels).dataSync()[0], dice); // alpha 0.5 is Dice (of twice the smooth)
  const fpHeavy = buildLoss(parseConfig({ training: { loss: { name: 'tversky', alpha: 0.9 } } }))(logits, labels).dataSync()[0];
  assert.ok(Math.abs(fpHeavy - dice) > 1e-4, 'alpha changes the loss');
});

test('an optimizer with an option, from its own file, is used from a config', () => {
  const cfg = parseConfig({ training: { optimizer: { name: 'signsgd', lr: 0.1, scale: 2 } } });
  const v = tf.variable(tf.tensor1d([1, 1]), true, 'reg_test/kernel');
  const opt = createOptimizer(cfg);
  opt.applyGradients({ 'reg_test/kernel': tf.tensor1d([3, -0.1]) }, { 'reg_test/kernel': v });
  assert.deepEqual(Array.from(v.dataSync()).map((x) => +x.toFixed(6)), [0.8, 1.2]);
  opt.dispose();
});

test('a schedule with an option, from its own file, is used from a config, warm-up included', () => {
  const s = resolveRun(parseConfig({ training: { lr_schedule: { name: 'halving', every: 5, warmup_iters: 2, warmup_ratio: 0.5 } } })).schedule;
  assert.deepEqual([lrAt(s, 1, 0, 100, 10), lrAt(s, 1, 4, 100, 10), lrAt(s, 1, 5, 100, 10), lrAt(s, 1, 12, 100, 10)], [0.5, 1, 0.5, 0.25]);
});

test('an encoder with a pretrained source, from its own file, is used from a config', async () => {
  const cfg = parseConfig({ model: { name: 'fpn', encoder: 'tiny', encoder_weights: 'toy', pyramid_channels: 8, segmentation_channels: 8 } });
  const m = getModel(cfg);
  assert.deepEqual(m.outputs[0].shape, [null, null, null, 1]);
  assert.ok(m.getLayer('enc_c4'));
  m.dispose();
  const w = await pretrainedWeights(cfg.model, 'toy');
  assert.deepEqual(w?.map((t) => t.name), ['enc_c0/bias']);
  assert.equal(pretrainedWeights(cfg.model, 'ckpts/run'), null); // not a source: a path
  assert.throws(() => pretrainedWeights({ encoder: 'resnet18' }, 'toy'), /^UserError: model\.encoder_weights: 'toy' weights exist for encoder tiny only, not for encoder 'resnet18'/);
});

test('a dataset with an option, from its own file, is used from a config', async () => {
  const root = path.join(dir, 'listed');
  fs.mkdirSync(root);
  const lines = [];
  for (const id of ['a', 'b']) {
    const mask = Buffer.alloc(8 * 8, 0).fill(200, 0, 32); // top half: value 200
    await sharp(Buffer.alloc(8 * 8 * 3, 90), { raw: { width: 8, height: 8, channels: 3 } }).png().toFile(path.join(root, `${id}.png`));
    await sharp(mask, { raw: { width: 8, height: 8, channels: 1 } }).toColourspace('b-w').png().toFile(path.join(root, `${id}_m.png`));
    lines.push(`${id}.png ${id}_m.png`);
  }
  fs.writeFileSync(path.join(root, 'pairs_train.txt'), lines.join('\n'));
  const cfg = parseConfig({ data: { name: 'listed', root, list: 'pairs_{split}.txt', foreground: 200, size: [8, 8] }, training: { batch_size: 2, workers: 1 } });
  assert.deepEqual([cfg.data.list, cfg.data.foreground], ['pairs_{split}.txt', 200]);
  const r = resolveRun(cfg);
  assert.deepEqual([r.dataset.definition.name, r.dataset.options], ['listed', { list: 'pairs_{split}.txt', foreground: 200 }]);
  assert.deepEqual(datasetMeta(cfg, r.dataset).classes, ['background', 'thing']);
  const pairs = await listSplit(cfg, 'train', r.dataset);
  assert.deepEqual(pairs.map((p) => p.id), ['a', 'b']);
  const batches: Batch[] = [];
  for await (const b of new BatchLoader(cfg, pairs, { train: false, threads: false, dataset: r.dataset }).batches(0)) batches.push(b);
  assert.deepEqual([batches.length, batches[0].masks.filter((v) => v === 1).length, batches[0].masks.filter((v) => v === 0).length], [1, 64, 64]); // 200 is class 1
  // Its default (foreground 255) reads 200 as no class: the option is what the loader used.
  const byDefault = parseConfig({ data: { name: 'listed', root, list: 'pairs_{split}.txt', size: [8, 8] }, training: { batch_size: 2, workers: 1 } });
  await assert.rejects(async () => { for await (const b of new BatchLoader(byDefault, pairs, { train: false, threads: false }).batches(0)) void b; }, /a_m\.png: mask value 200 /);
});

test('a misspelt name or an unknown option of each kind is one line at parse time naming the key', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ training: { loss: { name: 'bce+tverksy' } } }, /^x\.yaml: key 'training\.loss\.name' has "bce\+tverksy"; 'tverksy' is not a registered loss; registered: .*tversky/],
    [{ training: { loss: { name: 'tversky', alpah: 0.3 } } }, /^x\.yaml: unknown key 'training\.loss\.alpah' \(check the spelling; loss 'tversky' takes alpha, smooth,/],
    [{ training: { loss: { name: 'tversky', alpha: 'high' } } }, /^x\.yaml: key 'training\.loss\.alpha' has "high"; expected number$/],
    [{ training: { optimizer: { name: 'signsdg' } } }, /^x\.yaml: key 'training\.optimizer\.name' has "signsdg"; 'signsdg' is not a registered optimizer; registered: .*signsgd/],
    [{ training: { optimizer: { name: 'signsgd', scael: 2 } } }, /^x\.yaml: unknown key 'training\.optimizer\.scael' \(check the spelling; optimizer 'signsgd' takes scale,/],
    [{ training: { lr_schedule: { name: 'halfing' } } }, /^x\.yaml: key 'training\.lr_schedule\.name' has "halfing"; 'halfing' is not a registered schedule; registered: .*halving/],
    [{ training: { lr_schedule: { name: 'halving', evry: 3 } } }, /^x\.yaml: unknown key 'training\.lr_schedule\.evry' \(check the spelling; schedule 'halving' takes every,/],
    [{ model: { name: 'fpn', encoder: 'tinny' } }, /^x\.yaml: key 'model\.encoder' has "tinny"; not a registered encoder; registered: .*tiny/],
    [{ data: { name: 'lsited' } }, /^x\.yaml: key 'data\.name' has "lsited"; is not a registered dataset; registered: .*listed/],
    [{ data: { name: 'listed', foregruond: 200 } }, /^x\.yaml: unknown key 'data\.foregruond' \(dataset 'listed' has no such option: check the spelling; its options: list, foreground\)$/],
    [{ data: { name: 'listed', foreground: 0 } }, /^x\.yaml: key 'data\.foreground' has 0; Number must be greater than or equal to 1$/],
    [{ data: { name: 'listed', images_dir: 'img' } }, /^x\.yaml: unknown key 'data\.images_dir' \(dataset 'listed' has no such option, dataset 'folder' has: remove it or set it to null; its options: list, foreground\)$/],
  ];
  for (const [raw, re] of cases) {
    assert.throws(() => parseConfig(raw, 'x.yaml'), (e: Error) => {
      assert.ok(e instanceof UserError, e.message);
      assert.equal(e.message.split('\n').length, 1, e.message);
      assert.match(e.message, re);
      return true;
    });
  }
});

test('a key of another part of the kind (configs saved before each part owned its keys) is dropped', () => {
  const t = parseConfig({ training: { loss: { name: 'ce', smooth: 1, focal_gamma: 2, per_image: false }, optimizer: { name: 'adam', momentum: 0.9, nesterov: false }, lr_schedule: { name: 'cosine', power: 0.9, step_size: 30, gamma: 0.1 } } }).training;
  assert.deepEqual([t.loss, t.optimizer, t.lr_schedule], [
    { name: 'ce' },
    { name: 'adam', lr: 1e-3, weight_decay: 0, lr_mult: {}, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 },
    { name: 'cosine', warmup_iters: 0, warmup_ratio: 0.1, min_lr: 0 },
  ]);
  // A saved config held every dataset's defaults: another dataset's key is dropped at its default (refused otherwise).
  const data = parseConfig({ data: { name: 'isic', mask_suffix: '', synthetic: { kind: 'lesion', train: 240, val: 60, image_size: 128 } } }).data;
  assert.deepEqual(['mask_suffix' in data, 'synthetic' in data], [false, false]);
});

process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
