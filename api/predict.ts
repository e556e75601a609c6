// loadModel() and predict(): what `npx predict` does, returning each image's mask (class
// ids at the image's own size); files are written only when an output folder is given.
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { Config, isBinary } from '../utils/config';
import { guardFsSync, UserError } from '../utils/errors';
import { clearStaleReplacements } from '../utils/file_out';
import { datasetMeta, ResolvedDataset, resolveDataset } from '../loaders/registry';
import type { Rgb } from '../utils/dataset_utils';
import { defaultCheckpoint, loadNetwork, useCheckpointDefinition } from '../engine/model_io';
import { isRuntime, Network } from '../engine/inference';
import { listImages, outputNames, planOutputs, predictFile, predictMask, PredictOptions } from '../engine/predictor';
import { preflightInference } from '../engine/preflight';
import { resolveRun } from '../config/resolve';
import { runIfMain, SelfTest } from '../utils/self_test';
import { checkArgs, checkOptions, CommonOptions, ConfigSource, libraryCall, logger, OPTION_KINDS as K, prepare, thresholdOpt } from './options';

export interface Mask {
  width: number;
  height: number;
  /** Class id per pixel, row by row (binary problems: 0 background, 1 foreground). */
  classes: Uint8Array;
}

export interface LoadOptions extends CommonOptions {
  /** Checkpoint folder, exported model.json, or exported model.onnx (run on ONNX Runtime: needs the optional onnxruntime-node) (default: <ckpt_root>/<name>/best, else last). */
  checkpoint?: string;
}

export interface SegmentOptions {
  /** Foreground threshold of binary models (default: training.threshold). */
  threshold?: number;
  /** The dataset's post-processing (default: evaluation.postprocess). */
  postprocess?: boolean;
}

/** A trained model with its config: segments image files at their own size. */
export class SegmentationModel {
  readonly classNames: string[];
  readonly palette: Rgb[];
  /** @internal the tfjs model or the ONNX Runtime session (internal: tfjs-layers' declarations are not strict-clean, and would be a consumer's to compile) */
  readonly model: Network;
  /** @internal the run's dataset (config/resolve.ts resolveRun) */
  readonly dataset: ResolvedDataset;
  /** @internal made by loadModel() */
  constructor(model: Network, readonly config: Config, readonly checkpoint: string, dataset: ResolvedDataset = resolveDataset(config)) {
    this.model = model;
    this.dataset = dataset;
    const meta = datasetMeta(config, dataset);
    this.classNames = meta.classes;
    this.palette = meta.palette;
  }

  /** @internal */
  predictOptions(o: SegmentOptions = {}): PredictOptions {
    const e = this.config.evaluation;
    return { threshold: o.threshold ?? this.config.training.threshold, postprocess: o.postprocess ?? e.postprocess, tta: e.tta, scales: e.scales, dataset: this.dataset };
  }

  /** The mask of one image file (JPEG, PNG, ...; EXIF orientation applied). */
  async segment(file: string, o: SegmentOptions = {}): Promise<Mask> {
    if (typeof file !== 'string') throw new UserError(`segment(): the image must be a string path; got ${typeof file}`);
    checkOptions('segment', o, SEGMENT_OPTIONS);
    const { classes, width, height } = await predictMask(this.model, this.config, file, this.predictOptions(o));
    return { classes, width, height };
  }

  dispose(): void {
    this.model.dispose();
  }
}

const SEGMENT_OPTIONS = { threshold: thresholdOpt, postprocess: K.bool };

export async function loadModel(config: ConfigSource, o: LoadOptions = {}): Promise<SegmentationModel> {
  return libraryCall(o, async () => {
    checkArgs('loadModel', config, o, { checkpoint: K.path });
    return load(config, o);
  });
}

async function load(config: ConfigSource, o: LoadOptions): Promise<SegmentationModel> {
  const { cfg, backend } = await prepare(config, o);
  const checkpoint = o.checkpoint ?? defaultCheckpoint(cfg);
  useCheckpointDefinition(cfg, checkpoint); // the network the weights were trained as
  const parts = resolveRun(cfg); // after the checkpoint's definition is adopted
  preflightInference(parts, { backend: backend.name, batch: 1 + cfg.evaluation.tta.length, what: 'prediction' });
  return new SegmentationModel(await loadNetwork(parts, checkpoint), cfg, checkpoint, parts.dataset);
}

export interface PredictApiOptions extends LoadOptions, SegmentOptions {
  /** An image file or a folder of images. */
  input: string;
  /** Write <stem>.png masks, colour masks and overlays here (as `npx predict`); none: masks only. */
  output?: string;
  /** Replace outputs of an earlier prediction in `output`. */
  overwrite?: boolean;
}

export interface Prediction extends Mask {
  file: string;
  /** The files written for it (empty without `output`). */
  written: string[];
}

export async function predict(config: ConfigSource, o: PredictApiOptions): Promise<Prediction[]> {
  return libraryCall(o, () => run(config, o));
}

async function run(config: ConfigSource, o: PredictApiOptions): Promise<Prediction[]> {
  checkArgs('predict', config, o, { checkpoint: K.path, ...SEGMENT_OPTIONS, input: K.path, output: K.path, overwrite: K.bool }, { input: 'an image file or a folder of images' });
  const log = logger(o);
  const files = listImages(o.input);
  if (!files.length) throw new UserError(`--input ${o.input}: no images found (.jpg, .png, ...)`);
  const seg = await load(config, o);
  try {
    const { config: cfg } = seg;
    // Refused before anything is written.
    const plan = o.output ? planOutputs(o.input, files, o.output, isBinary(cfg), o.overwrite) : files.map((file) => ({ file, stem: '' }));
    if (o.output) {
      guardFsSync({ what: 'predictions', kept: 'nothing was written', setting: '--output' }, () => {
        fs.mkdirSync(o.output!, { recursive: true });
        // Half-written outputs of a predict killed mid-write (its temporaries), and only those.
        clearStaleReplacements(o.output!, new Set(plan.flatMap((p) => outputNames(p.stem, isBinary(cfg)))));
      });
    }
    log(`predicting ${files.length} image(s) with ${seg.checkpoint}${isRuntime(seg.model) ? ` (${seg.model.description})` : ''}`);
    const out: Prediction[] = [];
    for (const { file, stem } of plan) {
      if (o.output) {
        const kept = `the ${out.length} prediction(s) before it are complete and no input was changed`;
        const r = await predictFile(seg.model, cfg, file, o.output, seg.predictOptions(o), stem, kept);
        out.push({ file, written: r.written, classes: r.classes, width: r.width, height: r.height });
        log(`${file} -> ${r.written.map((w) => path.basename(w)).join(', ')}`);
      } else {
        out.push({ file, written: [], ...(await seg.segment(file, { threshold: o.threshold, postprocess: o.postprocess })) });
      }
    }
    return out;
  } finally {
    seg.dispose();
  }
}

export const selfTest: SelfTest = {
  async 'an input without images is refused before any model loads'() {
    const os = await import('node:os');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'api-pred-'));
    await assert.rejects(predict({}, { input: dir, quiet: true }), /no images found/);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
