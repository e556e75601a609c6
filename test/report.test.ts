// Renders fixture reports in headless Chromium (from disk, no server) and checks
// what a person would see: charts drawn, images loaded, worst-first gallery, table.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, Browser, Page } from 'playwright-core';
import { overlayPng, vocPalette } from '../report/overlay';
import { GalleryItem, ReportData, writeReport } from '../report/page';
import { fixtureReportData } from '../report/fixture_data';

// Overridable only so the missing-browser paths can be tried without uninstalling it.
const CHROMIUM = process.env.REPORT_TEST_CHROMIUM ?? '/usr/bin/chromium';
const HAVE_CHROMIUM = fs.existsSync(CHROMIUM);
// Locally a missing browser is a visible skip; in CI it must fail, not pass silently.
const skip = !HAVE_CHROMIUM && !process.env.CI ? 'chromium not installed: apt-get install -y chromium' : false;

function requireChromium(): void {
  assert.ok(HAVE_CHROMIUM, `chromium not installed at ${CHROMIUM}: apt-get install -y chromium (required when CI is set)`);
}

const W = 48;
const H = 40;

function disc(cx: number, cy: number, r: number, value = 1): Uint8Array {
  const m = new Uint8Array(W * H);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if ((x - cx) ** 2 + (y - cy) ** 2 <= r * r) m[y * W + x] = value;
  return m;
}

function image(): Uint8Array {
  const img = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) img.set([60 + x * 3, 70 + y * 3, 120], (y * W + x) * 3);
  }
  return img;
}

function scores(pred: Uint8Array, gt: Uint8Array): { dice: number; iou: number } {
  let inter = 0;
  let p = 0;
  let g = 0;
  for (let i = 0; i < pred.length; i++) {
    p += pred[i];
    g += gt[i];
    inter += pred[i] & gt[i];
  }
  return { dice: p + g ? (2 * inter) / (p + g) : 1, iou: p + g - inter ? inter / (p + g - inter) : 1 };
}

// Not VOC's colours: the legend must show the dataset's own palette, as the overlays do.
const MULTI_PALETTE: [number, number, number][] = [[128, 128, 128], [60, 40, 222], [192, 192, 128]];

/** Binary fixture: predictions shifted by growing amounts; ids with characters that need escaping. */
async function binaryGallery(dir: string): Promise<GalleryItem[]> {
  fs.mkdirSync(path.join(dir, 'overlays'), { recursive: true });
  const gt = disc(24, 20, 10);
  const cases: [string, Uint8Array][] = [
    ['good', disc(25, 20, 10)],
    ['case <3> & "q"', disc(32, 22, 9)],
    ['missed #7', new Uint8Array(W * H)],
    ['shifted', disc(29, 20, 10)],
  ];
  const out: GalleryItem[] = [];
  for (const [id, pred] of cases) {
    const file = `overlays/${id}.png`;
    fs.writeFileSync(path.join(dir, file), await overlayPng(image(), W, H, pred, gt, { binary: true, palette: vocPalette(2), ignoreIndex: 255 }));
    out.push({ id, image: file, ...scores(pred, gt) });
  }
  return out;
}

async function multiclassData(dir: string): Promise<ReportData> {
  fs.mkdirSync(path.join(dir, 'overlays'), { recursive: true });
  const gt = disc(15, 15, 8, 1);
  const d2 = disc(34, 24, 9, 2);
  for (let i = 0; i < gt.length; i++) if (d2[i]) gt[i] = 2;
  gt.fill(255, 0, W); // an ignored top row
  const gallery: GalleryItem[] = [];
  for (const [id, shift] of [['mc-a', 0], ['mc-b', 3]] as const) {
    const pred = disc(15 + shift, 15, 8, 1);
    const p2 = disc(34, 24 - shift, 9, 2);
    for (let i = 0; i < pred.length; i++) if (p2[i]) pred[i] = 2;
    const file = path.join(dir, 'overlays', `${id}.png`); // absolute: the report makes it relative
    fs.writeFileSync(file, await overlayPng(image(), W, H, pred, gt, { binary: false, palette: MULTI_PALETTE, ignoreIndex: 255 }));
    gallery.push({ id, image: file, dice: 0.9 - shift * 0.1, iou: 0.8 - shift * 0.1 });
  }
  const base = fixtureReportData(gallery);
  return {
    ...base,
    runName: 'multiclass',
    summary: { mIoU: 0.835, mDice: 0.902, pixel_acc: 0.96 },
    classNames: ['background', 'disc', 'blob'],
    binary: false,
    palette: MULTI_PALETTE,
    perClass: [
      { name: 'background', iou: 0.97, dice: 0.985 },
      { name: 'disc', iou: 0.7, dice: 0.82 },
      { name: 'blob', iou: NaN, dice: NaN },
    ],
    // background: 90 right, 10 read as disc; disc: 3 of 4 right; blob: no pixels.
    confusion: [[90, 10, 0], [1, 3, 0], [0, 0, 0]],
  };
}

interface PageProblems {
  errors: string[];
  external: string[];
}

