// Prediction for single image files: network at the configured size, logits
// resized back to the image's own size, dataset post-processing, PNG outputs.
// Outputs never land on inputs: an output folder at or inside the input folder (for one
// file: its own folder) is refused, inputs sharing a stem (a.jpg, a.png) get names of
// their own, and a plan whose files would still collide is refused before anything is
// written.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import * as tf from '../backends/tf';
import { decodeImage } from '../pipeline/decode';
import { IMAGE_EXTS, listFiles } from '../loaders/files';
import { normaliseImage } from '../pipeline/batcher';
import assert from 'node:assert/strict';
import { datasetMeta, ResolvedDataset } from '../loaders/registry';
import { Config, isBinary } from '../utils/config';
import { FsContext, guardFsSync, UserError } from '../utils/errors';
import { Flip, Network, networkProbs, probsToMask } from './inference';
import { colorizePng, overlayPng } from '../report/overlay';
import { runIfMain, SelfTest } from '../utils/self_test';
import { writeFileReplacing } from '../utils/file_out';

export function listImages(input: string): string[] {
  if (!fs.existsSync(input)) throw new UserError(`--input ${input}: no such file or folder`);
  if (fs.statSync(input).isFile()) return [input];
  // As the loaders list: links followed, a broken one named, folders (even `x.png/`) skipped.
  return listFiles(input, IMAGE_EXTS).map((f) => path.join(input, f));
}

/** `p` with symlinks resolved as far as it exists (outputs may not exist yet). */
function realish(p: string): string {
  const abs = path.resolve(p);
  let base = abs;
  while (!fs.existsSync(base) && path.dirname(base) !== base) base = path.dirname(base);
  try {
    return path.join(fs.realpathSync(base), path.relative(base, abs));
  } catch {
    return abs;
  }
}

