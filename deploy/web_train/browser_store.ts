// The training page's checkpoint in the browser's IndexedDB: one record holding the weights,
// the optimizer state, the step, the curves and the config, written in one transaction, so
// that after a crash or a closed tab they never disagree. The picked files are a record of
// their own, written only when they change (a dataset is copied once, not at every save) and
// tied to the checkpoint by their list's signature; where the browser's storage cannot hold
// them (its quota), the checkpoint is kept without them and the user picks the folders again.
// Runs in the page (bundled by bundle.ts); the Chromium test (test/web_train.test.ts) reloads
// from it. The self-test checks what a place without IndexedDB (Node, a locked-down browser) gets.
import assert from 'node:assert/strict';
import type { OptimizerState } from '../../training/optimizers';
import type { NamedTensor } from '../../storage/format';
import { UserError } from '../../utils/errors';
import { runIfMain, SelfTest } from '../../utils/self_test';

export interface PickedFile { path: string; blob: Blob; kind: 'image' | 'mask' }

export interface BrowserCheckpoint {
  configText: string;
  valFraction: number;
  step: number;
  epoch: number;
  weights: NamedTensor[];
  optimizer: OptimizerState;
  losses: number[];
  val: { step: number; metrics: Record<string, number> }[];
  /** The files it trained on; null when the storage could not keep them (pick them again). */
  files: PickedFile[] | null;
  /** How many files it trained on, and their list's signature (filesSignature). */
  fileCount: number;
  filesSignature: string;
  savedAt: number;
}

const DB = 'tfjs-semseg-web-train';
const STORE = 'runs';
const KEY = 'current';
const FILES_KEY = 'files';

/** Names the file list: paths, kinds and sizes (the page cannot read a file's identity). */
export function filesSignature(files: readonly { path: string; kind: string; blob: { size: number } }[]): string {
  return JSON.stringify(files.map((f) => [f.path, f.kind, f.blob.size]));
}

const isQuota = (e: unknown) => (e as { name?: string } | null)?.name === 'QuotaExceededError';

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

/**
 * Saves the checkpoint: the files first when their list changed (once per dataset), then the
 * checkpoint record, each in one transaction. Returns whether the files are kept; a quota
 * too small for them keeps the checkpoint alone. A checkpoint the storage refuses is one line
 * (the previous one stays, its transaction aborted).
 */
export async function putCheckpoint(ck: Omit<BrowserCheckpoint, 'files' | 'fileCount' | 'filesSignature'>, files: PickedFile[]): Promise<boolean> {
  const signature = filesSignature(files);
  const stored = (await idbDo('readonly', (s) => s.get(FILES_KEY)).catch(() => undefined)) as { signature: string } | undefined;
  let kept = stored?.signature === signature;
  if (!kept) {
    try {
      await idbDo('readwrite', (s) => s.put({ signature, files }, FILES_KEY));
      kept = true;
    } catch (e) {
      if (!isQuota(e)) throw e;
      await idbDo('readwrite', (s) => s.delete(FILES_KEY)).catch(() => undefined); // a half-kept dataset helps no one
    }
  }
  try {
    await idbDo('readwrite', (s) => s.put({ ...ck, files: null, fileCount: files.length, filesSignature: signature }, KEY));
  } catch (e) {
    if (!isQuota(e)) throw e;
    throw new UserError(`this browser's storage for the page is full (QuotaExceededError) saving the checkpoint at step ${ck.step}; the previous checkpoint is kept; free space for this site, or train a smaller model`);
  }
  return kept;
}

/** The page's checkpoint, with its files where they were kept; null where there is none or the storage cannot be read. */
export async function getCheckpoint(): Promise<BrowserCheckpoint | null> {
  try {
    const ck = (await idbDo('readonly', (s) => s.get(KEY))) as BrowserCheckpoint | undefined;
    if (!ck) return null;
    if (Array.isArray(ck.files)) return { ...ck, fileCount: ck.files.length }; // an earlier page's record, its files inside
    const stored = (await idbDo('readonly', (s) => s.get(FILES_KEY))) as { signature: string; files: PickedFile[] } | undefined;
    return { ...ck, files: stored && stored.signature === ck.filesSignature ? stored.files : null };
  } catch {
    return null;
  }
}

/** Removes the page's checkpoint and its files. */
export async function forgetCheckpoint(): Promise<void> {
  await idbDo('readwrite', (s) => s.delete(KEY));
  await idbDo('readwrite', (s) => s.delete(FILES_KEY));
}

export const selfTest: SelfTest = {
  async 'without IndexedDB: nothing to restore, and a save is one line saying why'() {
    assert.equal(typeof indexedDB, 'undefined', 'the self-test runs where IndexedDB is absent (Node)');
    assert.equal(await getCheckpoint(), null);
    await assert.rejects(putCheckpoint({} as BrowserCheckpoint, []), (e: Error) => e instanceof UserError && /^this browser offers no IndexedDB .*: checkpoints cannot be kept$/.test(e.message));
    // The signature follows paths, kinds and sizes.
    const f = (path: string, size: number) => ({ path, kind: 'image', blob: { size } });
    assert.equal(filesSignature([f('a/x.png', 3)]), filesSignature([f('a/x.png', 3)]));
    assert.notEqual(filesSignature([f('a/x.png', 3)]), filesSignature([f('a/x.png', 4)]));
    assert.notEqual(filesSignature([f('a/x.png', 3)]), filesSignature([f('a/y.png', 3)]));
    await assert.rejects(forgetCheckpoint(), UserError);
  },
};

runIfMain(module, selfTest);
