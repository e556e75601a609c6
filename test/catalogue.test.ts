// The hardening catalogue (issue 14, classes 1, 2 and 5), walked as a user would, through
// the command lines: resume after the data or batch size changed, writes that must not
// destroy an input or an earlier run, and file-system failures that must read as one
// line naming the path. Each case checks its exit code, its message and that no input or
// earlier checkpoint changed (hashes before and after). One tiny trained run is shared.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bandMask, imageForMask, writeRaw } from '../loaders/fixtures';
import { loadCheckpoint } from '../storage/checkpoint';
import { assertOk, assertOneLineError, killLeftovers, run, show, sleep, start, tinyConfig, tmpDir, writeConfig } from './helpers/cli';

const TIMEOUT = 120_000;
const dir = tmpDir('catalogue');
after(() => {
  killLeftovers();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** sha256 of every file under `root`, by relative path (missing root: empty). */
function hashTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!fs.existsSync(root)) return out;
  for (const rel of fs.readdirSync(root, { recursive: true }) as string[]) {
    const p = path.join(root, rel);
    if (fs.statSync(p).isFile()) out[rel] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
  }
  return out;
}

/** Asserts `fn` leaves every file under `roots` as it was. */
async function unchanged<T>(roots: string[], fn: () => Promise<T>): Promise<T> {
  const before = roots.map(hashTree);
  assert.ok(before.some((h) => Object.keys(h).length), 'nothing to compare');
  const r = await fn();
  roots.forEach((root, i) => assert.deepEqual(hashTree(root), before[i], `${root} changed`));
  return r;
}

// The shared run: 16 pairs, batch 4 (4 steps per epoch), 6 iterations: last/ is saved mid-epoch 2.
const ckRoot = path.join(dir, 'checkpoints');
const config = writeConfig(dir, tinyConfig(dir, { name: 'cat', training: { iterations: 6 }, results: { save_predictions: false } }));
const runDir = path.join(ckRoot, 'cat');

/** A copy of the shared run under another name, to be resumed or broken without touching the original. */
function copyRun(name: string): string {
  fs.cpSync(runDir, path.join(ckRoot, name), { recursive: true });
  fs.rmSync(path.join(ckRoot, name, '.train.lock'), { force: true });
  return path.join(ckRoot, name);
}

before(async () => {
  assertOk(await run('train', ['--config', config]));
  const m = (await loadCheckpoint(path.join(runDir, 'last'))).meta;
  assert.deepEqual([m.epoch, m.step, m.stepsPerEpoch, m.trainPairs], [1, 6, 4, 16]);
});

// Progress lines print `epoch e/E … s/S`: never a step past its epoch (the old resume loop printed 7/4 forever).
function assertNoStepPastEpoch(stderr: string): void {
  for (const m of stderr.matchAll(/^epoch \d+\/\d+ .*?(\d+)\/(\d+)/gm)) assert.ok(Number(m[1]) <= Number(m[2]), m[0]);
}

