// The Keras bridge (deploy/keras_bridge.py, python3 with tensorflow-cpu): a trained run's
// export becomes a Keras model with the same outputs and masks, trains further under
// tf.distribute.MirroredStrategy, and comes back as a LayersModel that `npx evaluate
// --checkpoint` and `npx train --weights` accept.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as tf from '../backends/tf';
import { exportModel, train } from '../api';
import { fileLoadHandler } from '../storage/model_files';
import { decodeImage } from '../pipeline/decode';
import { normaliseImage } from '../pipeline/batcher';
import { listSplit } from '../loaders/registry';
import { resolveConfig } from '../api';
import { parseConfig } from '../config/resolve';
import { exportMetadata } from '../deploy/export_model';
import { writeRaw } from '../loaders/fixtures';
import { probsToMask } from '../engine/inference';
import sharp from 'sharp';
import { runExitHooks } from '../utils/exit';
import { assertOk, killLeftovers, ROOT, run, tinyConfig, tmpDir, writeConfig } from './helpers/cli';

const BRIDGE = [path.join(ROOT, 'deploy', 'keras_bridge.py'), path.join(ROOT, '..', 'deploy', 'keras_bridge.py')].find((f) => fs.existsSync(f))!;
const dirs: string[] = [];
after(async () => {
  killLeftovers();
  await runExitHooks();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function bridge(args: string[], cwd: string): string {
  const r = spawnSync('python3', [BRIDGE, ...args], { cwd, encoding: 'utf8' });
  assert.equal(r.status, 0, `keras_bridge.py ${args[0]} (needs python3 with tensorflow-cpu: pip install --index-url file:///opt/pypi/simple tensorflow-cpu):\n${r.stderr.split('\n').slice(-5).join('\n')}`);
  return r.stdout;
}

/** A float32 array as a .npy file (format 1.0). */
function writeNpy(file: string, data: Float32Array, shape: number[]): void {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')},), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head.writeUInt8(1, 6);
  head.writeUInt8(0, 7);
  head.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

function readNpy(file: string): Float32Array {
  const buf = fs.readFileSync(file);
  const len = buf.readUInt16LE(8);
  assert.match(buf.toString('latin1', 10, 10 + len), /'descr': '<f4'/);
  const body = buf.subarray(10 + len);
  return new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
}

test('to Keras with the same masks, MirroredStrategy training, and back into evaluate and train --weights', { timeout: 600_000 }, async () => {
  const dir = tmpDir('keras');
  dirs.push(dir);
  // The demo's model (configs/demo.yaml: U-Net base 8, depth 3, 64x64) on a small generated set.
  const demo = [path.join(ROOT, 'configs', 'demo.yaml'), path.join(ROOT, '..', 'configs', 'demo.yaml')].find((f) => fs.existsSync(f))!;
  const tiny = tinyConfig(dir, { training: { epochs: 2, batch_size: 4, workers: 1, print_interval: 2, time_limit: 0 } });
  const raw = { extends: demo, name: 'keras', backend: 'wasm' as const, data: { ...tiny.data, size: [64, 64] }, training: tiny.training, checkpoint: tiny.checkpoint, results: tiny.results };
  const cfg = resolveConfig(raw);
  assert.deepEqual([cfg.model.base, cfg.model.depth], [8, 3]);
  await train(raw, { quiet: true });
  const exp = path.join(dir, 'export');
  await exportModel(raw, { output: exp, quiet: true });

  // 1. to-keras: the same logits as the export in stock tfjs, on the val images as predict
  // prepares them, and the same masks as `npx predict` writes.
  bridge(['to-keras', path.join(exp, 'model.json'), 'model.keras'], dir);
  const pairs = await listSplit(cfg, cfg.data.val_split);
  const [h, w] = cfg.data.size;
  const x = new Float32Array(pairs.length * h * w * 3);
  for (let i = 0; i < pairs.length; i++) x.set(normaliseImage((await decodeImage(pairs[i].image, cfg.data.size)).data, cfg.data), i * h * w * 3);
  writeNpy(path.join(dir, 'x.npy'), x, [pairs.length, h, w, 3]);
  bridge(['predict', 'model.keras', 'x.npy', 'y.npy'], dir);
  const keras = readNpy(path.join(dir, 'y.npy'));
  const stock = await tf.loadLayersModel(fileLoadHandler(path.join(exp, 'model.json')));
  const ours = tf.tidy(() => (stock.predict(tf.tensor4d(x, [pairs.length, h, w, 3])) as tf.Tensor).dataSync() as Float32Array);
  stock.dispose();
  assert.equal(keras.length, ours.length);
  let maxDiff = 0;
  let masksDiffer = 0;
  for (let i = 0; i < ours.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(keras[i] - ours[i]));
    if (keras[i] > 0 !== ours[i] > 0) masksDiffer++; // sigmoid >= 0.5
  }
  assert.ok(maxDiff < 1e-4, `logits differ by ${maxDiff}`);
  assert.equal(masksDiffer, 0, 'thresholded masks differ');
  const config = writeConfig(dir, raw);
  const valDir = path.dirname(pairs[0].image);
  assertOk(await run('predict', ['--config', config, '--checkpoint', path.join(dir, 'checkpoints', 'keras', 'best'), '--input', valDir, '--output', path.join(dir, 'pred')]));
  for (let i = 0; i < pairs.length; i++) {
    const { width, height } = await decodeImage(pairs[i].image);
    const probs = tf.tidy(() => tf.sigmoid(tf.tensor4d(keras.subarray(i * h * w, (i + 1) * h * w), [1, h, w, 1])) as tf.Tensor4D);
    const { classes } = await probsToMask(probs, width, height, { threshold: cfg.training.threshold });
    probs.dispose();
    const png = (await sharp(path.join(dir, 'pred', path.basename(pairs[i].image).replace(/\.\w+$/, '.png'))).extractChannel(0).raw().toBuffer());
    let differ = 0;
    for (let k = 0; k < classes.length; k++) if ((png[k] === 255 ? 1 : 0) !== classes[k]) differ++;
    assert.equal(differ, 0, `${pairs[i].image}: ${differ} pixels differ from npx predict's mask`);
  }

  // 2. A few steps under MirroredStrategy on the run's own training pairs.
  const trainDir = path.join(dir, 'data', 'ISIC2018_Task1-2_Training_Input');
  const maskDir = path.join(dir, 'data', 'ISIC2018_Task1_Training_GroundTruth');
  const out = bridge(['train', 'model.keras', trainDir, maskDir, 'trained.keras', '--steps', '3', '--batch', '4', '--mask-suffix', '_segmentation'], dir);
  assert.match(out, /MirroredStrategy over 1 device\(s\)/);
  const losses = JSON.parse(out.split('\n').find((l) => l.startsWith('{"steps"'))!).loss as number[];
  assert.ok(losses.every(Number.isFinite), out);

  // 3. from-keras: back to a LayersModel with the trained weights, which the commands take.
  bridge(['from-keras', 'trained.keras', path.join(exp, 'model.json'), 'back'], dir);
  const back = path.join(dir, 'back', 'model.json');
  const before = fs.readFileSync(path.join(exp, 'group1-shard1of1.bin'));
  assert.notDeepEqual(fs.readFileSync(path.join(dir, 'back', 'group1-shard1of1.bin')), before, 'the Keras training changed the weights');
  const e = await run('evaluate', ['--config', config, '--checkpoint', back, '--output', path.join(dir, 'eval-back')]);
  assertOk(e);
  assert.ok(Number.isFinite(JSON.parse(fs.readFileSync(path.join(dir, 'eval-back', 'metrics.json'), 'utf8')).metrics.mIoU));
  assertOk(await run('train', ['--config', config, '--set', 'name=from-keras', '--set', 'training.epochs=1', '--weights', back]));
});

test('the bridge prepares images for training as predict does, under either data.normalize', { timeout: 120_000 }, async () => {
  const dir = tmpDir('keras-inputs');
  dirs.push(dir);
  const [h, w] = [10, 14]; // the images' own size: no resize, so libvips and TensorFlow agree exactly
  const files = [1, 2].map((k) => path.join(dir, `img${k}.png`));
  for (const [k, f] of files.entries()) await writeRaw(f, Uint8Array.from({ length: h * w * 3 }, (_, i) => (i * (7 + k) + 40 * k) % 256), w, h, 3);
  for (const normalize of ['dataset', 'image'] as const) {
    const cfg = parseConfig({ data: { size: [h, w], mean: [0.4, 0.5, 0.6], std: [0.2, 0.25, 0.3], normalize } });
    fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(exportMetadata(cfg, 'test', null, null)));
    bridge(['inputs', 'meta.json', 'x.npy', ...files], dir);
    const got = readNpy(path.join(dir, 'x.npy'));
    const want = new Float32Array(got.length);
    for (const [k, f] of files.entries()) want.set(normaliseImage((await decodeImage(f, [h, w])).data, cfg.data), k * h * w * 3);
    assert.equal(got.length, files.length * h * w * 3);
    const diff = got.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0);
    assert.ok(diff < 1e-4, `${normalize}: bridge and predict inputs differ by ${diff}`);
  }
});
