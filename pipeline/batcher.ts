// Turns a list of pairs into batches of plain typed arrays (no tfjs here).
// Determinism for exact resume: the order of epoch e depends only on (seed, e), and a
// sample's augmentation draws only on (seed, e, position in epoch), so
// batches(e, k) yields exactly the batches an uninterrupted run yields from step k on,
// without decoding the skipped ones.
// A bounded prefetch window (two batches) keeps decoding ahead of training. With
// training.workers > 1, samples are decoded + augmented in that many worker threads
// (measured faster: the JS augmentation then leaves the training thread); with 1, in
// process, sharp still decoding on libvips threads.
import assert from 'node:assert/strict';
import type { Config } from '../utils/config';
import { UserError } from '../utils/errors';
import { permutation, randInt, rngFor } from '../utils/rng';
import { runIfMain, SelfTest } from '../utils/self_test';
import type { LabelMask, MaskRules } from './decode';
import { SamplePool } from './pool';
import { loadSample, SampleJob, SampleResult } from './sample';
import { maskLutFor } from '../loaders/registry';
import type { PairRef, ResolvedDataset } from '../loaders/registry';

export interface Batch {
  images: Float32Array; // N*H*W*3, NHWC, normalised as data.normalize says (normaliseImage)
  masks: Uint8Array; // N*H*W class ids, ignore_index where ignored
  n: number;
  h: number;
  w: number;
  ids: string[];
  /** Each mask at its own size, when the loader was asked for them (scoring at label resolution). */
  fullMasks?: LabelMask[];
}

const SHUFFLE_STREAM = 0x5f1e;
const PASTE_STREAM = 0x9a57;

/**
 * Runs at most `n` async jobs at a time, in submission order.
 * Kept over p-limit: same FIFO behaviour and cost for the <= 2 batches queued here, and p-limit 4+ is ESM-only.
 */
