// The one place that knows tfjs-backend-webgpu's internals: how a WGSL program is
// described (variableNames bind the inputs as `x`, `gamma`, ...; `result` or
// setOutputAtIndex is the output; `uniforms.<name>` the declared uniforms) and
// run (backend.runWebGPUProgram). Kernels of ours build programs with `program`
// and run them inside one engine kernel through `Dispatcher`, so that one tfjs
// kernel call can dispatch several shaders and free its intermediates.
import * as tf from '../tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';

type Info = tf.TensorInfo;

export interface UniformValue { type: 'int32' | 'float32'; data: number[] }

/** tfjs-backend-webgpu's program description (WebGPUProgram), the fields we set. */
export interface Program {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  /** WGSL struct members, e.g. 'eps : f32, channels : i32,'. */
  uniforms?: string;
  /** Adds `uniforms.size` = the output's element count. */
  size?: boolean;
  getUserCode(): string;
}

/** The parts of WebGPUBackend used here. */
export interface WebgpuBackendLike {
  device: { limits: { maxStorageBuffersPerShaderStage: number } };
  runWebGPUProgram(program: Program, inputs: Info[], dtype: tf.DataType, uniforms?: UniformValue[]): Info;
  disposeData(dataId: object): boolean;
}

/**
 * A program over a flat index: `main(index)` runs once per output element when
 * `perWorkgroup` is 0; otherwise once per thread of `groups` workgroups of
 * `perWorkgroup` threads (reductions), with `localId.x` the thread in its group.
 */
export function program(opts: {
  key: string; inputs: string[]; outputShape: number[]; body: string; uniforms?: string;
  perWorkgroup?: number; groups?: number;
}): Program {
  const wg = opts.perWorkgroup ?? 0;
  const size = opts.outputShape.reduce((a, b) => a * b, 1);
  const threads = wg > 0 ? wg : 128;
  const count = wg > 0 ? (opts.groups ?? 1) : Math.ceil(size / threads);
  // tfjs labels the pipeline with the program's class name, which Dawn's errors quote.
  const named = function () {} as unknown as { prototype: object };
  Object.defineProperty(named, 'name', { value: opts.key });
  const p: Program = {
    variableNames: opts.inputs,
    outputShape: opts.outputShape,
    shaderKey: opts.key,
    dispatchLayout: { x: opts.outputShape.map((_, i) => i) },
    dispatch: [count, 1, 1],
    workgroupSize: [threads, 1, 1],
    uniforms: opts.uniforms,
    size: true,
    getUserCode: () => opts.body,
  };
  return Object.assign(Object.create(named.prototype) as object, p);
}

// Per-channel reductions over [rows, channels] data run in two stages, so that a
// big GPU has work for all its cores (one workgroup per channel gives it 16): the
// rows are cut into segments, one workgroup per (segment, channel) reduces its part
// (each thread strides over the segment's rows, then the workgroup sums its
// threads' parts), and a second program merges the segments per channel.
export const REDUCE_THREADS = 256;
/** Rows per segment: a workgroup's share, ~16 values per thread. */
export const SEGMENT_ROWS = 4096;

/**
 * WGSL for a stage-1 workgroup: its channel `c` of `C`, its segment `seg`, and the
 * segment's rows [r0, r1). Needs uniforms rows, channels and segmentRows.
 */
export const segmentOfWorkgroup = `
        let C = uniforms.channels;
        // tfjs folds a dispatch over 65535 workgroups into y: the flat workgroup index.
        let group = i32(workgroupId.y * numWorkgroups.x + workgroupId.x);
        let c = group % C;
        let seg = group / C;
        let r0 = seg * uniforms.segmentRows;
        let r1 = min(r0 + uniforms.segmentRows, uniforms.rows);`;

/** Segments of `rows` rows (the last may be shorter). */
export function segmentCount(rows: number): number {
  return Math.max(1, Math.ceil(rows / SEGMENT_ROWS));
}

