// How the product writes a file into a folder it fills (results, eval, predict,
// history, TensorBoard): never through a symbolic link, so a link planted in a results
// folder cannot make a fixed name such as metrics.json overwrite its target elsewhere.
// A whole file goes to a fresh temporary name beside it (O_EXCL: a link of that name
// fails) and is renamed over the target, which replaces a link itself, not what it
// points at; a reader never sees half a file. Appends open with O_NOFOLLOW. A process
// killed mid-write leaves its temporary; the next run clears those whose pid is gone.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from './errors';
import { runIfMain, SelfTest } from './self_test';

/** A write(2) on a handle names no file: name the one the user knows. */
function named(err: unknown, file: string, tmp?: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e === 'object' && typeof e.code === 'string' && (!e.path || e.path === tmp)) e.path = file;
  return err;
}

/** Writes `file` whole (temporary name beside it, then rename), never through a symbolic link. */
export function writeFileReplacing(file: string, data: string | Uint8Array): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  try {
    fs.writeFileSync(tmp, data, { flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw named(err, file, tmp);
  }
}

/** Whether a process with this pid exists (EPERM: it does, owned by another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const REPLACING_TMP = /^\.(.+)\.tmp-(\d+)-[0-9a-f]{8}$/;

/**
 * Removes the temporaries `writeFileReplacing` left in `dir` when its process was killed
 * mid-write (SIGKILL, power loss): their pid is gone. Our own pid cannot have one in flight
 * (the write is synchronous), so a match with it is from a dead process whose pid came back.
 * With `targets`, only temporaries of those file names (a folder the user shares with us).
 */
export function clearStaleReplacements(dir: string, targets?: ReadonlySet<string>): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const e of entries) {
    const n = e.name;
    const m = REPLACING_TMP.exec(n);
    // Only files (or links) of that name are ours: the writer never makes a folder.
    if (!m || e.isDirectory() || (targets && !targets.has(m[1])) || (Number(m[2]) !== process.pid && pidAlive(Number(m[2])))) continue;
    fs.rmSync(path.join(dir, n), { force: true });
    removed.push(n);
  }
  return removed;
}

const NOFOLLOW = fs.constants.O_NOFOLLOW ?? 0; // absent on Windows, where links need privileges to make

/** Appends to `file` (creating it), refusing a symbolic link in its place. */
export function appendFileNoFollow(file: string, data: string | Uint8Array): void {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | NOFOLLOW, 0o666);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new UserError(`${file}: is a symbolic link; refusing to write through it (remove the link)`);
    throw named(err, file);
  }
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
  } catch (err) {
    throw named(err, file);
  } finally {
    fs.closeSync(fd);
  }
}

/** Refuses `dir` when it is a symbolic link: the product's own subfolders (tb/, overlays/) are never followed out. */
export function refuseLinkedFolder(dir: string): void {
  if (fs.lstatSync(dir, { throwIfNoEntry: false })?.isSymbolicLink()) {
    throw new UserError(`${dir}: is a symbolic link; refusing to write through it (remove the link)`);
  }
}

export const selfTest: SelfTest = {
  'a link in place of the file is replaced, its target untouched; appends refuse links'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'file-out-'));
    try {
      const target = path.join(dir, 'victim.txt');
      fs.writeFileSync(target, 'precious');
      const file = path.join(dir, 'metrics.json');
      fs.symlinkSync(target, file);
      writeFileReplacing(file, '{}');
      assert.equal(fs.readFileSync(target, 'utf8'), 'precious');
      assert.ok(!fs.lstatSync(file).isSymbolicLink());
      assert.equal(fs.readFileSync(file, 'utf8'), '{}');
      const log = path.join(dir, 'history.jsonl');
      fs.symlinkSync(target, log);
      assert.throws(() => appendFileNoFollow(log, 'x'), (e: Error) => e instanceof UserError && e.message === `${log}: is a symbolic link; refusing to write through it (remove the link)`);
      assert.equal(fs.readFileSync(target, 'utf8'), 'precious');
      appendFileNoFollow(path.join(dir, 'a.log'), 'one');
      appendFileNoFollow(path.join(dir, 'a.log'), 'two');
      assert.equal(fs.readFileSync(path.join(dir, 'a.log'), 'utf8'), 'onetwo');
      assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('.tmp-')), [], 'no temporary left');
      // A failed write names the file, not the temporary.
      assert.throws(() => writeFileReplacing(path.join(dir, 'nope', 'x.json'), '{}'), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.path === path.join(dir, 'nope', 'x.json'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
  'temporaries of killed writers are cleared; a live writer\'s and other files stay'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'file-out-'));
    try {
      const dead = spawnSync(process.execPath, ['-e', '0']).pid!; // exited: its pid is free
      const deadTmp = `.config.yaml.tmp-${dead}-c7a0ac86`;
      const liveTmp = `.config.yaml.tmp-${process.ppid}-0badf00d`; // our parent is alive
      for (const n of [deadTmp, liveTmp, 'config.yaml', '.config.yaml.tmp-notes']) fs.writeFileSync(path.join(dir, n), 'x');
      assert.deepEqual(clearStaleReplacements(dir), pidAlive(dead) ? [] : [deadTmp]);
      assert.deepEqual(fs.readdirSync(dir).sort(), [liveTmp, '.config.yaml.tmp-notes', 'config.yaml', ...(pidAlive(dead) ? [deadTmp] : [])].sort());
      assert.deepEqual(clearStaleReplacements(path.join(dir, 'absent')), []);
      // Limited to named targets: another file's temporary stays.
      const other = `.notes.txt.tmp-${dead}-c7a0ac86`;
      fs.writeFileSync(path.join(dir, deadTmp), 'x');
      fs.writeFileSync(path.join(dir, other), 'x');
      if (!pidAlive(dead)) assert.deepEqual(clearStaleReplacements(dir, new Set(['config.yaml'])), [deadTmp]);
      assert.ok(fs.existsSync(path.join(dir, other)));
      // A folder of that shape is not a temporary of ours: left alone, no error.
      fs.mkdirSync(path.join(dir, `.x.png.tmp-${dead}-c7a0ac86`));
      assert.ok(!clearStaleReplacements(dir).includes(`.x.png.tmp-${dead}-c7a0ac86`));
      assert.ok(fs.existsSync(path.join(dir, `.x.png.tmp-${dead}-c7a0ac86`)));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};

runIfMain(module, selfTest);
