// deploy/keras_bridge.py on inputs it did not make: masks read as the project's loaders read
// them (0/1 and 0/255 binary sets, multi-class with the ignore index), shard paths confined
// to the model's folder, from-keras never overwriting a folder, and every bad input one
// line `error: ...` naming the path, exit 1, no traceback. Needs python3 with
// tensorflow-cpu; all bridge calls of a test run in one Python process (TensorFlow imports
// in 5-10 s).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as tf from '../backends/tf';
import { modelFiles, readExportedWeights } from '../storage/model_files';
import { exportMetadata } from '../deploy/export_model';
import { parseConfig } from '../config/resolve';
import { decodePair } from '../pipeline/decode';
import { identityLut } from '../loaders/registry';
import { binaryThresholdLut } from '../loaders/isic';
import { writeRaw } from '../loaders/fixtures';
import { ROOT, tmpDir } from './helpers/cli';

const BRIDGE = [path.join(ROOT, 'deploy', 'keras_bridge.py'), path.join(ROOT, '..', 'deploy', 'keras_bridge.py')].find((f) => fs.existsSync(f))!;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

// Imports the bridge once and runs main() per argv, as `python3 keras_bridge.py ARGS` would,
// recording exit code and stderr; an exception escaping main is a traceback.
const DRIVER = `
import contextlib, importlib.util, io, json, sys, traceback
bridge, runs, results = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("keras_bridge", bridge)
kb = importlib.util.module_from_spec(spec); spec.loader.exec_module(kb)
res = []
for argv in json.load(open(runs)):
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        sys.argv = ["keras_bridge.py", *argv]
        try:
            kb.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) or e.code is None else 1
            if isinstance(e.code, str): print(e.code, file=sys.stderr)
        except BaseException:
            code = "traceback"; traceback.print_exc()
    res.append({"code": code or 0, "out": out.getvalue(), "err": err.getvalue()})
    json.dump(res, open(results, "w"))
`;

interface Result { code: number | string; out: string; err: string }

function bridgeRuns(dir: string, runs: string[][], timeout = 240_000): Result[] {
  fs.writeFileSync(path.join(dir, 'driver.py'), DRIVER);
  fs.writeFileSync(path.join(dir, 'runs.json'), JSON.stringify(runs));
  const resFile = path.join(dir, 'results.json');
  fs.rmSync(resFile, { force: true });
  const r = spawnSync('python3', ['driver.py', BRIDGE, 'runs.json', resFile], { cwd: dir, encoding: 'utf8', timeout });
  const got: Result[] = fs.existsSync(resFile) ? JSON.parse(fs.readFileSync(resFile, 'utf8')) : [];
  assert.equal(got.length, runs.length, `bridge stopped after ${got.length} of ${runs.length} runs (${r.error ? 'timed out: a read that never ends?' : `exit ${r.status}`}) at ${JSON.stringify(runs[got.length])}:\n${(r.stderr ?? '').split('\n').slice(-6).join('\n')}`);
  return got;
}

