// Issue 39, classes 2, 3 (signals during evaluate), 4 (writes through links) and 6 (full
// disk, readers racing a save): nothing is deleted or overwritten that the user did not
// ask for, an evaluation's folder holds the previous results whole or the new ones whole,
// and a reader racing a checkpoint save reads one complete save.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tf from '../backends/tf';
import { publishDir } from '../storage/atomic_dir';
import { saveCheckpoint } from '../storage/checkpoint';
import { loadWeightsFrom } from '../engine/model_io';
import { assertOk, assertOneLineError, killLeftovers, run, show, sleep, start, tinyConfig, tmpDir, writeConfig } from './helpers/cli';

const TIMEOUT = 240_000;
const dirs: string[] = [];
after(() => {
  killLeftovers();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
function scratch(prefix: string): string {
  const d = tmpDir(prefix);
  dirs.push(d);
  return d;
}

/** sha256 of every file under `dir` (hidden ones left out), by relative path. */
function hashTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

function tinyModel(): tf.LayersModel {
  const input = tf.input({ shape: [4, 4, 3] });
  return tf.model({ inputs: input, outputs: tf.layers.conv2d({ filters: 2, kernelSize: 1, name: 'enc0_conv1' }).apply(input) as tf.SymbolicTensor });
}

test("the atomic swap removes only what it made: a user's last.old and site.old survive saves and exports", async () => {
  const root = scratch('swap');
  const mine = (name: string) => {
    const d = path.join(root, name);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'backup.txt'), name);
    fs.writeFileSync(path.join(d, 'complete.json'), '{"version": 1, "files": {}}'); // even one that looks complete
  };
  mine('last.old');
  mine('site.old');
  const m = tinyModel();
  const meta = { epoch: 0, step: 1, bestMetric: null, bestMetricName: 'val.dice', rng: null, config: null };
  for (const step of [1, 2, 3]) await saveCheckpoint(path.join(root, 'last'), m, null, { ...meta, step });
  for (const v of ['a', 'b']) await publishDir(path.join(root, 'site'), (w) => w.write('model.json', v), ['model.json'], { what: 'export', setting: '--output' });
  m.dispose();
  for (const name of ['last.old', 'site.old']) assert.equal(fs.readFileSync(path.join(root, name, 'backup.txt'), 'utf8'), name, `${name} was removed`);
  assert.deepEqual(fs.readdirSync(root).sort(), ['last', 'last.old', 'site', 'site.old'], 'no temporaries left');
});