/** WGSL: `reduceSum(v)` sums v over the workgroup; every thread gets the total. */
export const workgroupSum = `
  var<workgroup> wgParts : array<f32, ${REDUCE_THREADS}>;
  fn reduceSum(v : f32) -> f32 {
    wgParts[localId.x] = v;
    workgroupBarrier();
    for (var s = ${REDUCE_THREADS / 2}u; s > 0u; s = s >> 1u) {
      if (localId.x < s) { wgParts[localId.x] = wgParts[localId.x] + wgParts[localId.x + s]; }
      workgroupBarrier();
    }
    let total = wgParts[0];
    workgroupBarrier();
    return total;
  }`;

/** The GPUDevice of the started webgpu backend, or null (not started). */
export function webgpuDevice<T = unknown>(): T | null {
  const be = tf.findBackend('webgpu') as unknown as { device?: T } | null;
  return be?.device ?? null;
}

/** Runs programs on one backend inside one kernel call; frees what the kernel does not return. */
export class Dispatcher {
  private owned: Info[] = [];
  constructor(readonly backend: WebgpuBackendLike) {}

  /** The device's limit on storage buffers per shader stage (inputs + the output). */
  get maxBuffers(): number {
    return this.backend.device.limits.maxStorageBuffersPerShaderStage;
  }

  run(p: Program, inputs: Info[], uniforms: UniformValue[] = [], dtype: tf.DataType = 'float32'): Info {
    if (inputs.length + 1 > this.maxBuffers) {
      throw new Error(`webgpu program '${p.shaderKey}' has ${inputs.length} inputs; the device allows ${this.maxBuffers - 1}`);
    }
    const out = this.backend.runWebGPUProgram(p, inputs, dtype, uniforms);
    this.owned.push(out);
    return out;
  }

  /** The same buffer under another shape (row-major: free). */
  reshape(x: Info, shape: number[]): Info {
    return { dataId: x.dataId, shape, dtype: x.dtype };
  }

  /** Frees every intermediate not backing one of `results`. */
  finish<T extends Info | Info[]>(results: T): T {
    const keep = new Set((Array.isArray(results) ? results : [results]).map((r) => r.dataId));
    for (const t of this.owned) if (!keep.has(t.dataId)) this.backend.disposeData(t.dataId);
    this.owned = [];
    return results;
  }

  abort(): void {
    for (const t of this.owned) this.backend.disposeData(t.dataId);
    this.owned = [];
  }
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap };

/** A kernel function whose body dispatches programs; intermediates are freed, also on error. */
export function dispatchingKernel<T extends Info | Info[]>(body: (d: Dispatcher, args: KernelArgs) => T): tf.KernelFunc {
  return ((args: KernelArgs) => {
    const d = new Dispatcher(args.backend as WebgpuBackendLike);
    try {
      return d.finish(body(d, args));
    } catch (err) {
      d.abort();
      throw err;
    }
  }) as unknown as tf.KernelFunc;
}

/** Runs a kernel of ours through the engine (so it is taped, profiled and tidied like any op). */
export function runKernel(name: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown> = {}): tf.Tensor | tf.Tensor[] {
  return tf.engine().runKernel(name, inputs as unknown as tf.NamedTensorMap, attrs as tf.NamedAttrMap) as tf.Tensor | tf.Tensor[];
}

// tfjs-backend-webgpu's MatMulProgramType.MatMulPackedProgram (webgpu_util.ts).
const WEBGPU_PACKED_MATMUL = 3;

/**
 * Runs `fn` with webgpu's tiled matmul shader forced. For dW's shape (few outputs,
 * long K) tfjs picks its split-K shader, which adds partial sums with atomics in
 * whatever order the threads finish: runs then differ in the last bits, Adam turns
 * that into different weights, and resume is no longer exact.
 */
