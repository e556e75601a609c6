// The ONNX export on real val images, as `predict` prepares them: three ISIC 2018 val images
// (binary) and three CamVid val images (11 classes, per-image normalisation) from
// ../shared/data, decoded at data.size and normalised as predict does (decodeImage,
// normaliseImage), for every registered architecture and the U-Net with up_mode transpose.
// Each model is the demo config's at 44x60 (DeepLabV3+ with its shipped ImageNet encoder),
// its batch norms calibrated on the batch (calibrate), saved as a checkpoint and exported by
// exportOnnx as `export-model --format onnx` does. onnx.checker accepts every file; ONNX
// Runtime's logits equal TF.js's within 1e-4; the masks predict's decision (toProbs,
// classMap: threshold or argmax) draws from them are identical but at near-ties (see the
// test). For scale: TF.js's own wasm and cpu backends differ by 2e-5 (U-Net) and 5e-5 (FPN)
// on these calibrated models; ONNX Runtime and TF.js wasm differ by as much.
// The data folder is the development machines' (see its README), which a user's clone lacks:
// without it every test here is reported as skipped, with the reason, never as passed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '../backends/tf';
import { initBackend } from '../backends';
import { classMap, toProbs } from '../engine/inference';
import { listSplit } from '../loaders/registry';
import { decodeImage } from '../pipeline/decode';
import { normaliseImage } from '../pipeline/batcher';
import { getModel, registeredModels } from '../models/registry';
import { loadConfig, parseConfig, resolveRun } from '../config/resolve';
import { saveCheckpoint } from '../storage/checkpoint';
import { exportOnnx, ONNX_FILE, ONNX_METADATA_KEY } from '../deploy/onnx_export';
import { tmpDir } from '../loaders/fixtures';
import type { Config } from '../utils/config';
import { ROOT } from './helpers/cli';
import { Job, JobResult, maxAbsDiff, readF32, runJobs, writeF32 } from './helpers/onnx_check';

const REPO = [ROOT, path.join(ROOT, '..')].find((d) => fs.existsSync(path.join(d, 'package.json')))!;
const DATA = path.join(REPO, '..', 'shared', 'data');
const SIZE: [number, number] = [44, 60]; // not a multiple of 32: the decoders' crops cut
const IMAGES = 3;
const TOLERANCE = 1e-4;

const DATASETS = {
  binary: { name: 'isic', root: path.join(DATA, 'isic2018'), num_classes: 2 },
  multiclass: { name: 'camvid', root: path.join(DATA, 'camvid'), num_classes: 11, ignore_index: 255, normalize: 'image' },
} as const;
type Kind = keyof typeof DATASETS;
const MISSING = Object.values(DATASETS).filter((d) => !fs.existsSync(d.root)).map((d) => d.root);
const SKIP = MISSING.length ? `no real val images here (${MISSING.join(', ')} missing; see ../shared/data/README.md)` : false;

/** Every registered architecture, and the U-Net's transposed-conv upsampling (its own lowering). */
const MODELS = [...registeredModels(), 'unet+transpose'];
const demoModel = (key: string) => {
  const [name, upMode] = key.split('+');
  const model = loadConfig(path.join(REPO, 'configs', name === 'unet' ? 'demo.yaml' : `demo_${name}.yaml`)).model;
  if (upMode) return { ...model, up_mode: upMode };

  // Real features on real images where the project ships pretrained weights.
  return name === 'deeplabv3plus' ? { ...model, encoder_weights: 'imagenet' } : model;
};

interface Case { cfg: Config; files: string[]; logits?: tf.Tensor4D; job?: Job; error?: string }
const cases = new Map<string, Case>();
let results = new Map<string, JobResult>();
const worst: Record<string, number> = {};
const spread: Record<string, number[]> = {};
const nearTies: Record<string, number> = {};
let dir = '';

