// Seeded runs repeat bit for bit, and so does a run stopped and resumed, for every
// registered architecture (dropout included) from its demo config with augmentation on:
// every random draw of a step derives from training.seed and the global step.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initBackend } from '../backends';
import { train } from '../engine/trainer';
import { registeredModels } from '../models/registry';
import { loadConfig, resolveRun } from '../config/resolve';
import { tmpDir } from '../loaders/fixtures';
import { loadCheckpoint } from '../storage/checkpoint';
import { stopAt } from './helpers/stop_at';

const TIMEOUT = 120_000;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
before(() => initBackend('wasm'));

const CONFIGS = [path.join(__dirname, '..', 'configs'), path.join(__dirname, '..', '..', 'configs')].find((d) => fs.existsSync(d))!; // under tsx, compiled
const demoConfig = (name: string) => path.join(CONFIGS, name === 'unet' ? 'demo.yaml' : `demo_${name}.yaml`);

/** The weights a run ended with, as saved in last/ (the returned model holds best/ after the final evaluation). */
async function weightsOf(lastDir: string): Promise<{ name: string; data: Float32Array }[]> {
  return (await loadCheckpoint(lastDir)).weights.map((w) => ({ name: w.name, data: w.values }));
}

function assertSameBits(a: Awaited<ReturnType<typeof weightsOf>>, b: Awaited<ReturnType<typeof weightsOf>>, what: string): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    const x = new Uint32Array(a[i].data.buffer, a[i].data.byteOffset, a[i].data.length);
    const y = new Uint32Array(b[i].data.buffer, b[i].data.byteOffset, b[i].data.length);
    const at = x.findIndex((v, k) => v !== y[k]);
    assert.ok(at < 0, `${what}: weight ${a[i].name} differs at ${at}: ${a[i].data[at]} vs ${b[i].data[at]}`);
  }
}

for (const name of registeredModels()) {
  describe(`determinism of ${name}`, () => {
    const dir = tmpDir(`det-${name}`);
    dirs.push(dir);
    // The demo config at a tiny size: 3 steps per epoch, 2 epochs, its augmentations kept.
    // FPN over MobileNetV2 rather than its demo's ResNet-18: 4x faster, and neither encoder draws.
    const config = (run: string) =>
      loadConfig(demoConfig(name), [
        ...(name === 'fpn' ? ['model.encoder=mobilenet_v2'] : []),
        `name=${run}`,
        'backend=wasm',
        `data.root=${path.join(dir, 'data')}`,
        'data.size=[32, 32]',
        'data.synthetic={train: 6, val: 2, image_size: 40}',
        'training.epochs=2',
        'training.batch_size=2',
        'training.workers=1',
        'training.time_limit=0',
        'training.val_interval=1',
        `checkpoint.ckpt_root=${path.join(dir, 'checkpoints')}`,
        `results.root=${path.join(dir, 'results')}`,
      ]);
    let straight: Awaited<ReturnType<typeof weightsOf>> = [];

    test('two runs with the same seed end with the same weights, bit for bit', { timeout: TIMEOUT }, async () => {
      const a = await train(resolveRun(config('a')), { quiet: true });
      straight = await weightsOf(a.lastDir);
      a.model.dispose();
      const b = await train(resolveRun(config('b')), { quiet: true });
      assert.equal(b.step, 6);
      assertSameBits(straight, await weightsOf(b.lastDir), 'second run');
      b.model.dispose();
    });

    test('a run stopped in its first epoch and resumed ends with the same weights, bit for bit', { timeout: TIMEOUT }, async () => {
      assert.ok(straight.length, 'the straight run above did not finish');
      const cfg = config('split');
      const first = await train(resolveRun(cfg), { quiet: true, ...stopAt(2) });
      assert.ok(first.interrupted);
      first.model.dispose();
      const resumed = await train(resolveRun(cfg), { quiet: true, resume: true });
      assert.equal(resumed.step, 6);
      assertSameBits(straight, await weightsOf(resumed.lastDir), 'resumed run');
      resumed.model.dispose();
    });
  });
}
