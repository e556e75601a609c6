// The one place that knows tfjs-backend-webgpu's internals: how a WGSL program is
// described (variableNames bind the inputs as `x`, `gamma`, ...; `result` or
// setOutputAtIndex is the output; `uniforms.<name>` the declared uniforms) and
// run (backend.runWebGPUProgram). Kernels of ours build programs with `program`
// and run them inside one engine kernel through `Dispatcher`, so that one tfjs
// kernel call can dispatch several shaders and free its intermediates.
import * as tf from '@tensorflow/tfjs';

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
