// Chooses and starts the TensorFlow.js compute backend.
// auto: native libtensorflow (tfjs-node-gpu, then tfjs-node) when installed,
// else WebAssembly (XNNPACK, SIMD), else pure JavaScript.
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { registerWasmGradKernels } from './wasm_kernels';
import { useStockWasm, useThreadedWasm, wasmThreads } from './wasm_threads';

export type BackendName = 'auto' | 'tensorflow' | 'wasm' | 'cpu';

export interface BackendInfo {
  name: 'tensorflow' | 'wasm' | 'cpu';
  /** What was loaded, for the start-up line, e.g. "tensorflow (@tensorflow/tfjs-node-gpu, GPU found)". */
  description: string;
}

const INSTALL_HINT: Record<string, string> = {
  tensorflow:
    'install it with `npm install @tensorflow/tfjs-node` (CPU) or `npm install @tensorflow/tfjs-node-gpu` (NVIDIA GPU with CUDA 11.2 + cuDNN 8.1); see README "Backends"',
  wasm: 'install it with `npm install @tensorflow/tfjs-backend-wasm`',
  cpu: 'it ships with @tensorflow/tfjs; reinstall with `npm install`',
};

function tryRequire(name: string): boolean {
  try {
    require(name);
    return true;
  } catch {
    return false;
  }
}

/** Loads the native backend package; returns its name or null. */
function loadNative(): string | null {
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    if (tryRequire(pkg)) return pkg;
  }
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
    console.warn('warning: the multi-threaded wasm build did not start; using the single-threaded one');
    useStockWasm();
    ok = await tf.setBackend('wasm');
  }
  if (!ok) throw new Error('tf.setBackend("wasm") failed');
  await tf.ready();
  registerWasmGradKernels();
  const n = wasmThreads();
  return { name: 'wasm', description: `wasm (@tensorflow/tfjs-backend-wasm, XNNPACK SIMD, ${n} thread${n > 1 ? 's' : ''})` };
}

/** Starts the requested backend; an unavailable one is a UserError saying how to install it. */
export async function initBackend(requested: BackendName, gpus: number[] = []): Promise<BackendInfo> {
  const warning = applyGpus(gpus);
  if (warning) console.warn(warning);
  const info = await startBackend(requested);
  const unused = gpusUnused(gpus, info);
  if (unused) console.warn(unused);
  return info;
}

/** `gpus` only means something to a native backend that found a GPU: say so instead of ignoring it. */
export function gpusUnused(gpus: number[], info: BackendInfo): string | null {
  if (!gpus.length || (info.name === 'tensorflow' && /GPU found/.test(info.description) && !/no GPU/.test(info.description))) return null;
  return `warning: gpus [${gpus.join(', ')}] is not used: backend ${info.description} runs on the CPU; GPUs need backend tensorflow with @tensorflow/tfjs-node-gpu and CUDA (README "Backends")`;
}

async function startBackend(requested: BackendName): Promise<BackendInfo> {
  if (requested === 'tensorflow' || requested === 'auto') {
    const pkg = loadNative();
    if (pkg) return startNative(pkg);
    if (requested === 'tensorflow') throw new UserError(`backend 'tensorflow' is not available: ${INSTALL_HINT.tensorflow}`);
  }
  if (requested === 'wasm' || requested === 'auto') {
    if (tryRequire('@tensorflow/tfjs-backend-wasm')) {
      try {
        return await startWasm();
      } catch (err) {
        if (requested === 'wasm') throw new UserError(`backend 'wasm' failed to start: ${(err as Error).message}`);
      }
    } else if (requested === 'wasm') {
      throw new UserError(`backend 'wasm' is not available: ${INSTALL_HINT.wasm}`);
    }
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return { name: 'cpu', description: 'cpu (pure JavaScript; very slow for training)' };
}

export const selfTest: SelfTest = {
  async 'auto picks wasm here when no native backend is installed'() {
    const info = await initBackend('auto');
    if (loadNative()) assert.equal(info.name, 'tensorflow');
    else assert.equal(info.name, 'wasm');
    assert.equal(tf.getBackend(), info.name);
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
    assert.match(gpusUnused([0], wasm) ?? '', /^warning: gpus \[0\] is not used: backend wasm \(x\) runs on the CPU/);
    assert.equal(gpusUnused([], wasm), null);
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
