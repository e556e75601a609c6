// evaluate, predict, export and --resume take the network's definition (model section,
// input size and normalisation) from the checkpoint, not from the config: a U-Net trained
// with up_mode bilinear scored as nearest gave other metrics without a word.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { evaluate, exportModel, predict, train } from '../api';
import { UserError } from '../utils/errors';
import { tinyConfig, tmpDir } from './helpers/cli';

const dir = tmpDir('ckopts');
const trained = tinyConfig(dir, { model: { name: 'unet', base: 4, depth: 2, up_mode: 'bilinear' }, data: { normalize: 'image' }, training: { epochs: 1, iterations: 2, batch_size: 4, workers: 1 } });
// The same run named by a config that says otherwise, as a user who forgot what they trained.
const wrong = { ...trained, model: { ...trained.model, up_mode: 'nearest' }, data: { ...trained.data, normalize: 'dataset', size: [24, 24] } };
const ckpt = path.join(dir, 'checkpoints', 'tiny', 'last');

test.before(async () => {
  await train(trained, { quiet: true });
});
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('evaluate with a config that differs uses the checkpoint\'s model and says so in one line', async () => {
  const right = await evaluate(trained, { checkpoint: ckpt, quiet: true, output: path.join(dir, 'e1') });
  const lines: string[] = [];
  const warn = console.warn;
  console.warn = (l: string) => lines.push(l);
  let got;
  try {
    got = await evaluate(wrong, { checkpoint: ckpt, output: path.join(dir, 'e2') });
  } finally {
    console.warn = warn;
  }
  assert.deepEqual(got.metrics, right.metrics);
  const line = lines.find((l) => /was trained with/.test(l));
  assert.ok(line, lines.join('\n'));
  assert.match(line!, /model\.up_mode bilinear \(config: nearest\)/);
  assert.match(line!, /data\.size \[32, 32\] \(config: \[24, 24\]\)/);
  assert.match(line!, /data\.normalize image \(config: dataset\)/);
});

test('predict with a config that differs gives the masks of the right config', async () => {
  const input = path.join(dir, 'inputs');
  fs.mkdirSync(input, { recursive: true });
  const sharp = (await import('sharp')).default;
  for (let i = 0; i < 3; i++) {
    const [w, h] = [37 + i, 29];
    const px = Buffer.from(Array.from({ length: w * h * 3 }, (_, k) => (k * (7 + i) + (k % 97) * 13) % 256)); // textured: up_mode shows
    await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(path.join(input, `p${i}.png`));
  }
  const files = (await predict(trained, { checkpoint: ckpt, input, quiet: true })).slice(0, 3);
  const other = (await predict(wrong, { checkpoint: ckpt, input, quiet: true })).slice(0, 3);
  assert.ok(files.length > 0);
  for (let i = 0; i < files.length; i++) assert.deepEqual(other[i].classes, files[i].classes, files[i].file);
});

test('export with a config that differs records the checkpoint\'s network; an export without its model section is checked layer by layer', async () => {
  const out = path.join(dir, 'export');
  await exportModel(wrong, { checkpoint: ckpt, output: out, quiet: true });
  const json = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
  const md = json.userDefinedMetadata;
  assert.deepEqual(md.input.size, [32, 32]);
  assert.equal(md.input.normalize, 'image');
  assert.equal(md.model_config.up_mode, 'bilinear');
  const dec = json.modelTopology.config.layers.find((l: { name: string }) => l.name === 'dec1_up');
  assert.equal(dec.config.interpolation, 'bilinear');
  // The export records its model section: evaluating it with another config builds the export's network.
  const viaExport = await evaluate(wrong, { checkpoint: path.join(out, 'model.json'), quiet: true, output: path.join(dir, 'e3') });
  const right = await evaluate(trained, { checkpoint: ckpt, quiet: true, output: path.join(dir, 'e4') });
  for (const k of Object.keys(right.metrics)) assert.ok(Math.abs(viaExport.metrics[k] - right.metrics[k]) < 1e-4, `${k}: ${viaExport.metrics[k]} vs ${right.metrics[k]}`);
  // An export from elsewhere (no model section, no complete.json): its network must be the one the config builds.
  const bare = path.join(dir, 'export-bare');
  fs.mkdirSync(bare);
  for (const f of fs.readdirSync(out)) if (f !== 'complete.json' && f !== 'model.json') fs.copyFileSync(path.join(out, f), path.join(bare, f));
  delete md.model_config;
  fs.writeFileSync(path.join(bare, 'model.json'), JSON.stringify(json));
  await assert.rejects(evaluate(wrong, { checkpoint: path.join(bare, 'model.json'), quiet: true, output: path.join(dir, 'e5') }), (e: Error) =>
    e instanceof UserError && /model\.json: the config's model options build another network than this export \(layer dec\d_up has interpolation bilinear there, nearest from the config\)/.test(e.message));
  const viaBare = await evaluate({ ...wrong, model: trained.model }, { checkpoint: path.join(bare, 'model.json'), quiet: true, output: path.join(dir, 'e6') });
  for (const k of Object.keys(right.metrics)) assert.ok(Math.abs(viaBare.metrics[k] - right.metrics[k]) < 1e-4, `${k}: ${viaBare.metrics[k]} vs ${right.metrics[k]}`);
});

test('--resume with another model option is refused, naming each key with both values', async () => {
  await assert.rejects(train({ ...wrong, training: { ...trained.training, iterations: 4 } }, { resume: true, quiet: true }), (e: Error) => {
    assert.ok(e instanceof UserError, `${e.name}: ${e.message}`);
    assert.equal(e.message.split('\n').length, 1);
    assert.match(e.message, /^resume: .*last was trained with model\.up_mode bilinear \(config: nearest\), data\.size \[32, 32\] \(config: \[24, 24\]\), data\.normalize image \(config: dataset\); /);
    return true;
  });
});
