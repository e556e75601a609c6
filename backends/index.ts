// Chooses and starts the TensorFlow.js compute backend.
// auto: native libtensorflow (tfjs-node-gpu, then tfjs-node) when installed,
// else WebGPU (Dawn) when a hardware adapter exists, else WebAssembly (XNNPACK,
// SIMD), else pure JavaScript. The start-up line says why each earlier one was skipped.
import * as tf from './tf';
import assert from 'node:assert/strict';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { registerWasmGradKernels } from './wasm_kernels';
import { registerWasmCopies } from './wasm_copies';
import { registerPoolGrads } from './wasm_pool_grads';
import { registerDepthwiseGrads } from './wasm_depthwise_grads';
import { useStockWasm, useThreadedWasm, wasmThreads } from './wasm_threads';
import { probeAdapter, softwareOptIn, startWebgpu } from './webgpu';
import { warning } from '../utils/warnings';

export type BackendName = 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';

export interface BackendInfo {
  name: 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
  /** What was loaded, for the start-up line, e.g. "tensorflow (@tensorflow/tfjs-node-gpu, GPU found)". */
  description: string;
}

const INSTALL_HINT: Record<string, string> = {
  tensorflow:
    'install it with `npm install @tensorflow/tfjs-node` (CPU) or `npm install @tensorflow/tfjs-node-gpu` (NVIDIA GPU with CUDA 11.2 + cuDNN 8.1); see README "Backends"',
  wasm: 'install it with `npm install @tensorflow/tfjs-backend-wasm`',
  cpu: 'it ships with @tensorflow/tfjs-backend-cpu; reinstall with `npm install`',
};

/** Whether `load` (a require of a literal name, so that a bundler can see it) succeeds. */
function tryRequire(load: () => unknown): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

/** Loads the native backend package; returns its name or null. */
function loadNative(): string | null {
  if (tryRequire(() => require('@tensorflow/tfjs-node-gpu'))) return '@tensorflow/tfjs-node-gpu';
  if (tryRequire(() => require('@tensorflow/tfjs-node'))) return '@tensorflow/tfjs-node';
  return null;
}

/**
 * Sets CUDA_VISIBLE_DEVICES from `gpus` (must happen before libtensorflow loads).
 * Returns a warning when more than one device is listed.
 */
export function applyGpus(gpus: number[]): string | null {
  if (gpus.length === 0) return null;
  process.env.CUDA_VISIBLE_DEVICES = gpus.join(',');
  if (gpus.length > 1) {
    return `warning: gpus lists ${gpus.length} devices (${gpus.join(', ')}), but TensorFlow.js trains on one device; only the first visible one (${gpus[0]}) will be used`;
  }
  return null;
}

async function startNative(pkg: string): Promise<BackendInfo> {
  await tf.setBackend('tensorflow');
  await tf.ready();
  const be = tf.backend() as unknown as { isUsingGpuDevice?: boolean };
  const gpu = be.isUsingGpuDevice ? 'GPU found' : pkg.endsWith('-gpu') ? 'no GPU found, running on CPU' : 'CPU';
  return { name: 'tensorflow', description: `tensorflow (${pkg}, ${gpu})` };
}

async function startWasm(): Promise<BackendInfo> {
  const threads = useThreadedWasm();
  let ok = await tf.setBackend('wasm');
  if (!ok && threads > 1) {
    warning('warning: the multi-threaded wasm build did not start; using the single-threaded one');
    useStockWasm();
    ok = await tf.setBackend('wasm');
  }
  if (!ok) throw new Error('tf.setBackend("wasm") failed');
  await tf.ready();
  registerWasmGradKernels();
  registerWasmCopies();
  registerPoolGrads();
  registerDepthwiseGrads();
  const n = wasmThreads();
  return { name: 'wasm', description: `wasm (@tensorflow/tfjs-backend-wasm, XNNPACK SIMD, ${n} thread${n > 1 ? 's' : ''})` };
}

const HOST_EVENTS = ['uncaughtException', 'unhandledRejection'] as const;

