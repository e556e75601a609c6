// Worker-thread side of the sample pool: runs loadSample for each job message. Several
// jobs are in flight per worker so libvips decoding overlaps the JS augmentation.
import assert from 'node:assert/strict';
import { isMainThread, parentPort } from 'node:worker_threads';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { loadSample, SampleJob } from './sample';
import type { LabelMask } from './decode';

export interface JobMessage { id: number; job: SampleJob }
export type ReplyMessage =
  | { id: number; ok: true; image: Float32Array | Uint8Array; mask: Uint8Array; sampleId: string; fullMask?: LabelMask }
  | { id: number; ok: false; message: string; user: boolean };

if (parentPort) {
  const port = parentPort;
  port.on('message', async ({ id, job }: JobMessage) => {
    try {
      const r = await loadSample(job);
      const reply: ReplyMessage = { id, ok: true, image: r.image, mask: r.mask, sampleId: r.id, ...(r.fullMask ? { fullMask: r.fullMask } : {}) };
      const transfer = [r.image.buffer, r.mask.buffer, ...(r.fullMask ? [r.fullMask.data.buffer] : [])].filter((b, i, a) => a.indexOf(b) === i && b.byteLength > 0) as ArrayBuffer[];
      port.postMessage(reply, transfer);
    } catch (e) {
      port.postMessage({ id, ok: false, message: (e as Error).message, user: e instanceof UserError } satisfies ReplyMessage);
    }
  });
}

export const selfTest: SelfTest = {
  async 'a worker returns exactly what in-process loading returns'() {
    const path = await import('node:path');
    const { tmpDir, writeIsic } = await import('../loaders/fixtures');
    const { SamplePool } = await import('./pool');
    const root = tmpDir('worker');
    await writeIsic(root, 'Training', ['ISIC_1'], 12, 10);
    const pair = {
      id: 'ISIC_1',
      image: path.join(root, 'ISIC2018_Task1-2_Training_Input', 'ISIC_1.jpg'),
      mask: path.join(root, 'ISIC2018_Task1_Training_GroundTruth', 'ISIC_1_segmentation.png'),
    };
    const lut = Int16Array.from({ length: 256 }, (_, v) => (v >= 128 ? 1 : 0));
    const job: SampleJob = { pair, rules: { lut, numClasses: 2, ignoreIndex: 255 }, size: [8, 8], augment: { hflip: { p: 1 }, noise: { p: 1, std: 0.1 } }, seed: 3, epoch: 1, pos: 5 };
    const pool = new SamplePool(1);
    try {
      assert.deepEqual(await pool.run(job), await loadSample(job));
      // Validation jobs also bring the mask at its own size back from the worker.
      const val: SampleJob = { ...job, augment: null, fullMask: true };
      const r = await pool.run(val);
      assert.deepEqual([r.fullMask?.width, r.fullMask?.height], [12, 10]);
      assert.deepEqual(r, await loadSample(val));
    } finally {
      await pool.close();
    }
  },
};

// Inside a worker this file is require.main too: only run the checks from the CLI.
if (isMainThread) runIfMain(module, selfTest);