/**
 * Trained-like statistics without training. Seeded gamma and beta; the moving statistics
 * set to the batch statistics of one training-mode pass over the val batch (momentum 0),
 * each variance floored at 1e-2 (a gain of at most 10: at this size the deepest maps are
 * 2x2 pixels, the ASPP's pooled one 1x1, and statistics over 3 images of them would
 * amplify float rounding a hundredfold, as no trained model does: the TF.js model and its
 * own stock-layer export then differ by 6e-4); then the head's bias shifted so that every
 * class's logits have median 0 on the batch, so masks are a mix of classes. With the init
 * statistics instead, a deep random net's masks are one class and say little.
 */
function calibrate(m: tf.LayersModel, x: tf.Tensor4D): void {
  m.weights.forEach((v, i) => {
    if (!/\/(gamma|beta)$/.test(v.originalName)) return;
    const t = /gamma$/.test(v.originalName) ? tf.randomUniform(v.shape as number[], 0.5, 1.5, 'float32', i) : tf.randomUniform(v.shape as number[], -0.3, 0.3, 'float32', i);
    v.write(t);
    t.dispose();
  });
  const norms = m.layers.filter((l) => /BatchNorm/.test(l.getClassName()));
  const momenta = norms.map((l) => (l as unknown as { momentum: number }).momentum);
  for (const l of norms) (l as unknown as { momentum: number }).momentum = 0;
  tf.dispose(m.apply(x, { training: true }) as tf.Tensor);
  norms.forEach((l, i) => {
    (l as unknown as { momentum: number }).momentum = momenta[i];
    const variance = l.weights.find((w) => /moving_variance$/.test(w.originalName))!;
    const t = tf.maximum(variance.read(), 1e-2);
    variance.write(t);
    t.dispose();
  });
  // The last convolution is the head: after it only upsampling and crops, which keep a constant.
  const head = m.layers.filter((l) => l.getClassName() === 'Conv2D').at(-1)!;
  const bias = head.weights.find((w) => /bias$/.test(w.originalName))!;
  const logits = m.predict(x) as tf.Tensor4D;
  const k = logits.shape[3];
  const values = logits.reshape([-1, k]).transpose().arraySync() as number[][];
  // Midway between the two middle values: the median itself would put a pixel on the tie.
  const medians = values.map((v) => { v.sort((a, b) => a - b); return (v[(v.length >> 1) - 1] + v[v.length >> 1]) / 2; });
  const t = tf.sub(bias.read(), tf.tensor1d(medians));
  bias.write(t);
  tf.dispose([logits, t]);
}

before(async () => {
  if (MISSING.length) return;
  await initBackend('wasm');
  dir = tmpDir('onnx-real');
  const jobs: [string, Job][] = [];
  for (const name of MODELS) {
    for (const kind of Object.keys(DATASETS) as Kind[]) {
      const key = `${name}/${kind}`;
      const cfg = parseConfig({ name: key.replace(/[/+]/g, '-'), backend: 'wasm', model: demoModel(name), data: { ...DATASETS[kind], size: SIZE } }, 'onnx real-image test config');
      const c: Case = { cfg, files: [] };
      cases.set(key, c);
      try {
        const pairs = await listSplit(cfg, 'val');
        // Spread over the split: CamVid's neighbours are consecutive frames.
        c.files = Array.from({ length: IMAGES }, (_, i) => pairs[Math.floor((i * pairs.length) / IMAGES)].image);
        // As predictMask prepares an image: decoded at data.size, normalised as in training.
        const [h, w] = SIZE;
        const batch = new Float32Array(IMAGES * h * w * 3);
        for (const [i, f] of c.files.entries()) batch.set(normaliseImage((await decodeImage(f, SIZE)).data, cfg.data), i * h * w * 3);
        const x = tf.tensor4d(batch, [IMAGES, h, w, 3]);
        const model = getModel(cfg);
        calibrate(model, x);
        const ckpt = path.join(dir, key, 'ckpt');
        await saveCheckpoint(ckpt, model, null, { epoch: 1, step: 1, bestMetric: null, bestMetricName: 'val.loss', rng: null, config: cfg });
        const out = path.join(dir, key, 'onnx');
        await exportOnnx(resolveRun(cfg), { checkpoint: ckpt, output: out });
        c.logits = model.predict(x) as tf.Tensor4D;
        writeF32(path.join(dir, key, 'x.bin'), x);
        x.dispose();
        model.dispose();
        c.job = { model: path.join(out, ONNX_FILE), runs: [{ input: path.join(dir, key, 'x.bin'), shape: [IMAGES, h, w, 3].join(','), output: path.join(dir, key, 'y.bin') }] };
        jobs.push([key, c.job]);
      } catch (e) {
        c.error = (e as Error).stack ?? String(e);
      }
    }
  }
  const out = runJobs(dir, jobs.map(([, j]) => j));
  results = new Map(jobs.map(([key], k) => [key, out[k]]));
});

