import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '../backends/tf';
import { UserError } from '../utils/errors';
import { applyWeights, checkpointExists, CheckpointMeta, loadCheckpoint, LoadedCheckpoint, saveCheckpoint } from '../storage/checkpoint';

function tmpRoot(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-test-'));
}

function convBn(filters = 8, bn = true): tf.LayersModel {
  const input = tf.input({ shape: [8, 8, 3] });
  let x = tf.layers.conv2d({ filters, kernelSize: 3, padding: 'same', name: 'enc0_conv1' }).apply(input) as tf.SymbolicTensor;
  if (bn) x = tf.layers.batchNormalization({ name: 'enc0_bn1' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: 2, kernelSize: 1, name: 'head' }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: x });
}

function randomize(m: tf.LayersModel, seed: number): void {
  m.weights.forEach((v, i) => {
    const t = tf.randomUniform(v.read().shape, 0.2, 2, 'float32', seed + i);
    v.write(t);
    t.dispose();
  });
}

const meta0: CheckpointMeta = {
  epoch: 3,
  step: 120,
  bestMetric: 0.625,
  bestMetricName: 'val.mIoU',
  rng: { state: [1, 2, 3], nested: { k: 'v' } },
  config: { name: 'run', training: { batch_size: 4 } },
};

const isUserError = (re: RegExp) => (e: Error) => {
  assert.ok(e instanceof UserError, `expected UserError, got ${e.name}: ${e.message}`);
  assert.match(e.message, re);
  assert.equal(e.message.split('\n').length, 1, 'one line');
  return true;
};

