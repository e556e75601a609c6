// Writes results/<run>/report.html: one self-contained page (inline CSS, JS and
// Chart.js) with curves, per-class table, worst-first overlay gallery and config.
// Chart.js rather than hand-drawn SVG: it brings axes, legends, tooltips and log
// scales for ~200 kB inlined, and is a well-kept package.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yaml from 'js-yaml';
import { chartJsSource, CLIENT_JS, REPORT_CSS } from './assets';
import { BOTH_COLOR, GT_COLOR, PRED_COLOR, RGB, vocPalette } from './overlay';
import { formatDuration } from '../utils/duration';
import { runIfMain, SelfTest } from '../utils/self_test';
import type { HistoryRow } from '../storage/history';
import { writeFileReplacing } from '../utils/file_out';

export type { HistoryRow };

export interface GalleryItem {
  id: string;
  /** Path relative to the report's folder (an absolute path is made relative). */
  image: string;
  dice: number;
  iou: number;
}

export interface ReportData {
  runName: string;
  createdAt: string;
  /** Resolved config, shown as YAML. */
  config: unknown;
  history: HistoryRow[];
  classNames: string[];
  /** Two classes scored by foreground Dice/IoU (contour overlays), else multi-class. */
  binary: boolean;
  /** Headline numbers, e.g. mIoU, mDice, pixel_acc; for binary runs the foreground dice and iou. */
  summary: Record<string, number>;
  perClass: { name: string; iou: number; dice: number; acc?: number }[];
  /** Pixels: row = ground-truth class, column = predicted class. */
  confusion?: number[][];
  gallery: GalleryItem[];
  backend?: string;
  trainSeconds?: number;
  /** How the figures were scored, e.g. "split val (400 images) · at label resolution · TTA hflip". */
  scoring?: string;
  /** Class colours used in the overlays, for the legend. */
  palette: RGB[];
}

export interface ChartSeries {
  label: string;
  points: [number, number][];
}

export interface ChartSpec {
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  logY?: boolean;
  /** Values are scores in [0, 1]: show the full range. */
  unitRange?: boolean;
  series: ChartSeries[];
}

// Binary runs lead with foreground scores: background inflates the class means.
const HEADLINE_BINARY = ['dice', 'iou', 'thresholded_jaccard', 'mIoU', 'pixel_acc'];
const HEADLINE_MULTI = ['mIoU', 'mDice', 'pixel_acc'];
const CURVE_METRICS = ['dice', 'iou', 'thresholded_jaccard', 'mIoU', 'mDice', 'pixel_acc'];
const NOT_METRICS = new Set(['epoch', 'step', 'split', 'loss', 'lr']);