/**
 * Runs `start`, then takes off the host's `process` the uncaughtException/unhandledRejection
 * listeners it added: tfjs-backend-wasm's Emscripten glue adds them whenever `process` exists
 * (its own removal, on dispose, never runs) and they rethrow a host program's later errors
 * from inside the glue (printing it minified) and exit 7.
 */
export async function withoutNewListeners<T>(start: () => Promise<T>): Promise<T> {
  const listeners = (e: string) => process.listeners(e as 'uncaughtException') as unknown[];
  const before = new Map(HOST_EVENTS.map((e) => [e, new Set(listeners(e))]));
  try {
    return await start();
  } finally {
    for (const e of HOST_EVENTS) {
      for (const l of listeners(e)) if (!before.get(e)!.has(l)) process.removeListener(e, l as (...a: unknown[]) => void);
    }
  }
}

/** First line of an error message, for the one-line start-up report. */
function firstLine(err: unknown): string {
  return ((err as Error)?.message ?? String(err)).split('\n')[0];
}

/** Starts the requested backend; an unavailable one is a UserError saying how to install it. */
export async function initBackend(requested: BackendName, gpus: number[] = []): Promise<BackendInfo> {
  const gpuWarning = applyGpus(gpus);
  if (gpuWarning) warning(gpuWarning);
  const info = await startBackend(requested);
  const unused = gpusUnused(gpus, info);
  if (unused) warning(unused);
  return info;
}

/** `gpus` only means something to a native backend that found a GPU: say so instead of ignoring it. */
export function gpusUnused(gpus: number[], info: BackendInfo): string | null {
  if (!gpus.length || (info.name === 'tensorflow' && /GPU found/.test(info.description) && !/no GPU/.test(info.description))) return null;
  if (info.name === 'webgpu') return `warning: gpus [${gpus.join(', ')}] picks nothing on the webgpu backend: Dawn uses its high-performance adapter`;
  return `warning: gpus [${gpus.join(', ')}] is not used: backend ${info.name} runs on the CPU; GPUs need backend webgpu, or tensorflow with @tensorflow/tfjs-node-gpu and CUDA (README "Backends")`;
}

async function startBackend(requested: BackendName): Promise<BackendInfo> {
  // Why auto passed over each backend, appended to the start-up line.
  const skipped: string[] = [];
  const withSkips = (b: BackendInfo): BackendInfo =>
    skipped.length ? { ...b, description: `${b.description}; ${skipped.map((s) => `skipped ${s}`).join('; ')}` } : b;
  if (requested === 'tensorflow' || requested === 'auto') {
    const pkg = loadNative();
    if (pkg) return startNative(pkg);
    if (requested === 'tensorflow') throw new UserError(`backend 'tensorflow' is not available: ${INSTALL_HINT.tensorflow}`);
    skipped.push('tensorflow: @tensorflow/tfjs-node not installed');
  }
  if (requested === 'webgpu' || requested === 'auto') {
    // A software adapter only on explicit request: auto never picks one.
    const allowSoftware = requested === 'webgpu' && softwareOptIn();
    const probe = await probeAdapter({ allowSoftware }).catch((err): { ok: false; reason: string } => ({ ok: false, reason: `adapter request failed: ${firstLine(err)}` }));
    if (probe.ok) {
      try {
        return withSkips({ name: 'webgpu', description: await startWebgpu(probe) });
      } catch (err) {
        if (requested === 'webgpu') throw err instanceof UserError ? err : new UserError(`backend 'webgpu' failed to start: ${firstLine(err)}`);
        skipped.push(`webgpu: failed to start: ${firstLine(err)}`);
      }
    } else if (requested === 'webgpu') {
      throw new UserError(`backend 'webgpu' is not available: ${probe.reason}; see README "Backends"`);
    } else {
      skipped.push(`webgpu: ${probe.reason}`);
    }
  }
  if (requested === 'wasm' || requested === 'auto') {
    if (tryRequire(() => require('@tensorflow/tfjs-backend-wasm'))) {
      try {
        return withSkips(await withoutNewListeners(startWasm));
      } catch (err) {
        if (requested === 'wasm') throw new UserError(`backend 'wasm' failed to start: ${firstLine(err)}`);
        skipped.push(`wasm: failed to start: ${firstLine(err)}`);
      }
    } else if (requested === 'wasm') {
      throw new UserError(`backend 'wasm' is not available: ${INSTALL_HINT.wasm}`);
    } else {
      skipped.push('wasm: @tensorflow/tfjs-backend-wasm not installed');
    }
  }
  await tf.setBackend('cpu');
  await tf.ready();
  registerPoolGrads(); // fixes the cpu nearest-upsampling gradient for batches > 1
  return withSkips({ name: 'cpu', description: 'cpu (pure JavaScript; very slow for training)' });
}

