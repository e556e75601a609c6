// Device errors on webgpu are fatal. Dawn reports a failed validation, an
// out-of-memory or a lost device only as an event (and prints it): nothing throws,
// the failed commands are skipped and reads return stale or zero data. So the
// device is watched from start-up, and every read of results (train step, validation,
// predict) and every checkpoint save first asks checkDevice(), which turns the first
// error into one line naming the program and what to do.
import * as tf from './tf';
import assert from 'node:assert/strict';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { program, WebgpuBackendLike, webgpuDevice } from './webgpu_kernels/program';

/** A device error: printed as one line, exit code 1, nothing saved after it. */
export class DeviceError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceError';
  }
}

interface GpuErrorLike { message: string; constructor: { name: string } }
interface DeviceLike {
  addEventListener(type: 'uncapturederror', fn: (ev: { error: GpuErrorLike }) => void): void;
  lost: Promise<{ reason: string; message: string }>;
}

let firstError: string | null = null;
let watched: DeviceLike | null = null;

/** The program or object a Dawn message names, e.g. AddNPackedProgram. */
export function namedObject(message: string): string | null {
  const m = /"+([A-Za-z_][\w.-]*)"+/.exec(message);
  return m ? m[1] : null;
}

/** One line for a Dawn error: its kind, the program it names, its first line, and what to do. */
export function describeDeviceError(kind: string, message: string): string {
  const lines = message.split('\n').map((l) => l.trim()).filter(Boolean);
  const what = namedObject(message);
  const where = what ? ` in ${what}` : '';
  if (/OutOfMemory/i.test(kind)) {
    return `webgpu: out of GPU memory${where} (${lines[0] ?? kind}): lower training.batch_size, data.size or model.base`;
  }
  // The first sentence: Dawn goes on with advice about limits that a user cannot set here.
  const first = (lines[0] ?? '').replace(/\.\s.*$/, '').slice(0, 200);
  const type = /Validation/i.test(kind) ? 'validation error' : /Internal/i.test(kind) ? 'internal error' : kind;
  return `webgpu: ${type}${where}: ${first}; this is a kernel bug, please report it; --backend wasm runs without the GPU`;
}

/** Starts watching the current webgpu backend's device (idempotent). */
export function watchDevice(): void {
  const device = tf.getBackend() === 'webgpu' ? webgpuDevice<DeviceLike>() : null;
  if (!device || device === watched) return;
  watched = device;
  firstError = null;
  device.addEventListener('uncapturederror', (ev) => {
    firstError ??= describeDeviceError(ev.error.constructor.name, ev.error.message);
  });
  void device.lost.then((info) => {
    if (info.reason === 'destroyed') return; // our own dispose at exit
    firstError ??= `webgpu: the GPU device was lost (${info.reason}: ${(info.message ?? '').split('\n')[0]}); the driver reset or the GPU ran out of memory: lower training.batch_size or data.size and resume`;
  });
}

/** Throws the first device error seen since start-up, with `context` (e.g. 'training step 12'). */
export function checkDevice(context: string): void {
  if (firstError !== null && tf.getBackend() === 'webgpu') throw new DeviceError(`${firstError} (during ${context})`);
}

/** The first device error seen, if any (tests). */
export function deviceErrorSeen(): string | null {
  return firstError;
}

/**
 * Runs a program that the device refuses (more storage buffers than its limit),
 * bypassing the guard in Dispatcher: a real validation error, for tests
 * (test/helpers/step_fault.ts). Returns a tensor whose content is invalid.
 */
export function provokeDeviceError(): tf.Tensor {
  const backend = tf.backend() as unknown as WebgpuBackendLike;
  const n = backend.device.limits.maxStorageBuffersPerShaderStage + 1;
  const names = Array.from({ length: n }, (_, i) => `x${i}`);
  const p = program({
    key: 'semseg_provoked_fault', inputs: names, outputShape: [4],
    body: `fn main(index : i32) { if (index < uniforms.size) { result[index] = ${names.map((v) => `${v}[index]`).join(' + ')}; } }`,
  });
  const xs = names.map(() => tf.ones([4]));
  const out = backend.runWebGPUProgram(p, xs, 'float32');
  tf.dispose(xs);
  return tf.engine().makeTensorFromTensorInfo(out);
}

export const selfTest: SelfTest = {
  'a Dawn message becomes one line with the program it names and what to do'() {
    const dawn = 'The number of storage buffers (45) in the Compute stage exceeds the maximum per-stage limit (8). This adapter supports a higher limit.\n - While validating binding counts\n - While calling [Device].CreateComputePipeline([ComputePipelineDescriptor ""AddNPackedProgram""]).';
    const line = describeDeviceError('GPUValidationError', dawn);
    assert.equal(line, 'webgpu: validation error in AddNPackedProgram: The number of storage buffers (45) in the Compute stage exceeds the maximum per-stage limit (8); this is a kernel bug, please report it; --backend wasm runs without the GPU');
    assert.match(describeDeviceError('GPUOutOfMemoryError', 'Out of memory\n - While calling [Device].CreateBuffer'), /^webgpu: out of GPU memory \(Out of memory\): lower training.batch_size/);
    assert.equal(namedObject('[Invalid CommandBuffer] is invalid'), null);
  },
  'checkDevice is silent with no error seen'() {
    checkDevice('a self-test');
  },
};

runIfMain(module, selfTest);