export function escapeHtml(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** 3 decimals for scores; scientific for tiny/huge values (learning rates); a dash for NaN. */
export function fmt(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : v.toFixed(3);
}

const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const byX = (a: [number, number], b: [number, number]) => a[0] - b[0];

/** The three curve charts; a chart with no points has no series. */
export function chartSpecs(history: HistoryRow[]): ChartSpec[] {
  const train = history.filter((r) => r.split === 'train');
  const val = history.filter((r) => r.split === 'val');
  const loss: ChartSeries[] = [
    { label: 'train loss', points: train.filter((r) => num(r.loss)).map((r) => [r.step, r.loss!] as [number, number]).sort(byX) },
    { label: 'val loss', points: val.filter((r) => num(r.loss)).map((r) => [r.step, r.loss!] as [number, number]).sort(byX) },
  ].filter((s) => s.points.length > 0);

  const keys: string[] = [];
  for (const r of val) for (const k of Object.keys(r)) if (!NOT_METRICS.has(k) && num(r[k]) && !keys.includes(k)) keys.push(k);
  // A readable chart shows the headline scores only, when the history has them.
  const headline = keys.filter((k) => CURVE_METRICS.includes(k));
  if (headline.length) keys.splice(0, keys.length, ...headline);
  // A run stopped mid-epoch by training.time_limit validates at a fractional epoch: x = step /
  // steps per epoch, the latter read off whole-epoch rows (step/epoch is smallest there).
  const spe = Math.min(...val.filter((r) => r.epoch > 0 && num(r.step)).map((r) => r.step / r.epoch));
  const epochOf = (r: HistoryRow) => (Number.isFinite(spe) && spe > 0 ? Math.round((r.step / spe) * 100) / 100 : r.epoch);
  const metrics: ChartSeries[] = keys.map((k) => ({
    label: k,
    points: val.filter((r) => num(r[k])).map((r) => [epochOf(r), r[k] as number] as [number, number]).sort(byX),
  }));
  const allUnit = metrics.every((s) => s.points.every(([, y]) => y >= 0 && y <= 1));

  const lrPts = train.filter((r) => num(r.lr)).map((r) => [r.step, r.lr!] as [number, number]).sort(byX);
  const lrs = lrPts.map(([, y]) => y);
  // Log scale only when the schedule spans two decades and never reaches 0.
  const logLr = lrs.length > 0 && Math.min(...lrs) > 0 && Math.max(...lrs) / Math.min(...lrs) >= 100;

  return [
    { id: 'loss', title: 'Loss', xLabel: 'step', yLabel: 'loss', series: loss },
    { id: 'val-metrics', title: 'Validation metrics', xLabel: 'epoch', yLabel: 'score', unitRange: allUnit, series: metrics },
    { id: 'lr', title: 'Learning rate', xLabel: 'step', yLabel: 'learning rate', logY: logLr, series: lrPts.length ? [{ label: 'lr', points: lrPts }] : [] },
  ];
}

/** Worst first: lowest Dice, ties by lowest IoU; images without a score go last. */
export function sortWorstFirst<T extends { dice: number; iou: number }>(items: T[]): T[] {
  const key = (v: number) => (Number.isFinite(v) ? v : Infinity);
  return [...items].sort((a, b) => key(a.dice) - key(b.dice) || key(a.iou) - key(b.iou));
}

/** Relative URL for an image path: forward slashes, each segment percent-encoded ('#', '?', spaces). */
export function imageUrl(dir: string, image: string): string {
  const rel = path.isAbsolute(image) ? path.relative(dir, image) : image;
  return rel.split(/[\\/]/).map((seg) => (seg === '.' || seg === '..' ? seg : encodeURIComponent(seg))).join('/');
}

const swatch = (c: RGB) => `<i class="sw" style="background:rgb(${c.map((v) => Math.round(v)).join(',')})"></i>`;

function headlineKeys(d: ReportData): string[] {
  return (d.binary ? HEADLINE_BINARY : HEADLINE_MULTI).filter((k) => num(d.summary[k])).slice(0, 3);
}

function renderHeader(d: ReportData): string {
  const head = headlineKeys(d);
  const rest = Object.keys(d.summary).filter((k) => !head.includes(k));
  const card = (k: string, cls: string) =>
    `<div class="card${cls}"><div class="k">${escapeHtml(k)}</div><div class="v">${fmt(d.summary[k])}</div></div>`;
  const meta = [
    `<span>created ${escapeHtml(d.createdAt)}</span>`,
    d.backend ? `<span>backend ${escapeHtml(d.backend)}</span>` : '',
    num(d.trainSeconds) ? `<span>training ${formatDuration(d.trainSeconds)}</span>` : '',
    `<span>${d.classNames.length} classes</span>`,
    d.scoring ? `<span>scored: ${escapeHtml(d.scoring)}</span>` : '',
  ].join('');
  return `<header>
<h1>${escapeHtml(d.runName)}</h1>
<div class="meta">${meta}</div>
<div class="cards">${head.map((k) => card(k, ' headline')).join('')}${rest.map((k) => card(k, '')).join('')}</div>
</header>`;
}

function renderCharts(specs: ChartSpec[]): string {
  const boxes = specs.map((s) => {
    const body = s.series.length
      ? `<div class="box"><canvas data-chart="${escapeHtml(s.id)}" role="img" aria-label="${escapeHtml(s.title)}"></canvas></div>`
      : `<p class="empty">No data recorded.</p>`;
    return `<div class="chart"><h3>${escapeHtml(s.title)}</h3>${body}</div>`;
  });
  return `<section id="curves"><h2>Training curves</h2><div class="charts">${boxes.join('')}</div></section>`;
}

function renderClassTable(d: ReportData): string {
  if (!d.perClass.length) return `<section id="classes"><h2>Per-class metrics</h2><p class="empty">No per-class metrics.</p></section>`;
  const hasAcc = d.perClass.some((c) => c.acc !== undefined);
  const bar = (v: number, cls: string) =>
    Number.isFinite(v) ? `<span class="bar ${cls}"><i style="--v:${Math.min(1, Math.max(0, v))}"></i></span>` : '';
  const rows = d.perClass.map(
    (c) =>
      `<tr><td>${escapeHtml(c.name)}</td><td class="num">${fmt(c.iou)}${bar(c.iou, 'iou')}</td><td class="num">${fmt(c.dice)}${bar(c.dice, 'dice')}</td>${
        hasAcc ? `<td class="num">${fmt(c.acc)}</td>` : ''
      }</tr>`,
  );
  // Mean over classes that have a value (absent classes give NaN).
  const mean = (vals: (number | undefined)[]) => {
    const f = vals.filter(num);
    return f.length ? f.reduce((a, b) => a + b, 0) / f.length : NaN;
  };
  const foot = `<tr><td>mean</td><td class="num">${fmt(mean(d.perClass.map((c) => c.iou)))}</td><td class="num">${fmt(mean(d.perClass.map((c) => c.dice)))}</td>${
    hasAcc ? `<td class="num">${fmt(mean(d.perClass.map((c) => c.acc)))}</td>` : ''
  }</tr>`;
  return `<section id="classes"><h2>Per-class metrics</h2>
<table><thead><tr><th>class</th><th>IoU</th><th>Dice</th>${hasAcc ? '<th>accuracy</th>' : ''}</tr></thead>
<tbody>${rows.join('\n')}</tbody><tfoot>${foot}</tfoot></table></section>`;
}

/** Where each class's pixels went: every row scaled to its own total, so small classes read as clearly as large ones. */
function renderConfusion(d: ReportData): string {
  if (!d.confusion?.length) return '';
  const names = d.classNames;
  const head = names.map((n) => `<th>${escapeHtml(n)}</th>`).join('');
  const rows = d.confusion.map((row, g) => {
    const total = row.reduce((a, b) => a + b, 0);
    const cells = row.map((v, p) => {
      if (!total) return '<td>—</td>';
      const f = v / total;
      return `<td${p === g ? ' class="diag"' : ''} style="--v:${f.toFixed(3)}">${f >= 0.0005 ? (100 * f).toFixed(1) : ''}</td>`;
    });
    return `<tr><th>${escapeHtml(names[g] ?? String(g))}</th>${cells.join('')}</tr>`;
  });
  return `<section id="confusion"><h2>Confusion<small>% of each ground-truth class (row) predicted as each class (column); the diagonal is the class's accuracy</small></h2>
<div class="scroll"><table class="cm"><thead><tr><th>truth ↓ prediction →</th>${head}</tr></thead>
<tbody>${rows.join('\n')}</tbody></table></div></section>`;
}

function renderGallery(dir: string, d: ReportData): string {
  const binary = d.binary;
  let legend: string;
  if (binary) {
    legend = `<span>${swatch(PRED_COLOR)}prediction</span><span>${swatch(GT_COLOR)}ground truth</span><span>${swatch(BOTH_COLOR)}both</span>`;
  } else {
    const pal = d.palette;
    legend =
      `<span>left: prediction, right: ground truth (grey = ignored)</span>` +
      d.classNames.map((n, i) => `<span>${swatch(pal[i] ?? vocPalette(i + 1)[i])}${escapeHtml(n)}</span>`).join('');
  }
  const items = sortWorstFirst(d.gallery).map(
    (g, i) => `<figure data-id="${escapeHtml(g.id)}" data-dice="${g.dice}" data-iou="${g.iou}">
<a href="${escapeHtml(imageUrl(dir, g.image))}" target="_blank"><img src="${escapeHtml(imageUrl(dir, g.image))}" alt="${escapeHtml(g.id)}"></a>
<figcaption><span class="rank">#${i + 1}</span><span class="id">${escapeHtml(g.id)}</span><br><span class="scores">Dice ${fmt(g.dice)} · IoU ${fmt(g.iou)}</span></figcaption></figure>`,
  );
  const body = items.length
    ? `<div class="legend">${legend}</div><div class="gallery${binary ? '' : ' wide'}">${items.join('\n')}</div>`
    : `<p class="empty">No validation overlays were saved (see results.save_predictions and results.gallery_size).</p>`;
  return `<section id="gallery"><h2>Validation gallery<small>worst first, by per-image Dice then IoU</small></h2>${body}</section>`;
}

function renderConfig(config: unknown): string {
  let text: string;
  try {
    text = yaml.dump(config ?? {}, { lineWidth: 120, noRefs: true, skipInvalid: true });
  } catch {
    text = JSON.stringify(config, null, 2) ?? '';
  }
  return `<section id="config"><details><summary>Resolved config</summary><pre>${escapeHtml(text)}</pre></details></section>`;
}

/** JSON for a <script type="application/json"> block: no '<' can close it early. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

const sha256 = (s: string) => `'sha256-${crypto.createHash('sha256').update(s, 'utf8').digest('base64')}'`;

export function renderReport(dir: string, d: ReportData): string {
  const specs = chartSpecs(d.history);
  const head = headlineKeys(d);
  const title = `${d.runName}${head.length ? ' — ' + head.map((k) => `${k} ${fmt(d.summary[k])}`).join(' · ') : ''}`;
  const chartJs = chartJsSource();
  // Only our two scripts may run (by hash), and nothing may be fetched but local
  // images: defence in depth should any text slip past escaping.
  const csp = `default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src ${sha256(chartJs)} ${sha256(CLIENT_JS)}`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${escapeHtml(csp)}">
<title>${escapeHtml(title)}</title>
<style>${REPORT_CSS}</style>
</head>
<body>
<main>
${renderHeader(d)}
${renderCharts(specs)}
${renderClassTable(d)}
${renderConfusion(d)}
${renderGallery(dir, d)}
${renderConfig(d.config)}
<footer>Generated by tfjs-semseg · ${escapeHtml(d.createdAt)}</footer>
</main>
<script type="application/json" id="report-data">${scriptJson({ charts: specs.filter((s) => s.series.length) })}</script>
<script>${chartJs}</script>
<script>${CLIENT_JS}</script>
</body>
</html>
`;
}

/** Writes dir/report.html (creating dir) and returns its path. */
export function writeReport(dir: string, data: ReportData): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'report.html');
  writeFileReplacing(file, renderReport(dir, data));
  return file;
}