describe('1. resume after the data or batch size changed', () => {
  test('batch size 4 -> 2 mid-epoch: continues at the same share of the epoch, with a warning', { timeout: TIMEOUT }, async () => {
    copyRun('batch');
    const r = await run('train', ['--config', config, '--resume', '--set', 'name=batch', '--set', 'training.batch_size=2', '--set', 'training.iterations=14']);
    assertOk(r);
    // Step 2 of 4 in epoch 2 is step 4 of 8: global step 6 -> 12, two steps left.
    assert.match(r.stderr, /^warning: resume is not bit-exact: training\.batch_size 4 -> 2 since .*batch\/last was saved, so an epoch has 8 steps instead of 4; continuing epoch 2 at step 4\/8, the same share of the epoch \(global step 6 -> 12\)$/m, show(r));
    assertNoStepPastEpoch(r.stderr);
    const m = (await loadCheckpoint(path.join(ckRoot, 'batch', 'last'))).meta;
    assert.deepEqual([m.epoch, m.step, m.stepsPerEpoch], [1, 14, 8]);
  });

  test('data.limit 16 -> 4 (one step per epoch): restarts inside the epoch, never past it', { timeout: TIMEOUT }, async () => {
    copyRun('limit');
    const r = await run('train', ['--config', config, '--resume', '--set', 'name=limit', '--set', 'data.limit=4', '--set', 'training.iterations=3']);
    assertOk(r);
    assert.match(r.stderr, /^warning: resume is not bit-exact: training pairs 16 -> 4, data\.limit 0 -> 4 .*an epoch has 1 steps instead of 4; continuing epoch 2 at step 0\/1, the same share of the epoch \(global step 6 -> 1\)$/m, show(r));
    assertNoStepPastEpoch(r.stderr);
    const m = (await loadCheckpoint(path.join(ckRoot, 'limit', 'last'))).meta;
    assert.deepEqual([m.epoch, m.step], [3, 3]);
  });

  test('a last/ missing only its completion marker is kept, and the advice does not overwrite it', { timeout: TIMEOUT }, async () => {
    const copy = copyRun('nomarker');
    fs.rmSync(path.join(copy, 'last', 'complete.json'));
    const r = await unchanged([copy], () => run('train', ['--config', config, '--resume', '--set', 'name=nomarker']));
    const line = assertOneLineError(r, /not a complete checkpoint \(no complete\.json/, /left as it is\. Move it aside to keep it, then start afresh with --overwrite/);
    assert.ok(line.includes(`--weights ${path.join(copy, 'best')}`), line);
  });
});

describe('2. nothing a command writes destroys an input or an earlier result', () => {
  const input = path.join(dir, 'input');
  before(async () => {
    const img = (seed: number) => imageForMask(bandMask(30, 20, [0, 1, 0]), seed);
    await writeRaw(path.join(input, 'a.jpg'), img(1), 30, 20, 3);
    await writeRaw(path.join(input, 'a.png'), img(2), 30, 20, 3);
    await writeRaw(path.join(input, 'b.png'), img(3), 30, 20, 3);
  });
  const predict = (extra: string[]) => run('predict', ['--config', config, '--checkpoint', path.join(runDir, 'last'), ...extra]);

  // Inside it (--output input/masks) is refused the same way: engine/predictor.ts checks both.
  test('predict --output equal to --input is refused', { timeout: TIMEOUT }, async () => {
    const r = await unchanged([input], () => predict(['--input', input, '--output', input]));
    assertOneLineError(r, /--output .* is the --input folder .*: masks would replace or mix with the input images; choose an output folder outside it/);
    assert.deepEqual(fs.readdirSync(input).sort(), ['a.jpg', 'a.png', 'b.png'], 'nothing written');
  });

  test('predict of one file into its own folder would replace it: refused', { timeout: TIMEOUT }, async () => {
    const r = await unchanged([input], () => predict(['--input', path.join(input, 'a.png'), '--output', input]));
    assertOneLineError(r, /is the folder of --input .*a\.png: masks would replace or mix with the input images/);
  });

  test('inputs sharing a stem get outputs of their own, and the count is true', { timeout: TIMEOUT }, async () => {
    const out = path.join(dir, 'pred');
    const r = await unchanged([input], () => predict(['--input', input, '--output', out]));
    assertOk(r);
    assert.deepEqual(fs.readdirSync(out).sort(), ['a_jpg.png', 'a_jpg_overlay.png', 'a_png.png', 'a_png_overlay.png', 'b.png', 'b_overlay.png']);
    assert.match(r.stdout, /^wrote 3 prediction\(s\) to /m, show(r));
  });

  test('predict into a folder holding earlier outputs is refused, leaving them; --overwrite replaces them', { timeout: TIMEOUT }, async () => {
    const out = path.join(dir, 'pred'); // written by the test before
    const before = fs.readdirSync(out).sort();
    const r = await unchanged([input, out], () => predict(['--input', input, '--output', out]));
    assertOneLineError(r, /--output .*pred already holds a_jpg\.png and 5 more of this run's outputs; pass --overwrite to replace them, or choose another folder/);
    // A predict killed mid-write left a temporary of one of its outputs; a file of the same shape for another name is not ours to judge.
    const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!;
    const stale = `.a_jpg.png.tmp-${deadPid}-c7a0ac86`, foreign = `.notes.txt.tmp-${deadPid}-c7a0ac86`;
    for (const n of [stale, foreign]) fs.writeFileSync(path.join(out, n), 'half');
    const again = await predict(['--input', input, '--output', out, '--overwrite']);
    assertOk(again);
    assert.deepEqual(fs.readdirSync(out).sort(), [...before, foreign].sort(), 'the same files, the killed run\'s temporary cleared, the other file kept');
  });

  test('evaluate --output into a folder of other files is refused; an earlier evaluation there is replaced', { timeout: TIMEOUT }, async () => {
    const other = path.join(dir, 'someone-elses');
    fs.mkdirSync(other, { recursive: true });
    fs.writeFileSync(path.join(other, 'report.html'), '<p>not ours</p>');
    const r = await unchanged([other], () => run('evaluate', ['--config', config, '--checkpoint', path.join(runDir, 'last'), '--output', other]));
    assertOneLineError(r, /--output .*someone-elses: holds files that are not an earlier evaluation \(report\.html\); choose another folder, or pass --overwrite/);
    const ours = path.join(dir, 'eval-twice');
    for (let i = 0; i < 2; i++) assertOk(await run('evaluate', ['--config', config, '--checkpoint', path.join(runDir, 'last'), '--output', ours]));
  });

  test('a fresh train over a trained run is refused; its checkpoints and results stay', { timeout: TIMEOUT }, async () => {
    const r = await unchanged([runDir, path.join(dir, 'results', 'cat')], () => run('train', ['--config', config]));
    const line = assertOneLineError(r, /already holds a run \(last\/ and best\/\)/, /--resume/, /--set name=/, /--overwrite/);
    assert.ok(line.includes(runDir), line);
  });

  test('--overwrite starts afresh on purpose', { timeout: TIMEOUT }, async () => {
    copyRun('over');
    assertOk(await run('train', ['--config', config, '--overwrite', '--set', 'name=over', '--set', 'training.iterations=1']));
    assert.equal((await loadCheckpoint(path.join(ckRoot, 'over', 'last'))).meta.step, 1);
  });

  test('run names that would leave or hide in their folders are refused', { timeout: TIMEOUT }, async () => {
    for (const name of ['..', '.', '.hidden']) {
      const r = await unchanged([ckRoot], () => run('train', ['--config', config, '--set', `name=${name}`]));
      assertOneLineError(r, /key 'name'/, /not starting with a dot/);
    }
    assert.ok(!fs.existsSync(path.join(dir, 'last')) && !fs.existsSync(path.join(dir, '.train.lock')), 'nothing written beside the run folders');
  });
});

describe('5. messages that mislead', () => {
  const file = path.join(dir, 'plain-file');
  before(() => fs.writeFileSync(file, 'not a folder'));

  test('a checkpoint, results or output folder through a file names the file (ENOTDIR), not an internal error', { timeout: TIMEOUT }, async () => {
    const cases: [string, string[], RegExp][] = [
      ['train', ['--config', config, '--set', `checkpoint.ckpt_root=${file}/ck`], /\(writing the run folder\); .*\(checkpoint\.ckpt_root\)$/],
      ['train', ['--config', config, '--set', 'name=res', '--set', `results.root=${file}/res`], /\(writing the results\); .*\(results\.root\)$/],
      ['evaluate', ['--config', config, '--output', `${file}/eval`], /\(writing the results\); the checkpoints are not affected; /],
      ['predict', ['--config', config, '--input', path.join(dir, 'input'), '--output', `${file}/pred`], /\(writing the predictions\); nothing was written; .*\(--output\)$/],
    ];
    for (const [cmd, args, re] of cases) {
      const r = await unchanged([runDir, path.join(dir, 'input')], () => run(cmd as 'train', args));
      const line = assertOneLineError(r, new RegExp(`^error: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: is a file, not a folder`), re);
      assert.doesNotMatch(line, /internal error|ENOENT|ENOTDIR/, `${cmd}: ${line}`);
    }
    // export-model names its own --output, not checkpoint.ckpt_root (mkdir says EEXIST here).
    const r = await unchanged([runDir], () => run('export', ['--config', config, '--checkpoint', path.join(runDir, 'last'), '--output', `${file}/exp`]));
    const line = assertOneLineError(r, /plain-file: .*\(writing the export\); .*\(--output\)$/);
    assert.doesNotMatch(line, /ckpt_root|internal error/, line);
  });

  test('the resume hint after Ctrl-C repeats --set and --backend, shell-quoted', { timeout: TIMEOUT }, async () => {
    const last = path.join(ckRoot, 'hint', 'last');
    const sets = ['name=hint', 'training.iterations=10000', 'checkpoint.save_every_iters=1', 'data.size=[32, 32]'];
    const child = start('train', ['--config', config, ...sets.flatMap((s) => ['--set', s]), '--backend', 'wasm']);
    let exited = false;
    void child.done.then(() => (exited = true));
    while (!fs.existsSync(path.join(last, 'complete.json'))) {
      if (exited) assert.fail(show(await child.done));
      await sleep(100);
    }
    child.child.kill('SIGINT');
    const r = await child.done;
    assert.equal(r.code, 130, show(r));
    const hint = `Resume with: npx train --config ${config} --set name=hint --set training.iterations=10000 --set checkpoint.save_every_iters=1 --set 'data.size=[32, 32]' --backend wasm --resume`;
    assert.ok(r.stderr.includes(hint), show(r)); // a diagnostic: stderr
  });
});
