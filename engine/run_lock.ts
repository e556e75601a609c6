// One training run per checkpoint folder. Two runs under the same name would take turns
// replacing last/ and best/ with two different models; each save is atomic, but the run
// a user resumes would not be the one they think. The lock is a file created exclusively
// (O_EXCL) holding the owner's pid and host; a lock whose process is gone (killed,
// crashed) is taken over, so a SIGKILL never leaves a folder locked. A pid on another
// host (a container, a shared disk) cannot be checked, so the owner also touches the
// file every minute and a lock untouched for STALE_MS is taken over.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { pidAlive } from '../utils/file_out';

export const LOCK_FILE = '.train.lock';

interface LockInfo { pid: number; host: string; started: string }

const HEARTBEAT_MS = 60_000;
const STALE_MS = 10 * HEARTBEAT_MS; // far longer than any step blocks the event loop
const heldHere = new Set<string>(); // lock files this process holds

function readLock(file: string): LockInfo | null {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<LockInfo>;
    return typeof v.pid === 'number' && typeof v.host === 'string' ? (v as LockInfo) : null;
  } catch {
    return null; // unreadable or half-written: nobody can prove they hold it
  }
}

function mtimeMs(file: string): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return 0; // gone meanwhile: stale
  }
}

function holderRunning(file: string, held: LockInfo, host: string): boolean {
  if (held.host !== host) return Date.now() - mtimeMs(file) < STALE_MS;
  // Our own pid in a lock we do not hold: a previous process that had the same pid (containers).
  if (held.pid === process.pid) return heldHere.has(file);
  return pidAlive(held.pid);
}

/** Takes the folder's lock or throws a UserError naming its holder; returns the release. */
export function acquireRunLock(dir: string): () => void {
  const file = path.resolve(dir, LOCK_FILE);
  const mine: LockInfo = { pid: process.pid, host: os.hostname(), started: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(file, JSON.stringify(mine) + '\n', { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const held = readLock(file);
    // Unreadable and fresh: its owner may be between creating and writing it.
    const busy = held ? holderRunning(file, held, mine.host) : Date.now() - mtimeMs(file) < 5000;
    if (busy || attempt >= 2) {
      const who = held ? `pid ${held.pid} on ${held.host}, started ${held.started}` : 'lock file being written';
      throw new UserError(
        `${dir} is in use by another training run (${who}); ` +
          `wait for it, train under another name (--set name=...), or delete ${file} if that run is gone`,
      );
    }
    fs.rmSync(file, { force: true }); // stale: its process is gone
  }
  heldHere.add(file);
  const beat = setInterval(() => {
    const now = new Date();
    try {
      fs.utimesSync(file, now, now);
    } catch {
      // the folder was removed under us; the next save will say so
    }
  }, HEARTBEAT_MS).unref();
  const release = () => {
    clearInterval(beat);
    heldHere.delete(file);
    if (readLock(file)?.pid === process.pid) fs.rmSync(file, { force: true });
    process.off('exit', release);
  };
  process.on('exit', release); // process.exit() (second Ctrl-C) skips finally blocks
  return release;
}

// ---------------------------------------------------------------------------
/** Runs a check in a fresh folder, removed afterwards; `file` is that folder's lock file. */
function inTmpDir(check: (dir: string, file: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'run-lock-'));
  try {
    check(dir, path.join(dir, LOCK_FILE));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export const selfTest: SelfTest = {
  'a held lock refuses a second run, naming the folder and the holder; release frees it'() {
    inTmpDir((dir, file) => {
      const release = acquireRunLock(dir);
      assert.throws(() => acquireRunLock(dir), (e: Error) => e instanceof UserError && e.message.includes(dir) && e.message.includes(`pid ${process.pid}`));
      release();
      assert.ok(!fs.existsSync(file));
      acquireRunLock(dir)();
    });
  },
  'a lock left by a dead process or a corrupt lock file is taken over'() {
    inTmpDir((dir, file) => {
      const gone = spawnSync(process.execPath, ['-e', '']).pid; // has exited by now
      assert.ok(gone && !pidAlive(gone));
      fs.writeFileSync(file, JSON.stringify({ pid: gone, host: os.hostname(), started: 'x' }));
      acquireRunLock(dir)();
      fs.writeFileSync(file, '{"pid": 1'); // torn write: busy while fresh, stale after 5 s
      assert.throws(() => acquireRunLock(dir), /lock file being written/);
      const old = new Date(Date.now() - 6000);
      fs.utimesSync(file, old, old);
      acquireRunLock(dir)();
      // Our own pid, not held by us: left by an earlier process with the same pid.
      fs.writeFileSync(file, JSON.stringify({ pid: process.pid, host: os.hostname(), started: 'x' }));
      acquireRunLock(dir)();
    });
  },
  'another host\'s lock holds while it is touched, and is taken over once untouched for 10 minutes'() {
    inTmpDir((dir, file) => {
      fs.writeFileSync(file, JSON.stringify({ pid: process.pid, host: 'elsewhere', started: 'x' }));
      assert.throws(() => acquireRunLock(dir), /in use by another training run \(pid \d+ on elsewhere/);
      const old = new Date(Date.now() - STALE_MS - 1000);
      fs.utimesSync(file, old, old);
      acquireRunLock(dir)();
    });
  },
};

runIfMain(module, selfTest);
