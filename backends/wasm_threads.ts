// Multi-threaded wasm backend under Node. tfjs-backend-wasm 4.22 never picks its
// threaded build in Node (WASM_HAS_MULTITHREAD_SUPPORT is false there), and forcing it
// fails: emscripten's pthread workers are created from a blob: URL, which Node's
// Worker refuses. Here the same threaded-SIMD build is started with its worker script
// written to a real file, and registered as the 'wasm' backend in place of the stock
// one. XNNPACK splits work by output tiles, so results are identical to one thread.
import * as tf from './tf';
import * as tfwasm from '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../utils/errors';
import { SelfTest, runIfMain } from '../utils/self_test';

/**
 * The package's wasm-out folder (the threaded build's files), or null where the package
 * cannot be resolved at run time: inside an esbuild bundle (bench/gpu_check.sh), whose
 * stock wasm build then runs single-threaded from the .wasm files beside the bundle.
 */
function wasmOut(): string | null {
  try {
    return path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'wasm-out');
  } catch {
    return null;
  }
}

function out(): string {
  const dir = wasmOut();
  if (!dir) throw new Error('wasm_threads: @tensorflow/tfjs-backend-wasm/wasm-out not found');
  return dir;
}
// The C side creates 8 pthread workers up front and caps its pool there.
const MAX_THREADS = 8;

/** Threads to use: SEMSEG_WASM_THREADS, else every core this process may use. */
export function wantedThreads(): number {
  const env = process.env.SEMSEG_WASM_THREADS;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1) throw new UserError(`SEMSEG_WASM_THREADS must be a positive integer, got '${env}'`);
    return Math.min(n, MAX_THREADS);
  }
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.min(Math.max(1, cores), MAX_THREADS);
}

/** The pthread worker script, which the package ships only as a JS string. */
function workerScript(): string {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const src = (require(path.join(out(), 'tfjs-backend-wasm-threaded-simd.worker.js')) as { wasmWorkerContents: string }).wasmWorkerContents;
  // The string holds "\n" escapes inside JS string literals; tfjs re-escapes them too.
  const text = src.replace(/\n/g, '\\n');
  const hash = crypto.createHash('sha1').update(text).digest('hex').slice(0, 12);
  const file = path.join(os.tmpdir(), `tfjs-wasm-threaded-worker-${tfwasm.version_wasm}-${hash}.js`);
  if (!fs.existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file); // atomic: concurrent processes never see half a file
  }
  return file;
}

interface EmscriptenModule {
  cwrap(name: string, ret: string | null, args: string[]): (...a: number[]) => number;
  PThread: { unusedWorkers: unknown[]; runningWorkers: Array<{ unref?: () => void }> };
  tfjs?: Record<string, unknown>;
}

/** Instantiates the threaded-SIMD build with `threads` threads (main thread included). */
async function initThreaded(threads: number): Promise<EmscriptenModule> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const factory = require(path.join(out(), 'tfjs-backend-wasm-threaded-simd.js')) as (cfg: object) => Promise<EmscriptenModule>;
  const worker = workerScript();
  // The C side sizes its pool as min(requested, logical cores / 2) -- it assumes
  // hyper-threading -- read once at start-up from os.cpus(); report 2x threads then.
  const realCpus = os.cpus;
  const one = realCpus()[0];
  os.cpus = () => new Array(2 * threads).fill(one);
  let mod: EmscriptenModule;
  try {
    mod = await factory({
      locateFile: (p: string) => (p.endsWith('.worker.js') ? worker : path.join(out(), p)),
      // The workers load the main script from this path (tfjs passes a Blob here).
      mainScriptUrlOrBlob: path.join(out(), 'tfjs-backend-wasm-threaded-simd.js'),
    });
  } finally {
    os.cpus = realCpus;
  }
  // Same bridge as tfjs-backend-wasm's own init().
  mod.tfjs = {
    init: mod.cwrap('init', null, []),
    initWithThreadsCount: mod.cwrap('init_with_threads_count', null, ['number']),
    getThreadsCount: mod.cwrap('get_threads_count', 'number', []),
    registerTensor: mod.cwrap('register_tensor', null, ['number', 'number', 'number']),
    disposeData: mod.cwrap('dispose_data', null, ['number']),
    dispose: mod.cwrap('dispose', null, []),
  };
  return mod;
}

