// A few worker threads that decode + augment samples in parallel with the main thread
// (which runs the training step). Results are bit-identical to in-process loading.
import path from 'node:path';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import type { SampleJob, SampleResult } from './sample';
import type { JobMessage, ReplyMessage } from './sample_worker';

interface Waiting { resolve: (r: SampleResult) => void; reject: (e: Error) => void }

export class SamplePool {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly waiting = new Map<number, Waiting & { worker: number }>();
  private nextId = 0;
  private closed = false;

  constructor(n: number) {
    const ts = path.extname(__filename) === '.ts';
    const file = path.join(__dirname, `sample_worker${ts ? '.ts' : '.js'}`);
    // Under tsx (dev), a worker needs tsx's require hook registered before loading TS.
    const src = ts ? `require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(file)});` : '';
    for (let i = 0; i < n; i++) {
      const w = ts ? new Worker(src, { eval: true }) : new Worker(file);
      w.on('message', (m: ReplyMessage) => this.reply(i, m));
      w.on('error', (e) => this.failAll(e));
      w.unref(); // idle workers never keep the process alive; busy ones do (see run/reply)
      this.workers.push(w);
      this.load.push(0);
    }
  }

  run(job: SampleJob): Promise<SampleResult> {
    if (this.closed) return Promise.reject(new Error('sample pool is closed'));
    // Least-loaded worker; ties go to the lowest index.
    let w = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.load[i] < this.load[w]) w = i;
    const id = this.nextId++;
    if (this.load[w]++ === 0) this.workers[w].ref();
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, worker: w });
      this.workers[w].postMessage({ id, job } satisfies JobMessage);
    });
  }

  private reply(worker: number, m: ReplyMessage): void {
    const w = this.waiting.get(m.id);
    if (!w) return;
    this.waiting.delete(m.id);
    if (--this.load[worker] === 0) this.workers[worker].unref();
    if (m.ok) w.resolve({ image: m.image, mask: m.mask, id: m.sampleId, ...(m.fullMask ? { fullMask: m.fullMask } : {}) });
    else w.reject(m.user ? new UserError(m.message) : new Error(m.message));
  }

  private failAll(e: Error): void {
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.failAll(new Error('sample pool closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

export const selfTest: SelfTest = {
  async 'errors come back as UserErrors'() {
    const pool = new SamplePool(1);
    try {
      const rules = { lut: new Int16Array(256), numClasses: 2, ignoreIndex: 255 };
      await assert.rejects(
        pool.run({ pair: { id: 'x', image: '/nonexistent/x.jpg', mask: '/nonexistent/x.png' }, rules, size: [8, 8], augment: null, seed: 1, epoch: 0, pos: 0 }),
        (e: Error) => e instanceof UserError && /cannot read file/.test(e.message),
      );
    } finally {
      await pool.close();
    }
  },
};

runIfMain(module, selfTest);
