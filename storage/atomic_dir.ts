// Publishes a folder so that a complete copy is loadable at every moment, even
// if the process is SIGKILLed or the machine loses power mid-save.
//
// Scheme: everything is written into a hidden sibling `.<base>.tmp-<pid>-<n>`,
// each file fsynced, then `complete.json` (sizes + sha256 of every file) is
// written last and the folder fsynced. rename(2) cannot replace a non-empty
// folder, so the swap is: `<base>` -> `.<base>.old-<pid>-<n>`, tmp -> `<base>`, drop
// that old copy. Readers take `<base>` if it has the marker, else the newest complete
// `.<base>.old-*`. Every name the swap removes is one it made itself (hidden, with its
// pid and a random number): a user's `<base>.old` or `site.old` is never touched.
// Anything deleted is first renamed to `.<base>.trash-<pid>-<n>` so a half-deleted
// folder never carries a name a reader would look at.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fsUserError, UserError } from '../utils/errors';
import { pidAlive } from '../utils/file_out';
import { runIfMain, SelfTest } from '../utils/self_test';

export const MARKER = 'complete.json';
const MARKER_VERSION = 1;

export interface FileRecord { bytes: number; sha256: string }
export interface Marker { version: number; files: Record<string, FileRecord> }

interface Siblings { dir: string; parent: string; base: string }

function siblings(dir: string): Siblings {
  const clean = dir.replace(/[\\/]+$/, '') || dir;
  const abs = path.resolve(clean);
  return { dir: clean, parent: path.dirname(abs), base: path.basename(abs) };
}

let counter = 0;
/** A name no other save (this process, another, or a dead one whose pid came back) has used. */
function uniqueSuffix(): string {
  return `${process.pid}-${++counter}${crypto.randomInt(1e9)}`;
}
const activeTmp = new Set<string>(); // our own in-flight tmp folders: never cleaned as stale
const queues = new Map<string, Promise<unknown>>(); // one save at a time per folder in this process

function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** fsync a folder so renames/creations inside it survive a crash (not supported on Windows: ignored). */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF') throw err;
  } finally {
    await fh?.close();
  }
}

