// Export and deploy: a tiny trained run is exported; the export is loaded through the
// public tfjs API and must predict what the project's own model predicts; quantised
// exports are smaller and close; bad input is one line; and the exported web app,
// served over HTTP, segments an image in headless Chromium as Node does.
import { resolveRun } from '../config/resolve';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import sharp from 'sharp';
import * as tf from '../backends/tf';
import { chromium } from 'playwright-core';
import { initBackend } from '../backends';
import { train } from '../engine/trainer';
import { loadModel, loadWeightsFrom } from '../engine/model_io';
import { loadCheckpoint } from '../storage/checkpoint';
import { predictMask } from '../engine/predictor';
import { listSplit } from '../loaders/registry';
import { storedForOrientation } from '../pipeline/decode';
import { exportModel, ExportMetadata } from '../deploy/export_model';
import { isProjectLayer } from '../models/layers/custom_layers';
import { fileLoadHandler } from '../storage/model_files';
import { Config } from '../utils/config';
import { fixtureConfig, tmpDir } from '../loaders/fixtures';
import { assertOneLineError, run, writeConfig } from './helpers/cli';

const CHROMIUM = process.env.REPORT_TEST_CHROMIUM ?? '/usr/bin/chromium';
const HAVE_CHROMIUM = fs.existsSync(CHROMIUM);
// Locally a missing browser is a visible skip; in CI it must fail, not pass silently.
const skipBrowser = !HAVE_CHROMIUM && !process.env.CI ? 'chromium not installed: apt-get install -y chromium' : false;

const agreement = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let same = 0;
  for (let i = 0; i < a.length; i++) same += a[i] === b[i] ? 1 : 0;
  return same / a.length;
};

const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);