test('round trip: identical outputs incl. BN moving statistics, optimizer and meta', async () => {
  const root = tmpRoot();
  try {
    const a = convBn();
    randomize(a, 1); // moving mean/variance get non-default values too
    const dir = path.join(root, 'last');
    const opt = {
      name: 'adamw',
      step: 120,
      lr: 2.5e-4,
      tensors: [
        { name: 'enc0_conv1/kernel/m', shape: [3, 3, 3, 8], values: Float32Array.from({ length: 216 }, (_, i) => i / 7) },
        { name: 'enc0_conv1/kernel/v', shape: [3, 3, 3, 8], values: new Float32Array(216).fill(1e-8) },
      ],
    };
    await saveCheckpoint(dir, a, opt, meta0);
    const ck = await loadCheckpoint(dir);
    assert.equal(ck.source, dir);
    assert.deepEqual(ck.optimizer, opt);
    assert.ok(ck.meta.savedAt && !Number.isNaN(Date.parse(ck.meta.savedAt)));
    assert.deepEqual({ ...ck.meta, savedAt: undefined }, { ...meta0, savedAt: undefined });
    assert.deepEqual(
      ck.weights.map((w) => w.name).sort(),
      ['enc0_bn1/beta', 'enc0_bn1/gamma', 'enc0_bn1/moving_mean', 'enc0_bn1/moving_variance', 'enc0_conv1/bias', 'enc0_conv1/kernel', 'head/bias', 'head/kernel'],
    );
    assert.match(fs.readFileSync(path.join(dir, 'config.yaml'), 'utf8'), /batch_size: 4/);

    const b = convBn(); // same layer names; tfjs gives its variables `_1` suffixes
    randomize(b, 100);
    applyWeights(b, ck.weights, dir);
    const x = tf.randomNormal([2, 8, 8, 3], 0, 1, 'float32', 7);
    assert.deepEqual((b.predict(x) as tf.Tensor).dataSync(), (a.predict(x) as tf.Tensor).dataSync());
    const bnA = a.getLayer('enc0_bn1').getWeights();
    const bnB = b.getLayer('enc0_bn1').getWeights();
    bnA.forEach((t, i) => assert.deepEqual(bnB[i].dataSync(), t.dataSync()));
    assert.deepEqual(fs.readdirSync(root), ['last']);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('mismatched model: named weight and both shapes; missing and extra weights named; model untouched', async () => {
  const root = tmpRoot();
  try {
    const dir = path.join(root, 'last');
    await saveCheckpoint(dir, convBn(8), null, meta0);
    const ck = await loadCheckpoint(dir);
    assert.equal(ck.optimizer, null);
    const narrow = convBn(4);
    const before = narrow.weights.map((v) => v.read().dataSync().slice());
    assert.throws(
      () => applyWeights(narrow, ck.weights, dir),
      isUserError(new RegExp(`^${escape(dir)}: weight 'enc0_conv1/kernel' has shape \\[3,3,3,8\\] in the checkpoint but \\[3,3,3,4\\] in the model \\(\\+\\d+ more`)),
    );
    narrow.weights.forEach((v, i) => assert.deepEqual(v.read().dataSync(), before[i]));
    assert.throws(() => applyWeights(convBn(8, false), ck.weights, dir), isUserError(/weight 'enc0_bn1\/gamma' \[8\] in the checkpoint has no counterpart in the model/));
    const noBn = path.join(root, 'nobn');
    await saveCheckpoint(noBn, convBn(8, false), null, meta0);
    const ck2 = await loadCheckpoint(noBn);
    assert.throws(() => applyWeights(convBn(8), ck2.weights, noBn), isUserError(/weight 'enc0_bn1\/gamma' \[8\] of the model is missing from the checkpoint/));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function resealMarker(dir: string, file: string): void {
  // Simulates a file that was bad when saved (checksum matches), to reach the format checks.
  const mk = JSON.parse(fs.readFileSync(path.join(dir, 'complete.json'), 'utf8'));
  const buf = fs.readFileSync(path.join(dir, file));
  mk.files[file] = { bytes: buf.length, sha256: crypto.createHash('sha256').update(buf).digest('hex') };
  fs.writeFileSync(path.join(dir, 'complete.json'), JSON.stringify(mk));
}

test('bad checkpoints: missing, empty, truncated, corrupt JSON -> one-line UserError naming the path', async () => {
  const root = tmpRoot();
  try {
    const dir = path.join(root, 'last');
    await assert.rejects(loadCheckpoint(dir), isUserError(new RegExp(`^${escape(dir)}: checkpoint folder not found$`)));
    assert.equal(checkpointExists(dir), false);
    fs.mkdirSync(dir);
    await assert.rejects(loadCheckpoint(dir), isUserError(/last: not a complete checkpoint \(no complete\.json/));
    assert.equal(checkpointExists(dir), false);

    const m = convBn();
    await saveCheckpoint(dir, m, null, meta0); // an empty marker-less folder is replaced
    const wbin = path.join(dir, 'weights.bin');
    const size = fs.statSync(wbin).size;
    fs.truncateSync(wbin, size - 100);
    await assert.rejects(loadCheckpoint(dir), isUserError(new RegExp(`^${escape(wbin)}: has ${size - 100} bytes, expected ${size} \\(truncated`)));
    resealMarker(dir, 'weights.bin');
    await assert.rejects(loadCheckpoint(dir), isUserError(new RegExp(`${escape(wbin)}: has ${size - 100} bytes but weights\\.json describes ${size}`)));

    await saveCheckpoint(dir, m, null, meta0);
    const state = path.join(dir, 'state.json');
    fs.writeFileSync(state, '{"epoch": 3, "st');
    await assert.rejects(loadCheckpoint(dir), isUserError(new RegExp(`^${escape(state)}: has \\d+ bytes, expected`)));
    resealMarker(dir, 'state.json');
    await assert.rejects(loadCheckpoint(dir), isUserError(new RegExp(`^${escape(state)}: not valid JSON`)));
    fs.writeFileSync(state, JSON.stringify({ format: 'tfjs-semseg-checkpoint', version: 1, epoch: 1, step: 'ten' }));
    resealMarker(dir, 'state.json');
    await assert.rejects(loadCheckpoint(dir), isUserError(/state\.json: expected .* \(at 'step'/));

    await saveCheckpoint(dir, m, null, meta0);
    fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.alloc(size, 1)); // same size, other bytes
    await assert.rejects(loadCheckpoint(dir), isUserError(/weights\.bin: corrupt \(sha256/));
    fs.writeFileSync(path.join(dir, 'complete.json'), '{"version": 1, "fil');
    await assert.rejects(loadCheckpoint(dir), isUserError(/complete\.json: not valid JSON/));
    fs.rmSync(path.join(dir, 'weights.json'));
    fs.writeFileSync(path.join(dir, 'complete.json'), JSON.stringify({ version: 1, files: { 'weights.bin': { bytes: 1, sha256: 'x' } } }));
    await assert.rejects(loadCheckpoint(dir), isUserError(/does not list weights\.json/));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('interrupted swap falls back to the old copy; stale tmp folders are never loaded and get cleaned', async () => {
  const root = tmpRoot();
  try {
    const dir = path.join(root, 'best');
    const m = convBn();
    await saveCheckpoint(dir, m, null, { ...meta0, step: 1 });
    const old = path.join(root, '.best.old-999999999-1');
    fs.renameSync(dir, old); // killed between "best -> old copy" and "tmp -> best"
    const half = path.join(root, '.best.tmp-999999999-3'); // a dead writer's half-written copy
    fs.mkdirSync(half);
    fs.writeFileSync(path.join(half, 'weights.bin'), 'x');
    assert.ok(checkpointExists(dir));
    const ck = await loadCheckpoint(dir);
    assert.equal(ck.source, old);
    assert.equal(ck.meta.step, 1);

    // A marker-less `best` next to a good old copy (e.g. damaged by hand): the old copy wins.
    fs.mkdirSync(dir);
    assert.equal((await loadCheckpoint(dir)).source, old);

    await saveCheckpoint(dir, m, null, { ...meta0, step: 2 });
    assert.deepEqual(fs.readdirSync(root), ['best']);
    assert.equal((await loadCheckpoint(dir)).meta.step, 2);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('overlapping saves in one process are serialized; the last call wins', async () => {
  const root = tmpRoot();
  try {
    const dir = path.join(root, 'last');
    const m = convBn();
    await Promise.all([1, 2, 3, 4].map((step) => saveCheckpoint(dir, m, null, { ...meta0, step })));
    assert.equal((await loadCheckpoint(dir)).meta.step, 4);
    assert.deepEqual(fs.readdirSync(root), ['last']);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

// --- the kill guarantee ------------------------------------------------------

/** Every tensor and field of a checkpoint saved by ckpt_writer at step N holds N. */
function assertConsistent(ck: LoadedCheckpoint, label: string): number {
  const step = ck.meta.step;
  assert.ok(Number.isInteger(step) && step >= 1, `${label}: step ${step}`);
  assert.equal(ck.meta.epoch, Math.floor(step / 10), label);
  assert.deepEqual(ck.meta.rng, { step }, label);
  assert.deepEqual(ck.meta.config, { name: 'kill', step }, label);
  assert.equal(ck.meta.bestMetric, step / 100, label);
  assert.equal(ck.weights.length, 8, label);
  for (const w of ck.weights) assert.ok(w.values.every((v) => v === step), `${label}: weight ${w.name} is not all ${step}`);
  assert.ok(ck.optimizer, label);
  assert.equal(ck.optimizer.step, step, label);
  assert.equal(ck.optimizer.lr, step / 1000, label);
  assert.ok(ck.optimizer.tensors[0].values.every((v) => v === step), `${label}: optimizer slot is not all ${step}`);
  return step;
}

function writerCommand(root: string): string[] {
  // Works from the sources (tsx) and from the compiled dist/ (npm test).
  const ext = path.extname(__filename);
  const script = path.join(__dirname, 'fixtures', `ckpt_writer${ext}`);
  return ext === '.ts' ? ['--import', 'tsx', script, root] : [script, root];
}

test('SIGKILL at random moments never leaves an unloadable or torn checkpoint, nor loses an acknowledged save', { timeout: 180_000 }, async () => {
  const root = tmpRoot();
  const last = path.join(root, 'last');
  const best = path.join(root, 'best');
  let prevStep = 0;
  let fallbacks = 0;
  let concurrentLoads = 0;
  try {
    for (let round = 0; round < 15; round++) {
      const child = spawn(process.execPath, writerCommand(root), { stdio: ['ignore', 'pipe', 'pipe'] });
      let acked = 0; // highest step the writer reported as saved: must survive the kill
      let stderr = '';
      let firstSave!: () => void;
      const started = new Promise<void>((resolve) => (firstSave = resolve));
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        for (const m of chunk.matchAll(/^saved (\d+)$/gm)) acked = Math.max(acked, Number(m[1]));
        if (acked) firstSave();
      });
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          started,
          exited.then(() => assert.fail(`writer exited before saving: ${stderr}`)),
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('writer did not save within 60 s')), 60_000))),
        ]);
      } finally {
        clearTimeout(timer);
      }
      // While the writer keeps saving, read concurrently: every load must be consistent too.
      const until = Date.now() + 5 + Math.random() * 195;
      while (Date.now() < until) {
        assertConsistent(await loadCheckpoint(last), `round ${round}, concurrent load`);
        concurrentLoads++;
      }
      child.kill('SIGKILL');
      await exited;

      const ck = await loadCheckpoint(last);
      if (ck.source !== last) fallbacks++;
      const step = assertConsistent(ck, `round ${round}`);
      assert.ok(step >= acked, `round ${round}: step ${step} loaded, but the writer had acknowledged step ${acked}`);
      assert.ok(step >= prevStep, `round ${round}: went back from step ${prevStep} to ${step}`);
      prevStep = step;
      if (checkpointExists(best)) assert.equal(assertConsistent(await loadCheckpoint(best), `round ${round} best`) % 3, 0);
      // Debris from killed writers is cleaned by the next save, so it never piles up.
      const debris = fs.readdirSync(root).filter((n) => n.startsWith('.'));
      assert.ok(debris.length <= 4, `debris piles up: ${debris.join(', ')}`);
    }
    assert.ok(prevStep > 15, `writer made too little progress (step ${prevStep})`);
    console.log(`kill test: final step ${prevStep}, ${fallbacks} loads fell back to last.old, ${concurrentLoads} concurrent loads`);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