async function writeDurable(file: string, data: Buffer): Promise<void> {
  const fh = await fsp.open(file, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Handed to the fill callback: writes files durably and records them for the marker. */
export class DirWriter {
  readonly files: Record<string, FileRecord> = {};
  constructor(readonly dir: string) {}
  async write(name: string, data: Buffer | string): Promise<void> {
    if (name === MARKER || name.includes('/') || name.includes('\\')) throw new Error(`bad file name '${name}'`);
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    const file = path.join(this.dir, name);
    try {
      await writeDurable(file, buf);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e && typeof e === 'object' && e.code && !e.path) e.path = file; // a failed write(2) on a handle names no file
      throw err;
    }
    this.files[name] = { bytes: buf.length, sha256: sha256(buf) };
  }
  /** The marker goes last: its presence means every listed file is fully on disk. */
  async seal(): Promise<void> {
    const marker: Marker = { version: MARKER_VERSION, files: this.files };
    await writeDurable(path.join(this.dir, MARKER), Buffer.from(JSON.stringify(marker, null, 1)));
    await fsyncDir(this.dir);
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function ownRe(s: Siblings, kinds: string): RegExp {
  return new RegExp(`^\\.${escapeRe(s.base)}\\.(${kinds})-(\\d+)-\\d+$`);
}

/** The previous copies a swap in progress (or killed mid-swap) left: `.<base>.old-<pid>-<n>`, newest first. */
function oldCopies(s: Siblings): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(s.parent);
  } catch {
    return [];
  }
  const re = ownRe(s, 'old');
  const mtime = (p: string) => {
    try {
      return fs.statSync(path.join(p, MARKER)).mtimeMs;
    } catch {
      return -1;
    }
  };
  return names.filter((n) => re.test(n)).map((n) => path.join(path.dirname(s.dir), n))
    .map((p) => [p, mtime(p)] as const).sort((a, b) => b[1] - a[1]).map(([p]) => p);
}

/** Removes tmp/trash siblings left by killed runs (their pid is gone) or by our own failed saves. */
export async function cleanStale(dir: string): Promise<string[]> {
  const s = siblings(dir);
  const { parent } = s;
  const re = ownRe(s, 'tmp|trash');
  let names: string[];
  try {
    names = await fsp.readdir(parent);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = re.exec(name);
    if (!m) continue;
    const full = path.join(parent, name);
    const pid = Number(m[2]);
    const stale = pid === process.pid ? !activeTmp.has(full) : !pidAlive(pid);
    if (!stale) continue;
    await fsp.rm(full, { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

function hasMarkerSync(dir: string): boolean {
  try {
    return fs.statSync(path.join(dir, MARKER)).isFile();
  } catch {
    return false;
  }
}

/** Renames away first (atomic), then deletes: a reader never sees a half-deleted `<base>` or old copy. */
async function discard(p: string, s: Siblings): Promise<void> {
  const trash = path.join(s.parent, `.${s.base}.trash-${uniqueSuffix()}`);
  activeTmp.add(trash);
  try {
    await fsp.rename(p, trash);
    await fsp.rm(trash, { recursive: true, force: true });
  } finally {
    activeTmp.delete(trash);
  }
}

/** What a published folder is, for error messages: e.g. checkpoint / checkpoint.ckpt_root. */
export interface PublishLabel { what: string; setting: string }
const CHECKPOINT_LABEL: PublishLabel = { what: 'checkpoint', setting: 'checkpoint.ckpt_root' };

/**
 * Writes a new version of `dir` via `fill` and swaps it in. `allowedFiles`: a
 * marker-less `dir` holding only these names is treated as debris and replaced;
 * anything else is refused so a mistyped path never wipes unrelated data. `label`
 * names the folder and the setting that chose it in a disk error.
 */
export function publishDir(dir: string, fill: (out: DirWriter) => Promise<void>, allowedFiles: string[], label: PublishLabel = CHECKPOINT_LABEL): Promise<void> {
  const s = siblings(dir);
  const key = path.join(s.parent, s.base);
  const prev = queues.get(key) ?? Promise.resolve();
  const run = prev.catch(() => undefined).then(() => publishNow(s, fill, allowedFiles, label));
  queues.set(key, run);
  void run.finally(() => {
    if (queues.get(key) === run) queues.delete(key);
  }).catch(() => undefined);
  return run;
}

async function publishNow(s: Siblings, fill: (out: DirWriter) => Promise<void>, allowedFiles: string[], label: PublishLabel): Promise<void> {
  try {
    await publishUnguarded(s, fill, allowedFiles);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (typeof e?.path === 'string') {
      // Name the folder being published, not our hidden tmp sibling (removed by now).
      const m = new RegExp(`^${escapeRe(path.join(s.parent, '.' + s.base))}\\.(tmp|trash|old)-\\d+-\\d+`).exec(path.resolve(e.path));
      if (m) e.path = path.join(s.dir, path.resolve(e.path).slice(m[0].length));
    }
    const prev = resolveComplete(s.dir);
    const kept = prev ? `the previous copy in ${prev} is intact` : `no earlier copy of ${s.dir} existed`;
    throw fsUserError(err, { what: label.what, kept, setting: label.setting });
  }
}

async function publishUnguarded(s: Siblings, fill: (out: DirWriter) => Promise<void>, allowedFiles: string[]): Promise<void> {
  await fsp.mkdir(s.parent, { recursive: true });
  await cleanStale(s.dir);
  const tmp = path.join(s.parent, `.${s.base}.tmp-${uniqueSuffix()}`);
  activeTmp.add(tmp);
  try {
    await fsp.mkdir(tmp);
    const out = new DirWriter(tmp);
    await fill(out);
    await out.seal();
    await swapIn(s, tmp, allowedFiles);
  } finally {
    activeTmp.delete(tmp);
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}

async function swapIn(s: Siblings, tmp: string, allowedFiles: string[]): Promise<void> {
  let old: string | null = null;
  if (await exists(s.dir)) {
    if (hasMarkerSync(s.dir)) {
      old = path.join(s.parent, `.${s.base}.old-${uniqueSuffix()}`);
      activeTmp.add(old);
      await fsp.rename(s.dir, old);
      await fsyncDir(s.parent);
    } else {
      // Never a complete copy (e.g. written by hand or corrupted); an old copy, if any, stays the fallback.
      const allowed = new Set([...allowedFiles, MARKER]);
      const foreign = (await fsp.readdir(s.dir)).filter((n) => !allowed.has(n));
      if (foreign.length) {
        throw new UserError(`${s.dir}: exists and is not a checkpoint folder (holds '${foreign[0]}'); refusing to replace it`);
      }
      await discard(s.dir, s);
    }
  }
  await fsp.rename(tmp, s.dir);
  await fsyncDir(s.parent);
  try {
    if (old) await discard(old, s);
    // Old copies of saves killed mid-swap: `<base>` is complete again, so they are debris now.
    const re = ownRe(s, 'old');
    for (const p of oldCopies(s)) {
      const pid = Number(re.exec(path.basename(p))![2]);
      if (pid === process.pid ? !activeTmp.has(path.resolve(p)) : !pidAlive(pid)) await discard(p, s);
    }
  } finally {
    if (old) activeTmp.delete(old);
  }
}

/** The folder a reader should use: `dir` when complete, else the newest complete old copy of a swap, else null. */
export function resolveComplete(dir: string): string | null {
  const s = siblings(dir);
  if (hasMarkerSync(s.dir)) return s.dir;
  for (const p of oldCopies(s)) if (hasMarkerSync(p)) return p;
  return null;
}

/** Whether `dir`, or an old copy a swap left beside it, exists: a run's folder is there, complete or not. */
export function existsOrOldCopy(dir: string): boolean {
  return fs.existsSync(dir) || oldCopies(siblings(dir)).length > 0;
}

/** One line saying why `dir` has no complete copy. */
export function whyIncomplete(dir: string): string {
  const s = siblings(dir);
  if (!fs.existsSync(s.dir)) return `${s.dir}: checkpoint folder not found`;
  if (!fs.statSync(s.dir).isDirectory()) return `${s.dir}: expected a checkpoint folder, found a file`;
  return `${s.dir}: not a complete checkpoint (no ${MARKER}: the save was interrupted or the folder holds something else)`;
}

export async function readMarker(dir: string): Promise<Marker> {
  const file = path.join(dir, MARKER);
  let raw: any;
  try {
    raw = JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code) throw err; // fs errors (e.g. swapped away) are retried by the caller
    throw new UserError(`${file}: not valid JSON; expected {version, files: {name: {bytes, sha256}}}`);
  }
  const ok =
    raw && typeof raw === 'object' && typeof raw.version === 'number' && raw.files && typeof raw.files === 'object' &&
    Object.values(raw.files).every((f: any) => f && Number.isInteger(f.bytes) && typeof f.sha256 === 'string');
  if (!ok) throw new UserError(`${file}: expected {version, files: {name: {bytes, sha256}}}`);
  if (raw.version > MARKER_VERSION) throw new UserError(`${file}: version ${raw.version} is newer than this program reads (${MARKER_VERSION})`);
  return raw as Marker;
}

/**
 * Checks `buf`, the content of dir/name, against dir's marker where the folder has one
 * that lists the file (an export read by path); folders from elsewhere have none and
 * are taken as they are.
 */
export function checkListed(dir: string, name: string, buf: Buffer): void {
  const markerFile = path.join(dir, MARKER);
  if (!fs.existsSync(markerFile)) return;
  let rec: FileRecord | undefined;
  try {
    rec = JSON.parse(fs.readFileSync(markerFile, 'utf8'))?.files?.[name];
  } catch {
    throw new UserError(`${markerFile}: not valid JSON; expected {version, files: {name: {bytes, sha256}}}`);
  }
  if (rec) checkRecord(path.join(dir, name), rec, buf);
}

/** `buf`, the content of `file`, has the size and sha256 its marker records. */
function checkRecord(file: string, rec: FileRecord, buf: Buffer): void {
  if (buf.length !== rec.bytes) {
    throw new UserError(`${file}: has ${buf.length} bytes, expected ${rec.bytes} (truncated or modified after saving)`);
  }
  if (sha256(buf) !== rec.sha256) throw new UserError(`${file}: corrupt (sha256 differs from ${MARKER})`);
}

/** Reads a file listed in the marker; size and checksum must match what was sealed. */
export async function readVerified(dir: string, marker: Marker, name: string): Promise<Buffer> {
  const rec = marker.files[name];
  const file = path.join(dir, name);
  if (!rec) throw new UserError(`${dir}: ${MARKER} does not list ${name}; expected a checkpoint written by saveCheckpoint`);
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && fs.existsSync(dir)) {
      throw new UserError(`${file}: missing; expected ${rec.bytes} bytes as listed in ${MARKER}`);
    }
    throw err;
  }
  checkRecord(file, rec, buf);
  return buf;
}

export const selfTest: SelfTest = {
  async 'publish, replace, read back; old copy is the fallback'() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'atomic-dir-'));
    try {
      const dir = path.join(root, 'last');
      assert.equal(resolveComplete(dir), null);
      assert.match(whyIncomplete(dir), /checkpoint folder not found/);
      for (const v of ['one', 'two', 'three']) await publishDir(dir, (o) => o.write('a.txt', v), ['a.txt']);
      assert.equal(resolveComplete(dir), dir);
      const m = await readMarker(dir);
      assert.equal((await readVerified(dir, m, 'a.txt')).toString(), 'three');
      assert.deepEqual(fs.readdirSync(root), ['last']);
      // Mid-swap state (killed between the two renames): only the hidden old copy exists.
      const old = path.join(root, '.last.old-999999999-1');
      fs.renameSync(dir, old);
      assert.equal(resolveComplete(dir), old);
      await publishDir(dir, (o) => o.write('a.txt', 'four'), ['a.txt']);
      assert.deepEqual(fs.readdirSync(root), ['last']);
      // A user's own `last.old` (a backup, even a complete one) is neither read nor removed.
      fs.cpSync(dir, dir + '.old', { recursive: true });
      fs.writeFileSync(path.join(dir + '.old', 'mine.txt'), 'x');
      await publishDir(dir, (o) => o.write('a.txt', 'five'), ['a.txt']);
      fs.rmSync(dir, { recursive: true });
      assert.equal(resolveComplete(dir), null);
      await publishDir(dir, (o) => o.write('a.txt', 'six'), ['a.txt']);
      assert.deepEqual(fs.readdirSync(root).sort(), ['last', 'last.old']);
      assert.equal(fs.readFileSync(path.join(dir + '.old', 'mine.txt'), 'utf8'), 'x');
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
  async 'stale tmp of a dead pid is removed; truncation and corruption are named'() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'atomic-dir-'));
    try {
      const dir = path.join(root, 'best');
      fs.mkdirSync(path.join(root, '.best.tmp-999999999-1'));
      fs.mkdirSync(path.join(root, '.best.trash-999999999-2'));
      await publishDir(dir, (o) => o.write('a.bin', Buffer.alloc(64, 7)), ['a.bin']);
      assert.deepEqual(fs.readdirSync(root), ['best']);
      const m = await readMarker(dir);
      fs.truncateSync(path.join(dir, 'a.bin'), 10);
      await assert.rejects(readVerified(dir, m, 'a.bin'), /a\.bin: has 10 bytes, expected 64/);
      fs.writeFileSync(path.join(dir, 'a.bin'), Buffer.alloc(64, 8));
      await assert.rejects(readVerified(dir, m, 'a.bin'), /corrupt \(sha256/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
  async 'a full disk mid-save is one line naming the folder; the previous copy stays'() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'atomic-dir-'));
    try {
      const dir = path.join(root, 'last');
      await publishDir(dir, (o) => o.write('a.txt', 'one'), ['a.txt']);
      await assert.rejects(
        publishDir(dir, async (o) => {
          await o.write('a.txt', 'two');
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write', path: path.join(o.dir, 'b.txt') });
        }, ['a.txt', 'b.txt']),
        // Named as the published folder's file, not the hidden tmp sibling that held it.
        (e: Error) => e instanceof UserError && e.message.startsWith(`${path.join(dir, 'b.txt')}: no space left on the device (writing the checkpoint); the previous copy in ${dir} is intact; free some space`),
      );
      assert.equal((await readVerified(dir, await readMarker(dir), 'a.txt')).toString(), 'one');
      assert.deepEqual(fs.readdirSync(root), ['last']);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
  async 'refuses to replace a foreign folder'() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'atomic-dir-'));
    try {
      const dir = path.join(root, 'last');
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'thesis.tex'), 'x');
      await assert.rejects(
        publishDir(dir, (o) => o.write('a.txt', 'x'), ['a.txt']),
        (e: Error) => e instanceof UserError && /last: exists and is not a checkpoint folder \(holds 'thesis\.tex'\)/.test(e.message) && !e.message.includes('\n'),
      );
      assert.equal(fs.readFileSync(path.join(dir, 'thesis.tex'), 'utf8'), 'x');
      assert.deepEqual(fs.readdirSync(root), ['last']);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
};

runIfMain(module, selfTest);
