// Prediction for single image files: network at the configured size, logits
// resized back to the image's own size, dataset post-processing, PNG outputs.
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { decodeImage } from '../pipeline/decode';
import { IMAGE_EXTS } from '../loaders/files';
import { normaliseImage } from '../pipeline/batcher';
import assert from 'node:assert/strict';
import { datasetMeta } from '../loaders/registry';
import { Config, isBinary } from '../utils/config';
import { UserError } from '../utils/errors';
import { Flip, predictProbs, probsToMask } from './inference';
import { colorizePng, overlayPng } from '../report/overlay';
import { runIfMain, SelfTest } from '../utils/self_test';

export function listImages(input: string): string[] {
  if (!fs.existsSync(input)) throw new UserError(`--input ${input}: no such file or folder`);
  if (fs.statSync(input).isFile()) return [input];
  return fs
    .readdirSync(input)
    .filter((f) => IMAGE_EXTS.includes(path.extname(f).toLowerCase()))
    .sort()
    .map((f) => path.join(input, f));
}

export interface PredictOptions {
  threshold: number;
  postprocess: boolean;
  /** Flipped copies averaged in (test-time augmentation). */
  tta?: readonly Flip[];
  /** Input scales (x data.size) averaged in. */
  scales?: readonly number[];
}

/** Class ids at the image's original size. */
export async function predictMask(model: tf.LayersModel, cfg: Config, file: string, opts: PredictOptions) {
  const buf = fs.readFileSync(file);
  const full = await decodeImage(file, undefined, buf);
  const [h, w] = cfg.data.size;
  const small = await decodeImage(file, cfg.data.size, buf);
  const x = normaliseImage(small.data, cfg.data.mean, cfg.data.std);
  const probs = tf.tidy(() => predictProbs(model, tf.tensor4d(x, [1, h, w, 3]), opts.tta, opts.scales));
  const postprocess = opts.postprocess ? datasetMeta(cfg).postprocess : undefined;
  const { classes } = await probsToMask(probs, full.width, full.height, { threshold: opts.threshold, postprocess });
  probs.dispose();
  return { classes, image: full.data, width: full.width, height: full.height };
}

/** Writes <stem>.png (+ <stem>_color.png for multi-class) and <stem>_overlay.png; returns the paths. */
export async function predictFile(model: tf.LayersModel, cfg: Config, file: string, outDir: string, opts: PredictOptions): Promise<string[]> {
  const { classes, image, width, height } = await predictMask(model, cfg, file, opts);
  const meta = datasetMeta(cfg);
  const stem = path.join(outDir, path.basename(file, path.extname(file)));
  const grey = (data: Uint8Array) => sharp(Buffer.from(data), { raw: { width, height, channels: 1 } }).toColourspace('b-w').png();
  const written: string[] = [];
  if (isBinary(cfg)) {
    await grey(classes.map((c) => (c ? 255 : 0))).toFile(`${stem}.png`);
    written.push(`${stem}.png`);
  } else {
    await grey(meta.toSubmission ? meta.toSubmission(classes) : classes).toFile(`${stem}.png`);
    fs.writeFileSync(`${stem}_color.png`, await colorizePng(classes, width, height, meta.palette, cfg.data.ignore_index));
    written.push(`${stem}.png`, `${stem}_color.png`);
  }
  const overlay = await overlayPng(image, width, height, classes, null, { binary: isBinary(cfg), palette: meta.palette, ignoreIndex: cfg.data.ignore_index });
  fs.writeFileSync(`${stem}_overlay.png`, overlay);
  written.push(`${stem}_overlay.png`);
  return written;
}

const fixtures = () => import('../test/fixtures/datasets');

export const selfTest: SelfTest = {
  async 'lists image files of a folder, sorted'() {
    const { tmpDir } = await fixtures();
    const dir = tmpDir('pred-ls');
    for (const f of ['b.png', 'a.JPG', 'notes.txt']) fs.writeFileSync(path.join(dir, f), '');
    assert.deepEqual(listImages(dir).map((f) => path.basename(f)), ['a.JPG', 'b.png']);
    assert.throws(() => listImages(path.join(dir, 'nope')), /no such file or folder/);
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
    const written = await predictFile(model, cfg, input, out, { threshold: 0.5, postprocess: false });
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