function limiter(n: number): <T>(job: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  return (job) =>
    new Promise((resolve, reject) => {
      const run = () => {
        active++;
        // Through a promise, so a job that throws synchronously still frees its slot.
        Promise.resolve().then(job).then(resolve, reject).finally(() => {
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
  private readonly norm: Normalisation;
  private pool: SamplePool | null = null;

  /** `opts.dataset`: the run's (config/resolve.ts resolveRun); derived from cfg when absent. */
  constructor(private readonly cfg: Config, private readonly pairs: PairRef[], private readonly opts: { train: boolean; threads?: boolean; fullMasks?: boolean; dataset?: ResolvedDataset }) {
    const d = cfg.data;
    if (!pairs.length) throw new UserError(`dataset '${d.name}' at ${d.root}: no image/mask pairs to load`);
    if (opts.train && pairs.length < cfg.training.batch_size)
      throw new UserError(`training split has ${pairs.length} pairs, fewer than training.batch_size ${cfg.training.batch_size}`);
    this.rules = { lut: maskLutFor(cfg, opts.dataset), numClasses: d.num_classes, ignoreIndex: d.ignore_index };
    const crop = opts.train ? cfg.training.augmentations.crop : undefined;
    [this.outH, this.outW] = crop ? crop.size : d.size;
    this.norm = normalisationFor(d);
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

  /** augmentations.paste: with its chance, another pair of the split, drawn from (seed, epoch, pos) alone. */
  private donor(pairIndex: number, epoch: number, pos: number): PairRef | undefined {
    const paste = this.opts.train ? this.cfg.training.augmentations.paste : undefined;
    if (!paste || this.pairs.length < 2) return undefined;
    const rng = rngFor(this.cfg.training.seed, epoch, pos, PASTE_STREAM);
    if (rng() >= paste.p) return undefined;
    const k = randInt(rng, this.pairs.length - 1);
    return this.pairs[k >= pairIndex ? k + 1 : k]; // any pair but the sample's own
  }

  private job(pairIndex: number, epoch: number, pos: number): SampleJob {
    const donor = this.donor(pairIndex, epoch, pos);
    return {
      ...(donor ? { donor } : {}),
      pair: this.pairs[pairIndex],
      rules: this.rules,
      size: [this.cfg.data.size[0], this.cfg.data.size[1]],
      augment: this.opts.train ? this.cfg.training.augmentations : null,
      seed: this.cfg.training.seed,
      epoch,
      pos,
      fullMask: this.opts.fullMasks,
    };
  }

  async *batches(epoch: number, skipSteps = 0): AsyncGenerator<Batch> {
    const b = this.cfg.training.batch_size;
    // A skip past the epoch would yield nothing (a caller waiting for the epoch's end hangs); a negative one reads before it.
    if (!Number.isInteger(skipSteps) || skipSteps < 0 || skipSteps > this.stepsPerEpoch) {
      throw new RangeError(`batches: cannot skip ${skipSteps} steps of an epoch of ${this.stepsPerEpoch}`);
    }
    const order = this.order(epoch);
    const end = this.opts.train ? this.stepsPerEpoch * b : order.length;
    const workers = Math.max(1, this.cfg.training.workers);
    const threads = this.opts.threads ?? workers > 1;
    // One pool per loader, kept across epochs (its idle workers do not hold the process open).
    if (threads && !this.pool) this.pool = new SamplePool(workers);
    const pool = threads ? this.pool : null;
    const limit = limiter(workers);
    const run = pool ? (j: SampleJob) => pool.run(j) : (j: SampleJob) => limit(() => loadSample(j));
    const window = 2 * b;
    const pending = new Map<number, Promise<SampleResult>>();
    let next = Math.min(skipSteps * b, end);
    const fill = (upTo: number) => {
      for (; next < Math.min(upTo, end); next++) {
        const p = run(this.job(order[next], epoch, next));
        p.catch(() => {}); // surfaced when awaited, in order
        pending.set(next, p);
      }
    };
    const hw = this.outH * this.outW;
    try {
      for (let start = skipSteps * b; start < end; start += b) {
        fill(start + window);
        const n = Math.min(b, end - start);
        const images = new Float32Array(n * hw * 3);
        const masks = new Uint8Array(n * hw);
        const ids: string[] = [];
        const fullMasks: LabelMask[] = [];
        for (let k = 0; k < n; k++) {
          const s = await pending.get(start + k)!;
          pending.delete(start + k);
          fill(start + k + 1 + window);
          normaliseInto(s.image, this.norm, images, k * hw * 3);
          masks.set(s.mask, k * hw);
          ids.push(s.id);
          if (s.fullMask) fullMasks.push(s.fullMask);
        }
        yield { images, masks, n, h: this.outH, w: this.outW, ids, ...(this.opts.fullMasks ? { fullMasks } : {}) };
      }
    } finally {
      for (const p of pending.values()) p.catch(() => {}); // abandoned prefetches
    }
  }

  /** Stops the worker threads, if any (optional: idle workers never keep the process alive). */
  async close(): Promise<void> {
    const p = this.pool;
    this.pool = null;
    await p?.close();
  }
}

/** x -> x * scale + shift per channel; per image, the one scale and shift come from the image itself. */
interface Normalisation {
  perImage: boolean;
  scale: Float32Array;
  shift: Float32Array;
}

type NormOptions = Pick<Config['data'], 'mean' | 'std' | 'normalize'>;

function normalisationFor(d: NormOptions): Normalisation {
  return {
    perImage: d.normalize === 'image',
    scale: Float32Array.from(d.std, (s) => 1 / (255 * s)),
    shift: Float32Array.from(d.mean, (m, i) => -m / d.std[i]),
  };
}

/** Mean and standard deviation over every value of an image (0..255); the deviation is at least 1, so a flat image stays finite. */
function imageStats(src: Float32Array | Uint8Array): { mean: number; std: number } {
  let sum = 0, sq = 0;
  for (let i = 0; i < src.length; i++) {
    const v = src[i];
    sum += v;
    sq += v * v;
  }
  const mean = sum / src.length;
  return { mean, std: Math.max(1, Math.sqrt(Math.max(0, sq / src.length - mean * mean))) };
}

function normaliseInto(src: Float32Array | Uint8Array, norm: Normalisation, dst: Float32Array, off: number): void {
  let [s0, s1, s2] = norm.scale;
  let [t0, t1, t2] = norm.shift;
  if (norm.perImage) {
    const { mean, std } = imageStats(src);
    s0 = s1 = s2 = 1 / std;
    t0 = t1 = t2 = -mean / std;
  }
  for (let i = 0; i < src.length; i += 3) {
    dst[off + i] = src[i] * s0 + t0;
    dst[off + i + 1] = src[i + 1] * s1 + t1;
    dst[off + i + 2] = src[i + 2] * s2 + t2;
  }
}

/** HWC RGB 0..255 -> network input, the same normalisation as training batches (for predict). */
export function normaliseImage(src: Uint8Array | Float32Array, d: NormOptions): Float32Array {
  const out = new Float32Array(src.length);
  normaliseInto(src, normalisationFor(d), out, 0);
  return out;
}

export const selfTest: SelfTest = {
  'normaliseImage divides by 255, then subtracts mean and divides by std per channel'() {
    const n = normaliseImage(Uint8Array.from([255, 0, 51]), { mean: [0.5, 0.5, 0.2], std: [0.5, 0.25, 0.2], normalize: 'dataset' });
    assert.deepEqual([...n].map((v) => +v.toFixed(5)), [1, -2, 0]);
  },
  'per-image normalisation gives mean 0 and deviation 1, whatever the brightness and contrast'() {
    const d = { mean: [0.5, 0.5, 0.5] as [number, number, number], std: [0.2, 0.2, 0.2] as [number, number, number], normalize: 'image' as const };
    const img = Uint8Array.from({ length: 300 }, (_, i) => (i * 37) % 200);
    const a = normaliseImage(img, d);
    const mean = a.reduce((x, y) => x + y, 0) / a.length;
    const sd = Math.sqrt(a.reduce((x, y) => x + (y - mean) ** 2, 0) / a.length);
    assert.ok(Math.abs(mean) < 1e-5 && Math.abs(sd - 1) < 1e-4, `mean ${mean}, sd ${sd}`);
    // Twice the contrast, 20 brighter: the same input to the network.
    const b = normaliseImage(Float32Array.from(img, (v) => 2 * v + 20), d);
    assert.ok(a.every((v, i) => Math.abs(v - b[i]) < 1e-4));
    // Per-channel data.mean/std would not have removed it.
    const c = normaliseImage(Float32Array.from(img, (v) => 2 * v + 20), { ...d, normalize: 'dataset' });
    assert.ok(Math.abs(c[1] - normaliseImage(img, { ...d, normalize: 'dataset' })[1]) > 0.1);
    // A flat image stays finite.
    assert.ok(normaliseImage(new Uint8Array(12).fill(90), d).every((v) => v === 0));
  },
};

runIfMain(module, selfTest);