const fixtures = () => import('./fixture_data');

export const selfTest: SelfTest = {
  'gallery is sorted worst first, ties by IoU'() {
    const s = sortWorstFirst([
      { id: 'a', dice: 0.9, iou: 0.8 },
      { id: 'b', dice: 0.2, iou: 0.5 },
      { id: 'c', dice: NaN, iou: NaN },
      { id: 'd', dice: 0.2, iou: 0.1 },
    ]);
    assert.deepEqual(s.map((x) => x.id), ['d', 'b', 'a', 'c']);
  },
  async 'chart specs from history'() {
    const { fixtureReportData } = await fixtures();
    const [loss, val, lr] = chartSpecs(fixtureReportData().history);
    assert.deepEqual(loss.series.map((s) => s.label), ['train loss', 'val loss']);
    assert.equal(loss.series[0].points.length, 20);
    assert.deepEqual(val.series.map((s) => s.label), ['mIoU', 'mDice', 'pixel_acc']);
    assert.equal(val.unitRange, true);
    assert.equal(lr.series[0].points.length, 20);
    assert.deepEqual(chartSpecs([]).map((c) => c.series.length), [0, 0, 0]);
  },
  'a validation after a cut-short epoch plots at its fractional epoch'() {
    const rows = [
      { epoch: 1, step: 40, split: 'val' as const, mIoU: 0.5 },
      { epoch: 2, step: 80, split: 'val' as const, mIoU: 0.6 },
      { epoch: 2, step: 100, split: 'val' as const, mIoU: 0.65 }, // time limit half-way through epoch 3
    ];
    const val = chartSpecs(rows)[1];
    assert.deepEqual(val.series[0].points, [[1, 0.5], [2, 0.6], [2.5, 0.65]]);
  },
  async 'text is escaped and the page is self-contained'() {
    const { fixtureReportData } = await fixtures();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'report-self-'));
    try {
      const file = writeReport(dir, fixtureReportData([{ id: '<img src=x onerror=alert(1)>', image: path.join(dir, 'overlays', 'a #1.png'), dice: 0.5, iou: 0.3 }]));
      const html = fs.readFileSync(file, 'utf8');
      assert.ok(!html.includes('<img src=x'));
      assert.ok(!html.includes('lesion <b>'));
      assert.ok(!html.includes('</pre><b>'));
      assert.ok(html.includes('src="overlays/a%20%231.png"'));
      assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
      assert.match(html, /<title>unet-&lt;lesion&gt; — dice 0\.850 · iou 0\.740 · mIoU 0\.851<\/title>/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};

runIfMain(module, selfTest);
