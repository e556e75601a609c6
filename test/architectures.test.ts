// Every registered architecture, end to end as a user runs it: its shipped demo config
// (configs/demo_<name>.yaml, which extends configs/demo.yaml) trains one short epoch on
// wasm through `npx train`, then `evaluate`, `predict` and `export` run on the result,
// and the export, loaded by stock tfjs, gives the masks `predict` wrote.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import * as tf from '../backends/tf';
import { initBackend } from '../backends';
import { predictMask } from '../engine/predictor';
import { fileLoadHandler } from '../storage/model_files';
import { isProjectLayer } from '../models/layers/custom_layers';
import { registeredModels } from '../models/registry';
import { loadConfig } from '../config/resolve';
import { bandMask, imageForMask, writeRaw } from '../loaders/fixtures';
import { assertOk, killLeftovers, ROOT, run, show, tmpDir, writeConfig } from './helpers/cli';

const TIMEOUT = 240_000;
const dirs: string[] = [];
after(() => {
  killLeftovers();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** The demo config of an architecture: demo.yaml for the U-Net, else demo_<name>.yaml. */
const CONFIGS = [path.join(ROOT, 'configs'), path.join(ROOT, '..', 'configs')].find((d) => fs.existsSync(d))!; // under tsx, compiled
const demoConfig = (name: string) => path.join(CONFIGS, name === 'unet' ? 'demo.yaml' : `demo_${name}.yaml`);

before(() => initBackend('wasm'));

for (const name of registeredModels()) {
  describe(`architecture ${name}`, () => {
    const dir = tmpDir(`arch-${name}`);
    dirs.push(dir);
    const ck = path.join(dir, 'checkpoints', name, 'best');
    let config = '';

    test('its demo config exists and names it', () => {
      assert.ok(fs.existsSync(demoConfig(name)), `${demoConfig(name)} missing`);
      assert.equal(loadConfig(demoConfig(name)).model.name, name);
    });

    test('trains one short epoch on wasm from its demo config, then evaluates', { timeout: TIMEOUT }, async () => {
      // A few lines over the shipped config, as a user's own config would be.
      config = writeConfig(dir, {
        extends: demoConfig(name),
        name,
        backend: 'wasm',
        data: { root: path.join(dir, 'data'), size: [32, 32], synthetic: { train: 16, val: 4, image_size: 40 } },
        training: { epochs: 1, batch_size: 4, workers: 1, print_interval: 2, time_limit: 0, val_interval: 1 },
        checkpoint: { ckpt_root: path.join(dir, 'checkpoints') },
        results: { root: path.join(dir, 'results'), gallery_size: 2 },
      });
      const r = await run('train', ['--config', config]);
      assertOk(r);
      assert.ok(fs.existsSync(path.join(ck, 'complete.json')), show(r));
      const e = await run('evaluate', ['--config', config, '--output', path.join(dir, 'eval')]);
      assertOk(e);
      const metrics = JSON.parse(fs.readFileSync(path.join(dir, 'eval', 'metrics.json'), 'utf8'));
      assert.ok(Number.isFinite(metrics.metrics?.mIoU), JSON.stringify(metrics).slice(0, 200));
    });

    test('predict writes masks; the stock-tfjs export gives the same masks', { timeout: TIMEOUT }, async () => {
      const input = path.join(dir, 'input');
      const sizes: Record<string, [number, number]> = { a: [45, 31], b: [32, 32] };
      for (const [stem, [w, h]] of Object.entries(sizes)) await writeRaw(path.join(input, `${stem}.png`), imageForMask(bandMask(w, h, [0, 1, 0]), 3), w, h, 3);
      const out = path.join(dir, 'pred');
      assertOk(await run('predict', ['--config', config, '--checkpoint', ck, '--input', input, '--output', out]));
      const exp = path.join(dir, 'export');
      assertOk(await run('export', ['--config', config, '--checkpoint', ck, '--output', exp]));
      const stock = await tf.loadLayersModel(fileLoadHandler(path.join(exp, 'model.json')));
      for (const l of stock.layers) assert.ok(!isProjectLayer(l.getClassName()), `${l.getClassName()} in the export`);
      const cfg = loadConfig(config);
      for (const [stem, [w, h]] of Object.entries(sizes)) {
        const { data } = await sharp(path.join(out, `${stem}.png`)).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
        const mask = await predictMask(stock, cfg, path.join(input, `${stem}.png`), { threshold: cfg.training.threshold, postprocess: false });
        assert.equal(mask.classes.length, w * h);
        let differ = 0;
        for (let i = 0; i < data.length; i++) if ((data[i] === 255 ? 1 : 0) !== mask.classes[i]) differ++;
        // Float differences between the two graphs can flip a pixel at the threshold, no more.
        assert.ok(differ <= Math.ceil(0.002 * w * h), `${stem}: ${differ} of ${w * h} pixels differ`);
      }
      stock.dispose();
    });
  });
}