export const selfTest: SelfTest = {
  async 'auto picks wasm here when no native backend or GPU adapter exists, and says why'() {
    const info = await initBackend('auto');
    const probe = await probeAdapter();
    if (loadNative()) assert.equal(info.name, 'tensorflow');
    else if (probe.ok) assert.equal(info.name, 'webgpu');
    else {
      assert.equal(info.name, 'wasm');
      assert.match(info.description, /; skipped tensorflow: @tensorflow\/tfjs-node not installed; skipped webgpu: \S/);
      assert.equal(info.description.split('\n').length, 1);
    }
    assert.equal(tf.getBackend(), info.name);
  },
  async 'webgpu without an adapter is one line naming the reason'() {
    const probe = await probeAdapter();
    if (probe.ok) return; // a GPU here: covered by test/webgpu.test.ts
    await assert.rejects(initBackend('webgpu'), (e: Error) => {
      assert.ok(e instanceof UserError);
      assert.ok(e.message.includes(probe.reason), e.message);
      assert.equal(e.message.split('\n').length, 1);
      return true;
    });
  },
  async 'the wasm backend leaves no listeners on the host process'() {
    const before = HOST_EVENTS.map((e) => process.listenerCount(e));
    await initBackend('wasm');
    assert.deepEqual(HOST_EVENTS.map((e) => process.listenerCount(e)), before);
  },
  async 'cpu can be forced'() {
    const info = await initBackend('cpu');
    assert.equal(info.name, 'cpu');
    assert.equal(tf.getBackend(), 'cpu');
  },
  async 'missing native backend is one line with install advice'() {
    if (loadNative()) return; // installed here: nothing to check
    await assert.rejects(initBackend('tensorflow'), (e: Error) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /npm install @tensorflow\/tfjs-node/);
      assert.equal(e.message.split('\n').length, 1);
      return true;
    });
  },
  'gpus without a GPU backend is a visible warning'() {
    const wasm = { name: 'wasm' as const, description: 'wasm (x)' };
    assert.match(gpusUnused([0], wasm) ?? '', /^warning: gpus \[0\] is not used: backend wasm runs on the CPU/);
    assert.equal(gpusUnused([], wasm), null);
    assert.match(gpusUnused([0], { name: 'webgpu', description: 'webgpu (x)' }) ?? '', /picks nothing on the webgpu backend/);
    assert.match(gpusUnused([1], { name: 'tensorflow', description: 'tensorflow (@tensorflow/tfjs-node-gpu, no GPU found, running on CPU)' }) ?? '', /not used/);
    assert.equal(gpusUnused([1], { name: 'tensorflow', description: 'tensorflow (@tensorflow/tfjs-node-gpu, GPU found)' }), null);
  },
  'several gpus warn and set CUDA_VISIBLE_DEVICES'() {
    const before = process.env.CUDA_VISIBLE_DEVICES;
    try {
      assert.match(applyGpus([0, 1, 2, 3]) ?? '', /trains on one device/);
      assert.equal(process.env.CUDA_VISIBLE_DEVICES, '0,1,2,3');
      assert.equal(applyGpus([1]), null);
    } finally {
      if (before === undefined) delete process.env.CUDA_VISIBLE_DEVICES;
      else process.env.CUDA_VISIBLE_DEVICES = before;
    }
  },
};

runIfMain(module, selfTest);
