// The browser training page (`tfjs-semseg web-train`, deploy/web_train/) in headless Chromium:
// a generated dataset picked through the folder inputs, a few steps on wasm with the loss
// falling and the curve drawn, a stop that saves to IndexedDB and a reload that resumes from
// it, the downloaded export scored by Node's evaluate (the page's val metrics within 1e-4) and
// run by `npx predict` (its mask of an image the page segmented, as the page segmented it),
// and the same run in `node dist/train.js` on wasm giving the page's losses (also from
// encoder_weights: imagenet, fetched from beside the page); webgl (SwiftShader) picked in the
// page's Backend choice giving wasm's losses; a config picked with the file it extends; the
// recipe form editing the YAML; one folder holding images and masks, as Node reads it; Node's
// checks before the first step refusing in the page with Node's own lines; a storage quota too
// small for the picked files (set through CDP) keeping the model, resumed after the folders are
// picked again.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium, BrowserContext, Page } from 'playwright-core';
import { decode, encode } from 'fast-png';
import { webTrainBundle } from '../deploy/web_train/bundle';
import { writeWebTrain } from '../deploy/web_train/files';
import { evaluate } from '../api';
import yaml from 'js-yaml';
import { parseConfig, resolveRun } from '../config/resolve';
import { preflightTrain } from '../engine/preflight';
import { withPageData } from '../deploy/web_train/page';

const CHROMIUM = process.env.REPORT_TEST_CHROMIUM ?? '/usr/bin/chromium';
const HAVE_CHROMIUM = fs.existsSync(CHROMIUM);
const skip = !HAVE_CHROMIUM && !process.env.CI ? 'chromium not installed: apt-get install -y chromium' : false;
const ROOT = path.resolve(__dirname, '..', '..');

/** Parity: page (wasm, browser) and Node (wasm, one thread) losses agree to this, relative (measured: identical). */
const PARITY_TOLERANCE = 1e-6;
/** webgl (SwiftShader's float32 shaders) against wasm, relative: the first step's loss, and every step's of 4 (measured: at most 6e-7). */
const WEBGL_FIRST_STEP_TOLERANCE = 1e-4;
const WEBGL_TOLERANCE = 1e-3;

/** `n` pairs of 32x32 PNGs: a bright disc on a dark, textured background; masks 0/255. */
function writePairs(imagesDir: string, masksDir: string, n: number, offset = 0): void {
  fs.mkdirSync(imagesDir, { recursive: true });
  fs.mkdirSync(masksDir, { recursive: true });
  const W = 32;
  for (let k = offset; k < offset + n; k++) {
    const cx = 10 + (k % 6) * 2, cy = 18 - (k % 5) * 1.5, r = 6 + (k % 3);
    const img = new Uint8Array(W * W * 3), m = new Uint8Array(W * W);
    for (let y = 0; y < W; y++) for (let x = 0; x < W; x++) {
      const inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      const v = inside ? 190 + ((x * 7 + y * 3 + k) % 50) : 15 + ((x * 5 + y * 11 + k) % 35);
      img.set([v, inside ? v - 40 : v, v], (y * W + x) * 3);
      m[y * W + x] = inside ? 255 : 0;
    }
    fs.writeFileSync(path.join(imagesDir, `p${k}.png`), encode({ width: W, height: W, data: img, channels: 3, depth: 8 }));
    fs.writeFileSync(path.join(masksDir, `p${k}.png`), encode({ width: W, height: W, data: m, channels: 1, depth: 8 }));
  }
}

/** `n` pairs of 512x512 PNGs of noise (incompressible: 0.8 MB an image), masks a square. */
function writeNoisyPairs(imagesDir: string, masksDir: string, n: number): number {
  fs.mkdirSync(imagesDir, { recursive: true });
  fs.mkdirSync(masksDir, { recursive: true });
  const W = 512;
  let seed = 12345, bytes = 0;
  for (let k = 0; k < n; k++) {
    const img = new Uint8Array(W * W * 3).map(() => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24));
    const m = new Uint8Array(W * W).map((_, i) => (Math.abs((i % W) - 256) < 100 && Math.abs(Math.floor(i / W) - 256) < 100 ? 255 : 0));
    for (const [file, data] of [[path.join(imagesDir, `n${k}.png`), encode({ width: W, height: W, data: img, channels: 3, depth: 8 })], [path.join(masksDir, `n${k}.png`), encode({ width: W, height: W, data: m, channels: 1, depth: 8 })]] as const) {
      fs.writeFileSync(file, data);
      bytes += data.length;
    }
  }
  return bytes;
}

