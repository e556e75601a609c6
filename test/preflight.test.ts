// Issue 14, classes 3 and 4 from the command line: settings that cannot work are refused
// in one line before the first step (and leave every earlier checkpoint byte for byte as
// it was); a step that runs out of memory ends in one line; a signal ends a run stuck in
// a long synchronous kernel within the grace period. The checks themselves are unit-tested
// in engine/preflight.ts, engine/memory.ts, utils/config.ts and config/resolve.ts (self-tests).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadCheckpoint } from '../storage/checkpoint';
import { acquireRunLock } from '../engine/run_lock';
import { assertOk, assertOneLineError, killLeftovers, run, show, sleep, start, tinyConfig, tmpDir, writeConfig } from './helpers/cli';
import { stepFaultEnv } from './helpers/step_fault';

const TIMEOUT = 120_000;
const dirs: string[] = [];
after(() => {
  killLeftovers();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** sha256 of every file under `dir`, by relative path. */
function hashTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

describe('refused before the first step; the earlier run is untouched', () => {
  const dir = tmpDir('preflight');
  dirs.push(dir);
  const ckRoot = path.join(dir, 'checkpoints');
  let hashes: Record<string, string> = {};
  // Each bad run uses another name under the same ckpt_root: nothing of the trained run
  // may change, and the bad run must not even create its folder.
  const bad = (file: string, over: Record<string, any>) => writeConfig(dir, tinyConfig(dir, { name: 'bad', ...over }), file);

  before(async () => {
    const r = await run('train', ['--config', writeConfig(dir, tinyConfig(dir), 'good.yaml'), '--set', 'training.iterations=2']);
    assertOk(r);
    hashes = hashTree(ckRoot);
    assert.ok(Object.keys(hashes).some((f) => f.startsWith(`tiny${path.sep}best`)), 'best/ saved');
  });
  const unchanged = () => {
    assert.deepEqual(hashTree(ckRoot), hashes);
    assert.ok(!fs.existsSync(path.join(ckRoot, 'bad')), 'no folder for the refused run');
  };

  const cases: [string, () => string[], RegExp[]][] = [
    ['a misspelt best_metric', () => ['--config', bad('metric.yaml', { checkpoint: { ckpt_root: ckRoot, best_metric: 'val.mIOU' } })], [/checkpoint\.best_metric 'val\.mIOU' is not a validation metric; choose one of val\.mIoU/]],
    [
      'val.dice on a multi-class run',
      () => ['--config', bad('multi.yaml', { data: { ...tinyConfig(dir).data, num_classes: 4, synthetic: { ...tinyConfig(dir).data.synthetic, kind: 'multiclass' } }, checkpoint: { ckpt_root: ckRoot, best_metric: 'val.dice' } })],
      [/binary runs only/],
    ],
    ['1 output for 4 classes', () => ['--config', bad('out.yaml', { model: { out_channels: 1 }, data: { ...tinyConfig(dir).data, num_classes: 4, synthetic: { ...tinyConfig(dir).data.synthetic, kind: 'multiclass' } }, checkpoint: { ckpt_root: ckRoot } })], [/model\.out_channels is 1 but data\.num_classes is 4/]],
    ['lr .inf (YAML)', () => ['--config', bad('inf.yaml', { checkpoint: { ckpt_root: ckRoot } }), '--set', 'training.optimizer.lr=.inf'], [/training\.optimizer\.lr' has Infinity; Number must be finite/]],
    ['lr 1e30', () => ['--config', bad('big.yaml', { checkpoint: { ckpt_root: ckRoot } }), '--set', 'training.optimizer.lr=1e30'], [/less than or equal to 10/]],
    ['a reversed scale range', () => ['--config', bad('range.yaml', { checkpoint: { ckpt_root: ckRoot }, training: { ...tinyConfig(dir).training, augmentations: { scale: { range: [1.25, 0.75] } } } })], [/scale\.range' has \[1\.25,0\.75\]; expected \[low, high\]/]],
    ['512 px at batch 16 on wasm', () => ['--config', bad('mem.yaml', { checkpoint: { ckpt_root: ckRoot } }), '--set', 'data.size=[512,512]', '--set', 'training.batch_size=16'], [/needs about \d+\.\d GiB, over the wasm heap limit of 4 GiB: lower training\.batch_size/]],
    ['--weights with --resume', () => ['--config', bad('wr.yaml', { checkpoint: { ckpt_root: ckRoot } }), '--resume', '--weights', path.join(ckRoot, 'tiny', 'best')], [/--weights .* with --resume: .*drop --weights/]],
  ];
  for (const [name, args, patterns] of cases) {
    test(name, { timeout: TIMEOUT }, async () => {
      assertOneLineError(await run('train', args()), ...patterns);
      unchanged();
    });
  }
  test('an empty config file', { timeout: TIMEOUT }, async () => {
    const file = path.join(dir, 'empty.yaml');
    fs.writeFileSync(file, '# to do\n');
    assertOneLineError(await run('train', ['--config', file]), /empty\.yaml: the config is empty; start from configs\/demo\.yaml, or write \{\} to/);
  });
  test('evaluate --threshold 2 and abc are refused; --split test on synthetic data and gpus on wasm warn', { timeout: TIMEOUT }, async () => {
    const good = path.join(dir, 'good.yaml');
    assertOneLineError(await run('evaluate', ['--config', good, '--threshold', '2']), /--threshold 2: expected a foreground probability from 0 to 1/);
    assertOneLineError(await run('evaluate', ['--config', good, '--threshold', 'abc']), /--threshold \(not a number\)/);
    const r = await run('evaluate', ['--config', good, '--split', 'test', '--set', 'gpus=[0]', '--output', path.join(dir, 'eval')]);
    assertOk(r);
    assert.match(r.stderr, /^warning: synthetic data has no test split; split 'test' reads the val images/m, show(r));
    assert.match(r.stderr, /^warning: gpus \[0\] is not used: backend wasm runs on the CPU/m, show(r));
    unchanged();
  });
});

describe('inside a step', () => {
  /** A run saving last/ after every step, with a fault injected into one step. */
  function faultRun(name: string, fault: string) {
    const dir = tmpDir(`fault-${name}`);
    dirs.push(dir);
    const config = writeConfig(dir, tinyConfig(dir, { name, training: { epochs: 50, val_interval: 50, print_interval: 1, workers: 1, batch_size: 4 }, checkpoint: { save_every_iters: 1 } }));
    const last = path.join(dir, 'checkpoints', name, 'last');
    return { dir, config, last, started: start('train', ['--config', config], { env: { ...stepFaultEnv(fault), SEMSEG_STOP_GRACE_S: '2' } }) };
  }
  const savedStep = async (d: string) => (await loadCheckpoint(d).catch(() => null))?.meta.step ?? -1;

  test('SIGTERM inside a long synchronous kernel ends the run within the grace period; last/ stays loadable and the lock is free', { timeout: TIMEOUT }, async () => {
    const { last, started } = faultRun('stuck', 'busy@3:60000');
    let exited = false;
    void started.done.then(() => (exited = true));
    while ((await savedStep(last)) < 2) {
      if (exited) assert.fail(`exited early\n${show(await started.done)}`);
      await sleep(100);
    }
    await sleep(1000); // step 3 is busy for 60 s from here on
    const t0 = Date.now();
    started.child.kill('SIGTERM');
    const r = await started.done;
    const took = (Date.now() - t0) / 1000;
    assert.equal(r.signal, 'SIGKILL', show(r));
    assert.ok(took < 15, `took ${took} s to exit\n${show(r)}`); // grace 2 s; 60 s without the watchdog
    assert.match(r.stderr, /error: SIGTERM: the current step did not finish within \d+ s \(a long kernel\); stopped without saving; .*last keeps the last save/, show(r));
    assert.equal((await loadCheckpoint(last)).meta.step, 2);
    acquireRunLock(path.dirname(last))(); // the dead run's lock is taken over
  });

  test('SIGTERM while every step takes longer than the grace: the run stops after the current step and saves last/', { timeout: TIMEOUT }, async () => {
    // No save before the signal (the case that lost everything), steps of 3 s, grace 2 s.
    const dir = tmpDir('fault-slow');
    dirs.push(dir);
    const config = writeConfig(dir, tinyConfig(dir, { name: 'slow', training: { epochs: 50, val_interval: 50, print_interval: 1, workers: 1, batch_size: 4 } }));
    const last = path.join(dir, 'checkpoints', 'slow', 'last');
    const history = path.join(dir, 'results', 'slow', 'history.jsonl');
    const started = start('train', ['--config', config], { env: { ...stepFaultEnv('busy@1+:3000'), SEMSEG_STOP_GRACE_S: '2' } });
    let exited = false;
    void started.done.then(() => (exited = true));
    while (!(fs.existsSync(history) && fs.readFileSync(history, 'utf8').includes('"step":1,'))) {
      if (exited) assert.fail(`exited early\n${show(await started.done)}`);
      await sleep(100);
    }
    await sleep(500); // inside step 2, which blocks the main thread for 3 s
    assert.ok(!fs.existsSync(last), 'nothing saved before the signal');
    started.child.kill('SIGTERM');
    const r = await started.done;
    assert.equal(r.code, 143, show(r));
    assert.doesNotMatch(r.stderr, /^error:/m, show(r));
    const step = (await loadCheckpoint(last)).meta.step;
    assert.equal(step, 2, `saved step ${step}: the run should stop after the step the signal came in\n${show(r)}`);
    assert.match(r.stderr, /stopped at epoch 1, step 2; saved .*last/, show(r));
  });

  test('an out-of-memory abort in a step is one line naming the sizes; last/ keeps the step before', { timeout: TIMEOUT }, async () => {
    const { last, started } = faultRun('oom', 'oom@2');
    const r = await started.done;
    assertOneLineError(r, /out of memory in training step 2 \(Aborted\(OOM\)/, /data\.size \[32, 32\], training\.batch_size 4, model\.name unet, model\.base 4/, /lower training\.batch_size, data\.size or model\.base/);
    assert.equal((await loadCheckpoint(last)).meta.step, 1);
  });
});
