// The results folder of a run: final validation with predictions and overlays,
// metrics.json, and report.html (curves, per-class table, confusion, worst-first gallery).
import fs from 'node:fs';
import { UserError } from '../utils/errors';
import path from 'node:path';
import * as tf from '../backends/tf';
import { Config, isBinary } from '../utils/config';
import { evalOptionsFrom, evaluateSplit, EvalResult, RESULTS_FS } from './evaluator';
import type { Flip, Network } from './inference';
import { HistoryRow } from '../storage/history';
import { sortWorstFirst, writeReport } from '../report/page';
import assert from 'node:assert/strict';
import { datasetMeta, listSplit, PairRef, ResolvedDataset } from '../loaders/registry';
import { runIfMain, SelfTest } from '../utils/self_test';
import { runDirs } from './run_dirs';
import { fsUserError, guardFsSync, StoppedBySignal } from '../utils/errors';
import { pidAlive, writeFileReplacing } from '../utils/file_out';
import { catchSignals } from './stop';

export interface ResultsOptions {
  trainSeconds?: number;
  backend?: string;
  quiet?: boolean;
  /** Defaults to the configured training.threshold. */
  threshold?: number;
  split?: string;
  outDir?: string;
  postprocess?: boolean;
  /** Defaults to evaluation.tta. */
  tta?: readonly Flip[];
  /** Names the work in the line a signal prints (default: evaluate). */
  what?: string;
  /** The run's dataset (config/resolve.ts resolveRun); derived from cfg when absent. */
  dataset?: ResolvedDataset;
}

/**
 * evaluate --output: an absent or empty folder, or one holding an earlier evaluation
 * (its metrics.json names a run and split), which is replaced; anything else is refused
 * unless `overwrite`, as export-model does, so a mistyped path replaces no one's files.
 */
export function checkResultsFolder(dir: string, overwrite: boolean): void {
  if (overwrite || !fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) throw new UserError(`--output ${dir}: exists and is a file; expected a folder for the results`);
  const names = fs.readdirSync(dir);
  if (!names.length) return;
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'metrics.json'), 'utf8'));
    if (m && typeof m.run === 'string' && typeof m.split === 'string') return;
  } catch {
    // no earlier evaluation
  }
  throw new UserError(`--output ${dir}: holds files that are not an earlier evaluation (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''}); choose another folder, or pass --overwrite to write over them`);
}

/** What an evaluation writes into its folder: replaced together once all of it is written. */
const EVAL_OUTPUTS = ['overlays', 'predictions', 'metrics.json', 'report.html'];
const STAGE_PREFIX = '.eval-';

/** Staging folders of evaluations killed outright (SIGKILL, a second signal): their pid is gone. */
function removeStaleStages(dir: string): void {
  for (const n of fs.readdirSync(dir)) {
    const m = new RegExp(`^${STAGE_PREFIX.replace('.', '\\.')}(\\d+)-\\w{6}$`).exec(n);
    if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) fs.rmSync(path.join(dir, n), { recursive: true, force: true });
  }
}

/**
 * The evaluation replaces its overlays/ and predictions/ folders whole: refuse (before
 * evaluating) where one holds anything but the PNGs an evaluation writes, so no file of
 * the user's goes with them.
 */
function refuseForeignOutputs(dir: string): void {
  for (const sub of ['overlays', 'predictions']) {
    const d = path.join(dir, sub);
    const st = fs.lstatSync(d, { throwIfNoEntry: false });
    if (!st) continue;
    const other = st.isDirectory() ? fs.readdirSync(d, { withFileTypes: true }).find((e) => !e.name.endsWith('.png') || !(e.isFile() || e.isSymbolicLink())) : null;
    if (!st.isDirectory() && !st.isSymbolicLink()) throw new UserError(`${d}: is a file; the evaluation writes a folder of that name: move it aside`);
    if (other) throw new UserError(`${path.join(d, other.name)}: not an image an evaluation wrote; ${sub}/ is replaced whole by the next evaluation, so move it out or choose another --output`);
  }
}

/**
 * Moves the staged outputs into `dir` in one synchronous run of renames (no signal
 * handler can run between them), the previous ones into `trash` first: `dir` holds the
 * previous evaluation whole, or this one whole. A rename replaces a link itself.
 */
