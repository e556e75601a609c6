// Measures augmented training samples per second of the data pipeline (decode + resize
// + scale/crop/flip/rotate/photometric + normalise + batching), no model.
//   npx tsx bench/data_pipeline.ts --size 128 --batch 8 [--images 300] [--src 256] [--workers 2] [--threads 0|1] [--epochs 2] [--root /path/to/isic2018]
// Without --root it runs on generated 256x256 ISIC-style JPEG/PNG pairs in a temp folder.
import { isMainModule } from '../utils/self_test';
import fs from 'node:fs';
import yargs from 'yargs';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../config/resolve';
import { listSplit } from '../loaders/registry';
import { BatchLoader } from '../pipeline/batcher';


export interface DataBenchOptions {
  size: number;
  batch: number;
  images: number;
  src: number;
  workers: number;
  realRoot: string;
  threads: boolean;
  epochs: number;
}

/** Runs the training data pipeline (augmentations on) for `epochs` and returns its figures. */
export async function measureDataPipeline(o: DataBenchOptions): Promise<Record<string, unknown> & { data_images_per_s: number }> {
  const { size, batch, images, src, workers, realRoot, threads } = o;
  const tmp = realRoot ? '' : fs.mkdtempSync(path.join(os.tmpdir(), 'bench-data-'));
  const cfg = parseConfig({
    data: realRoot
      ? { name: 'isic', root: realRoot, size: [size, size] }
      : { name: 'synthetic', root: path.join(tmp, 'ds'), size: [size, size], synthetic: { train: images, val: 1, image_size: src } },
    training: {
      batch_size: batch,
      workers,
      augmentations: {
        scale: { p: 1, range: [0.75, 1.25] },
        crop: { size: [size, size] },
        hflip: { p: 0.5 },
        vflip: { p: 0.5 },
        rotate: { p: 0.5, degrees: 30 },
        brightness: { p: 0.5 },
        contrast: { p: 0.5 },
        saturation: { p: 0.5 },
        hue: { p: 0.5 },
        noise: { p: 0.3 },
      },
    },
  });
  const t0 = Date.now();
  const pairs = await listSplit(cfg, 'train');
  const listMs = Date.now() - t0;
  const loader = new BatchLoader(cfg, pairs, { train: true, threads });
  let n = 0;
  const rss: number[] = [];
  const t1 = Date.now();
  const c1 = process.cpuUsage();
  const epochs = o.epochs;
  for (let e = 0; e < epochs; e++) {
    for await (const b of loader.batches(e)) n += b.n;
    rss.push(Math.round(process.memoryUsage().rss / 2 ** 20));
  }
  const s = (Date.now() - t1) / 1000;
  const cpu = process.cpuUsage(c1);
  const cpuS = (cpu.user + cpu.system) / 1e6; // this process incl. libvips threads
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  return {
    data: realRoot ? 'isic' : 'generated',
    pairs: pairs.length,
    size,
    batch,
    workers,
    threads,
    list_or_generate_s: listMs / 1000,
    samples: n,
    seconds: s,
    data_images_per_s: Math.round(n / s),
    // Machine-load independent: CPU seconds spent per image (all threads of this process).
    cpu_ms_per_image: +((cpuS * 1000) / n).toFixed(2),
    load_avg_1m: +os.loadavg()[0].toFixed(2),
    rss_mb_per_epoch: rss,
  };
}

async function main(): Promise<void> {
  const a = yargs(process.argv.slice(2))
    .option('size', { type: 'number', default: 128 })
    .option('batch', { type: 'number', default: 8 })
    .option('images', { type: 'number', default: 300 })
    .option('src', { type: 'number', default: 256 })
    .option('workers', { type: 'number', default: 2 })
    .option('root', { type: 'string', default: '', describe: 'real ISIC root instead of generated images' })
    .option('threads', { type: 'number', default: 1, describe: '0 turns libvips threads off' })
    .option('epochs', { type: 'number', default: 2 })
    .strict()
    .parseSync();
  const r = await measureDataPipeline({
    size: a.size, batch: a.batch, images: a.images, src: a.src, workers: a.workers,
    realRoot: a.root, threads: a.threads !== 0, epochs: a.epochs,
  });
  console.log(JSON.stringify(r));
}

if (isMainModule(module)) void main();
