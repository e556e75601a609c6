// Runs the train/evaluate/predict command lines as a user would, in a child process.
// Works from the compiled tests (dist/test/helpers -> dist/*.js) and under tsx
// (test/helpers -> *.ts, started with `--import tsx`).
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import yaml from 'js-yaml';

const underTsx = path.extname(__filename) === '.ts';
/** The project root (sources) or dist/ (compiled): where train.ts / train.js live. */
export const ROOT = path.resolve(__dirname, '..', '..');

export type Command = 'train' | 'evaluate' | 'predict' | 'export';

export function nodeArgs(cmd: Command): string[] {
  const script = path.join(ROOT, `${cmd}${underTsx ? '.ts' : '.js'}`);
  // An absolute URL for tsx, so the child's cwd (a temp dir) does not matter.
  return underTsx ? ['--import', pathToFileURL(require.resolve('tsx')).href, script] : [script];
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();

/** Kills children left running by a failed test (so the test runner can exit). */
export function killLeftovers(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
}

export interface Started {
  child: ChildProcess;
  /** Everything printed so far. */
  out: { stdout: string; stderr: string };
  done: Promise<RunResult>;
  /** Resolves when stdout or stderr matches `re` (rejects if the process exits first). */
  waitFor(re: RegExp): Promise<void>;
}

export function start(cmd: Command, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Started {
  return startNode([...nodeArgs(cmd), ...args], opts);
}

/** Runs node with these arguments (e.g. a launcher script) like `run`. */
export function runNode(args: string[], opts: { cwd?: string } = {}): Promise<RunResult> {
  return startNode(args, opts).done;
}

function startNode(nodeArgv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv }): Started {
  const env = { ...process.env, ...opts.env };
  delete env.SEMSEG_DEBUG; // stack traces must not show up whatever the caller's shell has
  delete env.NODE_TEST_CONTEXT; // a child of `node --test` must not act as a test reporter
  const child = spawn(process.execPath, nodeArgv, { cwd: opts.cwd ?? os.tmpdir(), env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const out = { stdout: '', stderr: '' };
  const watchers: { re: RegExp; resolve: () => void }[] = [];
  const matched = (re: RegExp) => re.test(out.stdout) || re.test(out.stderr);
  const check = () => {
    for (const w of watchers.splice(0)) {
      if (matched(w.re)) w.resolve();
      else watchers.push(w);
    }
  };
  child.stdout!.setEncoding('utf8').on('data', (s: string) => {
    out.stdout += s;
    check();
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    out.stderr += s;
    check();
  });
  const done = new Promise<RunResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, ...out });
    });
  });
  const waitFor = (re: RegExp) =>
    new Promise<void>((resolve, reject) => {
      if (matched(re)) return resolve();
      watchers.push({ re, resolve });
      void done.then((r) => reject(new Error(`exited (code ${r.code}, signal ${r.signal}) before its output matched ${re}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`)));
    });
  return { child, out, done, waitFor };
}

export function run(cmd: Command, args: string[], opts: { cwd?: string } = {}): Promise<RunResult> {
  return start(cmd, args, opts).done;
}

/** For assertion messages. */
export function show(r: RunResult): string {
  return `exit ${r.code} (signal ${r.signal})\n--- stdout:\n${r.stdout.slice(-3000)}\n--- stderr:\n${r.stderr.slice(-3000)}`;
}

/** Asserts a zero exit, with the output in the message otherwise. */
export function assertOk(r: RunResult): void {
  assert.equal(r.code, 0, show(r));
}

// Progress goes to stderr: the bars (without a terminal, plain "epoch i/n ..." lines) and
// the library's start-up and progress lines (api/options.ts logger).
const progressLine = /^(epoch \d+\/\d+ |backend: |evaluating |predicting \d+ image|data: |resumed from |starting from weights |model\.encoder_weights |final evaluation of |new best |done in )/;

/**
 * Asserts the run failed the way a user error should: non-zero exit, no stack trace,
 * and stderr (progress lines and `warning: ...` lines aside) is exactly one `error: ...`
 * line. Returns that line.
 */
export function assertOneLineError(r: RunResult, ...patterns: RegExp[]): string {
  assert.notEqual(r.code, 0, show(r));
  assert.equal(r.signal, null, show(r));
  assert.doesNotMatch(r.stderr + r.stdout, /\n\s+at /, `stack trace printed\n${show(r)}`);
  const lines = r.stderr.split(/\r?\n/).filter((l) => l.trim() !== '' && !progressLine.test(l) && !/^warning: /.test(l));
  assert.equal(lines.length, 1, `expected one line on stderr\n${show(r)}`);
  assert.match(lines[0], /^error: /, show(r));
  for (const p of patterns) assert.match(lines[0], p, show(r));
  return lines[0];
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `semseg-cli-${prefix}-`));
}

/** Writes `cfg` as YAML to dir/file and returns its path. */
export function writeConfig(dir: string, cfg: unknown, file = 'config.yaml'): string {
  const p = path.join(dir, file);
  fs.writeFileSync(p, yaml.dump(cfg));
  return p;
}

/**
 * A tiny config in `dir` (model.base 4, depth 2, 32x32 input, wasm, outputs inside dir);
 * `over` is merged one section deep.
 */
export function tinyConfig(dir: string, over: Record<string, any> = {}): Record<string, any> {
  const base: Record<string, any> = {
    name: 'tiny',
    backend: 'wasm',
    model: { name: 'unet', base: 4, depth: 2 },
    data: { name: 'synthetic', root: path.join(dir, 'data'), size: [32, 32], synthetic: { kind: 'lesion', train: 16, val: 8, image_size: 40 } },
    training: { epochs: 1, batch_size: 4, workers: 1, print_interval: 2 },
    checkpoint: { ckpt_root: path.join(dir, 'checkpoints') },
    results: { root: path.join(dir, 'results'), gallery_size: 4 },
  };
  for (const [k, v] of Object.entries(over)) {
    base[k] = v !== null && typeof v === 'object' && !Array.isArray(v) && typeof base[k] === 'object' ? { ...base[k], ...v } : v;
  }
  // data.synthetic is the synthetic dataset's own option: another dataset refuses it.
  if (base.data?.name !== 'synthetic' && over.data?.synthetic === undefined) delete base.data.synthetic;
  return base;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