const CONFIG = (epochs: number) => `name: webtest
model: { name: unet, base: 4, depth: 2 }
data: { num_classes: 2, size: [32, 32], value_map: { "255": 1 } }
training:
  epochs: ${epochs}
  batch_size: 2
  seed: 7
  loss: { name: bce+dice }
  optimizer: { name: adam, lr: 0.01 }
  augmentations: { hflip: { p: 0.5 }, vflip: { p: 0.5 } }
  print_interval: 1
checkpoint: { best_metric: val.dice }
`;

/** predict (Node, wasm) against the page's segmentation of the same image: pixels on the threshold may flip (measured: 0). */
const SEGMENT_PIXELS_TOLERANCE = 0.01;

type Api = { encoderWeights: string | null; segmented: { width: number; height: number; classes: number[] } | null; ready: boolean; state: string; step: number; totalSteps: number; losses: number[]; val: { step: number; metrics: Record<string, number> }[]; valIds: string[]; restored: boolean; error: string | null; backend: string; msPerStep: number | null };
const state = (page: Page): Promise<Api> => page.evaluate(() => (window as any).semsegTrain);

describe('the browser training page in headless Chromium', () => {
  let tmp: string;
  let ctx: BrowserContext;
  let server: http.Server;
  let url: string;
  const problems: string[] = [];
  const watched = new WeakSet<Page>();

  before(async () => {
    if (!HAVE_CHROMIUM) return;
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'web-train-test-'));
    const out = path.join(tmp, 'page');
    writeWebTrain(out, await webTrainBundle());
    const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
    server = http.createServer((req, res) => {
      const name = new URL(req.url ?? '/', 'http://x').pathname.slice(1) || 'index.html';
      const file = path.join(out, name);
      if (!file.startsWith(out + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': types[path.extname(name)] ?? 'application/octet-stream' }).end(fs.readFileSync(file));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/?backend=wasm`;
    // A fresh profile: IndexedDB starts empty, and survives the reload below.
    ctx = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
      executablePath: CHROMIUM, headless: true, acceptDownloads: true, viewport: { width: 1200, height: 1000 },
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    await ctx?.close();
    server?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function open(): Promise<Page> {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    if (watched.has(page)) {
      await page.goto(url);
      await page.waitForFunction(() => (window as any).semsegTrain?.ready || (window as any).semsegTrain?.error, null, { timeout: 60_000 });
      return page;
    }
    watched.add(page);
    page.on('pageerror', (e) => problems.push(`page: ${e.message}`));
    page.on('console', (m) => void (m.type() === 'error' && problems.push(`console: ${m.text()}`)));
    await page.goto(url);
    await page.waitForFunction(() => (window as any).semsegTrain?.ready || (window as any).semsegTrain?.error, null, { timeout: 60_000 });
    return page;
  }

  /** `node dist/train.js` on wasm (one thread, as the page's) with `config` over `data`'s folders: its process and training losses. */
  function trainInNode(tag: string, config: string, data: string, imagesDir: string, masksDir: string) {
    const cfg = path.join(tmp, `${tag}.yaml`);
    fs.writeFileSync(cfg, config);
    const sets = [`data.name=folder`, `data.root=${data}`, `data.images_dir=${imagesDir}`, `data.masks_dir=${masksDir}`, 'training.workers=1', `checkpoint.ckpt_root=${path.join(tmp, `ck-${tag}`)}`, `results.root=${path.join(tmp, `res-${tag}`)}`];
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'train.js'), '--config', cfg, '--backend', 'wasm', ...sets.flatMap((x) => ['--set', x])], {
      encoding: 'utf8', env: { ...process.env, SEMSEG_WASM_THREADS: '1' }, timeout: 120_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const rows = fs.readFileSync(path.join(tmp, `res-${tag}`, 'webtest', 'history.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((row) => row.split === 'train');
    return { run: r, losses: rows.map((row) => row.loss as number) };
  }

  test('trains on picked folders, stops into IndexedDB, resumes after a reload, and its download scores and predicts the same in Node', { skip }, async (t) => {
    assert.ok(HAVE_CHROMIUM, `chromium not installed at ${CHROMIUM} (required when CI is set)`);
    const data = path.join(tmp, 'data');
    writePairs(path.join(data, 'images'), path.join(data, 'masks'), 8);
    let page = await open();
    assert.equal((await state(page)).backend, 'wasm');
    // An unpaired file is one line naming it, before anything trains.
    const extra = path.join(tmp, 'extra');
    writePairs(path.join(extra, 'images'), path.join(extra, 'masks_unused'), 3);
    await page.setInputFiles('#images', path.join(extra, 'images'));
    await page.setInputFiles('#masks', path.join(data, 'masks'));
    assert.equal(await page.textContent('#data-info'), '5 mask(s) without an image in images (expected *{.jpg,.jpeg,.png,.bmp,.tif,.tiff,.webp}): p3.png, p4.png, p5.png and 2 more');
    // The config is checked by the project's schema, with its one-line errors.
    await page.fill('#config', CONFIG(4).replace('epochs: 4', 'epohcs: 4'));
    await page.dispatchEvent('#config', 'input');
    assert.match((await page.textContent('#config-error')) ?? '', /^config\.yaml: unknown key 'training\.epohcs'/);
    // `extends:` pasted is one line; picked with its base, the composed config fills the text area.
    await page.fill('#config', `extends: base.yaml\n${CONFIG(4)}`);
    await page.dispatchEvent('#config', 'input');
    assert.equal(await page.textContent('#config-error'), "config.yaml: key 'extends' names files the page cannot read; load the config and the files it extends together with the file picker");
    const bases = path.join(tmp, 'configs');
    fs.mkdirSync(bases);
    fs.writeFileSync(path.join(bases, 'base.yaml'), 'model: { name: fpn, encoder: resnet18, pyramid_channels: 16, segmentation_channels: 8 }\ntraining: { loss: { name: dice }, optimizer: { name: sgd, lr: 0.1 } }\n');
    fs.writeFileSync(path.join(bases, 'child.yaml'), 'extends: base.yaml\nname: child\ndata: { num_classes: 2, size: [32, 32] }\ntraining: { optimizer: { name: adam, lr: 0.01 } }\n');
    await page.setInputFiles('#config-file', [path.join(bases, 'child.yaml'), path.join(bases, 'base.yaml')]);
    await page.waitForFunction(() => (document.getElementById('config') as HTMLTextAreaElement).value.startsWith('# child.yaml'), null, { timeout: 10_000 });
    assert.equal(await page.textContent('#config-error'), 'ok: fpn, dice, adam, poly');

    await page.setInputFiles('#images', path.join(data, 'images'));
    await page.fill('#val-fraction', '0.25');
    await page.fill('#config', CONFIG(4));
    await page.dispatchEvent('#config', 'input');
    assert.equal(await page.textContent('#data-info'), '8 pairs: 6 train, 2 val (by fraction)');
    await page.click('#train');
    await page.waitForFunction(() => (window as any).semsegTrain.step >= 5 || (window as any).semsegTrain.error, null, { timeout: 60_000 });
    await page.click('#stop');
    await page.waitForFunction(() => ['stopped', 'done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 60_000 });
    const stopped = await state(page);
    assert.equal(stopped.error, null);
    assert.equal(stopped.state, 'stopped');
    assert.ok(stopped.step >= 5 && stopped.step < 12, `stopped at ${stopped.step}`);

    // A reload finds the checkpoint (weights, optimizer, step, the files themselves) and resumes.
    page = await open();
    const back = await state(page);
    assert.equal(back.restored, true);
    assert.equal(back.step, stopped.step);
    assert.deepEqual(back.losses, stopped.losses);
    await page.click('#train');
    await page.waitForFunction(() => ['done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 90_000 });
    const done = await state(page);
    assert.equal(done.error, null);
    assert.equal(done.step, 12);
    assert.equal(done.losses.length, 12);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(mean(done.losses.slice(-3)) < 0.8 * mean(done.losses.slice(0, 3)), `loss ${done.losses.map((l) => l.toFixed(3)).join(' ')}`);
    const inked = await page.$eval('#curve', (c) => {
      const d = (c as HTMLCanvasElement).getContext('2d')!.getImageData(0, 0, (c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200 && d[i] < 80) n++; // the loss line's blue
      return n;
    });
    assert.ok(inked > 100, `${inked} curve pixels`);
    assert.equal(await page.locator('#overlays canvas').count(), 2);
    if (process.env.WEB_TRAIN_SCREENSHOT) await page.screenshot({ path: process.env.WEB_TRAIN_SCREENSHOT, fullPage: true });

    // The download is the export Node writes; Node's evaluate on the page's val images agrees.
    const dl = path.join(tmp, 'download');
    fs.mkdirSync(dl);
    const names: string[] = [];
    page.on('download', (d) => void names.push(d.suggestedFilename()));
    const downloads: Promise<void>[] = [];
    page.on('download', (d) => void downloads.push(d.saveAs(path.join(dl, d.suggestedFilename()))));
    await page.click('#download');
    for (let i = 0; i < 50 && names.length < 3; i++) await new Promise((r) => setTimeout(r, 100));
    await Promise.all(downloads);
    assert.deepEqual(names.sort(), ['config.yaml', 'group1-shard1of1.bin', 'model.json']);
    const meta = JSON.parse(fs.readFileSync(path.join(dl, 'model.json'), 'utf8')).userDefinedMetadata;
    assert.equal(meta.format, 'tfjs-semseg-export/1');
    assert.equal(meta.checkpoint.step, 12);
    const valRoot = path.join(tmp, 'val');
    for (const id of done.valIds) {
      for (const d of ['images', 'masks']) {
        fs.mkdirSync(path.join(valRoot, d), { recursive: true });
        fs.copyFileSync(path.join(data, d, `${id}.png`), path.join(valRoot, d, `${id}.png`));
      }
    }
    const res = await evaluate(path.join(dl, 'config.yaml'), {
      checkpoint: path.join(dl, 'model.json'), backend: 'wasm', quiet: true, output: path.join(tmp, 'eval'),
      set: [`data.root=${valRoot}`],
    });
    const pageVal = done.val[done.val.length - 1];
    assert.equal(pageVal.step, 12);
    assert.equal(res.images, 2);
    t.diagnostic(`page val dice ${pageVal.metrics.dice}, evaluate ${res.metrics.dice}; ${done.msPerStep?.toFixed(1)} ms/step in the page`);
    for (const [k, v] of Object.entries(pageVal.metrics)) assert.ok(Math.abs(res.metrics[k] - v) <= 1e-4, `${k}: page ${v}, evaluate ${res.metrics[k]}`);
    // The trained model segments a new image in the page, as the deploy page does.
    await page.setInputFiles('#segment-file', path.join(data, 'images', 'p0.png'));
    await page.waitForFunction(() => (document.getElementById('segment-out') as HTMLCanvasElement).width === 32, null, { timeout: 30_000 });
    const segmented = (await state(page)).segmented!;
    // `npx predict` on the download: one mask per image, at its size, binary as 0/255 (predict's
    // format for a binary model); p0's the page's segmentation of it.
    const inputs = path.join(tmp, 'predict-in');
    fs.mkdirSync(inputs);
    for (const id of new Set([...done.valIds, 'p0'])) fs.copyFileSync(path.join(data, 'images', `${id}.png`), path.join(inputs, `${id}.png`));
    const predicted = path.join(tmp, 'predict-out');
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'predict.js'), '--config', path.join(dl, 'config.yaml'), '--checkpoint', path.join(dl, 'model.json'), '--input', inputs, '--output', predicted, '--backend', 'wasm'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const ids = fs.readdirSync(inputs).map((f) => f.replace(/\.png$/, '')).sort();
    assert.deepEqual(fs.readdirSync(predicted).filter((f) => !f.endsWith('_overlay.png')).sort(), ids.map((id) => `${id}.png`));
    for (const id of ids) {
      const m = decode(fs.readFileSync(path.join(predicted, `${id}.png`)));
      assert.deepEqual([m.width, m.height, m.channels], [32, 32, 1], id);
      assert.ok([...m.data].every((v) => v === 0 || v === 255), `${id}: values ${[...new Set(m.data)]}`);
      if (id !== 'p0') continue;
      const differ = [...m.data].filter((v, i) => v !== 255 * segmented.classes[i]).length;
      t.diagnostic(`p0: predict's mask and the page's segmentation differ at ${differ} of ${m.data.length} pixels; ${[...m.data].filter((v) => v === 255).length} foreground`);
      assert.ok(differ <= SEGMENT_PIXELS_TOLERANCE * m.data.length, `${differ} pixels differ`);
    }
    assert.deepEqual(problems, []);
  });

  test('the same seed, data and steps give the page\'s losses in `node dist/train.js` on wasm', { skip }, async (t) => {
    assert.ok(HAVE_CHROMIUM, `chromium not installed at ${CHROMIUM} (required when CI is set)`);
    // train/ and val/ sub-folders: the page and the folder loader take the same splits.
    const data = path.join(tmp, 'parity');
    writePairs(path.join(data, 'images', 'train'), path.join(data, 'masks', 'train'), 6);
    writePairs(path.join(data, 'images', 'val'), path.join(data, 'masks', 'val'), 2, 6);
    const page = await open();
    await Promise.all([page.waitForNavigation(), page.click('#forget')]); // the first test's checkpoint would be resumed
    await page.waitForFunction(() => (window as any).semsegTrain?.ready && !(window as any).semsegTrain.restored, null, { timeout: 60_000 });
    // An unreadable mask stops the run with one line naming it.
    const broken = path.join(tmp, 'broken');
    writePairs(path.join(broken, 'images'), path.join(broken, 'masks'), 4);
    fs.writeFileSync(path.join(broken, 'masks', 'p1.png'), 'not a png');
    await page.setInputFiles('#images', path.join(broken, 'images'));
    await page.setInputFiles('#masks', path.join(broken, 'masks'));
    await page.fill('#config', CONFIG(1));
    await page.dispatchEvent('#config', 'input');
    await page.click('#train');
    await page.waitForFunction(() => (window as any).semsegTrain.state === 'error', null, { timeout: 60_000 });
    assert.equal(await page.textContent('#status'), 'masks/p1.png: not a readable PNG file');
    await page.setInputFiles('#images', path.join(data, 'images'));
    await page.setInputFiles('#masks', path.join(data, 'masks'));
    await page.fill('#config', CONFIG(2));
    await page.dispatchEvent('#config', 'input');
    assert.equal(await page.textContent('#data-info'), '8 pairs: 6 train, 2 val (from the train/val sub-folders)');
    await page.click('#train');
    await page.waitForFunction(() => ['done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 60_000 });
    const web = await state(page);
    assert.equal(web.error, null);

    const node = trainInNode('parity', CONFIG(2), data, 'images', 'masks').losses;
    assert.equal(node.length, web.losses.length);
    const worst = Math.max(...node.map((l, i) => Math.abs(l - web.losses[i]) / Math.abs(l)));
    t.diagnostic(`largest relative loss difference page/node over ${node.length} steps: ${worst.toExponential(2)}`);
    for (let i = 0; i < node.length; i++) assert.ok(Math.abs(node[i] - web.losses[i]) <= PARITY_TOLERANCE * Math.abs(node[i]), `step ${i + 1}: page ${web.losses[i]}, node ${node[i]}`);
    assert.deepEqual(problems, []);
  });

  test('model.encoder_weights: imagenet loads the weights fetched from beside the page, as `node dist/train.js` loads them', { skip }, async (t) => {
    const data = path.join(tmp, 'imagenet');
    writePairs(path.join(data, 'images', 'train'), path.join(data, 'masks', 'train'), 2);
    writePairs(path.join(data, 'images', 'val'), path.join(data, 'masks', 'val'), 1, 2);
    const config = CONFIG(1).replace('model: { name: unet, base: 4, depth: 2 }', 'model: { name: deeplabv3plus, encoder: mobilenet_v2, encoder_weights: imagenet, aspp_channels: 16 }').replace('augmentations: { hflip: { p: 0.5 }, vflip: { p: 0.5 } }', 'augmentations: {}');
    const page = await open();
    await page.setInputFiles('#images', path.join(data, 'images'));
    await page.setInputFiles('#masks', path.join(data, 'masks'));
    await page.fill('#config', config);
    await page.dispatchEvent('#config', 'input');
    assert.equal(await page.textContent('#data-info'), '3 pairs: 2 train, 1 val (from the train/val sub-folders)');
    // A page folder without the weights: one line saying which file and how to get it.
    await page.route('**/weights/mobilenet_v2_imagenet/model.json', (r) => r.fulfill({ status: 404 }));
    await page.click('#train');
    await page.waitForFunction(() => (window as any).semsegTrain.state === 'error', null, { timeout: 60_000 });
    assert.match((await page.textContent('#status')) ?? '', /^model\.encoder_weights: 'imagenet' fetches http:\/\/127\.0\.0\.1:\d+\/weights\/mobilenet_v2_imagenet\/model\.json, which failed \(HTTP 404\): write the page again with `tfjs-semseg web-train`, which puts weights\/mobilenet_v2_imagenet\/model\.json beside it$/);
    await page.unroute('**/weights/mobilenet_v2_imagenet/model.json');
    problems.splice(0, problems.length, ...problems.filter((p) => !/status of 404/.test(p))); // the browser's own note on that 404
    await page.click('#train');
    await page.waitForFunction(() => ['done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 60_000 });
    const web = await state(page);
    assert.equal(web.error, null);
    assert.equal(web.losses.length, 1);

    const { run: r, losses: [node] } = trainInNode('imagenet', config, data, 'images', 'masks');
    // The same log line: the same weights matched by name, the same ones left to their initialisation.
    const line = `${r.stdout}\n${r.stderr}`.split('\n').find((l) => l.includes('model.encoder_weights imagenet:'));
    assert.ok(web.encoderWeights && line?.endsWith(web.encoderWeights), `page: ${web.encoderWeights}; node: ${line}`);
    const rel = Math.abs(node - web.losses[0]) / Math.abs(node);
    t.diagnostic(`step 1 loss: page ${web.losses[0]}, node ${node} (relative ${rel.toExponential(2)}); ${web.encoderWeights}`);
    assert.ok(rel <= 1e-5, `page ${web.losses[0]}, node ${node}`);
    assert.deepEqual(problems, []);
  });

  test('the recipe form shows the YAML\'s settings and edits the YAML, which the schema checks as any text', { skip }, async () => {
    const page = await open();
    await page.fill('#config', CONFIG(4));
    await page.dispatchEvent('#config', 'input');
    const value = (id: string) => page.inputValue(`#form-${id}`);
    assert.deepEqual(await Promise.all(['model-name', 'data-size', 'training-epochs', 'training-loss-name', 'training-optimizer-lr'].map(value)), ['unet', '32x32', '4', 'bce+dice', '0.01']);
    assert.ok((await page.$$eval('#form-model-name option', (os) => os.map((o) => (o as HTMLOptionElement).value))).includes('deeplabv3plus'));
    await page.selectOption('#form-model-name', 'fpn');
    await page.fill('#form-training-epochs', '2');
    await page.dispatchEvent('#form-training-epochs', 'change');
    await page.selectOption('#form-training-optimizer-name', 'sgd');
    await page.selectOption('#form-training-lr_schedule-name', 'step');
    const text = await page.inputValue('#config');
    assert.match(text, /model:\n {2}name: fpn\n/);
    assert.doesNotMatch(text, /base: 4/, "unet's own keys went with unet");
    assert.match(text, /epochs: 2\n/);
    assert.match(text, /optimizer: \{name: sgd, lr: 0\.01\}/);
    assert.equal(await page.textContent('#config-error'), 'ok: fpn, bce+dice, sgd, step');
    // A value the field cannot take is one line naming it; the YAML is left as it was.
    await page.fill('#form-data-size', '64');
    await page.dispatchEvent('#form-data-size', 'change');
    assert.equal(await page.textContent('#config-error'), "Input size (H x W) (data.size): '64' is not a size such as 64x64 (height x width)");
    assert.equal(await page.inputValue('#config'), text);
    // The schema's own checks apply to what the form writes.
    await page.fill('#form-data-num_classes', '0');
    await page.dispatchEvent('#form-data-num_classes', 'change');
    assert.match((await page.textContent('#config-error')) ?? '', /^config\.yaml: key 'data\.num_classes' /);
    assert.deepEqual(problems, []);
  });

  test('Node\'s checks before the first step run in the page, with the same one-line refusals', { skip }, async () => {
    const data = path.join(tmp, 'preflight');
    writePairs(path.join(data, 'images'), path.join(data, 'masks'), 4);
    const page = await open();
    await page.setInputFiles('#images', path.join(data, 'images'));
    await page.setInputFiles('#masks', path.join(data, 'masks'));
    /** What `preflightTrain` says in Node for this config on wasm, as the page reads it: its refusal, or 'accepted' and its warnings. */
    const nodeSays = (config: string, warnings: string[] = []) => {
      try {
        preflightTrain(resolveRun(parseConfig(withPageData(yaml.load(config) as Record<string, unknown>, 'images', 'masks'), 'config.yaml')), { backend: 'wasm', warn: (l) => warnings.push(l) });
      } catch (e) {
        return (e as Error).message;
      }
      return 'accepted';
    };
    for (const config of [
      CONFIG(1).replace('best_metric: val.dice', 'best_metric: val.dcie'),
      CONFIG(1).replace('size: [32, 32]', 'size: [2048, 2048]').replace('batch_size: 2', 'batch_size: 16'),
      CONFIG(1).replace('value_map: { "255": 1 } }', 'value_map: { "255": 1 }, ignore_index: 1 }'),
    ]) {
      await page.fill('#config', config);
      await page.dispatchEvent('#config', 'input');
      await page.click('#train');
      await page.waitForFunction(() => (window as any).semsegTrain.state === 'error', null, { timeout: 60_000 });
      const expected = nodeSays(config);
      assert.notEqual(expected, 'accepted');
      assert.equal(await page.textContent('#status'), expected);
    }
    // A warning (a crop larger than the images) is shown, and the run goes on.
    const cropped = CONFIG(1).replace('augmentations: { hflip: { p: 0.5 }, vflip: { p: 0.5 } }', 'augmentations: { crop: { size: [48, 48] } }');
    const warnings: string[] = [];
    assert.equal(nodeSays(cropped, warnings), 'accepted');
    assert.equal(warnings.length, 1);
    await page.fill('#config', cropped);
    await page.dispatchEvent('#config', 'input');
    await page.click('#train');
    await page.waitForFunction(() => ['done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 60_000 });
    assert.equal((await state(page)).error, null);
    assert.equal(await page.textContent('#warnings'), warnings[0]);
    assert.deepEqual(problems, []);
  });

  test('one folder holding images and masks (no mask folder picked) pairs by data.mask_suffix and trains as Node\'s folder loader reads that folder', { skip }, async (t) => {
    const data = path.join(tmp, 'onefolder');
    writePairs(path.join(data, 'all'), path.join(data, 'm'), 4);
    for (const f of fs.readdirSync(path.join(data, 'm'))) fs.renameSync(path.join(data, 'm', f), path.join(data, 'all', f.replace('.png', '_mask.png')));
    const config = `${CONFIG(1).replace('augmentations: { hflip: { p: 0.5 }, vflip: { p: 0.5 } }', 'augmentations: {}')}# one folder\n`;
    const page = await open();
    await page.setInputFiles('#images', path.join(data, 'all'));
    await page.fill('#val-fraction', '0.25');
    await page.fill('#config', config);
    await page.dispatchEvent('#config', 'input');
    assert.equal(await page.textContent('#data-info'), 'no mask folder picked, so all must hold the masks too: set data.mask_suffix (e.g. _mask) so a mask, <stem><suffix>.png, is told from its image');
    const withSuffix = config.replace('data: { num_classes: 2,', 'data: { mask_suffix: _mask, num_classes: 2,');
    await page.fill('#config', withSuffix);
    await page.dispatchEvent('#config', 'input');
    assert.equal(await page.textContent('#data-info'), '4 pairs: 3 train, 1 val (by fraction)');
    await page.click('#train');
    await page.waitForFunction(() => ['done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 60_000 });
    const web = await state(page);
    assert.equal(web.error, null);
    assert.equal(web.losses.length, 1);
    // Node, reading the same folder as images_dir and masks_dir, on the page's training pairs.
    fs.mkdirSync(path.join(data, 'node', 'train'), { recursive: true });
    for (const f of fs.readdirSync(path.join(data, 'all'))) {
      if (!web.valIds.includes(f.replace(/(_mask)?\.png$/, ''))) fs.copyFileSync(path.join(data, 'all', f), path.join(data, 'node', 'train', f));
    }
    fs.mkdirSync(path.join(data, 'node', 'val'));
    for (const id of web.valIds) for (const f of [`${id}.png`, `${id}_mask.png`]) fs.copyFileSync(path.join(data, 'all', f), path.join(data, 'node', 'val', f));
    const { run: r, losses: [node] } = trainInNode('onefolder', withSuffix, data, 'node', 'node');
    assert.match(r.stderr, /3 training pairs \(train\), 1 validation pairs \(val\)/);
    t.diagnostic(`step 1 loss: page ${web.losses[0]}, node ${node}`);
    assert.ok(Math.abs(node - web.losses[0]) <= PARITY_TOLERANCE * Math.abs(node), `page ${web.losses[0]}, node ${node}`);
    assert.deepEqual(problems, []);
  });

  test('where the browser\'s storage cannot hold the picked files, the checkpoint keeps the model; after a reload the same folders picked again resume it', { skip }, async () => {
    const data = path.join(tmp, 'quota');
    const bytes = writeNoisyPairs(path.join(data, 'images'), path.join(data, 'masks'), 4);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      // A quota of 1 MB for the page's origin: the model's checkpoint fits, the 3 MB of images do not.
      const origin = new URL(url).origin;
      await (await page.context().newCDPSession(page)).send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1_000_000 });
      assert.ok(bytes > 2_000_000, `${bytes} bytes of files`);
      const ready = async () => page.waitForFunction(() => (window as any).semsegTrain?.ready || (window as any).semsegTrain?.error, null, { timeout: 60_000 });
      const pick = async () => {
        await page.setInputFiles('#images', path.join(data, 'images'));
        await page.setInputFiles('#masks', path.join(data, 'masks'));
      };
      await page.goto(url);
      await ready();
      await pick();
      await page.fill('#val-fraction', '0.25');
      const config = CONFIG(3).replace('augmentations: { hflip: { p: 0.5 }, vflip: { p: 0.5 } }', 'augmentations: {}');
      await page.fill('#config', config);
      await page.dispatchEvent('#config', 'input');
      await page.click('#train');
      await page.waitForFunction(() => (window as any).semsegTrain.saves >= 1 || (window as any).semsegTrain.error, null, { timeout: 60_000 });
      await page.click('#stop');
      await page.waitForFunction(() => ['stopped', 'done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 60_000 });
      const stopped = await state(page);
      assert.equal(stopped.error, null);
      assert.equal((stopped as Api & { filesKept: boolean }).filesKept, false);
      assert.match((await page.textContent('#ckpt-info')) ?? '', new RegExp(`^checkpoint saved in this browser at step ${stopped.step} \\(.+\\); its 8 files did not fit in this browser's storage: after a reload, pick the same folders again to resume$`));
      await page.reload();
      await ready();
      const restored = await state(page);
      assert.ok(restored.restored && restored.step === stopped.step, JSON.stringify(restored));
      assert.match((await page.textContent('#status')) ?? '', new RegExp(`^found a checkpoint from .+ at step ${stopped.step}; its 8 files did not fit in this browser's storage: pick the same folders again, then Train resumes it \\(Forget starts over\\)$`));
      assert.equal(await page.textContent('#data-info'), 'pick an image folder and a mask folder, or one folder holding both');
      await pick();
      await page.click('#train');
      await page.waitForFunction(() => ['done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 60_000 });
      const done = await state(page);
      assert.equal(done.error, null);
      assert.equal(done.step, done.totalSteps);
      assert.deepEqual(done.losses.slice(0, stopped.losses.length), stopped.losses, 'resumed, not restarted');
      assert.equal(await page.textContent('#warnings'), '', 'the same files: no warning');
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });

  // Chromium's WebGL2 on SwiftShader (ANGLE over its CPU Vulkan; without --disable-gpu):
  // picked in the page's Backend choice, the same run as on wasm, step for step.
  test('on webgl (SwiftShader) picked in the Backend choice, the page trains and its losses follow wasm\'s', { skip }, async (t) => {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--use-gl=angle', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(url);
      await page.waitForFunction(() => (window as any).semsegTrain?.ready || (window as any).semsegTrain?.error, null, { timeout: 60_000 });
      assert.equal((await state(page)).backend, 'wasm');
      await page.selectOption('#backend', 'webgl');
      await page.waitForFunction(() => (window as any).semsegTrain.backend || (window as any).semsegTrain.error, null, { timeout: 60_000 });
      assert.equal((await state(page)).backend, 'webgl');
      assert.equal(await page.textContent('#backend-info'), 'backend: webgl');
      const data = path.join(tmp, 'gl');
      writePairs(path.join(data, 'images'), path.join(data, 'masks'), 5);
      await page.setInputFiles('#images', path.join(data, 'images'));
      await page.setInputFiles('#masks', path.join(data, 'masks'));
      await page.fill('#val-fraction', '0.2');
      const run = async (config: string): Promise<Api> => {
        await page.fill('#config', config);
        await page.dispatchEvent('#config', 'input');
        await page.click('#train');
        await page.waitForFunction(() => ['done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 60_000 });
        const s = await state(page);
        assert.equal(s.error, null);
        return s;
      };
      const config = CONFIG(2).replace('augmentations: { hflip: { p: 0.5 }, vflip: { p: 0.5 } }', 'augmentations: {}');
      const gl = await run(config);
      assert.equal(gl.backend, 'webgl');
      // The same run on wasm (another config text: the finished webgl run would be resumed).
      await page.selectOption('#backend', 'wasm');
      await page.waitForFunction(() => (window as any).semsegTrain.backend === 'wasm', null, { timeout: 60_000 });
      const wasm = await run(`${config}# on wasm\n`);
      const rel = gl.losses.map((l, i) => Math.abs(l - wasm.losses[i]) / Math.abs(wasm.losses[i]));
      t.diagnostic(`webgl losses ${gl.losses.map((l) => l.toFixed(6)).join(' ')}; wasm ${wasm.losses.map((l) => l.toFixed(6)).join(' ')}; relative differences ${rel.map((r) => r.toExponential(1)).join(' ')}; ${gl.msPerStep?.toFixed(0)} ms/step on webgl, ${wasm.msPerStep?.toFixed(0)} on wasm`);
      assert.equal(gl.losses.length, 4);
      assert.ok(gl.losses.every(Number.isFinite) && gl.losses[3] < gl.losses[0], String(gl.losses));
      assert.ok(rel[0] <= WEBGL_FIRST_STEP_TOLERANCE, `step 1: webgl ${gl.losses[0]}, wasm ${wasm.losses[0]}`);
      assert.ok(Math.max(...rel) <= WEBGL_TOLERANCE, `largest relative difference ${Math.max(...rel)}`);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });

  // Chromium's WebGPU on SwiftShader (CPU Vulkan; it offers that adapter, not Mesa's lavapipe):
  // ~40x slower than wasm, so only on request.
  test('on webgpu (SwiftShader) the page trains with the project\'s webgpu kernels', { skip: skip || (!process.env.WEB_TRAIN_WEBGPU && 'WEB_TRAIN_WEBGPU=1 runs it (slow: software WebGPU)') }, async (t) => {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(url.replace('backend=wasm', 'backend=webgpu'));
      await page.waitForFunction(() => (window as any).semsegTrain?.ready || (window as any).semsegTrain?.error, null, { timeout: 60_000 });
      assert.equal((await state(page)).backend, 'webgpu');
      const data = path.join(tmp, 'gpu');
      writePairs(path.join(data, 'images'), path.join(data, 'masks'), 4);
      await page.setInputFiles('#images', path.join(data, 'images'));
      await page.setInputFiles('#masks', path.join(data, 'masks'));
      await page.fill('#val-fraction', '0.25');
      await page.fill('#config', CONFIG(1).replace('augmentations: { hflip: { p: 0.5 }, vflip: { p: 0.5 } }', 'augmentations: {}'));
      await page.dispatchEvent('#config', 'input');
      await page.click('#train');
      await page.waitForFunction(() => ['done', 'error'].includes((window as any).semsegTrain.state), null, { timeout: 300_000 });
      const s = await state(page);
      assert.equal(s.error, null);
      assert.ok(s.losses.length === 1 && s.losses.every(Number.isFinite), String(s.losses));
      t.diagnostic(`webgpu (SwiftShader): losses ${s.losses.map((l) => l.toFixed(4)).join(' ')}, ${s.msPerStep?.toFixed(0)} ms/step`);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });
});