after(() => {
  if (!MISSING.length) console.log(`ONNX Runtime vs TF.js on real val images, max |logit difference|: ${JSON.stringify(worst)}; logit mean, deviation: ${JSON.stringify(spread)}; mask pixels flipped at near-ties: ${JSON.stringify(nearTies)}`);
  for (const c of cases.values()) c.logits?.dispose();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

for (const name of MODELS) {
  for (const kind of Object.keys(DATASETS) as Kind[]) {
    const key = `${name}/${kind}`;
    test(`${key} on ${IMAGES} real ${DATASETS[kind].name} val images: onnx.checker accepts the export; logits within ${TOLERANCE}, masks identical off near-ties`, { skip: SKIP }, async () => {
      const c = cases.get(key)!;
      assert.equal(c.error, undefined, `preparing, saving or exporting failed: ${c.error}`);
      const r = results.get(key)!;
      assert.equal(r.error, undefined, `onnx.checker or ONNX Runtime: ${r.error}`);
      assert.ok(r.opset >= 17, `opset ${r.opset}`);
      assert.deepEqual(r.input, ['batch', ...SIZE, 3]);
      const meta = JSON.parse(r.metadata[ONNX_METADATA_KEY]);
      assert.deepEqual(meta.input.size, SIZE);
      assert.equal(meta.input.normalize, c.cfg.data.normalize);
      assert.deepEqual(meta.input.mean, c.cfg.data.mean);
      const want = c.logits!;
      assert.equal(want.shape[3], kind === 'binary' ? 1 : 11);
      const got = readF32(c.job!.runs[0].output, want.shape) as tf.Tensor4D;
      const d = maxAbsDiff(want, got);
      worst[key] = d;
      spread[key] = tf.tidy(() => { const m = tf.moments(want); return [m.mean.dataSync()[0], Math.sqrt(m.variance.dataSync()[0])]; });
      assert.ok(d <= TOLERANCE, `max |logit difference| ${d}`);
      // predict's decision on each: the sigmoid thresholded, or the softmax's argmax.
      const masks: Uint8Array[] = [];
      for (const logits of [want, got]) {
        const probs = toProbs(logits);
        masks.push((await classMap(probs, c.cfg.training.threshold)).classes);
        probs.dispose();
      }
      got.dispose();
      // Identical, but for a pixel whose TF.js decision margin (logit to the threshold's,
      // or top class to the runner-up) is under twice the logit tolerance: a difference
      // the logits are allowed can flip it. Such near-ties are counted and must be rare.
      const margin = tf.tidy(() => (kind === 'binary'
        ? tf.abs(tf.sub(want, Math.log(c.cfg.training.threshold / (1 - c.cfg.training.threshold))))
        : (() => { const top = tf.topk(want, 2).values; return tf.sub(top.slice([0, 0, 0, 0], [-1, -1, -1, 1]), top.slice([0, 0, 0, 1], [-1, -1, -1, 1])); })()).dataSync());
      let flips = 0;
      for (let i = 0; i < masks[0].length; i++) {
        if (masks[0][i] === masks[1][i]) continue;
        assert.ok(margin[i] < 2 * TOLERANCE, `pixel ${i}: TF.js decides ${masks[0][i]}, ONNX Runtime ${masks[1][i]}, TF.js margin ${margin[i]}`);
        flips++;
      }
      nearTies[key] = flips;
      assert.ok(flips <= masks[0].length / 1000, `${flips} of ${masks[0].length} mask pixels differ`);
      // A mask of one class everywhere would make "identical" say little.
      assert.ok(new Set(masks[0]).size > 1, 'the TF.js mask holds one class only');
    });
  }
}