export function withTiledMatMul<T>(fn: () => T): T {
  const env = tf.env();
  const before = env.get('WEBGPU_MATMUL_PROGRAM_TYPE');
  env.set('WEBGPU_MATMUL_PROGRAM_TYPE', WEBGPU_PACKED_MATMUL);
  try {
    return fn();
  } finally {
    env.set('WEBGPU_MATMUL_PROGRAM_TYPE', before);
  }
}

/**
 * Runs `fn` and says how many shader dispatches it made on the webgpu backend (each a
 * pipeline run, whatever engine kernel it belongs to); null on other backends. For the
 * bench's profile.
 */
export async function countDispatches(fn: () => Promise<unknown>): Promise<number | null> {
  if (tf.getBackend() !== 'webgpu') {
    await fn();
    return null;
  }
  const backend = tf.backend() as unknown as WebgpuBackendLike;
  const run = backend.runWebGPUProgram;
  let n = 0;
  backend.runWebGPUProgram = function (this: WebgpuBackendLike, ...args: Parameters<WebgpuBackendLike['runWebGPUProgram']>) {
    n++;
    return run.apply(this, args);
  };
  try {
    await fn();
  } finally {
    backend.runWebGPUProgram = run;
  }
  return n;
}

/**
 * For self-tests: `fn` on webgpu (started on any adapter, software ones included)
 * and on cpu, every returned tensor read asynchronously; returns the largest
 * relative difference. Leaves cpu as the backend.
 */
export async function webgpuVsCpu(fn: () => tf.Tensor[]): Promise<number> {
  const { initBackend } = await import('../index');
  const before = process.env.SEMSEG_WEBGPU_SOFTWARE;
  process.env.SEMSEG_WEBGPU_SOFTWARE = '1';
  try {
    await initBackend('webgpu');
  } finally {
    if (before === undefined) delete process.env.SEMSEG_WEBGPU_SOFTWARE;
    else process.env.SEMSEG_WEBGPU_SOFTWARE = before;
  }
  const read = async () => {
    const ts = fn();
    const out = await Promise.all(ts.map(async (t) => Float32Array.from(await t.data())));
    tf.dispose(ts);
    return out;
  };
  const gpu = await read();
  (await import('../webgpu_errors')).checkDevice('a webgpu self-test'); // a failed shader reads as zeros
  await initBackend('cpu');
  const cpu = await read();
  let worst = 0;
  cpu.forEach((want, i) => {
    let diff = 0;
    let scale = 1;
    for (let j = 0; j < want.length; j++) {
      diff = Math.max(diff, Math.abs(gpu[i][j] - want[j]));
      scale = Math.max(scale, Math.abs(want[j]));
    }
    worst = Math.max(worst, diff / scale);
  });
  return worst;
}

export const selfTest: SelfTest = {
  'a program is labelled with its key (Dawn names it in errors) and dispatched over its output'() {
    const p = program({ key: 'semseg_selftest', inputs: ['x'], outputShape: [3, 100], body: '' });
    assert.equal(p.constructor.name, 'semseg_selftest');
    assert.deepEqual(p.dispatch, [Math.ceil(300 / 128), 1, 1]);
    const r = program({ key: 'semseg_selftest_r', inputs: ['x'], outputShape: [2, 5], body: '', perWorkgroup: REDUCE_THREADS, groups: 5 });
    assert.deepEqual([r.dispatch, r.workgroupSize], [[5, 1, 1], [REDUCE_THREADS, 1, 1]]);
  },
  'a program with more inputs than the device binds is refused before it reaches the device'() {
    const backend = { device: { limits: { maxStorageBuffersPerShaderStage: 8 } }, runWebGPUProgram: () => assert.fail('ran'), disposeData: () => true };
    const d = new Dispatcher(backend as unknown as WebgpuBackendLike);
    const x = { dataId: {}, shape: [1], dtype: 'float32' as const };
    assert.throws(() => d.run(program({ key: 'k', inputs: [], outputShape: [1], body: '' }), Array(8).fill(x)), /8 inputs; the device allows 7/);
  },
};

runIfMain(module, selfTest);
