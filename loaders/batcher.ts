// Turns a list of pairs into batches of plain typed arrays (no tfjs here).
// Determinism for exact resume: the order of epoch e depends only on (seed, e), and a
// sample's augmentation draws only on (seed, e, position in epoch), so
// batches(e, k) yields exactly the batches an uninterrupted run yields from step k on,
// without decoding the skipped ones.
// A bounded prefetch window (two batches) keeps decoding ahead of training; at most
// `training.workers` files are decoded at once (sharp runs them on libvips threads).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import type { Config } from '../utils/config';
import { parseConfig } from '../utils/config';
import { UserError } from '../utils/errors';
import { permutation, rngFor } from '../utils/rng';
import { runIfMain, SelfTest } from '../utils/self_test';
import { decodePair, MaskRules } from './decode';
import { maskLutFor } from './registry';
import type { PairRef } from './registry';
import { augment } from './transforms';
import './index';

export interface Batch {
  images: Float32Array; // N*H*W*3, NHWC, (x/255 - mean) / std
  masks: Uint8Array; // N*H*W class ids, ignore_index where ignored
  n: number;
  h: number;
  w: number;
  ids: string[];
}

interface Ready { image: Float32Array | Uint8Array; mask: Uint8Array; id: string }

const SHUFFLE_STREAM = 0x5f1e;

/** Runs at most `n` async jobs at a time, in submission order. */
function limiter(n: number): <T>(job: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  return (job) =>
    new Promise((resolve, reject) => {
      const run = () => {
        active++;
        job().then(resolve, reject).finally(() => {
          active--;
          queue.shift()?.();
        });
      };
      if (active < n) run();
      else queue.push(run);
    });
}

export class BatchLoader {
  private readonly rules: MaskRules;
  private readonly outH: number;
  private readonly outW: number;
  private readonly scale: Float32Array;
  private readonly shift: Float32Array;

  constructor(private readonly cfg: Config, private readonly pairs: PairRef[], private readonly opts: { train: boolean }) {
    const d = cfg.data;
    if (!pairs.length) throw new UserError(`dataset '${d.name}' at ${d.root}: no image/mask pairs to load`);
    if (opts.train && pairs.length < cfg.training.batch_size)
      throw new UserError(`training split has ${pairs.length} pairs, fewer than training.batch_size ${cfg.training.batch_size}`);
    this.rules = { lut: maskLutFor(cfg), numClasses: d.num_classes, ignoreIndex: d.ignore_index };
    const crop = opts.train ? cfg.training.augmentations.crop : undefined;
    [this.outH, this.outW] = crop ? crop.size : d.size;
    this.scale = Float32Array.from(d.std, (s) => 1 / (255 * s));
    this.shift = Float32Array.from(d.mean, (m, i) => -m / d.std[i]);
  }

  get stepsPerEpoch(): number {
    const b = this.cfg.training.batch_size;
    return this.opts.train ? Math.floor(this.pairs.length / b) : Math.ceil(this.pairs.length / b);
  }

  /** Pair index at each position of epoch `epoch`. */
  order(epoch: number): number[] {
    if (!this.opts.train) return this.pairs.map((_, i) => i);
    return permutation(this.pairs.length, rngFor(this.cfg.training.seed, epoch, SHUFFLE_STREAM));
  }

  private async load(pairIndex: number, epoch: number, pos: number): Promise<Ready> {
    const pair = this.pairs[pairIndex];
    const { image, mask } = await decodePair(pair, this.rules, this.cfg.data.size);
    if (!this.opts.train) return { image: image.data, mask: mask.data, id: pair.id };
    const rng = rngFor(this.cfg.training.seed, epoch, pos);
    const a = augment({ image: image.data, mask: mask.data, width: image.width, height: image.height }, this.cfg.training.augmentations, rng, this.cfg.data.ignore_index);
    return { image: a.image, mask: a.mask, id: pair.id };
  }

  async *batches(epoch: number, skipSteps = 0): AsyncGenerator<Batch> {
    const b = this.cfg.training.batch_size;
    const order = this.order(epoch);
    const end = this.opts.train ? this.stepsPerEpoch * b : order.length;
    const limit = limiter(Math.max(1, this.cfg.training.workers));
    const window = 2 * b;
    const pending = new Map<number, Promise<Ready>>();
    let next = Math.min(skipSteps * b, end);
    const fill = (upTo: number) => {
      for (; next < Math.min(upTo, end); next++) {
        const pos = next;
        const p = limit(() => this.load(order[pos], epoch, pos));
        p.catch(() => {}); // surfaced when awaited, in order
        pending.set(pos, p);
      }
    };
    const hw = this.outH * this.outW;
    for (let start = skipSteps * b; start < end; start += b) {
      fill(start + window);
      const n = Math.min(b, end - start);
      const images = new Float32Array(n * hw * 3);
      const masks = new Uint8Array(n * hw);
      const ids: string[] = [];
      for (let k = 0; k < n; k++) {
        const s = await pending.get(start + k)!;
        pending.delete(start + k);
        fill(start + k + 1 + window);
        this.normalise(s.image, images, k * hw * 3);
        masks.set(s.mask, k * hw);
        ids.push(s.id);
      }
      yield { images, masks, n, h: this.outH, w: this.outW, ids };
    }
  }

  private normalise(src: Float32Array | Uint8Array, dst: Float32Array, off: number): void {
    const [s0, s1, s2] = this.scale;
    const [t0, t1, t2] = this.shift;
    for (let i = 0; i < src.length; i += 3) {
      dst[off + i] = src[i] * s0 + t0;
      dst[off + i + 1] = src[i + 1] * s1 + t1;
      dst[off + i + 2] = src[i + 2] * s2 + t2;
    }
  }
}

export const selfTest: SelfTest = {
  async 'same seed, same batches; skipSteps resumes exactly'() {
    const { listSplit } = await import('./index');
    const root = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'batch-')), 'ds');
    const cfg = parseConfig({
      data: { root, size: [24, 24], synthetic: { train: 10, val: 3, image_size: 32 } },
      training: { batch_size: 3, augmentations: { scale: {}, crop: { size: [16, 20] }, hflip: {}, rotate: {}, brightness: {}, noise: {} } },
    });
    const pairs = await listSplit(cfg, 'train');
    const all = async (l: BatchLoader, e: number, k = 0) => { const out: Batch[] = []; for await (const x of l.batches(e, k)) out.push(x); return out; };
    const a = await all(new BatchLoader(cfg, pairs, { train: true }), 2);
    const b = await all(new BatchLoader(cfg, pairs, { train: true }), 2);
    assert.equal(a.length, 3);
    assert.deepEqual(a, b);
    assert.deepEqual(await all(new BatchLoader(cfg, pairs, { train: true }), 2, 1), a.slice(1));
    assert.equal(a[0].w, 20);
    assert.notDeepEqual((await all(new BatchLoader(cfg, pairs, { train: true }), 3))[0].ids, a[0].ids);
    const val = await all(new BatchLoader(cfg, await listSplit(cfg, 'val'), { train: false }), 0);
    assert.deepEqual(val.map((x) => [x.n, x.h, x.w]), [[3, 24, 24]]);
    fs.rmSync(path.dirname(root), { recursive: true });
  },
};

runIfMain(module, selfTest);
