// Static parts of report.html: stylesheet, chart-drawing script, and Chart.js's
// browser bundle, all inlined so the page opens from disk with no network.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { runIfMain, SelfTest } from '../utils/self_test';

let chartJsCache: string | null = null;

/** Chart.js's UMD bundle, safe to put inside a <script> element. */
export function chartJsSource(): string {
  if (chartJsCache !== null) return chartJsCache;
  let main: string;
  try {
    main = require.resolve('chart.js'); // dist/chart.cjs; the UMD file sits beside it (not in "exports")
  } catch {
    throw new Error('report: the chart.js package is missing; run `npm install`');
  }
  const src = fs.readFileSync(path.join(path.dirname(main), 'chart.umd.js'), 'utf8');
  chartJsCache = src
    .replace(/\n\/\/# sourceMappingURL=.*\s*$/, '\n') // the .map is not shipped next to the report
    .replace(/<\/script/gi, '<\\/script');
  return chartJsCache;
}

// Plain ES5-ish browser code (kept as a string: tsx/esbuild rewrites functions,
// so Function#toString of TS code is not safe to ship). It reads the JSON block
// #report-data and draws one Chart.js line chart per <canvas data-chart=...>.
export const CLIENT_JS = String.raw`(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563'];
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return '\u2014';
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(+v.toFixed(3));
  }
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = '#374151';
  Chart.defaults.animation = false;
  data.charts.forEach(function (spec) {
    var canvas = document.querySelector('canvas[data-chart="' + spec.id + '"]');
    if (!canvas) return;
    var datasets = spec.series.map(function (s, i) {
      var c = COLORS[i % COLORS.length];
      return {
        label: s.label,
        data: s.points.map(function (p) { return { x: p[0], y: p[1] }; }),
        borderColor: c,
        backgroundColor: c,
        borderWidth: 2,
        pointRadius: s.points.length > 60 ? 0 : 3,
        pointHoverRadius: 4,
        spanGaps: true
      };
    });
    var y = {
      type: spec.logY ? 'logarithmic' : 'linear',
      title: { display: true, text: spec.yLabel },
      // Shortest exact form for ticks (0.0005, 1e-7), fixed 3 decimals in tooltips.
      ticks: { callback: function (v) { return String(+Number(v).toPrecision(3)); } },
      grid: { color: '#eef0f3' }
    };
    if (spec.unitRange) { y.suggestedMax = 1; } // the minimum follows the data, so small gains stay visible
    new Chart(canvas, {
      type: 'line',
      data: { datasets: datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: 'nearest', axis: 'x', intersect: false },
        plugins: {
          legend: { position: 'bottom', labels: { boxWidth: 12, boxHeight: 12 } },
          tooltip: { callbacks: {
            title: function (items) { return items.length ? spec.xLabel + ' ' + items[0].parsed.x : ''; },
            label: function (ctx) { return ' ' + ctx.dataset.label + ': ' + fmt(ctx.parsed.y); }
          } }
        },
        scales: {
          x: { type: 'linear', title: { display: true, text: spec.xLabel }, ticks: { precision: 0 }, grid: { color: '#eef0f3' } },
          y: y
        }
      }
    });
  });
})();
`;

export const REPORT_CSS = `
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f6f7f9; --card: #fff; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 20px 48px; }
header h1 { margin: 0 0 2px; font-size: 24px; word-break: break-word; }
.meta { color: var(--muted); margin-bottom: 16px; }
.meta span + span::before { content: "·"; margin: 0 8px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 120px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: none; }
.card .v { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card.headline { border-color: #bfd3fb; background: #f3f7ff; }
section { margin-top: 28px; }
h2 { font-size: 18px; margin: 0 0 12px; }
h2 small { color: var(--muted); font-weight: normal; font-size: 13px; margin-left: 6px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 14px; }
.chart { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px 6px; }
.chart h3 { font-size: 14px; margin: 0 0 6px; }
.chart .box { position: relative; height: 260px; }
.empty { color: var(--muted); font-style: italic; }
table { border-collapse: collapse; background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow: hidden; min-width: 420px; }
th, td { padding: 6px 12px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: #f9fafb; font-weight: 600; font-size: 13px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tfoot td { font-weight: 600; background: #f9fafb; border-bottom: 0; }
.bar { display: inline-block; vertical-align: middle; width: 80px; height: 8px; margin-left: 8px; background: #eef0f3; border-radius: 4px; overflow: hidden; }
.bar i { display: block; height: 100%; width: calc(var(--v) * 100%); background: var(--accent); }
.bar.dice i { background: #16a34a; }
.scroll { overflow-x: auto; }
table.cm td { text-align: right; font-variant-numeric: tabular-nums; min-width: 44px; background: rgba(220, 38, 38, calc(var(--v, 0) * 0.8)); }
table.cm td.diag { background: rgba(37, 99, 235, calc(var(--v, 0) * 0.8)); }
table.cm thead th { font-size: 12px; }
.legend { color: var(--muted); margin: -4px 0 12px; display: flex; flex-wrap: wrap; gap: 6px 16px; align-items: center; }
.sw { display: inline-block; width: 12px; height: 12px; border-radius: 2px; border: 1px solid rgba(0,0,0,.2); vertical-align: -2px; margin-right: 5px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
.gallery.wide { grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
figure img { display: block; width: 100%; height: auto; image-rendering: pixelated; background: #000; }
figcaption { padding: 6px 10px; font-size: 12px; }
figcaption .id { font-weight: 600; word-break: break-all; }
figcaption .rank { color: var(--muted); margin-right: 4px; }
figcaption .scores { font-variant-numeric: tabular-nums; color: var(--muted); }
details { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
summary { cursor: pointer; font-weight: 600; }
pre { margin: 10px 0 0; font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-x: auto; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
`;

export const selfTest: SelfTest = {
  'chart.js bundle loads and is script-safe'() {
    const src = chartJsSource();
    assert.ok(src.length > 50_000);
    assert.doesNotMatch(src, /<\/script/i);
    assert.doesNotMatch(src, /sourceMappingURL/);
  },
  'client script parses'() {
    assert.doesNotThrow(() => new vm.Script(CLIENT_JS));
  },
};

runIfMain(module, selfTest);