test('a reader racing checkpoint saves in another process always reads a complete save', { timeout: 120_000 }, async () => {
  const root = scratch('race');
  const ext = path.extname(__filename);
  const script = path.join(__dirname, 'fixtures', `ckpt_writer${ext}`);
  const child = spawn(process.execPath, [...(ext === '.ts' ? ['--import', 'tsx'] : []), script, root, 'small'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let saved = 0;
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (saved += (s.match(/^saved /gm) ?? []).length));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  try {
    const t0 = Date.now();
    while (!saved) {
      assert.equal(child.exitCode, null, `writer exited: ${stderr}`);
      assert.ok(Date.now() - t0 < 60_000, 'writer did not save within 60 s');
      await sleep(20);
    }
    const last = path.join(root, 'last');
    let loads = 0;
    const until = Date.now() + 8000;
    while (Date.now() < until) {
      const { weights, meta } = await loadWeightsFrom(last); // what loadModel reads
      const step = meta!.step;
      for (const w of weights) assert.ok(w.values.every((v) => v === step), `weight ${w.name} is not all ${step}: a torn read`);
      loads++;
    }
    assert.ok(saved > 50 && loads > 500, `too little overlap: ${saved} saves, ${loads} loads`);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
});

describe('a trained run: nothing of it is wiped, overwritten through a link or left half-replaced', () => {
  const dir = scratch('noloss');
  const cfg = tinyConfig(dir, { name: 'keep', data: { synthetic: { kind: 'lesion', train: 8, val: 40, image_size: 40 } }, evaluation: { tta: ['hflip', 'vflip'] } });
  const config = writeConfig(dir, cfg);
  const results = path.join(dir, 'results', 'keep');
  const evalDir = path.join(results, 'eval-val');

  before(async () => {
    assertOk(await run('train', ['--config', config]));
    assertOk(await run('evaluate', ['--config', config]));
  }, { timeout: TIMEOUT });

  test('a fresh run with the same name but another checkpoint.ckpt_root is refused; the results stay', { timeout: TIMEOUT }, async () => {
    const beforeHash = hashTree(results);
    const other = writeConfig(dir, { ...cfg, checkpoint: { ckpt_root: path.join(dir, 'other-ckpt') } }, 'other.yaml');
    const r = await run('train', ['--config', other]);
    assertOneLineError(r, new RegExp(`${results.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} already holds a run's results \\(history\\.jsonl\\); pick another name \\(--set name=\\.\\.\\.\\), or pass --overwrite \\(library: overwrite: true\\)`));
    assert.deepEqual(hashTree(results), beforeHash);
    assert.ok(!fs.existsSync(path.join(dir, 'other-ckpt', 'keep', 'last')), 'the refused run trained');
  });

  test('evaluate replaces a link in its folder, never the file it points to', { timeout: TIMEOUT }, async () => {
    const victim = path.join(dir, 'victim.txt');
    fs.writeFileSync(victim, 'precious');
    for (const name of ['metrics.json', 'report.html']) {
      fs.rmSync(path.join(evalDir, name));
      fs.symlinkSync(victim, path.join(evalDir, name));
    }
    const overlay = path.join(evalDir, 'overlays', fs.readdirSync(path.join(evalDir, 'overlays'))[0]);
    fs.rmSync(overlay);
    fs.symlinkSync(victim, overlay);
    assertOk(await run('evaluate', ['--config', config]));
    assert.equal(fs.readFileSync(victim, 'utf8'), 'precious');
    for (const f of [path.join(evalDir, 'metrics.json'), overlay]) assert.ok(!fs.lstatSync(f).isSymbolicLink(), `${f} is still a link`);
    assert.equal(JSON.parse(fs.readFileSync(path.join(evalDir, 'metrics.json'), 'utf8')).run, 'keep');
  });

  test('SIGTERM during evaluate: one line, exit 143, and the previous results whole', { timeout: TIMEOUT }, async () => {
    const beforeHash = hashTree(evalDir);
    const t0 = Date.now();
    const ev = start('evaluate', ['--config', config]);
    // Wait until the new evaluation has written something (anywhere under the folder), then stop it.
    const newest = (d: string): number => fs.readdirSync(d, { withFileTypes: true }).reduce((t, e) => {
      const p = path.join(d, e.name);
      try {
        return Math.max(t, e.isDirectory() ? newest(p) : fs.lstatSync(p).mtimeMs);
      } catch {
        return t; // moved meanwhile
      }
    }, 0);
    while (newest(evalDir) < t0) {
      assert.equal(ev.child.exitCode, null, `evaluate finished before it could be stopped\n${ev.out.stdout}${ev.out.stderr}`);
      await sleep(5);
    }
    ev.child.kill('SIGTERM');
    const r = await ev.done;
    assert.equal(r.code, 143, show(r));
    assertOneLineError(r, new RegExp(`^error: evaluate: stopped by SIGTERM; ${evalDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} keeps the previous results$`));
    assert.deepEqual(hashTree(evalDir), beforeHash, 'the previous results changed');
  });

  test('a full disk during evaluate is one line naming the file; the previous results stay whole', { timeout: TIMEOUT }, async () => {
    const beforeHash = hashTree(evalDir);
    // No tmpfs without privileges: a preload makes the 5th PNG written under the folder fail
    // the way a full disk does (half of it written, then ENOSPC from write(2), no path).
    const preload = path.join(dir, 'enospc.js');
    fs.writeFileSync(preload, `
const fs = require('node:fs');
const orig = fs.writeFileSync;
let n = 0;
fs.writeFileSync = function (file, data, ...rest) {
  if (typeof file === 'string' && file.startsWith(process.env.ENOSPC_UNDER) && /\\.png/.test(file) && ++n >= 5) {
    orig.call(fs, file, Buffer.from(data).subarray(0, data.length >> 1), ...rest);
    throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
  }
  return orig.call(fs, file, data, ...rest);
};`);
    const r = await start('evaluate', ['--config', config], { env: { NODE_OPTIONS: `--require ${preload}`, ENOSPC_UNDER: evalDir } }).done;
    assertOneLineError(r, new RegExp(`^error: ${evalDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/(overlays|predictions)/[^ ]+\\.png: no space left on the device \\(writing the results\\); ${evalDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} keeps the previous results`));
    assert.deepEqual(hashTree(evalDir), beforeHash, 'the previous results changed');
    assert.deepEqual(fs.readdirSync(evalDir).filter((n) => n.startsWith('.')), [], 'temporaries left');
  });

  test("re-exporting into an earlier export that holds the user's files is refused; an exact export is replaced", { timeout: TIMEOUT }, async () => {
    const out = path.join(dir, 'site');
    assertOk(await run('export', ['--config', config, '--output', out]));
    assertOk(await run('export', ['--config', config, '--output', out]));
    fs.writeFileSync(path.join(out, 'notes.txt'), 'keep me');
    const r = await run('export', ['--config', config, '--output', out]);
    assertOneLineError(r, /site: holds an earlier export and also 'notes\.txt', which the export did not write/);
    assert.equal(fs.readFileSync(path.join(out, 'notes.txt'), 'utf8'), 'keep me');
    assert.ok(fs.existsSync(path.join(out, 'model.json')));
  });
});
