// `npx export`: a checkpoint as a standard TF.js LayersModel (model.json + shards) that
// stock tfjs loads (browser, Node, tensorflowjs_converter), with the preprocessing and
// label facts a consumer needs in userDefinedMetadata.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '../backends/tf';
import { loadWeightsFrom } from '../engine/model_io';
import { applyWeights } from '../storage/checkpoint';
import { MARKER, publishDir } from '../storage/atomic_dir';
import { getModel } from '../models/registry';
import type { Resolved } from '../config/resolve';
import { portableModel } from '../engine/portable';
import { Config, isBinary, outChannels } from '../utils/config';
import { UserError } from '../utils/errors';
import { datasetMeta, ResolvedDataset } from '../loaders/registry';
import type { Rgb } from '../utils/dataset_utils';
import { runIfMain, SelfTest } from '../utils/self_test';
import { modelFiles, Quantization, QUANTIZATIONS, quantizeWeights } from '../storage/model_files';
import { packageInfo, webAppFiles } from './web_app';

/** Marks an export's model.json, so that a later export may replace the folder (and nothing else). */
export const EXPORT_FORMAT = 'tfjs-semseg-export/1';

export interface ExportMetadata {
  format: typeof EXPORT_FORMAT;
  project: string;
  project_version: string;
  run: string;
  model: string;
  /** The resolved `model:` section, so evaluate/predict of the export build the same network. */
  model_config: Record<string, unknown>;
  checkpoint: { source: string; epoch: number | null; step: number | null; best_metric_name: string | null; best_metric: number | null };
  /**
   * After stretching the image to size (h, w): x = (rgb * scale - mean) / std per channel
   * when normalize is 'dataset'; x = (rgb - m) / max(s, 1) when 'image', with m and s the
   * mean and standard deviation over all of the image's values (0..255).
   */
  input: { size: [number, number]; channels: number; layout: 'NHWC'; resize: string; normalize: 'dataset' | 'image'; scale: number; mean: number[]; std: number[] };
  output: { channels: number; activation: 'sigmoid' | 'softmax'; decision: 'threshold' | 'argmax'; threshold: number | null; resize_back: string };
  num_classes: number;
  class_names: string[];
  palette: Rgb[];
  ignore_index: number;
  postprocess: { name: string | null; applied_by_predict: boolean };
  quantization: Quantization | null;
}

/**
 * Dataset facts (names, palette, post-processing) for the config. The only call into
 * utils/dataset_utils from deploy/: the one line to adapt when that becomes a registry.
 */
export function datasetMetaFor(cfg: Config, dataset?: ResolvedDataset): { classNames: string[]; palette: Rgb[]; postprocess: string | null } {
  const meta = datasetMeta(cfg, dataset);
  return { classNames: meta.classes, palette: meta.palette, postprocess: meta.postprocess ? meta.postprocessName ?? cfg.data.name : null };
}

/** `dataset`: the run's (config/resolve.ts resolveRun); derived from cfg when absent. */
export function exportMetadata(cfg: Config, source: string, meta: { epoch?: number; step?: number; bestMetricName?: string; bestMetric?: number | null } | null, quantization: Quantization | null, dataset?: ResolvedDataset): ExportMetadata {
  const ds = datasetMetaFor(cfg, dataset);
  const pkg = packageInfo();
  const binary = isBinary(cfg);
  const channels = outChannels(cfg);
  return {
    format: EXPORT_FORMAT,
    project: pkg.name,
    project_version: pkg.version,
    run: cfg.name,
    model: cfg.model.name,
    model_config: { ...cfg.model },
    checkpoint: { source, epoch: meta?.epoch ?? null, step: meta?.step ?? null, best_metric_name: meta?.bestMetricName ?? null, best_metric: meta?.bestMetric ?? null },
    input: {
      size: [...cfg.data.size],
      channels: cfg.model.in_channels,
      layout: 'NHWC',
      resize: 'stretch to size (no aspect kept); training used sharp (libvips) resize',
      normalize: cfg.data.normalize,
      scale: 1 / 255,
      mean: [...cfg.data.mean],
      std: [...cfg.data.std],
    },
    output: {
      channels,
      activation: channels === 1 ? 'sigmoid' : 'softmax',
      decision: binary ? 'threshold' : 'argmax',
      threshold: binary ? cfg.training.threshold : null,
      resize_back: 'probabilities bilinearly to the image size (half-pixel centres), then decide',
    },
    num_classes: cfg.data.num_classes,
    class_names: ds.classNames,
    palette: ds.palette,
    ignore_index: cfg.data.ignore_index,
    postprocess: { name: ds.postprocess, applied_by_predict: cfg.evaluation.postprocess },
    quantization,
  };
}

export function parseQuantization(q: string | undefined): Quantization | null {
  if (q === undefined || q === '' || q === 'none') return null;
  if (!(QUANTIZATIONS as readonly string[]).includes(q)) throw new UserError(`--quantize ${q}: unknown quantisation; expected one of ${QUANTIZATIONS.join(', ')}`);
  return q as Quantization;
}

/** The metadata of an earlier export in `dir`, or null. */
export function readExportMetadata(dir: string): ExportMetadata | null {
  try {
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    return json?.userDefinedMetadata?.format === EXPORT_FORMAT ? json.userDefinedMetadata : null;
  } catch {
    return null;
  }
}