function publishStaged(stage: string, dir: string): void {
  const trash = fs.mkdtempSync(path.join(dir, `${STAGE_PREFIX}${process.pid}-`));
  try {
    for (const n of EVAL_OUTPUTS) if (fs.lstatSync(path.join(dir, n), { throwIfNoEntry: false })) fs.renameSync(path.join(dir, n), path.join(trash, n));
    for (const n of EVAL_OUTPUTS) if (fs.existsSync(path.join(stage, n))) fs.renameSync(path.join(stage, n), path.join(dir, n));
  } finally {
    fs.rmSync(trash, { recursive: true, force: true });
  }
}

export async function writeResults(model: Network, cfg: Config, pairs: PairRef[], history: HistoryRow[], opts: ResultsOptions = {}): Promise<EvalResult> {
  const dir = opts.outDir ?? runDirs(cfg).results;
  const what = opts.what ?? 'evaluate';
  const kept = `${dir} keeps the previous results`;
  // Everything is written into a hidden folder inside `dir` and published when complete:
  // a signal, a full disk or a crash midway leaves the previous results whole.
  const stage = guardFsSync({ ...RESULTS_FS, path: dir }, () => {
    fs.mkdirSync(dir, { recursive: true });
    refuseForeignOutputs(dir);
    removeStaleStages(dir);
    return fs.mkdtempSync(path.join(dir, `${STAGE_PREFIX}${process.pid}-`));
  });
  const ac = new AbortController();
  const release = catchSignals((sig) => ac.abort(sig)); // said in one line when the evaluation has stopped
  try {
    const res = await writeStaged(stage, model, cfg, pairs, history, opts, ac.signal);
    ac.signal.throwIfAborted();
    guardFsSync({ ...RESULTS_FS, kept: `${dir} may hold some of the new results`, path: dir }, () => publishStaged(stage, dir));
    if (!opts.quiet) console.log(res.table);
    return res;
  } catch (err) {
    if (ac.signal.aborted) throw new StoppedBySignal(`${what}: stopped by ${ac.signal.reason}; ${kept}`, String(ac.signal.reason));
    const e = err as NodeJS.ErrnoException;
    if (typeof e?.path === 'string' && e.path.startsWith(stage)) e.path = dir + e.path.slice(stage.length); // name the file as published, not our hidden folder
    throw fsUserError(err, { what: 'results', kept, setting: RESULTS_FS.setting });
  } finally {
    release();
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

async function writeStaged(dir: string, model: Network, cfg: Config, pairs: PairRef[], history: HistoryRow[], opts: ResultsOptions, signal: AbortSignal): Promise<EvalResult> {
  const binary = isBinary(cfg);
  const meta = datasetMeta(cfg, opts.dataset);
  const base = evalOptionsFrom(cfg);
  const threshold = opts.threshold ?? base.threshold;
  const postprocess = opts.postprocess ?? base.postprocess ?? false;
  const tta = opts.tta ?? base.tta ?? [];
  const outDir = cfg.results.save_predictions ? dir : undefined;
  const res = await evaluateSplit(model, cfg, pairs, { ...base, threshold, postprocess, tta, sweep: true, outDir, signal, dataset: opts.dataset });
  const metricsJson = {
    run: cfg.name,
    split: opts.split ?? cfg.data.val_split,
    images: res.images,
    threshold,
    postprocess,
    tta,
    scales: base.scales,
    full_resolution: cfg.evaluation.full_resolution,
    metrics: res.metrics,
    per_class: res.perClass,
    confusion: { rows: 'ground truth', columns: 'prediction', classes: meta.classes, pixels: res.confusion },
    best_threshold: res.bestThreshold,
    threshold_sweep: res.sweep,
    per_image: res.perImage.map(({ id, dice, iou }) => ({ id, dice, iou })),
  };
  const ordered = sortWorstFirst(res.perImage);
  const shown = cfg.results.gallery_size ? ordered.slice(0, cfg.results.gallery_size) : ordered;
  writeFileReplacing(path.join(dir, 'metrics.json'), JSON.stringify(metricsJson, null, 2));
  writeReport(dir, {
    runName: cfg.name,
    createdAt: new Date().toISOString(),
    config: cfg,
    history,
    classNames: meta.classes,
    binary,
    palette: meta.palette,
    summary: { ...res.metrics, ...(binary ? { threshold } : {}) }, // a threshold means nothing for argmax
    perClass: res.perClass,
    confusion: res.confusion,
    gallery: shown.filter((s) => s.overlay).map((s) => ({ id: s.id, image: s.overlay!, dice: s.dice, iou: s.iou })),
    backend: opts.backend,
    trainSeconds: opts.trainSeconds,
    scoring: [
      `${metricsJson.split} split, ${res.images} images`,
      cfg.evaluation.full_resolution ? 'at label resolution' : `at ${cfg.data.size.join('x')}`,
      tta.length ? `TTA ${tta.join('+')}` : 'no TTA',
      ...(base.scales && (base.scales.length > 1 || base.scales[0] !== 1) ? [`scales ${base.scales.join(', ')}`] : []),
      ...(binary ? [`threshold ${threshold}`] : []),
      ...(postprocess ? ['post-processed'] : []),
    ].join(' · '),
  });
  return res;
}

const fixtures = () => import('../loaders/fixtures');

export const selfTest: SelfTest = {
  async 'writes metrics.json (with per-image scores and the threshold sweep), overlays and report.html'() {
    const { fixtureConfig, redChannelModel, tmpDir, writeIsic } = await fixtures();
    const dir = tmpDir('results');
    await writeIsic(path.join(dir, 'isic'), 'Validation', ['ISIC_1', 'ISIC_2'], 16, 12);
    const cfg = fixtureConfig(dir, { data: { name: 'isic', root: path.join(dir, 'isic'), size: [12, 16] } });
    const model = redChannelModel();
    const out = path.join(dir, 'out');
    cfg.evaluation.tta = ['hflip'];
    await writeResults(model, cfg, await listSplit(cfg, 'val'), [{ epoch: 1, step: 2, split: 'val', dice: 0.5 }], { outDir: out, quiet: true });
    const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    assert.equal(m.metrics.dice, 1);
    assert.deepEqual([m.tta, m.full_resolution, m.postprocess], [['hflip'], true, false]);
    assert.equal(m.per_image.length, 2);
    assert.equal(m.threshold_sweep.length, 19);
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.match(html, /overlays\/ISIC_1\.png/);
    assert.match(html, /scored: val split, 2 images · at label resolution · TTA hflip · threshold 0\.5/);
    // overlays/ is replaced whole: a file of the user's there is refused first, and kept.
    fs.writeFileSync(path.join(out, 'overlays', 'notes.txt'), 'mine');
    await assert.rejects(writeResults(model, cfg, await listSplit(cfg, 'val'), [], { outDir: out, quiet: true }), (e: Error) => e instanceof UserError && e.message.startsWith(`${path.join(out, 'overlays', 'notes.txt')}: not an image an evaluation wrote`));
    assert.equal(fs.readFileSync(path.join(out, 'overlays', 'notes.txt'), 'utf8'), 'mine');
    assert.deepEqual(fs.readdirSync(out).filter((n) => n.startsWith('.')), [], 'no staging folder left');
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
  async "the report legend shows the dataset's own colours (CamVid, not VOC)"() {
    const { fixtureConfig, tmpDir, writeCamvid } = await fixtures();
    const dir = tmpDir('results-camvid');
    const root = path.join(dir, 'camvid');
    await writeCamvid(root, 'val', ['f1'], [0, 3, 8], 12, 9);
    const cfg = fixtureConfig(dir, { data: { name: 'camvid', root, num_classes: 11, size: [9, 12] } });
    const constant = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [null, null, 3], filters: 11, kernelSize: 1, kernelInitializer: 'zeros' })] });
    const out = path.join(dir, 'out');
    await writeResults(constant, cfg, await listSplit(cfg, 'val'), [], { outDir: out, quiet: true });
    // The constant model predicts class 0 (Sky) everywhere: each class's pixels all sit in column 0.
    const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    const cm: number[][] = m.confusion.pixels;
    assert.deepEqual([m.confusion.rows, m.confusion.columns, m.confusion.classes.length, cm.length], ['ground truth', 'prediction', 11, 11]);
    assert.ok(cm.every((row) => row.length === 11 && row.slice(1).every((v) => v === 0)), JSON.stringify(cm));
    assert.equal(cm.reduce((a, row) => a + row[0], 0), 12 * 9, 'every pixel counted once');
    assert.deepEqual([0, 3, 8].map((c) => cm[c][0] > 0), [true, true, true], 'the three classes of the mask');
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.match(html, /<tr><th>Road<\/th><td style="--v:1\.000">100\.0<\/td><td style="--v:0\.000"><\/td>/, 'Road row: all predicted as Sky');
    const legend = html.slice(html.indexOf('class="legend"'));
    // Sky, Building, Road in the SegNet colours, named in the legend.
    for (const [name, rgb] of [['Sky', '128,128,128'], ['Building', '128,0,0'], ['Road', '128,64,128']])
      assert.match(legend, new RegExp(`background:rgb\\(${rgb}\\)"></i>${name}<`), name);
    constant.dispose();
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