async function open(browser: Browser, file: string): Promise<{ page: Page; problems: PageProblems }> {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const problems: PageProblems = { errors: [], external: [] };
  page.on('console', (m) => {
    if (m.type() === 'error') problems.errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.errors.push(`page: ${e.message}`));
  page.on('requestfailed', (r) => problems.errors.push(`request failed: ${r.url()}`));
  page.on('request', (r) => {
    if (!/^(file|data):/.test(r.url())) problems.external.push(r.url());
  });
  await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
  return { page, problems };
}

async function chartStats(page: Page) {
  return page.$$eval('canvas[data-chart]', (canvases) =>
    (canvases as HTMLCanvasElement[]).map((c) => {
      const ctx = c.getContext('2d')!;
      const px = ctx.getImageData(0, 0, c.width, c.height).data;
      let painted = 0;
      for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted++;
      const r = c.getBoundingClientRect();
      return { id: c.dataset.chart, w: r.width, h: r.height, painted, total: px.length / 4 };
    }),
  );
}

async function galleryStats(page: Page) {
  return page.$$eval('#gallery figure', (figs) =>
    (figs as HTMLElement[]).map((f) => {
      const img = f.querySelector('img')!;
      return { id: f.dataset.id!, dice: Number(f.dataset.dice), iou: Number(f.dataset.iou), loaded: img.complete && img.naturalWidth > 0, nw: img.naturalWidth, caption: f.querySelector('figcaption')!.textContent! };
    }),
  );
}

describe('report.html in headless Chromium', () => {
  let browser: Browser;
  let tmp: string;

  before(async () => {
    if (!HAVE_CHROMIUM) return; // each test then skips (locally) or fails (CI)
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'report-test-'));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    await browser?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('binary report renders charts, gallery (worst first) and class table', { skip }, async () => {
    requireChromium();
    const dir = path.join(tmp, 'binary');
    const gallery = await binaryGallery(dir);
    const data = fixtureReportData(gallery);
    const file = writeReport(dir, data);
    assert.equal(file, path.join(dir, 'report.html'));
    const { page, problems } = await open(browser, file);

    assert.deepEqual(problems.errors, []);
    assert.deepEqual(problems.external, []);
    assert.equal(await page.title(), 'unet-<lesion> — dice 0.850 · iou 0.740 · mIoU 0.851');

    const charts = await chartStats(page);
    assert.deepEqual(charts.map((c) => c.id), ['loss', 'val-metrics', 'lr']);
    for (const c of charts) {
      assert.ok(c.w > 100 && c.h > 100, `${c.id} has size ${c.w}x${c.h}`);
      assert.ok(c.painted > c.total * 0.01, `${c.id} drew only ${c.painted} of ${c.total} pixels`);
    }

    const figs = await galleryStats(page);
    assert.equal(figs.length, gallery.length);
    for (const f of figs) assert.ok(f.loaded, `gallery image for ${f.id} did not load`);
    assert.equal(figs[0].nw, W);
    assert.deepEqual(figs.map((f) => f.id), ['missed #7', 'case <3> & "q"', 'shifted', 'good']);
    for (let i = 1; i < figs.length; i++) {
      const [a, b] = [figs[i - 1], figs[i]];
      assert.ok(a.dice < b.dice || (a.dice === b.dice && a.iou <= b.iou), `gallery out of order at ${i}`);
    }
    assert.match(figs[0].caption, /Dice 0\.000 · IoU 0\.000/);

    assert.equal(await page.locator('#classes tbody tr').count(), data.classNames.length);
    assert.equal(await page.locator('#classes tbody tr').nth(1).locator('td').first().textContent(), 'lesion <b>');
    // Injected markup stays text: no <b> element came from class names or the config.
    assert.equal(await page.locator('main b').count(), 0);
    assert.match((await page.locator('#config pre').textContent())!, /note: <\/pre><b>x<\/b>/);

    if (process.env.REPORT_SCREENSHOT) await page.screenshot({ path: process.env.REPORT_SCREENSHOT, fullPage: true });
    await page.close();
  });

  test('multi-class report: side-by-side panels, empty history charts say so', { skip }, async () => {
    requireChromium();
    const dir = path.join(tmp, 'multi');
    const data = await multiclassData(dir);
    const file = writeReport(dir, { ...data, history: data.history.filter((r) => r.split === 'val') });
    const { page, problems } = await open(browser, file);
    assert.deepEqual(problems.errors, []);
    assert.deepEqual(problems.external, []);

    const charts = await chartStats(page);
    assert.deepEqual(charts.map((c) => c.id), ['loss', 'val-metrics']); // val loss only; no lr rows
    for (const c of charts) assert.ok(c.painted > 0, `${c.id} is blank`);
    assert.equal(await page.locator('#curves .empty').count(), 1);

    const figs = await galleryStats(page);
    assert.deepEqual(figs.map((f) => f.id), ['mc-b', 'mc-a']);
    for (const f of figs) {
      assert.ok(f.loaded, `gallery image for ${f.id} did not load`);
      assert.ok(f.nw > 2 * W, 'pred | gt panels side by side');
    }
    assert.equal(await page.locator('#classes tbody tr').count(), 3);
    assert.match((await page.locator('#classes tbody tr').nth(2).textContent())!, /—/);
    // The confusion table: each row as % of its own pixels, shaded by that share.
    const cm = await page.locator('#confusion tbody tr').evaluateAll((rows) => rows.map((r) => Array.from(r.querySelectorAll('td')).map((td) => [td.textContent, getComputedStyle(td).backgroundColor])));
    assert.deepEqual(cm.map((r) => r.map(([t]) => t)), [['90.0', '10.0', ''], ['25.0', '75.0', ''], ['—', '—', '—']]);
    assert.equal(cm[0][0][1], 'rgba(37, 99, 235, 0.72)', 'the diagonal in blue at 0.8 x its share');
    assert.equal(cm[0][1][1], 'rgba(220, 38, 38, 0.08)', 'a confusion in red');
    const swatches = await page.locator('.legend .sw').evaluateAll((els) => els.map((e) => getComputedStyle(e).backgroundColor));
    assert.deepEqual(swatches, MULTI_PALETTE.map((c) => `rgb(${c.join(', ')})`));
    if (process.env.REPORT_SCREENSHOT) await page.screenshot({ path: process.env.REPORT_SCREENSHOT.replace(/\.png$/, '-multi.png'), fullPage: true });
    await page.close();
  });
});