function within(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The files predictFile writes for one input, by output stem. */
export function outputNames(stem: string, binary: boolean): string[] {
  return binary ? [`${stem}.png`, `${stem}_overlay.png`] : [`${stem}.png`, `${stem}_color.png`, `${stem}_overlay.png`];
}

export interface PlannedInput {
  file: string;
  /** Output stem: the input's stem, or its whole name (`a_jpg`) where stems are shared. */
  stem: string;
}

/**
 * Output names for `files` (from --input) in `outDir`; refuses, writing nothing, when
 * `outDir` is at or inside the input folder (a single file: its own folder), two
 * outputs would share a name, or (without `overwrite`) an output file exists already.
 */
export function planOutputs(input: string, files: string[], outDir: string, binary: boolean, overwrite = false): PlannedInput[] {
  const out = realish(outDir);
  const isDir = fs.existsSync(input) && fs.statSync(input).isDirectory();
  const inDir = realish(isDir ? input : path.dirname(input));
  // A folder input's outputs go outside it; a single file's at least not beside it (its mask could replace it or a neighbour).
  if (isDir ? within(out, inDir) : out === inDir) {
    const what = isDir ? `${out === inDir ? 'the' : 'inside the'} --input folder ${input}` : `the folder of --input ${input}`;
    throw new UserError(`--output ${outDir} is ${what}: masks would replace or mix with the input images; choose an output folder outside it`);
  }
  const stemOf = (f: string) => path.basename(f, path.extname(f));
  const key = (f: string) => stemOf(f).toLowerCase(); // case-insensitive disks: A.png and a.jpg collide too
  const count = new Map<string, number>();
  for (const f of files) count.set(key(f), (count.get(key(f)) ?? 0) + 1);
  const plan = files.map((file) => ({ file, stem: count.get(key(file))! > 1 ? path.basename(file).replace(/\./g, '_') : stemOf(file) }));
  const taken = new Map<string, string>(); // output name (lower case) -> input writing it
  for (const { file, stem } of plan) {
    for (const name of outputNames(stem, binary)) {
      const other = taken.get(name.toLowerCase());
      if (other) throw new UserError(`--input ${input}: ${other} and ${file} would both write ${name}; rename one of them or predict them separately`);
      taken.set(name.toLowerCase(), file);
    }
  }
  if (!overwrite) {
    const existing = plan.flatMap(({ stem }) => outputNames(stem, binary)).filter((n) => fs.existsSync(path.join(outDir, n)));
    if (existing.length) {
      const more = existing.length > 1 ? ` and ${existing.length - 1} more of this run's outputs` : '';
      throw new UserError(`--output ${outDir} already holds ${existing[0]}${more}; pass --overwrite to replace them, or choose another folder`);
    }
  }
  return plan;
}

/** Writes `data` to `file` through a temporary name and a rename: a failed write leaves no partial file. */
export function writeFileAtomic(file: string, data: Uint8Array, ctx: FsContext): void {
  guardFsSync({ ...ctx, path: file }, () => writeFileReplacing(file, data));
}

export interface PredictOptions {
  threshold: number;
  postprocess: boolean;
  /** Flipped copies averaged in (test-time augmentation). */
  tta?: readonly Flip[];
  /** Input scales (x data.size) averaged in. */
  scales?: readonly number[];
  /** The run's dataset (config/resolve.ts resolveRun); derived from cfg when absent. */
  dataset?: ResolvedDataset;
}

/** Class ids at the image's original size. */
export async function predictMask(model: Network, cfg: Config, file: string, opts: PredictOptions) {
  const buf = fs.readFileSync(file);
  const full = await decodeImage(file, undefined, buf);
  const [h, w] = cfg.data.size;
  const small = await decodeImage(file, cfg.data.size, buf);
  const x = normaliseImage(small.data, cfg.data);
  const input = tf.tensor4d(x, [1, h, w, 3]);
  const probs = await networkProbs(model, input, opts.tta, opts.scales).finally(() => input.dispose());
  const postprocess = opts.postprocess ? datasetMeta(cfg, opts.dataset).postprocess : undefined;
  const { classes } = await probsToMask(probs, full.width, full.height, { threshold: opts.threshold, postprocess, prob: false });
  probs.dispose();
  return { classes, image: full.data, width: full.width, height: full.height };
}

/**
 * Writes <stem>.png (+ <stem>_color.png for multi-class) and <stem>_overlay.png; returns
 * the paths (the names of outputNames) and the mask. `stem` defaults to the input's;
 * planOutputs gives unique ones.
 */
export async function predictFile(
  model: Network, cfg: Config, file: string, outDir: string, opts: PredictOptions,
  stem = path.basename(file, path.extname(file)), kept?: string,
): Promise<{ written: string[]; classes: Uint8Array; width: number; height: number }> {
  const { classes, image, width, height } = await predictMask(model, cfg, file, opts);
  const meta = datasetMeta(cfg, opts.dataset);
  const binary = isBinary(cfg);
  const grey = (data: Uint8Array) => sharp(Buffer.from(data), { raw: { width, height, channels: 1 } }).toColourspace('b-w').png().toBuffer();
  const data = [await grey(binary ? classes.map((c) => (c ? 255 : 0)) : meta.toSubmission ? meta.toSubmission(classes) : classes)];
  if (!binary) data.push(await colorizePng(classes, width, height, meta.palette, cfg.data.ignore_index));
  data.push(await overlayPng(image, width, height, classes, null, { binary, palette: meta.palette, ignoreIndex: cfg.data.ignore_index }));
  const written = outputNames(stem, binary).map((n) => path.join(outDir, n));
  // Encoded first, written with fs: a full or read-only disk then fails with an errno naming the file.
  written.forEach((f, i) => writeFileAtomic(f, data[i], { what: 'predictions', kept, setting: '--output' }));
  return { written, classes, width, height };
}

const fixtures = () => import('../loaders/fixtures');

export const selfTest: SelfTest = {
  'a write that fails leaves no partial file and names the file'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'predictor-'));
    const target = path.join(dir, 'a.png');
    fs.mkdirSync(target); // a folder in the way: the rename fails (as root, permissions would not)
    assert.throws(() => writeFileAtomic(target, new Uint8Array(8), { what: 'predictions', setting: '--output' }), (e: Error) => {
      assert.ok(e instanceof UserError);
      assert.ok(e.message.includes(target), e.message);
      return true;
    });
    assert.deepEqual(fs.readdirSync(dir), ['a.png']);
    writeFileAtomic(path.join(dir, 'b.png'), new Uint8Array([1, 2]), {});
    assert.deepEqual([...fs.readFileSync(path.join(dir, 'b.png'))], [1, 2]);
    fs.rmSync(dir, { recursive: true });
  },
  async 'lists image files of a folder, sorted'() {
    const { tmpDir } = await fixtures();
    const dir = tmpDir('pred-ls');
    for (const f of ['b.png', 'a.JPG', 'notes.txt']) fs.writeFileSync(path.join(dir, f), '');
    fs.mkdirSync(path.join(dir, 'x.png')); // a folder named like an image is not one (was EISDIR)
    fs.symlinkSync(path.join(dir, 'b.png'), path.join(dir, 'c.png'));
    assert.deepEqual(listImages(dir).map((f) => path.basename(f)), ['a.JPG', 'b.png', 'c.png']);
    assert.throws(() => listImages(path.join(dir, 'nope')), /no such file or folder/);
    fs.rmSync(dir, { recursive: true });
  },
  async 'outputs never replace an input or each other'() {
    const { tmpDir } = await fixtures();
    const dir = tmpDir('pred-plan');
    const input = path.join(dir, 'in');
    fs.mkdirSync(input);
    const files = ['a.jpg', 'a.png', 'b.png', 'b_overlay.jpg'].map((f) => path.join(input, f));
    files.forEach((f) => fs.writeFileSync(f, ''));
    for (const out of [input, path.join(input, 'masks'), path.join(input, '.')]) {
      assert.throws(() => planOutputs(input, files, out, true), (e: Error) => e instanceof UserError && /--input folder .*choose an output folder outside it/.test(e.message), out);
    }
    // a.jpg and a.png get their own names; b's overlay and b_overlay's mask would share one name.
    assert.throws(() => planOutputs(input, files, path.join(dir, 'out'), true), /b\.png and .*b_overlay\.jpg would both write b_overlay\.png/);
    const plan = planOutputs(input, files.slice(0, 3), path.join(dir, 'out'), true);
    assert.deepEqual(plan.map((p) => p.stem), ['a_jpg', 'a_png', 'b']);
    // One file whose output folder is its own: its mask would replace it (a.png) or a neighbour (a.jpg -> a.png).
    for (const f of files.slice(0, 2)) assert.throws(() => planOutputs(f, [f], input, true), /is the folder of --input .*choose an output folder outside it/);
    assert.deepEqual(planOutputs(files[0], [files[0]], path.join(input, 'masks'), true).map((p) => p.stem), ['a'], 'a sub-folder of a file input is fine');
    fs.rmSync(dir, { recursive: true });
  },
  async 'the red-channel model\'s mask agrees with the ground truth'() {
    const { fixtureConfig, redChannelModel, tmpDir, writeIsic } = await fixtures();
    const dir = tmpDir('pred');
    await writeIsic(dir, 'Test', ['ISIC_9'], 50, 37);
    const cfg = fixtureConfig(dir, { data: { name: 'isic', root: dir, size: [32, 32] } });
    const model = redChannelModel();
    const input = path.join(dir, 'ISIC2018_Task1-2_Test_Input', 'ISIC_9.jpg');
    const out = path.join(dir, 'out');
    fs.mkdirSync(out);
    const { written } = await predictFile(model, cfg, input, out, { threshold: 0.5, postprocess: false });
    const data = await sharp(written[0]).extractChannel(0).raw().toBuffer();
    const gt = await sharp(path.join(dir, 'ISIC2018_Task1_Test_GroundTruth', 'ISIC_9_segmentation.png')).extractChannel(0).raw().toBuffer();
    let agree = 0;
    for (let i = 0; i < gt.length; i++) agree += gt[i] === data[i] ? 1 : 0;
    assert.ok(agree / gt.length > 0.95, `agreement ${agree / gt.length}`);
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
