// deploy/keras_bridge.py train past one machine, for real: two worker processes on 127.0.0.1
// under MultiWorkerMirroredStrategy (TF_CONFIG) train a tiny run's recipe, are killed after a
// checkpoint and restarted, resume from it, and the chief's model comes back through from-keras
// into `evaluate`; and the recipe held to the project's: the same steps of `npx train` and of
// the bridge from the same weights give the same losses and learning rates. Needs python3 with
// tensorflow-cpu (Keras 3).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ChildProcess, spawn } from 'node:child_process';
import { exportModel, train } from '../api';
import { runExitHooks } from '../utils/exit';
import { assertOk, killLeftovers, ROOT, run, tmpDir, writeConfig } from './helpers/cli';

const BRIDGE = [path.join(ROOT, 'deploy', 'keras_bridge.py'), path.join(ROOT, '..', 'deploy', 'keras_bridge.py')].find((f) => fs.existsSync(f))!;
const dirs: string[] = [];
const children = new Set<ChildProcess>();
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  killLeftovers();
  await runExitHooks();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

interface Proc { child: ChildProcess; out: string; err: string; done: Promise<number | null> }

/** python3 keras_bridge.py ARGS, its output collected; `onErr` sees stderr as it comes. */
function bridge(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}, onErr?: (all: string) => void): Proc {
  const child = spawn('python3', [BRIDGE, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const p: Proc = { child, out: '', err: '', done: Promise.resolve(null) };
  child.stdout!.on('data', (b) => (p.out += b));
  child.stderr!.on('data', (b) => {
    p.err += b;
    onErr?.(p.err);
  });
  p.done = new Promise((res) => child.on('close', (code) => { children.delete(child); res(code); }));
  return p;
}

async function ok(p: Proc, what: string): Promise<void> {
  const code = await p.done;
  assert.equal(code, 0, `${what}: exit ${code}\n${p.err.split('\n').filter((l) => !/oneDNN|absl/.test(l)).slice(-8).join('\n')}`);
}

interface Report { steps: number; first_step: number; loss: number[]; lr: number[]; worker: number; workers: number; chief: boolean; trainable_sum: number; weights_sum: number; seconds: number }
const report = (p: Proc): Report => JSON.parse(p.out.split('\n').find((l) => l.startsWith('{"steps"'))!);
/** The steps a worker logged on stderr ("[worker i/n] step k/N ..."). */
const loggedSteps = (p: Proc) => [...p.err.matchAll(/^\[worker \d\/\d\] step (\d+)\//gm)].map((m) => Number(m[1]));

/** A port nobody listens on now (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => res(port));
    });
  });
}

const tfConfig = (ports: number[], index: number) => JSON.stringify({ cluster: { worker: ports.map((p) => `127.0.0.1:${p}`) }, task: { type: 'worker', index } });

let dir = '';
let exp = '';
let fixture: Record<string, any> = {};
const trainImages = () => path.join(dir, 'data', 'ISIC2018_Task1-2_Training_Input');
const trainMasks = () => path.join(dir, 'data', 'ISIC2018_Task1_Training_GroundTruth');
const valImages = () => path.join(dir, 'data', 'ISIC2018_Task1-2_Validation_Input');
const valMasks = () => path.join(dir, 'data', 'ISIC2018_Task1_Validation_GroundTruth');

before(async () => {
  dir = tmpDir('keras-mw');
  dirs.push(dir);
  // A tiny run of the shipped demo's recipe (bce+dice, Adam, warm-up, flips, rotation, scale,
  // photometric) on 16 generated 32x32 pairs; images at the input size, so that neither side resizes.
  fixture = {
    name: 'tiny', backend: 'cpu',
    model: { name: 'unet', base: 4, depth: 2 },
    data: { name: 'synthetic', root: path.join(dir, 'data'), size: [32, 32], synthetic: { kind: 'lesion', train: 16, val: 8, image_size: 32 } },
    training: {
      epochs: 1, batch_size: 16, workers: 1, print_interval: 1, seed: 42,
      loss: { name: 'bce+dice', weights: [1, 1] },
      optimizer: { name: 'adam', lr: 0.003, weight_decay: 0.0001 },
      lr_schedule: { name: 'poly', power: 0.9, warmup_iters: 2 },
      augmentations: { scale: { p: 0.5, range: [0.8, 1.25] }, hflip: { p: 0.5 }, vflip: { p: 0.5 }, rotate: { p: 0.3, degrees: 20 }, brightness: { p: 0.5, range: 0.15 }, contrast: { p: 0.5, range: 0.15 } },
    },
    checkpoint: { ckpt_root: path.join(dir, 'checkpoints') },
    results: { root: path.join(dir, 'results'), gallery_size: 2 },
  };
  await train(fixture, { quiet: true });
  exp = path.join(dir, 'export');
  await exportModel(fixture, { output: exp, quiet: true });
  await ok(bridge(['to-keras', path.join(exp, 'model.json'), 'model.keras'], dir), 'to-keras');
});

test('two workers (TF_CONFIG) train the run\'s recipe in step, resume after a worker is killed, and the chief\'s model goes back into evaluate', { timeout: 400_000 }, async (t) => {
  const t0 = Date.now();
  const config = path.join(dir, 'results', 'tiny', 'config.yaml'); // the resolved config npx train wrote
  const TOTAL = 30;
  const args = ['train', 'model.keras', trainImages(), trainMasks(), 'mw.keras', '--mask-suffix', '_segmentation', '--config', config,
    '--steps', String(TOTAL), '--batch', '8', '--ckpt-every', '10', '--log-every', '1'];
  const ckptDir = path.join(dir, 'mw.keras.ckpt');

  // 1. Both workers start; once the chief has written a checkpoint, worker 1 is killed (SIGKILL,
  // mid-run), then the chief, which cannot go on without it.
  let ports = [await freePort(), await freePort()];
  let killed = false;
  const w1 = bridge(args, dir, { TF_CONFIG: tfConfig(ports, 1) });
  const w0 = bridge(args, dir, { TF_CONFIG: tfConfig(ports, 0) }, (err) => {
    if (!killed && /checkpoint .*ckpt-\d+/.test(err)) {
      killed = true;
      w1.child.kill('SIGKILL');
      setTimeout(() => w0.child.kill('SIGKILL'), 200);
    }
  });
  await Promise.all([w0.done, w1.done]);
  assert.ok(killed, `the chief wrote no checkpoint:\n${w0.err.slice(-2000)}`);
  assert.equal(w1.child.signalCode, 'SIGKILL');
  const before = loggedSteps(w0);
  assert.ok(before.length > 0 && Math.max(...before) < TOTAL, `killed mid-run: the chief logged steps ${before}`);
  assert.match(w0.out, /MultiWorkerMirroredStrategy: worker 0 of 2 \(worker 0, chief\), 2 replica\(s\) in sync/);
  const saved = Number(/model_checkpoint_path: "ckpt-(\d+)"/.exec(fs.readFileSync(path.join(ckptDir, 'checkpoint'), 'utf8'))![1]);
  assert.ok(saved >= 10 && saved % 10 === 0 && saved < TOTAL, `last checkpoint at step ${saved}`);
  const firstLoss = Number(new RegExp(`^\\[worker 0/2\\] step 1/${TOTAL} epoch 1 loss ([\\d.]+)`, 'm').exec(w0.err)![1]);
  assert.deepEqual(fs.readdirSync(dir).filter((n) => /^mw\.keras$|workertemp/.test(n)), [], 'nothing written as the result yet');

  t.diagnostic(`first run killed after the checkpoint at step ${saved}, ${(Date.now() - t0) / 1000} s from the start`);
  const t1 = Date.now();

  // 2. Both restarted with the same command: they continue from the checkpoint's step.
  ports = [await freePort(), await freePort()];
  const r0 = bridge(args, dir, { TF_CONFIG: tfConfig(ports, 0) });
  const r1 = bridge(args, dir, { TF_CONFIG: tfConfig(ports, 1) });
  await Promise.all([ok(r0, 'worker 0 restarted'), ok(r1, 'worker 1 restarted')]);
  const [a, b] = [report(r0), report(r1)];
  for (const [p, r, i] of [[r0, a, 0], [r1, b, 1]] as const) {
    assert.match(p.err, new RegExp(`^\\[worker ${i}/2\\] resumed from .*ckpt-${saved} at step ${saved}$`, 'm'));
    assert.equal(r.first_step, saved);
    assert.equal(loggedSteps(p)[0], saved + 1, `worker ${i} started over instead of resuming`);
    assert.equal(Math.max(...loggedSteps(p)), TOTAL);
    assert.equal(r.steps, TOTAL - saved);
    assert.equal(r.workers, 2);
  }
  t.diagnostic(`restarted run: steps ${saved + 1}-${TOTAL} in ${(Date.now() - t1) / 1000} s wall (${a.seconds} s in the training loop); loss ${a.loss[0].toFixed(4)} -> ${a.loss[a.loss.length - 1].toFixed(4)}`);
  assert.deepEqual([a.chief, b.chief], [true, false]);
  // The global loss (all-reduced) is the same on both; each worker's own shard differs; the
  // weights, batch-norm statistics included, are the same on both after the last step.
  assert.deepEqual(a.loss, b.loss);
  assert.deepEqual(a.lr, b.lr);
  const shard = (p: Proc) => [...p.err.matchAll(/this worker's shard ([\d.]+)/g)].map((m) => m[1]);
  assert.notDeepEqual(shard(r0), shard(r1), 'the workers trained on different shards');
  assert.ok(Math.abs(a.trainable_sum - b.trainable_sum) <= 1e-9 * a.trainable_sum, `weights differ: ${a.trainable_sum} vs ${b.trainable_sum}`);
  assert.ok(Math.abs(a.weights_sum - b.weights_sum) <= 1e-9 * a.weights_sum, `batch-norm statistics differ: ${a.weights_sum} vs ${b.weights_sum}`);
  // It continued from trained weights: the first loss after the restart is below the first step's.
  assert.ok(a.loss[0] < firstLoss - 0.05, `loss after resume ${a.loss[0]} vs step 1 ${firstLoss}`);
  // Only the chief wrote the model; the other worker's temporary checkpoints are gone.
  assert.ok(fs.existsSync(path.join(dir, 'mw.keras')) && fs.existsSync(path.join(dir, 'mw.keras.meta.json')));
  assert.deepEqual(fs.readdirSync(ckptDir).filter((n) => n.startsWith('workertemp')), []);
  assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('.tmp.keras')), []);

  // 3. Back into the project: from-keras, then `evaluate --checkpoint` on the val split.
  await ok(bridge(['from-keras', 'mw.keras', path.join(exp, 'model.json'), 'back'], dir), 'from-keras');
  const cfgFile = writeConfig(dir, fixture, 'tiny.yaml');
  const e = await run('evaluate', ['--config', cfgFile, '--checkpoint', path.join(dir, 'back', 'model.json'), '--output', path.join(dir, 'eval-back')]);
  assertOk(e);
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'eval-back', 'metrics.json'), 'utf8')).metrics;
  assert.ok(Number.isFinite(m.mIoU) && Number.isFinite(m.dice), JSON.stringify(m));
});

test('recipe parity: 5 steps of npx train and of the bridge from the same weights give the same losses and learning rates', { timeout: 300_000 }, async (t) => {
  // Augmentation off and one batch of all 16 training pairs per step: both sides see the same
  // pixels every step whatever their order (the losses are means over the batch, batch norm uses
  // the batch's statistics). Adam with L2 weight decay, poly decay and a 2-step warm-up, at lr
  // 0.001: the two engines' float32 differences (3e-6 in the first forward pass) grow with the
  // rate as Adam moves every weight by about lr whatever its gradient's size (measured at step 5:
  // 1.1e-4 relative at lr 0.0003, 8.1e-4 at 0.003).
  const parity = { ...fixture, name: 'parity', training: { ...fixture.training, epochs: 5, augmentations: {}, optimizer: { ...fixture.training.optimizer, lr: 0.001 } } };
  const cfgFile = writeConfig(dir, parity, 'parity.yaml');
  assertOk(await run('train', ['--config', cfgFile, '--weights', path.join(exp, 'model.json')]));
  const rows = fs.readFileSync(path.join(dir, 'results', 'parity', 'history.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.split === 'train');
  assert.deepEqual(rows.map((r) => r.step), [1, 2, 3, 4, 5]);

  const p = bridge(['train', 'model.keras', trainImages(), trainMasks(), 'parity.keras', '--mask-suffix', '_segmentation', '--config', path.join(dir, 'results', 'parity', 'config.yaml'),
    '--val-images', valImages(), '--val-masks', valMasks(), '--log-every', '1'], dir);
  await ok(p, 'bridge train');
  assert.match(p.out, /^MirroredStrategy over 1 device\(s\)$/m);
  const r = report(p);
  assert.equal(r.steps, 5, 'the config\'s epochs x steps per epoch');
  // Learning rates: the same function of the step (lrAt), to float precision.
  r.lr.forEach((lr, i) => assert.ok(Math.abs(lr - rows[i].lr) <= 1e-12 + 1e-9 * rows[i].lr, `step ${i + 1}: lr ${lr} vs ${rows[i].lr}`));
  // Losses: the same forward pass, loss and Adam update; float32 on two engines.
  const rel = r.loss.map((l, i) => Math.abs(l - rows[i].loss) / rows[i].loss);
  t.diagnostic(`losses: bridge ${r.loss.map((x) => x.toFixed(6))}, npx train ${rows.map((x) => x.loss.toFixed(6))}; relative differences ${rel.map((x) => x.toExponential(1))}`);
  assert.ok(rel[0] < 1e-5, `step 1 (same weights, same batch): bridge ${r.loss[0]} vs npx train ${rows[0].loss}`);
  assert.ok(Math.max(...rel) < 1e-3, `bridge ${r.loss} vs npx train ${rows.map((x) => x.loss)} (relative ${rel})`);
  assert.ok(rows[4].loss < rows[0].loss, 'the steps trained');
  // Validation each epoch, with the project's metric names.
  assert.equal([...p.err.matchAll(/validation after epoch \d+, step \d+: mIoU [\d.]+ mDice [\d.]+ .* dice [\d.]+/g)].length, 5);
});

// The parts of the recipe the parity run above does not reach (it trains bce+dice with Adam and
// poly): every loss combination the shipped configs use, with class weights, the ignore index and
// per-image dice, against buildLoss on the same logits and labels; every schedule with warm-up
// against lrAt, step by step.
const PARTS = `
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, sys.argv[1])
import numpy as np
from keras_recipe.recipe import build_loss, lr_at
cases = json.load(open(sys.argv[2]))
out = {"loss": [], "lr": []}
for c in cases["loss"]:
    f = build_loss(c["loss"], c["num_classes"], 255)
    out["loss"].append(float(f(np.array(c["logits"], np.float32).reshape(c["shape"]), np.array(c["labels"], np.int32).reshape(c["shape"][:3]))))
for s in cases["lr"]:
    out["lr"].append([lr_at(s["schedule"], s["base"], i, s["total"], s["per_epoch"]) for i in range(s["total"] + 2)])
json.dump(out, open(sys.argv[3], "w"))
`;

test('recipe parts: the bridge\'s losses equal buildLoss (1e-5) and its schedules lrAt, with class weights, the ignore index, per-image dice and warm-up', { timeout: 120_000 }, async () => {
  const { resolveConfig } = await import('../api');
  const { buildLoss } = await import('../training/losses');
  // lrAt takes the schedule section, or (where config/resolve.ts resolves a run's parts once) its resolveSchedule.
  const lrs = (await import('../training/lr_schedule')) as unknown as { lrAt: (s: unknown, base: number, iter: number, total: number, perEpoch: number) => number; resolveSchedule?: (s: unknown) => unknown };
  const tf = await import('../backends/tf');
  const { mulberry32 } = await import('../utils/rng');
  const rng = mulberry32(11);
  const [n, h, w] = [2, 5, 6];
  const losses = [
    { name: 'bce+dice', weights: [1, 1] },
    { name: 'bce+dice', weights: [1, 0.5], per_image: true, smooth: 0.5, class_weights: [0.7, 1.6] },
    { name: 'ce+dice', weights: [1, 1], class_weights: [0.53, 0.45, 2.19, 0.39] },
    { name: 'ce+dice', weights: [1, 1], per_image: true, class_weights: [1, 2, 0.5, 1] },
    { name: 'ce' },
    { name: 'dice' },
  ];
  const cases = losses.map((loss) => {
    const binary = loss.name.startsWith('bce') || (loss.class_weights?.length ?? 2) === 2;
    const numClasses = binary ? 2 : 4;
    const c = binary ? 1 : numClasses;
    const logits = Array.from({ length: n * h * w * c }, () => (rng() - 0.5) * 6);
    // Labels with a band of ignored pixels (255).
    const labels = Array.from({ length: n * h * w }, (_, i) => (i % w === 0 ? 255 : Math.floor(rng() * numClasses)));
    return { loss, num_classes: numClasses, logits, labels, shape: [n, h, w, c] };
  });
  const schedules = [
    { schedule: { name: 'poly', power: 0.9, min_lr: 0, warmup_iters: 5, warmup_ratio: 0.1 }, base: 0.003, total: 40, per_epoch: 8 },
    { schedule: { name: 'poly', power: 0.9, min_lr: 1e-5, warmup_iters: 0, warmup_ratio: 0.1 }, base: 0.001, total: 30, per_epoch: 5 },
    { schedule: { name: 'cosine', min_lr: 0.0001, warmup_iters: 20, warmup_ratio: 0.2 }, base: 0.003, total: 50, per_epoch: 10 },
    { schedule: { name: 'step', step_size: 2, gamma: 0.5, min_lr: 0, warmup_iters: 3, warmup_ratio: 0.1 }, base: 0.01, total: 30, per_epoch: 4 },
    { schedule: { name: 'constant', warmup_iters: 4, warmup_ratio: 0.5 }, base: 0.01, total: 10, per_epoch: 4 },
  ];
  const d = tmpDir('keras-parts');
  dirs.push(d);
  fs.writeFileSync(path.join(d, 'parts.py'), PARTS);
  fs.writeFileSync(path.join(d, 'cases.json'), JSON.stringify({ loss: cases, lr: schedules }));
  const p = spawn('python3', ['parts.py', path.dirname(BRIDGE), 'cases.json', 'out.json'], { cwd: d, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(p);
  let err = '';
  p.stderr!.on('data', (b) => (err += b));
  const code = await new Promise((res) => p.on('close', res));
  assert.equal(code, 0, err.slice(-1500));
  const got = JSON.parse(fs.readFileSync(path.join(d, 'out.json'), 'utf8')) as { loss: number[]; lr: number[][] };

  for (const [i, c] of cases.entries()) {
    const cfg = resolveConfig({ data: { num_classes: c.num_classes }, training: { loss: c.loss } });
    const want = tf.tidy(() => buildLoss(cfg)(tf.tensor4d(c.logits, c.shape as [number, number, number, number]), tf.tensor3d(c.labels, [n, h, w], 'int32')).dataSync()[0]);
    assert.ok(Math.abs(got.loss[i] - want) <= 1e-5 * Math.max(1, Math.abs(want)), `${JSON.stringify(c.loss)}: bridge ${got.loss[i]}, buildLoss ${want}`);
  }
  for (const [i, s] of schedules.entries()) {
    const section = resolveConfig({ training: { lr_schedule: s.schedule } }).training.lr_schedule;
    const sched = lrs.resolveSchedule ? lrs.resolveSchedule(section) : section;
    got.lr[i].forEach((lr, it) => {
      const want = lrs.lrAt(sched, s.base, it, s.total, s.per_epoch);
      assert.ok(Math.abs(lr - want) <= 1e-12 + 1e-9 * want, `${s.schedule.name} step ${it}: bridge ${lr}, lrAt ${want}`);
    });
  }
});
