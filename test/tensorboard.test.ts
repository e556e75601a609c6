// TensorBoard logs of a training run, read back by TensorFlow's own reader (python3 with
// tensorflow-cpu; `.ci/run` installs it): the values equal history.jsonl's, per-class IoU
// and validation overlays are there, and a run resumed after a kill that had logged past
// its checkpoint shows each step once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { train } from '../api';
import { History } from '../storage/history';
import { EventWriter } from '../utils/tfevents';
import { runExitHooks } from '../utils/exit';
import { tinyConfig, tmpDir } from './helpers/cli';

const READER = [path.join(__dirname, 'fixtures', 'read_tfevents.py'), path.join(__dirname, '..', '..', 'test', 'fixtures', 'read_tfevents.py')].find((f) => fs.existsSync(f))!;
const INSTALL = 'python3 with tensorflow-cpu is needed: pip install --index-url file:///opt/pypi/simple tensorflow-cpu (README "TensorBoard")';

interface Row { file: string; step: number; tag?: string; value?: number; image?: number[]; file_version?: string }

function readBack(dir: string): Row[] {
  const r = spawnSync('python3', [READER, dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${INSTALL}\n${r.stderr.split('\n').slice(-3).join('\n')}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l));
}

test('TensorFlow reads the event files: history values, per-class IoU, overlays; a resumed run logs each step once', { timeout: 300_000 }, async () => {
  const dir = tmpDir('tb');
  try {
    const cfg = tinyConfig(dir, { training: { epochs: 1, batch_size: 4, workers: 1, print_interval: 2, val_interval: 1 } });
    const first = await train(cfg, { quiet: true });
    const tb = path.join(dir, 'results', 'tiny');
    const history = new History(path.join(dir, 'results', 'tiny', 'history.jsonl'));
    // A kill after logging past the checkpoint: rows and events at a step last/ never reached.
    const ghost = first.step + 1;
    history.append({ epoch: 1, step: ghost, split: 'train', loss: 99, lr: 1 });
    new EventWriter(tb).write({ step: ghost, values: [{ tag: 'train/loss', scalar: 99 }] });
    await train({ ...cfg, training: { ...cfg.training, epochs: 2 } }, { quiet: true, resume: true });

    // TensorBoard names a run by its folder under --logdir: the event files sit in results/<name>/ itself.
    assert.ok(fs.readdirSync(tb).some((f) => f.startsWith('events.out.tfevents.')), `no event file directly in ${tb}`);
    assert.deepEqual(fs.readdirSync(tb, { withFileTypes: true }).filter((e) => e.isDirectory() && fs.readdirSync(path.join(tb, e.name)).some((f) => f.startsWith('events.out.tfevents.'))).map((e) => e.name), [], 'event files in a sub-folder (TensorBoard would name the run <name>/<sub>)');
    const rows = readBack(tb);
    assert.ok(rows.some((r) => r.file_version === 'brain.Event:2'));
    const values = rows.filter((r) => r.tag !== undefined);
    assert.ok(!values.some((r) => r.value === 99), 'the steps after the checkpoint were dropped on resume');
    const seen = new Set<string>();
    for (const r of values) {
      const k = `${r.tag}@${r.step}`;
      assert.ok(!seen.has(k), `${k} twice`);
      seen.add(k);
    }
    const at = (tag: string, step: number) => values.find((r) => r.tag === tag && r.step === step);
    const hist = history.read();
    assert.ok(hist.filter((h) => h.split === 'train').length >= 4);
    for (const h of hist) {
      if (h.split === 'train') {
        assert.ok(Math.abs(at('train/loss', h.step)!.value! - h.loss!) <= 1e-6 * Math.max(1, h.loss!), `train/loss at ${h.step}`);
        assert.ok(Math.abs(at('train/lr', h.step)!.value! - h.lr!) <= 1e-6 * Math.max(1, h.lr!), `train/lr at ${h.step}`);
      } else {
        for (const m of ['mIoU', 'dice', 'thresholded_jaccard']) assert.ok(Math.abs(at(`val/${m}`, h.step)!.value! - (h[m] as number)) <= 1e-6, `val/${m} at ${h.step}`);
      }
    }
    const vals = hist.filter((h) => h.split === 'val');
    assert.equal(vals.length, 2, 'one validation per epoch');
    for (const v of vals) {
      for (const c of ['background', 'lesion']) assert.ok(at(`val_iou/${c}`, v.step), `val_iou/${c} at ${v.step}`);
      const images = values.filter((r) => r.image && r.step === v.step);
      assert.equal(images.length, 3, `overlays at ${v.step}`);
      for (const im of images) {
        const [h, w, c, hh, ww] = im.image!;
        assert.deepEqual([c, h, w], [3, hh, ww], 'the PNG decodes at the size the summary declares');
      }
    }
  } finally {
    await runExitHooks();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