/** The files an earlier export in `dir` wrote: those its complete.json lists, else model.json, its shards and the web app's. */
function exportFiles(dir: string): Set<string> {
  try {
    const marker = JSON.parse(fs.readFileSync(path.join(dir, MARKER), 'utf8'));
    if (marker?.files && typeof marker.files === 'object') return new Set([MARKER, ...Object.keys(marker.files)]);
  } catch {
    // no marker: an export interrupted before sealing, or one copied without it
  }
  const names = new Set(['model.json', ...webAppFiles().map((f) => f.name)]);
  try {
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    for (const group of json?.weightsManifest ?? []) for (const p of group?.paths ?? []) if (typeof p === 'string') names.add(p);
  } catch {
    // readExportMetadata read it a moment ago; a folder changing meanwhile is refused below
  }
  return names;
}

/**
 * Refuses an output folder that exists and is not empty nor exactly an earlier export,
 * so a mistyped --output never replaces unrelated files: a re-export replaces the whole
 * folder, so one other file in it (notes, a page of the user's) would be lost. Returns
 * the names it may replace.
 */
export function checkOutputFolder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  if (!fs.statSync(dir).isDirectory()) throw new UserError(`--output ${dir}: exists and is a file; expected a folder for the export`);
  const names = fs.readdirSync(dir);
  if (names.length === 0) return [];
  if (!readExportMetadata(dir)) throw new UserError(`--output ${dir}: exists and is not an earlier export (no model.json written by npx export); refusing to overwrite it, choose another folder`);
  const own = exportFiles(dir);
  const other = names.filter((n) => !own.has(n));
  if (other.length) {
    throw new UserError(`--output ${dir}: holds an earlier export and also '${other[0]}'${other.length > 1 ? ` (+${other.length - 1} more)` : ''}, which the export did not write; a re-export replaces the whole folder, so move that out or choose another folder`);
  }
  return names;
}

export interface ExportOptions {
  checkpoint: string;
  output: string;
  web?: boolean;
  quantize?: Quantization | null;
}

export interface ExportResult {
  output: string;
  files: { name: string; bytes: number }[];
  /** model.json plus weight shards. */
  modelBytes: number;
}

/** Exports the resolved run's model (config/resolve.ts resolveRun, after useCheckpointDefinition) with the checkpoint's weights. */
export async function exportModel(parts: Resolved, opts: ExportOptions): Promise<ExportResult> {
  const { cfg } = parts;
  const replaceable = checkOutputFolder(opts.output);
  const model = getModel(parts.model);
  const ck = await loadWeightsFrom(opts.checkpoint);
  applyWeights(model, ck.weights, opts.checkpoint);
  const portable = await portableModel(model, cfg.data.size, parts.model.definition);
  model.dispose();
  let artifacts!: tf.io.ModelArtifacts;
  await portable.save(tf.io.withSaveHandler(async (a) => {
    artifacts = a;
    return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a) };
  }));
  portable.dispose();
  const q = opts.quantize ?? null;
  if (q) {
    const r = await quantizeWeights(artifacts.weightData as ArrayBuffer, artifacts.weightSpecs!, q);
    artifacts = { ...artifacts, weightData: r.data, weightSpecs: r.specs };
  }
  artifacts.convertedBy = `${packageInfo().name} ${packageInfo().version} export`;
  const model_ = modelFiles(artifacts, exportMetadata(cfg, opts.checkpoint, ck.meta, q, parts.dataset) as unknown as Record<string, unknown>);
  const files = [...model_, ...(opts.web ? webAppFiles() : [])];
  await publishDir(opts.output, async (w) => {
    for (const f of files) await w.write(f.name, f.data);
  }, replaceable, { what: 'export', setting: '--output' });
  return { output: opts.output, files: files.map((f) => ({ name: f.name, bytes: f.data.length })), modelBytes: model_.reduce((s, f) => s + f.data.length, 0) };
}

export const selfTest: SelfTest = {
  'an unknown quantisation and a foreign output folder are refused'() {
    assert.equal(parseQuantization(undefined), null);
    assert.equal(parseQuantization('float16'), 'float16');
    assert.throws(() => parseQuantization('int4'), (e: Error) => e instanceof UserError && /--quantize int4: unknown quantisation; expected one of uint8, float16/.test(e.message));
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'exp-'));
    assert.deepEqual(checkOutputFolder(dir), []);
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'keep me');
    assert.throws(() => checkOutputFolder(dir), /is not an earlier export/);
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify({ userDefinedMetadata: { format: EXPORT_FORMAT }, weightsManifest: [{ paths: ['group1-shard1of1.bin'] }] }));
    // An earlier export beside the user's notes: replacing the folder would delete them.
    assert.throws(() => checkOutputFolder(dir), (e: Error) => e instanceof UserError && e.message.includes(`holds an earlier export and also 'notes.txt', which the export did not write`));
    fs.rmSync(path.join(dir, 'notes.txt'));
    fs.writeFileSync(path.join(dir, 'group1-shard1of1.bin'), '');
    assert.deepEqual(checkOutputFolder(dir).sort(), ['group1-shard1of1.bin', 'model.json']);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