function ok(r: Result, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.err.split('\n').slice(-4).join('\n')}`);
}

function oneLineError(r: Result, what: string, ...patterns: RegExp[]): void {
  assert.equal(r.code, 1, `${what}: exit ${r.code}\n${r.err}`);
  const lines = r.err.trim().split('\n');
  assert.equal(lines.length, 1, `${what}: one line, got:\n${r.err}`);
  assert.match(lines[0], /^error: /, what);
  for (const p of patterns) assert.match(lines[0], p, what);
}

function readNpyInt32(file: string): Int32Array {
  const buf = fs.readFileSync(file);
  const len = buf.readUInt16LE(8);
  assert.match(buf.toString('latin1', 10, 10 + len), /'descr': '<i4'/);
  const body = buf.subarray(10 + len);
  return new Int32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
}

/**
 * An export of a 1x1 convolution with zero kernel and bias `bias` (so its logits are `bias`
 * at every pixel, whatever the image) at input size [h, w], with the project's metadata.
 */
async function tinyExport(dir: string, cfgRaw: Record<string, any>, bias: number[]): Promise<string> {
  const cfg = parseConfig(cfgRaw);
  const [h, w] = cfg.data.size;
  const input = tf.input({ shape: [h, w, 3], name: 'image' });
  const conv = tf.layers.conv2d({ filters: bias.length, kernelSize: 1, name: 'head', kernelInitializer: 'zeros', biasInitializer: tf.initializers.constant({ value: 0 }) });
  const model = tf.model({ inputs: input, outputs: conv.apply(input) as tf.SymbolicTensor });
  conv.setWeights([tf.zeros([1, 1, 3, bias.length]), tf.tensor1d(bias)]);
  let artifacts!: tf.io.ModelArtifacts;
  await model.save(tf.io.withSaveHandler(async (a) => ((artifacts = a), { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } })));
  model.dispose();
  fs.mkdirSync(dir, { recursive: true });
  for (const f of modelFiles(artifacts, exportMetadata(cfg, 'test', null, null) as unknown as Record<string, unknown>)) fs.writeFileSync(path.join(dir, f.name), f.data);
  return path.join(dir, 'model.json');
}

/** Images (any content: the model ignores it) and masks of `size` named by stem. */
async function pairsOnDisk(dir: string, masks: Uint8Array[], size: [number, number]): Promise<{ images: string; masks: string; files: { image: string; mask: string }[] }> {
  const [h, w] = size;
  const files = [];
  for (const [k, m] of masks.entries()) {
    const image = path.join(dir, 'img', `s${k}.png`);
    const mask = path.join(dir, 'lab', `s${k}.png`);
    await writeRaw(image, Uint8Array.from({ length: h * w * 3 }, (_, i) => (i * 13 + k * 50) % 256), w, h, 3);
    await writeRaw(mask, m, w, h, 1);
    files.push({ image, mask });
  }
  return { images: path.join(dir, 'img'), masks: path.join(dir, 'lab'), files };
}

const softplus = (x: number) => Math.log1p(Math.exp(x));
const lossOf = (r: Result) => JSON.parse(r.out.split('\n').find((l) => l.startsWith('{"steps"'))!).loss[0] as number;

test('bridge train reads 0/1, 0/255 and multi-class masks with the ignore index as the loaders do', { timeout: 300_000 }, async () => {
  const dir = tmpDir('kb-masks');
  dirs.push(dir);
  const [H, W] = [12, 16]; // masks at twice the input size: the nearest-neighbour resize is compared too
  const size: [number, number] = [6, 8];
  // Binary, 0/1 (what the folder loader takes): a quarter background, the rest foreground.
  const ones = [0, 1].map((k) => Uint8Array.from({ length: H * W }, (_, i) => (Math.floor(i / W) < H / 4 + k ? 0 : 1)));
  const bin = await pairsOnDisk(path.join(dir, 'b01'), ones, [H, W]);
  // Binary 0/255 (ISIC), same shapes.
  const isic = await pairsOnDisk(path.join(dir, 'b255'), ones.map((m) => m.map((v) => v * 255)), [H, W]);
  // Three classes with 255 (the ignore index) on a band of pixels.
  const multi = [0, 1].map((k) => Uint8Array.from({ length: H * W }, (_, i) => (i % W < 3 ? 255 : (Math.floor(i / W) + k) % 3)));
  const mc = await pairsOnDisk(path.join(dir, 'mc'), multi, [H, W]);

  const binJson = await tinyExport(path.join(dir, 'exp-bin'), { data: { name: 'folder', size, num_classes: 2 } }, [3]);
  const mcJson = await tinyExport(path.join(dir, 'exp-mc'), { data: { name: 'folder', size, num_classes: 3 } }, [2, 0, 0]);
  const train = (keras: string, d: { images: string; masks: string }, out: string) => ['train', keras, d.images, d.masks, out, '--steps', '1', '--batch', '2', '--lr', '0', '--loss', 'ce']; // cross-entropy alone: the loss checked below
  const rs = bridgeRuns(dir, [
    ['to-keras', binJson, 'bin.keras'],
    ['to-keras', mcJson, 'mc.keras'],
    train('bin.keras', bin, 'bin-t.keras'),
    train('bin.keras', isic, 'isic-t.keras'),
    train('mc.keras', mc, 'mc-t.keras'),
    ['targets', 'bin.keras.meta.json', 'y01.npy', ...bin.files.map((f) => f.mask)],
    ['targets', 'bin.keras.meta.json', 'y255.npy', ...isic.files.map((f) => f.mask)],
    ['targets', 'mc.keras.meta.json', 'ymc.npy', ...mc.files.map((f) => f.mask)],
    ['from-keras', 'mc-t.keras', mcJson, 'mc-back'], // what train saved loads again
  ]);
  rs.forEach((r, i) => ok(r, `run ${i}`));

  // The targets are what decodePair gives with the folder loader's table (0/1, and 3
  // classes with 255 ignored) and the isic loader's (0/255).
  const cfg2 = parseConfig({ data: { name: 'folder', size, num_classes: 2 } });
  const cfg3 = parseConfig({ data: { name: 'folder', size, num_classes: 3 } });
  const cases: [string, { image: string; mask: string }[], Int16Array, number][] = [
    ['y01.npy', bin.files, identityLut(cfg2), 2],
    ['y255.npy', isic.files, binaryThresholdLut(), 2],
    ['ymc.npy', mc.files, identityLut(cfg3), 3],
  ];
  for (const [npy, files, lut, numClasses] of cases) {
    const got = readNpyInt32(path.join(dir, npy));
    const want: number[] = [];
    for (const f of files) want.push(...(await decodePair({ id: f.image, ...f }, { lut, numClasses, ignoreIndex: 255 }, size)).mask.data);
    assert.deepEqual([...got], want, `${npy}: the bridge's targets differ from the loader's`);
  }

  // With lr 0 the one step's loss is the initial loss: logits are the bias everywhere.
  // 0/1 and 0/255 masks both train on their foreground (all-background would be softplus(3) = 3.05).
  const yb = readNpyInt32(path.join(dir, 'y01.npy'));
  const fg = yb.filter((v) => v === 1).length / yb.length;
  const wantBin = fg * softplus(-3) + (1 - fg) * softplus(3);
  assert.ok(Math.abs(lossOf(rs[2]) - wantBin) < 1e-4, `0/1 masks: loss ${lossOf(rs[2])}, want ${wantBin}`);
  assert.ok(Math.abs(lossOf(rs[3]) - wantBin) < 1e-4, `0/255 masks: loss ${lossOf(rs[3])}, want ${wantBin}`);
  // Multi-class: cross-entropy over the pixels that are not 255 only.
  const ym = readNpyInt32(path.join(dir, 'ymc.npy'));
  const z = Math.log(Math.exp(2) + 2);
  const valid = [...ym].filter((v) => v !== 255);
  assert.ok(valid.length < ym.length && valid.length > 0);
  const wantMc = valid.reduce((s, v) => s + (v === 0 ? z - 2 : z), 0) / valid.length;
  assert.ok(Math.abs(lossOf(rs[4]) - wantMc) < 1e-4, `multi-class with 255: loss ${lossOf(rs[4])}, want ${wantMc} (ignored pixels counted?)`);
});

test('bridge: bad inputs are one line naming the path; shards stay in the folder; from-keras overwrites nothing', { timeout: 300_000 }, async () => {
  const dir = tmpDir('kb-bad');
  dirs.push(dir);
  const size: [number, number] = [4, 4];
  const exp = path.join(dir, 'export');
  const json = await tinyExport(exp, { data: { name: 'folder', size, num_classes: 2 } }, [1]);
  fs.writeFileSync(path.join(exp, 'notes.txt'), 'mine');
  const listing = () => Object.fromEntries(fs.readdirSync(exp).map((n) => [n, crypto.createHash('sha256').update(fs.readFileSync(path.join(exp, n))).digest('hex')]));
  const before = listing();
  // Hostile copies of the export: a shard out of the folder (relative, absolute, symlinked), /dev/zero.
  const model = JSON.parse(fs.readFileSync(json, 'utf8'));
  const hostile = (name: string, shard: string, link?: string) => {
    const d = path.join(dir, name);
    fs.mkdirSync(d);
    if (link) fs.symlinkSync(link, path.join(d, shard));
    fs.writeFileSync(path.join(d, 'model.json'), JSON.stringify({ ...model, weightsManifest: [{ ...model.weightsManifest[0], paths: [shard] }] }));
    return path.join(d, 'model.json');
  };
  const secret = path.join(dir, 'secret.bin');
  fs.copyFileSync(path.join(exp, 'group1-shard1of1.bin'), secret);
  fs.mkdirSync(path.join(dir, 'empty'));
  fs.mkdirSync(path.join(dir, 'back.old'));
  fs.writeFileSync(path.join(dir, 'back.old', 'keep'), 'x');
  const rs = bridgeRuns(dir, [
    ['to-keras', path.join(dir, 'missing.json'), 'm.keras'], // 0
    ['to-keras', exp, 'm.keras'], // 1: a folder
    ['to-keras', hostile('up', '../secret.bin'), 'm.keras'], // 2
    ['to-keras', hostile('abs', secret), 'm.keras'], // 3
    ['to-keras', hostile('link', 'w.bin', secret), 'm.keras'], // 4
    ['to-keras', hostile('zero', 'w.bin', '/dev/zero'), 'm.keras'], // 5: would read forever
    ['to-keras', json, 'm.keras'], // 6
    ['train', 'missing.keras', dir, dir, 't.keras'], // 7
    ['from-keras', 'm.keras', json, exp], // 8: into the export's own folder
    ['from-keras', 'm.keras', json, 'back'], // 9
    ['from-keras', 'm.keras', json, 'empty'], // 10: an empty folder is fine
    ['from-keras', 'missing.keras', json, 'back2'], // 11
    ['predict', exp, 'x.npy', 'y.npy'], // 12: a folder as the Keras model
  ]);
  // The .meta.json that train reads, missing: run after it was removed.
  fs.renameSync(path.join(dir, 'm.keras.meta.json'), path.join(dir, 'moved.json'));
  const [noMeta] = bridgeRuns(dir, [['train', 'm.keras', dir, dir, 't.keras']]);

  oneLineError(rs[0], 'missing model.json', /missing\.json: not found/);
  oneLineError(rs[1], 'a folder as model.json', /export: is a folder/);
  oneLineError(rs[2], '.. shard', /up\/model\.json: weight shard "\.\.\/secret\.bin" climbs out/);
  oneLineError(rs[3], 'absolute shard', /abs\/model\.json: weight shard ".*secret\.bin" is an absolute path/);
  oneLineError(rs[4], 'symlinked shard', /link\/model\.json: weight shard "w\.bin" resolves to .*secret\.bin, outside/);
  oneLineError(rs[5], '/dev/zero shard', /zero\/model\.json: weight shard "w\.bin" resolves to \/dev\/zero, outside|not a regular file/);
  ok(rs[6], 'to-keras of the export');
  oneLineError(rs[7], 'missing .keras', /missing\.keras(\.meta\.json)?: not found/);
  oneLineError(rs[8], 'from-keras into the export', new RegExp(`${exp.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not empty`));
  assert.deepEqual(listing(), before, 'the export folder is untouched');
  ok(rs[9], 'from-keras into a new folder');
  ok(rs[10], 'from-keras into an empty folder');
  oneLineError(rs[11], 'missing .keras for from-keras', /missing\.keras: not found/);
  oneLineError(rs[12], 'a folder as the Keras model', /export: is a folder/);
  oneLineError(noMeta, 'missing .meta.json', /m\.keras\.meta\.json: not found/);
  // The new folder is whole: complete.json lists every file with its size and sha256, and
  // the project loads it; nothing beside it (back.old) was touched, no temporary left.
  for (const out of ['back', 'empty']) {
    const marker = JSON.parse(fs.readFileSync(path.join(dir, out, 'complete.json'), 'utf8'));
    assert.deepEqual(Object.keys(marker.files).sort(), fs.readdirSync(path.join(dir, out)).filter((n) => n !== 'complete.json').sort());
    for (const [n, rec] of Object.entries<{ bytes: number; sha256: string }>(marker.files)) {
      const b = fs.readFileSync(path.join(dir, out, n));
      assert.deepEqual([b.length, crypto.createHash('sha256').update(b).digest('hex')], [rec.bytes, rec.sha256], n);
    }
    assert.equal((await readExportedWeights(path.join(dir, out, 'model.json'))).length, 2);
  }
  assert.equal(fs.readFileSync(path.join(dir, 'back.old', 'keep'), 'utf8'), 'x');
  assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('.tmp-')), []);
});

test('--help answers without importing TensorFlow; every sub-command option has help text and its default', () => {
  // A `tensorflow` that fails on import, first on the path: --help must not reach it.
  const fake = tmpDir('bridge-help');
  dirs.push(fake);
  for (const m of ['tensorflow', 'keras', 'numpy']) fs.writeFileSync(path.join(fake, `${m}.py`), `raise ImportError("${m} imported for --help")\n`);
  const env = { ...process.env, PYTHONPATH: fake };
  const top = spawnSync('python3', [BRIDGE, '--help'], { encoding: 'utf8', env });
  assert.equal(top.status, 0, top.stderr);
  for (const c of ['to-keras', 'train', 'from-keras']) assert.match(top.stdout, new RegExp(`^\\s+${c}\\s+\\S`, 'm'), `${c} has a summary`);
  const train = spawnSync('python3', [BRIDGE, 'train', '--help'], { encoding: 'utf8', env });
  assert.equal(train.status, 0, train.stderr);
  const flat = train.stdout.replace(/\s+/g, ' ');
  for (const [opt, dflt] of [['--steps', '20'], ['--batch', '8'], ['--lr', '0.001'], ['--masks', 'auto']]) assert.match(flat, new RegExp(`${opt} \\S+ [^-]*\\(default: ${dflt.replace('.', '\\.')}\\)`), opt);
  const bad = spawnSync('python3', [BRIDGE, 'trian'], { encoding: 'utf8', env });
  assert.equal(bad.status, 2, bad.stderr); // argparse's usage error, before any import
});
