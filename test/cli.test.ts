// End-to-end tests of the command lines (train, evaluate, predict) run as a user would:
// child processes, YAML configs in a temp dir, and what they print and write.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import sharp from 'sharp';
import yaml from 'js-yaml';
import { bandMask, imageForMask, writeCityscapes, writeRaw } from '../loaders/fixtures';
import { loadCheckpoint } from '../storage/checkpoint';
import { assertOk, assertOneLineError, killLeftovers, run, runNode, show, tinyConfig, tmpDir, writeConfig } from './helpers/cli';

const TIMEOUT = 120_000;
const dirs: string[] = [];
function scratch(prefix: string): string {
  const d = tmpDir(prefix);
  dirs.push(d);
  return d;
}
after(() => {
  killLeftovers();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Single-channel pixels and size of a PNG, read back with sharp. */
async function readGrey(file: string) {
  const { data, info } = await sharp(file).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  return { values: new Set(data), width: info.width, height: info.height, channels: (await sharp(file).metadata()).channels };
}

/** Writes an RGB image of w x h (JPEG or PNG by extension). */
async function writeImage(file: string, w: number, h: number, seed = 1): Promise<void> {
  await writeRaw(file, imageForMask(bandMask(w, h, [0, 1, 0]), seed), w, h, 3);
}

const FILES = ['weights.bin', 'weights.json', 'optimizer.bin', 'optimizer.json', 'state.json', 'config.yaml', 'complete.json'];

describe('--help', () => {
  for (const [cmd, extra] of [
    ['train', ['--resume', '--weights', '--print-config']],
    ['evaluate', ['--checkpoint', '--split', '--sweep-threshold']],
    ['predict', ['--checkpoint', '--input', '--output']],
    ['export', ['--checkpoint', '--output', '--web']],
  ] as const) {
    test(`${cmd} --help and -h list its options and exit 0`, { timeout: TIMEOUT }, async () => {
      for (const flag of ['--help', '-h']) {
        const r = await run(cmd, [flag]);
        assertOk(r);
        for (const opt of ['--config', '--set', '--backend', '--quiet', ...extra]) assert.match(r.stdout, new RegExp(`^\\s+(-\\w, )?${opt}\\b`, 'm'), `${opt} missing\n${show(r)}`);
        assert.equal(r.stderr, '');
      }
    });
  }
});

test('usage errors exit 2 (unknown option, missing --config, a bad choice); other failures 1', { timeout: TIMEOUT }, async () => {
  const dir = scratch('usage');
  for (const args of [['--config', 'x.yaml', '--epohcs', '3'], [], ['--config', 'x.yaml', '--backend', 'gpu']]) {
    const r = await run('train', args);
    assert.equal(r.code, 2, show(r));
    assertOneLineError(r);
  }
  const r = await run('evaluate', ['--config', path.join(dir, 'missing.yaml')]);
  assert.equal(r.code, 1, show(r));
});

test('the package\'s bins (bin/: train, evaluate, predict, export-model, and tfjs-semseg <command>) start the compiled commands', { timeout: TIMEOUT }, async (t) => {
  if (path.extname(__filename) === '.ts') return t.skip('the launchers load dist/, which only the compiled tests are sure to match');
  const pkg = path.resolve(__dirname, '..', '..');
  const bins = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')).bin as Record<string, string>;
  assert.deepEqual(Object.keys(bins).sort(), ['evaluate', 'export-model', 'predict', 'tfjs-semseg', 'train']);
  for (const cmd of ['train', 'evaluate', 'predict', 'export-model']) {
    const r = await runNode([path.join(pkg, bins[cmd]), '--help']);
    assertOk(r);
    assert.match(r.stdout, new RegExp(`^${cmd} --config FILE`, 'm'), show(r));
    const viaName = await runNode([path.join(pkg, bins['tfjs-semseg']), cmd, '-h']);
    assert.equal(viaName.stdout, r.stdout, show(viaName));
  }
  const list = await runNode([path.join(pkg, bins['tfjs-semseg']), '--help']);
  assertOk(list);
  assert.match(list.stdout, /^Usage: tfjs-semseg <command>/m);
  const unknown = await runNode([path.join(pkg, bins['tfjs-semseg']), 'trian']);
  assert.equal(unknown.code, 2, show(unknown));
  assert.match(unknown.stderr, /^error: unknown command 'trian' \(commands: train, evaluate, predict, export-model, web-train; see --help\)$/m);
  const page = await runNode([path.join(pkg, bins['tfjs-semseg']), 'web-train', '--help']);
  assertOk(page);
  assert.match(page.stdout, /^tfjs-semseg web-train --output DIR/m, show(page));
});

describe('bad configs and options: one line on stderr, no stack trace', () => {
  const dir = scratch('badcfg');
  const good = writeConfig(dir, tinyConfig(dir), 'good.yaml');
  const cfgWith = (name: string, over: Record<string, any>) => writeConfig(dir, tinyConfig(dir, over), name);

  test('misspelled key names it', { timeout: TIMEOUT }, async () => {
    const file = writeConfig(dir, { backend: 'wasm', training: { epohcs: 3 } }, 'typo.yaml');
    assertOneLineError(await run('train', ['--config', file]), /training\.epohcs/);
  });
  test('wrong type names key, value and expected type', { timeout: TIMEOUT }, async () => {
    const file = writeConfig(dir, { backend: 'wasm', training: { batch_size: 'four' } }, 'type.yaml');
    assertOneLineError(await run('train', ['--config', file]), /training\.batch_size/, /four/, /expected number/);
  });
  test('backend gpu (not a backend), on the command line or in the config', { timeout: TIMEOUT }, async () => {
    assertOneLineError(await run('train', ['--config', good, '--backend', 'gpu']), /backend/, /gpu/, /wasm/);
    assertOneLineError(await run('train', ['--config', cfgWith('gpu.yaml', { backend: 'gpu' })]), /backend/, /gpu/, /wasm/);
  });
  test('--backend tensorflow without tfjs-node tells how to install it', { timeout: TIMEOUT }, async (t) => {
    try {
      require.resolve('@tensorflow/tfjs-node');
      return t.skip('@tensorflow/tfjs-node is installed here');
    } catch {}
    assertOneLineError(await run('train', ['--config', good, '--backend', 'tensorflow']), /npm install @tensorflow\/tfjs-node\b/);
  });
  test('--set with a value of the wrong type', { timeout: TIMEOUT }, async () => {
    assertOneLineError(await run('train', ['--config', good, '--set', 'training.epochs=x']), /training\.epochs/, /"x"/);
  });
  test('--set without a value', { timeout: TIMEOUT }, async () => {
    assertOneLineError(await run('train', ['--config', good, '--set', 'training.epochs']), /training\.epochs/);
  });
  test('missing config file', { timeout: TIMEOUT }, async () => {
    const missing = path.join(dir, 'nope.yaml');
    for (const cmd of ['train', 'evaluate'] as const) assertOneLineError(await run(cmd, ['--config', missing]), /not found/, /nope\.yaml/);
  });
  test('misspelled command-line option', { timeout: TIMEOUT }, async () => {
    assertOneLineError(await run('train', ['--config', good, '--epohcs', '3']), /epohcs/);
  });
  test('unknown model lists the registered ones', { timeout: TIMEOUT }, async () => {
    assertOneLineError(await run('train', ['--config', cfgWith('model.yaml', { model: { name: 'segnett' } })]), /segnett/, /registered: .*\bunet\b/);
  });
  test('missing dataset root names the folder and what to download', { timeout: TIMEOUT }, async () => {
    const root = path.join(dir, 'no-isic-here');
    const line = assertOneLineError(await run('train', ['--config', cfgWith('isic.yaml', { data: { name: 'isic', root } })]), /ISIC 2018/i, /download/i);
    assert.ok(line.includes(root), line);
  });
});

describe('bad data: one line naming the file', () => {
  // A `folder` dataset of 3 classes (values 0-2) whose pairs are read for training.
  async function folderSet(name: string): Promise<{ dir: string; config: string; images: string; masks: string }> {
    const dir = scratch(`baddata-${name}`);
    const images = path.join(dir, 'ds', 'images');
    const masks = path.join(dir, 'ds', 'masks');
    for (let i = 0; i < 8; i++) {
      const mask = bandMask(20, 16, [0, 1, 2]);
      await writeRaw(path.join(images, `s${i}.png`), imageForMask(mask, i), 20, 16, 3);
      await writeRaw(path.join(masks, `s${i}.png`), mask, 20, 16, 1);
    }
    const config = writeConfig(
      dir,
      tinyConfig(dir, { data: { name: 'folder', root: path.join(dir, 'ds'), images_dir: 'images', masks_dir: 'masks', num_classes: 3 }, training: { loss: { name: 'ce' } } }),
    );
    return { dir, config, images, masks };
  }

  test('the fixture itself trains (so the failures below are the bad files)', { timeout: TIMEOUT }, async () => {
    const { config } = await folderSet('ok');
    assertOk(await run('train', ['--config', config]));
  });
  test('a mask value that is not a class', { timeout: TIMEOUT }, async () => {
    const { config, masks } = await folderSet('value');
    const bad = path.join(masks, 's3.png');
    await writeRaw(bad, bandMask(20, 16, [0, 7, 2]), 20, 16, 1);
    const line = assertOneLineError(await run('train', ['--config', config]), /mask value 7\b/, /class/);
    assert.ok(line.includes(bad), line);
  });
  test('an image without its mask', { timeout: TIMEOUT }, async () => {
    const { config, masks } = await folderSet('nomask');
    fs.rmSync(path.join(masks, 's5.png'));
    assertOneLineError(await run('train', ['--config', config]), /s5\.png/, /without a mask/);
  });
  test('a truncated image', { timeout: TIMEOUT }, async () => {
    const { config, images } = await folderSet('trunc');
    const bad = path.join(images, 's2.png');
    const buf = fs.readFileSync(bad);
    fs.writeFileSync(bad, buf.subarray(0, Math.floor(buf.length / 2)));
    const line = assertOneLineError(await run('train', ['--config', config]), /truncated or corrupt/);
    assert.ok(line.includes(bad), line);
  });
});

describe('full cycle on a tiny synthetic dataset', () => {
  const dir = scratch('cycle');
  const config = writeConfig(dir, tinyConfig(dir, { training: { epochs: 2 } }));
  const ck = path.join(dir, 'checkpoints', 'tiny');
  const res = path.join(dir, 'results', 'tiny');

  test('train prints backend (stderr), resolved config (--print-config) and where outputs went, and writes them', { timeout: TIMEOUT }, async () => {
    const r = await run('train', ['--config', config, '--print-config']);
    assertOk(r);
    assert.match(r.stderr, /^backend: wasm\b/m);
    assert.doesNotMatch(r.stdout, /^backend:/m, 'diagnostics stay off stdout');
    assert.match(r.stdout, /^config .* \(resolved\):\n(.*\n)*\s+name: tiny\n/);
    assert.match(r.stdout, /^\s+base: 4$/m);
    assert.ok(r.stdout.includes(`checkpoints: ${path.join(ck, 'last')} (latest), ${path.join(ck, 'best')} (best val.mIoU = `), show(r));
    assert.ok(r.stdout.includes(`report: ${path.join(res, 'report.html')}`), show(r));

    for (const which of ['last', 'best']) for (const f of FILES) assert.ok(fs.existsSync(path.join(ck, which, f)), `${which}/${f} missing`);
    const last = await loadCheckpoint(path.join(ck, 'last'));
    assert.deepEqual([last.meta.epoch, last.meta.step], [2, 8]); // 16 images / batch 4 = 4 steps per epoch

    for (const f of ['report.html', 'metrics.json', 'history.jsonl']) assert.ok(fs.statSync(path.join(res, f)).size > 0, `${f} missing or empty`);
    assert.ok(fs.readdirSync(path.join(res, 'overlays')).some((f) => f.endsWith('.png')), 'no overlays');
    const rows = fs.readFileSync(path.join(res, 'history.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(rows.filter((h) => h.split === 'val').map((h) => h.epoch), [1, 2]);

    // The bar's loss is the figure history.jsonl records (the mean since the previous row), here at each epoch's end.
    const bars = [...r.stderr.matchAll(/^epoch (\d+)\/2 .* 4\/4 \| loss ([\d.]+) /gm)];
    assert.equal(bars.length >= 2, true, show(r));
    for (const [, epoch, loss] of bars) {
      const row = rows.find((h) => h.split === 'train' && h.step === 4 * Number(epoch));
      assert.equal(loss, row.loss.toFixed(4), `epoch ${epoch}`);
    }

    for (const saved of [path.join(ck, 'config.yaml'), path.join(res, 'config.yaml')]) {
      const c = yaml.load(fs.readFileSync(saved, 'utf8')) as any;
      assert.deepEqual([c.name, c.model.base, c.training.epochs, c.backend], ['tiny', 4, 2, 'wasm'], saved);
    }
  });

  test('--quiet: results on stdout, nothing on stderr', { timeout: TIMEOUT }, async () => {
    const r = await run('evaluate', ['--config', config, '--quiet', '--output', path.join(dir, 'quiet-eval')]);
    assertOk(r);
    assert.equal(r.stderr, '', show(r));
    assert.match(r.stdout, /^metrics: .*metrics\.json$/m);
    assert.doesNotMatch(r.stdout, /^class\s+IoU/m, 'the table is progress here, not a result');
  });

  test('evaluate writes metrics.json in [0, 1] and prints the table', { timeout: TIMEOUT }, async () => {
    const r = await run('evaluate', ['--config', config]);
    assertOk(r);
    assert.match(r.stderr, /^backend: wasm\b/m);
    assert.ok(r.stderr.includes(`evaluating ${path.join(ck, 'best')} on 8 val pairs`), show(r));
    assert.match(r.stdout, /^class\s+IoU\s+Dice/m);
    assert.match(r.stdout, /^mIoU\s+[\d.]+\s+mDice\s+[\d.]+/m);
    const m = JSON.parse(fs.readFileSync(path.join(res, 'eval-val', 'metrics.json'), 'utf8'));
    for (const k of ['mIoU', 'mDice', 'iou', 'dice']) {
      assert.equal(typeof m.metrics[k], 'number', k);
      assert.ok(m.metrics[k] >= 0 && m.metrics[k] <= 1, `${k} = ${m.metrics[k]}`);
    }
    assert.equal(m.per_class.length, 2);
  });

  test('evaluate --sweep-threshold prints the best threshold', { timeout: TIMEOUT }, async () => {
    const out = path.join(dir, 'sweep');
    const r = await run('evaluate', ['--config', config, '--sweep-threshold', '--checkpoint', path.join(ck, 'last'), '--output', out]);
    assertOk(r);
    const m = /^best threshold (0\.\d\d): dice ([\d.]+), iou ([\d.]+)$/m.exec(r.stdout);
    assert.ok(m, show(r));
    for (const v of m.slice(1).map(Number)) assert.ok(v >= 0 && v <= 1, m[0]);
    assert.ok(fs.existsSync(path.join(out, 'metrics.json')));
  });

  test('predict writes 0/255 masks at each input size, and overlays', { timeout: TIMEOUT }, async () => {
    const input = path.join(dir, 'input');
    const sizes: Record<string, [number, number]> = { a: [50, 37], b: [23, 41] }; // not data.size, not square
    await writeImage(path.join(input, 'a.jpg'), ...sizes.a);
    await writeImage(path.join(input, 'b.png'), ...sizes.b, 2);
    fs.writeFileSync(path.join(input, 'notes.txt'), 'not an image');
    const out = path.join(dir, 'pred');
    const r = await run('predict', ['--config', config, '--checkpoint', path.join(ck, 'best'), '--input', input, '--output', out]);
    assertOk(r);
    assert.deepEqual(fs.readdirSync(out).sort(), ['a.png', 'a_overlay.png', 'b.png', 'b_overlay.png']);
    for (const [stem, [w, h]] of Object.entries(sizes)) {
      const mask = await readGrey(path.join(out, `${stem}.png`));
      assert.deepEqual([mask.width, mask.height], [w, h], stem);
      assert.ok([...mask.values].every((v) => v === 0 || v === 255), `${stem}: values ${[...mask.values]}`);
      const ov = await sharp(path.join(out, `${stem}_overlay.png`)).metadata();
      assert.deepEqual([ov.width, ov.height], [w, h]);
    }
  });

  // engine/predictor.ts encodes the 1-channel raw buffer without toColourspace('b-w'),
  // so sharp writes an RGB PNG; tools that read submissions expect one channel.
  test('predict masks are single-channel PNGs', { timeout: TIMEOUT }, async () => {
    for (const stem of ['a', 'b']) assert.equal((await readGrey(path.join(dir, 'pred', `${stem}.png`))).channels, 1, stem);
  });

  test('predict on a missing input is one line', { timeout: TIMEOUT }, async () => {
    const missing = path.join(dir, 'no-such-input');
    assertOneLineError(await run('predict', ['--config', config, '--input', missing, '--output', path.join(dir, 'x')]), /no-such-input/);
  });
});

describe('multi-class prediction', () => {
  test('synthetic multiclass: class ids 0-3 plus _color.png', { timeout: TIMEOUT }, async () => {
    const dir = scratch('multi');
    const config = writeConfig(dir, tinyConfig(dir, { name: 'multi', data: { num_classes: 4, synthetic: { kind: 'multiclass', train: 16, val: 8, image_size: 40 } } }));
    assertOk(await run('train', ['--config', config]));
    const input = path.join(dir, 'in.png');
    await writeImage(input, 45, 30);
    const out = path.join(dir, 'pred');
    const r = await run('predict', ['--config', config, '--input', input, '--output', out]); // default checkpoint: best
    assertOk(r);
    assert.deepEqual(fs.readdirSync(out).sort(), ['in.png', 'in_color.png', 'in_overlay.png']);
    const mask = await readGrey(path.join(out, 'in.png'));
    assert.deepEqual([mask.width, mask.height], [45, 30]);
    assert.ok([...mask.values].every((v) => v < 4), `values ${[...mask.values]}`);
    const color = await sharp(path.join(out, 'in_color.png')).metadata();
    assert.deepEqual([color.width, color.height], [45, 30]);
    assert.ok((color.channels ?? 0) >= 3);
  });

  test('cityscapes: masks hold official label ids', { timeout: TIMEOUT }, async () => {
    const dir = scratch('cityscapes');
    const root = path.join(dir, 'cityscapes');
    const labelIds = [7, 26, 11, 24]; // road, car, building, person
    await writeCityscapes(root, 'train', 'aachen', Array.from({ length: 8 }, (_, i) => `aachen_${i}`), labelIds, 32, 16);
    await writeCityscapes(root, 'val', 'lindau', ['lindau_0', 'lindau_1'], labelIds, 32, 16);
    const config = writeConfig(dir, tinyConfig(dir, { name: 'cs', data: { name: 'cityscapes', root, num_classes: 19, size: [16, 32] }, training: { loss: { name: 'ce' } } }));
    assertOk(await run('train', ['--config', config]));
    const input = path.join(dir, 'in');
    await writeImage(path.join(input, 'street.png'), 50, 37);
    const out = path.join(dir, 'pred');
    assertOk(await run('predict', ['--config', config, '--checkpoint', path.join(dir, 'checkpoints', 'cs', 'last'), '--input', input, '--output', out]));
    assert.deepEqual(fs.readdirSync(out).sort(), ['street.png', 'street_color.png', 'street_overlay.png']);
    const mask = await readGrey(path.join(out, 'street.png'));
    assert.deepEqual([mask.width, mask.height], [50, 37]);
    // The 19 train ids' label ids (cityscapesScripts labels.py).
    const official = new Set([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]);
    assert.ok([...mask.values].every((v) => official.has(v)), `values ${[...mask.values]}`);
  });
});

describe('backend auto and Dawn', () => {
  // Dawn prints warnings on the native stderr while it enumerates Vulkan devices (lavapipe:
  // "maxDynamic...Buffers... artificially reduced"); the adapter is probed in a child
  // process whose stderr stays out of the command's. Auto never picks a software adapter.
  test('a command that probes the adapter prints none of Dawn\'s warnings, and auto skips a software adapter', { timeout: TIMEOUT }, async () => {
    const dir = scratch('dawn');
    const config = writeConfig(dir, tinyConfig(dir, { name: 'auto', backend: 'auto', training: { epochs: 1, iterations: 1 } }));
    const r = await run('train', ['--config', config]);
    assertOk(r);
    assert.doesNotMatch(r.stderr + r.stdout, /artificially reduced|^Warning: /m, show(r));
    const line = /^backend: (.*)$/m.exec(r.stderr)?.[1] ?? '';
    assert.match(line, /^(tensorflow|webgpu|wasm) /, show(r));
    // What Dawn finds here, asked the command's way (a child: Dawn here would keep this process alive).
    const { adapterInChild, isSoftwareAdapter } = await import('../backends/webgpu');
    let dawn: string | null = null;
    try {
      dawn = require.resolve('webgpu');
    } catch {
      // not installed: nothing probed
    }
    const found = dawn ? await adapterInChild(dawn) : null;
    if (found && 'info' in found && found.info && isSoftwareAdapter(found.info)) {
      // lavapipe (or SwiftShader) only, as on this project's CPU machines: wasm, saying why.
      assert.match(line, /^wasm .*skipped webgpu: only a software adapter \(/, show(r));
    }
  });
});

describe('--resume and --weights', () => {
  const dir = scratch('resume');
  const config = writeConfig(dir, tinyConfig(dir, { name: 'res' }));
  const last = path.join(dir, 'checkpoints', 'res', 'last');

  test('--resume without a checkpoint is one line', { timeout: TIMEOUT }, async () => {
    assertOneLineError(await run('train', ['--config', config, '--resume']), /--resume/, /no checkpoint/);
  });

  test('--resume continues from epoch 1 to epoch 2; its stdout holds only results, stderr the resume line', { timeout: TIMEOUT }, async () => {
    assertOk(await run('train', ['--config', config, '--set', 'training.epochs=1']));
    assert.equal((await loadCheckpoint(last)).meta.epoch, 1);
    const r = await run('train', ['--config', config, '--resume', '--set', 'training.epochs=2']);
    assertOk(r);
    assert.ok(r.stderr.includes(`resumed from ${last}: epoch 1, step 4`), show(r));
    // Results only: the metric tables, where the checkpoints and the report are.
    const result = /^(class\s+IoU|\w+\s+[\d.]+\s+[\d.]+\s+[\d.]+$|-+$|mIoU |foreground IoU |per image \(|checkpoints: |report: )/;
    for (const line of r.stdout.split('\n').filter((l) => l.trim())) assert.match(line, result, `not a result on stdout\n${show(r)}`);
    assert.match(r.stdout, /^checkpoints: /m);
    for (const d of ['data: ', 'new best ', 'final evaluation of ', 'done in ']) assert.ok(r.stderr.includes(d), `${d} on stderr\n${show(r)}`);
    assert.doesNotMatch(r.stderr, /^epoch 1\/2/m); // no epoch is trained again
    assert.match(r.stderr, /^epoch 2\/2 /m);
    const ck = await loadCheckpoint(last);
    assert.deepEqual([ck.meta.epoch, ck.meta.step], [2, 8]);
  });

  test('--weights of another model width names the first mismatched weight and both shapes', { timeout: TIMEOUT }, async () => {
    const wide = writeConfig(dir, tinyConfig(dir, { name: 'wide', model: { base: 8 } }), 'wide.yaml');
    const line = assertOneLineError(await run('train', ['--config', wide, '--weights', last]), /weight '[^']+'/, /\[3,3,3,4\]/, /\[3,3,3,8\]/);
    assert.ok(line.includes(last), line);
  });
});