describe('export', () => {
  let dir: string;
  let cfg: Config;
  let best: string;
  let out: string;
  let project: tf.LayersModel;
  let valImages: string[];

  before(async () => {
    await initBackend('wasm');
    dir = tmpDir('export');
    // Enough steps that the fixture model is confident (few pixels near the threshold).
    cfg = fixtureConfig(dir, { training: { epochs: 4, batch_size: 4, workers: 1, print_interval: 2, optimizer: { name: 'adam', lr: 0.01 } } });
    const run = await train(resolveRun(cfg), { quiet: true });
    run.model.dispose();
    best = run.bestDir;
    out = path.join(dir, 'export');
    await exportModel(resolveRun(cfg), { checkpoint: best, output: out, web: true });
    project = await loadModel(resolveRun(cfg), best);
    valImages = (await listSplit(cfg, cfg.data.val_split)).map((p) => p.image);
  });

  after(() => {
    project?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('tf.loadLayersModel loads the export with stock layers only; outputs equal the project model', async () => {
    const loaded = await tf.loadLayersModel(fileLoadHandler(path.join(out, 'model.json')));
    const classes = loaded.layers.map((l) => l.getClassName());
    for (const c of classes) assert.ok(!isProjectLayer(c), `${c} in the exported topology`);
    const meta = loaded.getUserDefinedMetadata() as unknown as ExportMetadata;
    assert.deepEqual(meta.input.size, cfg.data.size);
    assert.deepEqual(meta.input.mean, cfg.data.mean);
    assert.equal(meta.input.normalize, 'dataset');
    assert.equal(meta.num_classes, 2);
    assert.equal(meta.output.decision, 'threshold');
    assert.equal(meta.class_names.length, meta.palette.length);
    assert.equal(meta.project_version, JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', ...(path.extname(__filename) === '.js' ? ['..'] : []), 'package.json'), 'utf8')).version);
    const x = tf.randomNormal([2, ...cfg.data.size, 3], 0, 1, 'float32', 11);
    const [a, b] = [project.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor];
    assert.ok(maxAbsDiff(a, b) < 1e-5, `max difference ${maxAbsDiff(a, b)}`);
    tf.dispose([x, a, b]);
    // Masks at each val image's own size, as `npx predict` computes them.
    const opts = { threshold: cfg.training.threshold, postprocess: false };
    for (const file of valImages) {
      const [p, q] = [await predictMask(project, cfg, file, opts), await predictMask(loaded, cfg, file, opts)];
      assert.ok(p.classes.some((c) => c === 1) && p.classes.some((c) => c === 0), 'a mask with both classes');
      assert.deepEqual(q.classes, p.classes, file);
    }
    loaded.dispose();
  });

  test('--weights accepts the exported model.json: the same weights as the checkpoint', async () => {
    const ck = (await loadCheckpoint(best)).weights;
    const fromExport = (await loadWeightsFrom(path.join(out, 'model.json'))).weights;
    const byName = new Map(fromExport.map((w) => [w.name, w]));
    assert.equal(fromExport.length, ck.length);
    for (const w of ck) assert.deepEqual(byName.get(w.name)?.values, w.values, w.name);
    assert.equal((await loadWeightsFrom(out)).weights.length, ck.length, 'the export folder works too');
  });

  test('a damaged export is refused when loaded, naming the file; one without complete.json still loads', async () => {
    const copy = (name: string) => {
      const d = path.join(dir, name);
      fs.cpSync(out, d, { recursive: true });
      return d;
    };
    const shardOf = (d: string) => path.join(d, fs.readdirSync(d).find((f) => f.endsWith('.bin'))!);
    // 4 bytes changed: the checksum in complete.json catches it.
    const flipped = copy('damaged-bytes');
    const shard = shardOf(flipped);
    const buf = fs.readFileSync(shard);
    buf.writeUInt32LE(buf.readUInt32LE(64) ^ 0xffffffff, 64);
    fs.writeFileSync(shard, buf);
    await assert.rejects(loadWeightsFrom(path.join(flipped, 'model.json')), (e: Error) => e.message === `${shard}: corrupt (sha256 differs from complete.json)`);
    // Truncated, with and without complete.json.
    const cut = copy('damaged-size');
    fs.truncateSync(shardOf(cut), 100);
    await assert.rejects(loadWeightsFrom(cut), /has 100 bytes, expected \d+ \(truncated or modified after saving\)/);
    fs.rmSync(path.join(cut, 'complete.json'));
    await assert.rejects(loadWeightsFrom(cut), (e: Error) => e.message.startsWith(`${path.join(cut, 'model.json')}: its weight shards hold 100 bytes but the manifest needs`));
    // A replacing export interrupted mid-swap leaves only its hidden old copy: it is read from there.
    const swapped = copy('swapped');
    fs.renameSync(swapped, path.join(dir, '.swapped.old-999999999-1'));
    assert.equal((await loadWeightsFrom(swapped)).weights.length, (await loadWeightsFrom(out)).weights.length);
    const plain = copy('no-marker');
    fs.rmSync(path.join(plain, 'complete.json'));
    assert.equal((await loadWeightsFrom(plain)).weights.length, (await loadWeightsFrom(out)).weights.length);
    const r = await run('evaluate', ['--config', writeConfig(dir, { ...cfg, backend: 'wasm' }, 'damaged.yaml'), '--checkpoint', path.join(flipped, 'model.json')]);
    assertOneLineError(r, /corrupt \(sha256 differs from complete\.json\)/);
  });

  test('uint8 and float16 exports are 4x and 2x smaller and predict nearly the same masks', async () => {
    const size = (d: string) => fs.readdirSync(d).filter((f) => f.endsWith('.bin')).reduce((s, f) => s + fs.statSync(path.join(d, f)).size, 0);
    const full = size(out);
    const opts = { threshold: cfg.training.threshold, postprocess: false };
    for (const [q, ratio, minAgree] of [['uint8', 4, 0.97], ['float16', 2, 0.995]] as const) {
      const qd = path.join(dir, `export-${q}`);
      await exportModel(resolveRun(cfg), { checkpoint: best, output: qd, quantize: q });
      assert.ok(Math.abs(full / size(qd) - ratio) < 0.05, `${q}: ${full} -> ${size(qd)} bytes`);
      const m = await tf.loadLayersModel(fileLoadHandler(path.join(qd, 'model.json')));
      assert.equal((m.getUserDefinedMetadata() as any).quantization, q);
      for (const file of valImages.slice(0, 4)) {
        const a = agreement((await predictMask(m, cfg, file, opts)).classes, (await predictMask(project, cfg, file, opts)).classes);
        assert.ok(a >= minAgree, `${q}: ${file} agreement ${a}`);
      }
      m.dispose();
    }
  });

  test('bad input is one line each: missing checkpoint, foreign output folder, unknown quantisation', async () => {
    const d = tmpDir('export-cli');
    const config = writeConfig(d, { name: 'none', backend: 'wasm', checkpoint: { ckpt_root: path.join(d, 'ck') }, results: { root: path.join(d, 'res') } });
    const foreign = path.join(d, 'mine');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'notes.txt'), 'keep me');
    const [noCkpt, badCkpt, notExport, badQ] = await Promise.all([
      run('export', ['--config', config, '--output', path.join(d, 'out1')]),
      run('export', ['--config', config, '--checkpoint', path.join(d, 'nope'), '--output', path.join(d, 'out2')]),
      run('export', ['--config', config, '--checkpoint', best, '--output', foreign]),
      run('export', ['--config', config, '--checkpoint', best, '--quantize', 'int4']),
    ]);
    assertOneLineError(noCkpt, /no checkpoint in .*best or .*last: train first/);
    assertOneLineError(badCkpt, /nope: checkpoint folder not found/);
    assertOneLineError(notExport, /mine: exists and is not an earlier export .*refusing to overwrite it/);
    assertOneLineError(badQ, /--quantize int4: unknown quantisation; expected one of uint8, float16/);
    assert.equal(fs.readFileSync(path.join(foreign, 'notes.txt'), 'utf8'), 'keep me');
    assert.deepEqual(fs.readdirSync(foreign), ['notes.txt']);
    for (const o of ['out1', 'out2']) assert.ok(!fs.existsSync(path.join(d, o)), `${o} written`);
    fs.rmSync(d, { recursive: true, force: true });
  });

  test('an earlier export is replaced in place', async () => {
    const before = fs.statSync(path.join(out, 'model.json')).mtimeMs;
    await exportModel(resolveRun(cfg), { checkpoint: best, output: out, web: true });
    assert.ok(fs.statSync(path.join(out, 'model.json')).mtimeMs >= before);
    assert.ok(fs.existsSync(path.join(out, 'index.html')));
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.export') || n === 'export.old'), [], 'no temporary folders left');
  });

  test('the served web app segments an uploaded image in headless Chromium as Node does', { skip: skipBrowser }, async () => {
    assert.ok(HAVE_CHROMIUM, `chromium not installed at ${CHROMIUM}: apt-get install -y chromium (required when CI is set)`);
    // A PNG at a size other than the network's, so the page's resize and resize-back are exercised.
    const src = valImages[0];
    const img = path.join(dir, 'upload.png');
    await sharp(src).resize(45, 38, { fit: 'fill' }).png().toFile(img);
    const node = await predictMask(project, cfg, img, { threshold: cfg.training.threshold, postprocess: false });
    const served: string[] = [];
    const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm', '.bin': 'application/octet-stream' };
    let modelJson: string | null = null; // set: served instead of the export's model.json
    const server = http.createServer((req, res) => {
      const name = path.basename(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)) || 'index.html';
      const file = path.join(out, name);
      served.push(name);
      if (!fs.existsSync(file)) return void res.writeHead(404).end();
      const body = name === 'model.json' && modelJson !== null ? modelJson : fs.readFileSync(file);
      res.writeHead(200, { 'content-type': types[path.extname(name)] ?? 'application/octet-stream' }).end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
      const errors: string[] = [];
      const external: string[] = [];
      page.on('console', (m) => void (m.type() === 'error' && errors.push(`console: ${m.text()}`)));
      page.on('pageerror', (e) => errors.push(`page: ${e.message}`));
      page.on('request', (r) => void (!r.url().startsWith(`http://127.0.0.1:${port}/`) && external.push(r.url())));
      await page.goto(`http://127.0.0.1:${port}/`);
      await page.waitForFunction(() => (window as any).semseg.ready || (window as any).semseg.error, null, { timeout: 30000 });
      assert.equal(await page.evaluate(() => (window as any).semseg.error), null);
      await page.setInputFiles('#file', img);
      await page.waitForFunction(() => (window as any).semseg.result || (window as any).semseg.error, null, { timeout: 30000 });
      const r = await page.evaluate(() => (window as any).semseg.result);
      assert.deepEqual([r.width, r.height], [45, 38]);
      const a = agreement(r.classes, node.classes);
      // Node resizes the input with libvips (lanczos3), the page bilinearly: rare boundary pixels may differ.
      assert.ok(a >= 0.98, `page/Node mask agreement ${a}`);
      // What is drawn: the class's colour where the class map has a class, transparent elsewhere;
      // a binary foreground in the report's green, not the mask file's white.
      const meta = await page.evaluate(() => (window as any).semseg.meta);
      const colours: number[][] = await page.evaluate(() => (window as any).semseg.colours);
      assert.deepEqual(colours[1], [0, 255, 0]);
      const drawn = await page.$eval('#mask', (c) => Array.from((c as HTMLCanvasElement).getContext('2d')!.getImageData(0, 0, (c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height).data));
      const drawnClasses = Array.from({ length: r.classes.length }, (_, i) => (drawn[4 * i + 3] === 0 ? 0 : colours.findIndex((p: number[]) => p[0] === drawn[4 * i] && p[1] === drawn[4 * i + 1] && p[2] === drawn[4 * i + 2])));
      assert.deepEqual(drawnClasses, r.classes);
      assert.ok(r.classes.includes(1) && r.classes.includes(0));
      assert.match(await page.textContent('#stats') ?? '', /ms on (webgpu|webgl|wasm|cpu)/);
      assert.equal(await page.locator('#legend li').count(), meta.class_names.length);
      // The threshold control re-decides from the same probabilities.
      await page.fill('#threshold', '0.99');
      await page.dispatchEvent('#threshold', 'input');
      const strict = await page.evaluate(() => (window as any).semseg.result.classes.reduce((s: number, c: number) => s + c, 0));
      assert.ok(strict <= r.classes.reduce((s: number, c: number) => s + c, 0));
      // A photo stored sideways (EXIF orientation 6): the page and Node both see it upright.
      const up = await sharp(img).removeAlpha().raw().toBuffer();
      const st = storedForOrientation(new Uint8Array(up), 45, 38, 6);
      const turned = path.join(dir, 'upload-turned.jpg');
      await sharp(Buffer.from(st.data), { raw: { width: st.width, height: st.height, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toFile(turned);
      const nodeTurned = await predictMask(project, cfg, turned, { threshold: cfg.training.threshold, postprocess: false });
      assert.deepEqual([nodeTurned.width, nodeTurned.height], [45, 38]);
      await page.fill('#threshold', String(cfg.training.threshold)); // back from 0.99 above
      await page.dispatchEvent('#threshold', 'input');
      await page.evaluate(() => { (window as any).semseg.result = null; });
      // A second image through the file chooser, which stays in view after the first.
      assert.ok(await page.isVisible('#file'), 'the file chooser is still shown after an image');
      await page.setInputFiles('#file', turned);
      await page.waitForFunction(() => (window as any).semseg.result || (window as any).semseg.error, null, { timeout: 30000 });
      const rt = await page.evaluate(() => (window as any).semseg.result);
      assert.deepEqual([rt.width, rt.height], [45, 38], 'the page sees the photo upright too');
      const at = agreement(rt.classes, nodeTurned.classes);
      assert.ok(at >= 0.97, `page/Node mask agreement on the turned photo ${at}`);
      assert.deepEqual(errors, []);
      assert.deepEqual(external, []);
      for (const f of ['tf-core.min.js', 'model.json', 'group1-shard1of1.bin']) assert.ok(served.includes(f), `${f} fetched`);
      console.log(`# page backend ${r.backend}, ${r.ms.toFixed(1)} ms, agreement with Node ${a.toFixed(4)}`);
      if (process.env.DEPLOY_SCREENSHOT) {
        await page.fill('#threshold', String(cfg.training.threshold));
        await page.dispatchEvent('#threshold', 'input');
        await page.screenshot({ path: process.env.DEPLOY_SCREENSHOT });
      }
      // An export whose metadata says data.normalize 'image': the page standardises each image
      // by its own statistics, as predict does (same weights, so the masks must agree).
      const json = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
      json.userDefinedMetadata.input.normalize = 'image';
      modelJson = JSON.stringify(json);
      const perImageCfg = { ...cfg, data: { ...cfg.data, normalize: 'image' as const } };
      const nodeImage = await predictMask(project, perImageCfg, img, { threshold: cfg.training.threshold, postprocess: false });
      assert.ok(agreement(nodeImage.classes, node.classes) < 1, 'per-image normalisation changes the masks of this model');
      await page.reload();
      await page.waitForFunction(() => (window as any).semseg.ready || (window as any).semseg.error, null, { timeout: 30000 });
      assert.equal(await page.evaluate(() => (window as any).semseg.meta.input.normalize), 'image');
      await page.setInputFiles('#file', img);
      await page.waitForFunction(() => (window as any).semseg.result || (window as any).semseg.error, null, { timeout: 30000 });
      const ri = await page.evaluate(() => (window as any).semseg.result);
      const ai = agreement(ri.classes, nodeImage.classes);
      assert.ok(ai >= 0.98, `page/Node mask agreement with per-image normalisation ${ai}`);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      server.close();
    }
  });
});
