// The training page's checkpoint in the browser's IndexedDB: one record holding the weights,
// the optimizer state, the step, the curves, the config and the picked files, written in one
// transaction, so that after a crash or a closed tab they never disagree. Runs in the page
// (bundled by bundle.ts); the Chromium test (test/web_train.test.ts) reloads from it. The
// self-test checks what a place without IndexedDB (Node, a locked-down browser) gets.
import assert from 'node:assert/strict';
import type { OptimizerState } from '../../training/optimizers';
import type { NamedTensor } from '../../storage/format';
import { UserError } from '../../utils/errors';
import { runIfMain, SelfTest } from '../../utils/self_test';

export interface BrowserCheckpoint {
  configText: string;
  valFraction: number;
  step: number;
  epoch: number;
  weights: NamedTensor[];
  optimizer: OptimizerState;
  losses: number[];
  val: { step: number; metrics: Record<string, number> }[];
  files: { path: string; blob: Blob; kind: 'image' | 'mask' }[];
  savedAt: number;
}

const DB = 'tfjs-semseg-web-train';
const STORE = 'runs';
const KEY = 'current';

function idb(): Promise<IDBDatabase> {
  if (typeof indexedDB === 'undefined') return Promise.reject(new UserError('this browser offers no IndexedDB (a private window, or storage turned off): checkpoints cannot be kept'));
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(DB, 1);
    r.onupgradeneeded = () => r.result.createObjectStore(STORE);
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

async function idbDo<T>(mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await idb();
  try {
    return await new Promise<T>((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = f(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
    });
  } finally {
    db.close();
  }
}

/** Replaces the page's checkpoint, in one transaction. */
export async function putCheckpoint(ck: BrowserCheckpoint): Promise<void> {
  await idbDo('readwrite', (s) => s.put(ck, KEY));
}

/** The page's checkpoint; null where there is none or the storage cannot be read. */
export async function getCheckpoint(): Promise<BrowserCheckpoint | null> {
  try {
    return ((await idbDo('readonly', (s) => s.get(KEY))) as BrowserCheckpoint | undefined) ?? null;
  } catch {
    return null;
  }
}

/** Removes the page's checkpoint. */
export async function forgetCheckpoint(): Promise<void> {
  await idbDo('readwrite', (s) => s.delete(KEY));
}

export const selfTest: SelfTest = {
  async 'without IndexedDB: nothing to restore, and a save is one line saying why'() {
    assert.equal(typeof indexedDB, 'undefined', 'the self-test runs where IndexedDB is absent (Node)');
    assert.equal(await getCheckpoint(), null);
    await assert.rejects(putCheckpoint({} as BrowserCheckpoint), (e: Error) => e instanceof UserError && /^this browser offers no IndexedDB .*: checkpoints cannot be kept$/.test(e.message));
    await assert.rejects(forgetCheckpoint(), UserError);
  },
};

runIfMain(module, selfTest);