let installed = 0;
let stockFactory: { factory: () => unknown; priority: number } | null = null;

/**
 * Makes 'wasm' the threaded build with `threads` threads. Call before the first
 * tf.setBackend('wasm'); later calls (or an already started 'wasm') change nothing.
 * Returns the thread count the backend will use (1 = stock build left in place).
 */
export function useThreadedWasm(threads = wantedThreads()): number {
  if (installed) return installed;
  const engine = tf.engine() as unknown as { registry: Record<string, unknown>; registryFactory: Record<string, { factory: () => unknown; priority: number }> };
  if (threads <= 1 || engine.registry.wasm || !wasmOut()) return 1;
  const stock = engine.registryFactory.wasm;
  if (!stock) throw new Error('wasm_threads: @tensorflow/tfjs-backend-wasm did not register a wasm backend');
  stockFactory = stock;
  tf.removeBackend('wasm');
  const BackendWasm = (tfwasm as unknown as { BackendWasm: new (m: EmscriptenModule) => tf.KernelBackend }).BackendWasm;
  tf.registerBackend('wasm', async () => {
    const mod = await initThreaded(threads);
    const backend = new BackendWasm(mod); // starts the XNNPACK thread pool
    // Emscripten keeps running pthread workers ref'd, which would keep Node alive
    // after the work is done; idle pool threads wait on a futex, so unref is safe.
    for (const w of mod.PThread.runningWorkers) w.unref?.();
    return backend;
  }, stock.priority);
  installed = threads;
  return threads;
}

/** Puts tfjs's own single-threaded 'wasm' back, e.g. when the threaded build failed to start. */
export function useStockWasm(): void {
  if (!stockFactory) return;
  tf.removeBackend('wasm');
  tf.registerBackend('wasm', stockFactory.factory as () => tf.KernelBackend, stockFactory.priority);
  stockFactory = null;
  installed = 1;
}

/** Threads the running wasm backend uses (1 for the stock build). */
export function wasmThreads(): number {
  return Math.max(1, tfwasm.getThreadsCount());
}

export const selfTest: SelfTest = {
  'worker script is written once as a valid file'() {
    const f = workerScript();
    assert.equal(workerScript(), f);
    const text = fs.readFileSync(f, 'utf8');
    assert.match(text, /worker_threads/);
    assert.doesNotThrow(() => new Function(text), 'worker script must parse');
  },
  'thread count comes from SEMSEG_WASM_THREADS, capped at 8'() {
    const before = process.env.SEMSEG_WASM_THREADS;
    try {
      process.env.SEMSEG_WASM_THREADS = '3';
      assert.equal(wantedThreads(), 3);
      process.env.SEMSEG_WASM_THREADS = '64';
      assert.equal(wantedThreads(), 8);
      process.env.SEMSEG_WASM_THREADS = 'two';
      assert.throws(() => wantedThreads(), UserError);
    } finally {
      if (before === undefined) delete process.env.SEMSEG_WASM_THREADS;
      else process.env.SEMSEG_WASM_THREADS = before;
    }
  },
  async 'a threaded module starts with 2 threads and a running worker'() {
    // A separate module instance: the process's 'wasm' backend is left alone.
    const mod = await initThreaded(2);
    const tfjs = mod.tfjs as { initWithThreadsCount: (n: number) => void; getThreadsCount: () => number };
    tfjs.initWithThreadsCount(2);
    assert.equal(tfjs.getThreadsCount(), 2);
    assert.ok(mod.PThread.runningWorkers.length >= 1, 'a pthread worker runs');
    for (const w of mod.PThread.runningWorkers) w.unref?.(); // let the test process exit
  },
};

runIfMain(module, selfTest);
