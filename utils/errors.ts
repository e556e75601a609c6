// User-facing failures: bad config, bad data, bad checkpoints, a full or read-only
// disk. The CLI prints their message as one line and exits non-zero, never with a
// stack trace.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runIfMain, SelfTest } from './self_test';
import { exitWith, runExitHooks } from './exit';
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** A command line the command cannot run (unknown option, missing argument): exit 2, as POSIX utilities do. */
export class UsageError extends UserError {}

let commandLine = false;
/** Whether this process is one of the commands (runCli): errors keep their --option wording. */
export function isCommandLine(): boolean {
  return commandLine;
}

/** Work stopped by SIGINT/SIGTERM: one line, and the exit code a shell expects of that signal (128 + its number). */
export class StoppedBySignal extends UserError {
  constructor(message: string, readonly signal: string) {
    super(message);
  }
  get exitCode(): number {
    return signalExitCode(this.signal);
  }
}

/**
 * Runs a CLI entry point; turns any error into one readable line and an exit code: 2 for a
 * usage error, 128 + n after signal n, 1 for any other failure. `main` may return an exit
 * code (a run stopped by a signal, after saving, returns 128 + n).
 */
export async function runCli(main: () => Promise<number | void>): Promise<void> {
  commandLine = true;
  let code = 0;
  try {
    code = (await main()) ?? 0;
  } catch (err) {
    console.error(`error: ${describeError(err)}`);
    if (!(err instanceof UserError) && process.env.SEMSEG_DEBUG) console.error((err as Error).stack);
    await exitWith(exitCodeOf(err));
  }
  await runExitHooks();
  if (code) process.exitCode = code;
}

/** The exit code for an error that ended a command. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof StoppedBySignal) return err.exitCode;
  return err instanceof UsageError ? 2 : 1;
}

/** The exit code a shell expects after `signal` ('SIGINT': 130). */
export function signalExitCode(signal: string): number {
  return 128 + ((os.constants.signals as Record<string, number>)[signal] ?? 15);
}

/**
 * Whether an error is the backend running out of memory: an emscripten abort of the
 * wasm module ('Aborted(OOM)', 'Cannot enlarge memory'), XNNPACK's
 * xnn_status_out_of_memory (status 6), or a JS/native allocation that failed.
 */
export function isAllocationFailure(err: unknown): boolean {
  const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  // 'memory access out of bounds': tfjs's single-threaded wasm build when its heap cannot grow.
  return /Aborted\(|out of memory|memory access out of bounds|\bOOM\b|Cannot enlarge memory|XNN status .*status 6|Got status 6|Array buffer allocation failed|Invalid typed array length|failed to allocate|OOM when allocating/i.test(msg);
}

export function describeError(err: unknown): string {
  if (err instanceof UserError) return err.message;
  // Training says which sizes (engine/trainer.ts); evaluate and predict land here.
  if (isAllocationFailure(err)) return `out of memory (${firstLine(err)}): lower data.size, evaluation.scales, training.batch_size or model.base`;
  const fsErr = fsUserError(err); // a file-system failure no caller gave context to is still the user's to fix
  if (fsErr instanceof UserError) return fsErr.message;
  if (err instanceof Error) {
    const msg = err.message.split('\n')[0];
    return `${msg} (internal error; set SEMSEG_DEBUG=1 for the stack trace)`;
  }
  return String(err);
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0].slice(0, 120);
}

// --- file-system failures ----------------------------------------------------

/** What a caller knows about a failed write, for the message. */
export interface FsContext {
  /** The file or folder being written: errors from file handles (ENOSPC on write) carry no path. */
  path?: string;
  /** What was being written, e.g. 'checkpoint', 'report'. */
  what?: string;
  /** What is still intact, e.g. 'the previous checkpoint in checkpoints/x/last is intact'. */
  kept?: string;
  /** The setting or option that picks the folder, e.g. 'checkpoint.ckpt_root'. */
  setting?: string;
}

/** For each errno a write can meet: what went wrong, and what to do about it. */
const ERRNO: Record<string, { problem: string; todo: string }> = {
  EACCES: { problem: 'permission denied', todo: 'make it writable or choose another folder' },
  EPERM: { problem: 'permission denied', todo: 'make it writable or choose another folder' },
  EROFS: { problem: 'the file system is read-only', todo: 'choose a folder on a writable disk' },
  ENOSPC: { problem: 'no space left on the device', todo: 'free some space or choose a folder on another disk' },
  EDQUOT: { problem: 'disk quota exceeded', todo: 'free some space or choose a folder on another disk' },
  ENOTDIR: { problem: 'a part of this path is a file, not a folder', todo: 'move that file aside or choose another folder' },
  EEXIST: { problem: 'something of that name is in the way', todo: 'move it aside or choose another folder' },
  ENOTEMPTY: { problem: 'a folder of that name is in the way and not empty', todo: 'move it aside or choose another folder' },
  EISDIR: { problem: 'is a folder, expected a file', todo: 'move that folder aside or choose another path' },
  ENOENT: { problem: 'a folder on this path does not exist', todo: 'check that the folder was not removed or renamed meanwhile' },
};

/** The nearest ancestor of `p` that exists (itself included). */
function existingAncestor(p: string): string {
  let cur = path.resolve(p);
  while (!fs.existsSync(cur) && path.dirname(cur) !== cur) cur = path.dirname(cur);
  return cur;
}

/**
 * Turns Node's errno error from a write (mkdir, open, write, rename, ...) into a one-line
 * UserError that names the path, says what was kept and what to do. Other errors come
 * back unchanged, to be rethrown.
 */
export function fsUserError(err: unknown, ctx: FsContext = {}): unknown {
  const e = err as NodeJS.ErrnoException;
  if (!e || typeof e !== 'object' || typeof e.code !== 'string' || !(e.code in ERRNO)) return err;
  let code = e.code;
  let where = e.path ?? ctx.path;
  if (!where) return err; // nothing to name: not ours to describe
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    // mkdir on a read-only mount can say ENOENT; a file in the path says ENOTDIR. Name the real culprit.
    const anc = existingAncestor(where);
    if (!fs.statSync(anc).isDirectory()) {
      code = 'ENOTDIR';
      where = anc;
    } else if (code === 'ENOENT') {
      try {
        fs.accessSync(anc, fs.constants.W_OK);
      } catch (probe) {
        const c = (probe as NodeJS.ErrnoException).code;
        if (c === 'EROFS' || c === 'EACCES' || c === 'EPERM') [code, where] = [c, anc];
      }
    }
  }
  let problem = ERRNO[code].problem;
  if (code === 'ENOTDIR' && where !== (e.path ?? ctx.path)) problem = 'is a file, not a folder';
  if (code === 'ENOENT' && existingAncestor(where) === path.dirname(path.resolve(where))) problem = 'does not exist';
  const doing = ctx.what ? ` (writing the ${ctx.what})` : e.syscall ? ` (${e.syscall})` : '';
  const todo = ERRNO[code].todo + (ctx.setting ? ` (${ctx.setting})` : '');
  return new UserError(`${where}: ${problem}${doing}; ${ctx.kept ? ctx.kept + '; ' : ''}${todo}`);
}

/** Runs `fn`; a file-system failure comes out as fsUserError's one line. */
export function guardFsSync<T>(ctx: FsContext, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw fsUserError(err, ctx);
  }
}

function errno(code: string, syscall: string, p?: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: fabricated, ${syscall}${p ? ` '${p}'` : ''}`), { code, syscall, ...(p ? { path: p } : {}) });
}

export const selfTest: SelfTest = {
  'user errors print as their message alone'() {
    assert.equal(describeError(new UserError('data/x.png: expected a PNG')), 'data/x.png: expected a PNG');
  },
  'exit codes: 2 for usage, 130 after SIGINT, 1 otherwise'() {
    assert.equal(exitCodeOf(new UsageError('Unknown argument: x')), 2);
    assert.equal(exitCodeOf(new StoppedBySignal('stopped', 'SIGINT')), 130);
    assert.equal(exitCodeOf(new UserError('bad')), 1);
    assert.equal(exitCodeOf(new Error('bug')), 1);
    assert.equal(signalExitCode('SIGTERM'), 143);
  },
  'internal errors give their first line and a hint, not a stack'() {
    const d = describeError(new TypeError('boom\n    at somewhere'));
    assert.match(d, /^boom \(internal error; set SEMSEG_DEBUG=1/);
    assert.doesNotMatch(d, /at somewhere/);
  },
  'allocation failures of wasm, XNNPACK and JS say what to lower'() {
    for (const m of ['Aborted(OOM). Build with -sASSERTIONS for more info.', 'XNN status for xnn_create_convolution2d_nhwc_f32 is not successful. Got status 6. Use -c dbg to see XNN logs.', 'Array buffer allocation failed']) {
      assert.ok(isAllocationFailure(new Error(m)), m);
      assert.match(describeError(new Error(m)), /^out of memory \(.*\): lower data\.size/);
    }
    assert.ok(!isAllocationFailure(new Error('Cannot read properties of undefined')));
  },
  'a full disk names the file, what was kept and what to do'() {
    // ENOSPC from a file handle carries no path: the caller's path is named.
    const e = fsUserError(errno('ENOSPC', 'write'), { path: 'ck/run/.last.tmp-1-1/weights.bin', what: 'checkpoint', kept: 'the previous checkpoint in ck/run/last is intact', setting: 'checkpoint.ckpt_root' });
    assert.ok(e instanceof UserError);
    assert.equal(
      e.message,
      'ck/run/.last.tmp-1-1/weights.bin: no space left on the device (writing the checkpoint); the previous checkpoint in ck/run/last is intact; free some space or choose a folder on another disk (checkpoint.ckpt_root)',
    );
  },
  'read-only, permission, EEXIST and EISDIR are one line, not internal errors'() {
    for (const [code, re] of [['EROFS', /read-only/], ['EACCES', /permission denied/], ['EEXIST', /in the way/], ['EISDIR', /is a folder/]] as const) {
      const d = describeError(errno(code, 'open', '/x/y'));
      assert.match(d, re, code);
      assert.match(d, /^\/x\/y: /, code);
      assert.doesNotMatch(d, /internal error/, code);
    }
    const other = new Error('boom');
    assert.equal(fsUserError(other), other, 'not an errno error: unchanged');
    const pathless = errno('ENOSPC', 'write');
    assert.equal(fsUserError(pathless), pathless, 'no path known: unchanged');
  },
  async 'a file in the path is named as the culprit (ENOTDIR), also when mkdir says ENOENT'() {
    const os = await import('node:os');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'errors-'));
    try {
      const file = path.join(dir, 'plain');
      fs.writeFileSync(file, 'x');
      let caught: unknown;
      try {
        fs.mkdirSync(path.join(file, 'a', 'b'), { recursive: true });
      } catch (err) {
        caught = err;
      }
      const e = fsUserError(caught, { what: 'results' });
      assert.ok(e instanceof UserError, String(caught));
      assert.equal(e.message, `${file}: is a file, not a folder (writing the results); move that file aside or choose another folder`);
      assert.match(describeError(errno('ENOENT', 'mkdir', path.join(file, 'q'))), /plain: is a file, not a folder/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};

runIfMain(module, selfTest);
