// The webgpu backend under Node: Dawn's prebuilt dawn.node (npm `webgpu`) supplies
// navigator.gpu, and @tensorflow/tfjs-backend-webgpu runs on it.
// Set-up order matters: the tfjs package registers its backend at import time only
// if navigator.gpu (and, as measured, window) already exist, so the globals go in
// first and the package is required after. Software adapters (lavapipe,
// SwiftShader) are slower than wasm for training: they run only with the explicit
// opt-in SEMSEG_WEBGPU_SOFTWARE=1 and --backend webgpu (tests, CI), never under auto.
// Synchronous reads (dataSync) fail on this backend under Node, so callers read
// asynchronously.
// The adapter is first looked for in a short child process: Dawn writes warnings to the
// native stderr while it enumerates Vulkan devices (lavapipe: "maxDynamic...Buffers...
// artificially reduced"), which no option silences, and every command with backend auto
// would print them. Only when the child finds a usable adapter is Dawn loaded here.
import * as tf from './tf';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { UserError } from '../utils/errors';
import { onExit } from '../utils/exit';
import { runIfMain, SelfTest } from '../utils/self_test';
import { FilterGradFormulation, registerFilterGradKernel } from './conv_grads';
import { registerWebgpuKernels } from './webgpu_kernels';
import { webgpuDevice } from './webgpu_kernels/program';
import { watchDevice } from './webgpu_errors';

/** The parts of the WebGPU API used here (lib.dom's types need not match Dawn's). */
interface AdapterInfoLike { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean; adapterType?: string; backendType?: string }
interface AdapterLike { info?: AdapterInfoLike }
interface GpuLike { requestAdapter(opts?: { powerPreference?: string }): Promise<AdapterLike | null> }

export type AdapterProbe =
  | { ok: true; gpu: GpuLike; globals: Record<string, unknown>; adapter: string; software: boolean }
  | { ok: false; reason: string };

const INSTALL = 'install it with `npm install webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0`';

/**
 * Linux: whether the Vulkan loader can be found. Without it Dawn finds no GPU and
 * prints its own multi-line warning, so we skip loading it and say why instead.
 */
export function vulkanLoaderFound(env: NodeJS.ProcessEnv = process.env): boolean {
  if (process.platform !== 'linux') return true;
  const dirs = [...(env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu', '/usr/local/lib'];
  if (dirs.some((d) => fs.existsSync(path.join(d, 'libvulkan.so.1')))) return true;
  try {
    return fs.readFileSync('/etc/ld.so.cache').includes('libvulkan.so.1');
  } catch {
    return false;
  }
}

/** "NVIDIA hopper (NVIDIA H100 80GB HBM3)": vendor, architecture, then device/description. */
export function describeAdapter(info: AdapterInfoLike): string {
  const head = [info.vendor, info.architecture].filter((s) => s && s.length > 0).join(' ') || 'unknown vendor';
  const tail = info.description || info.device;
  return tail ? `${head} (${tail})` : head;
}

/** A CPU implementation of WebGPU/Vulkan rather than a GPU. */
export function isSoftwareAdapter(info: AdapterInfoLike): boolean {
  if (info.isFallbackAdapter) return true;
  if (info.adapterType && /cpu/i.test(info.adapterType)) return true;
  return /llvmpipe|lavapipe|swiftshader|software rasterizer/i.test([info.vendor, info.architecture, info.device, info.description].join(' '));
}

/** The opt-in that lets a software adapter run webgpu (for tests and trying it without a GPU). */
export function softwareOptIn(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.SEMSEG_WEBGPU_SOFTWARE === '1';
}

// Dawn's package is an ES module; a Function-built import() survives compilation to CommonJS.
const importEsm = new Function('s', 'return import(s)') as (s: string) => Promise<{ create(o: string[]): GpuLike; globals: Record<string, unknown> }>;

let dawnGpu: GpuLike | null = null;

/** Seconds the child gets to find an adapter (a request has been seen to hang). */
const PROBE_TIMEOUT_S = 20;

// The child: Dawn's adapter info as JSON on stdout (null for none). It exits itself:
// a Dawn instance keeps the process alive.
const PROBE_CHILD = `
const fs = require('node:fs');
import(process.argv[1]).then(async ({ create }) => {
  const a = await create([]).requestAdapter({ powerPreference: 'high-performance' });
  const i = a && a.info;
  const keys = ['vendor', 'architecture', 'device', 'description', 'isFallbackAdapter', 'adapterType', 'backendType'];
  fs.writeSync(1, JSON.stringify(i ? Object.fromEntries(keys.map((k) => [k, i[k]])) : null) + '\\n');
  process.exit(0);
}).catch((e) => { fs.writeSync(2, 'error: ' + String(e && e.message || e).split('\\n')[0] + '\\n'); process.exit(1); });
`;

/** Dawn's lines that are not failures (lavapipe's limits clamped), left out of a failure's reason. */
const DAWN_NOISE = /artificially reduced|^\s*$/;

/** The adapter Dawn finds, from a child process whose stderr (Dawn's warnings) is kept out of ours. */
export function adapterInChild(webgpuModule: string): Promise<{ info: AdapterInfoLike | null } | { error: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.NODE_OPTIONS; // a host's preloads have no business in the probe
    const child = spawn(process.execPath, ['-e', PROBE_CHILD, pathToFileURL(webgpuModule).href], { env, stdio: ['ignore', 'pipe', 'pipe'], windowsHide: true });
    let out = '';
    let err = '';
    const answered = () => {
      try {
        return { info: JSON.parse(out) as AdapterInfoLike | null };
      } catch {
        return null;
      }
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      // The answer is in: no need to wait for the child's exit (Dawn's teardown).
      const a = out.endsWith('\n') ? answered() : null;
      if (a) {
        clearTimeout(timer);
        child.unref(); // its exit, pipes included, no longer keeps a host program alive
        for (const pipe of [child.stdout, child.stderr]) (pipe as unknown as { unref?: () => void }).unref?.();
        resolve(a);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), PROBE_TIMEOUT_S * 1000);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ error: `adapter probe did not start: ${e.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const a = answered(); // a crash on the way out after answering is no failure
      if (a) return resolve(a);
      const why = err.split('\n').map((l) => l.trim()).find((l) => !DAWN_NOISE.test(l))?.replace(/^error: /, '');
      const how = signal === 'SIGKILL' ? `no answer within ${PROBE_TIMEOUT_S} s` : signal ? `ended by ${signal}` : `exit ${code}`;
      resolve({ error: `adapter probe failed (${how})${why ? `: ${why}` : ''}` });
    });
  });
}

let childProbe: ReturnType<typeof adapterInChild> | null = null;

/**
 * Runs `fn` with the Vulkan loader told to skip the software drivers (loader 1.3.234+;
 * older ones ignore it), so that Dawn, looking for the hardware adapter the child found,
 * does not enumerate lavapipe and print its warnings here. The variable is restored after.
 */
async function withoutSoftwareDrivers<T>(fn: () => Promise<T>): Promise<T> {
  const key = 'VK_LOADER_DRIVERS_DISABLE';
  const before = process.env[key];
  process.env[key] = [before, '*lvp*', '*swiftshader*'].filter(Boolean).join(',');
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env[key];
    else process.env[key] = before;
  }
}

/**
 * Finds a hardware adapter through Dawn (or a software one when `allowSoftware`),
 * or says why there is none. Starts nothing in tfjs.
 */
export async function probeAdapter(opts: { allowSoftware?: boolean } = {}): Promise<AdapterProbe> {
  let webgpuModule: string;
  try {
    webgpuModule = require.resolve('webgpu');
  } catch {
    return { ok: false, reason: `npm package webgpu (Dawn) not installed (${INSTALL})` };
  }
  if (!vulkanLoaderFound()) return { ok: false, reason: 'no adapter: Vulkan loader libvulkan.so.1 not found (install libvulkan1 and the GPU driver)' };
  if (!dawnGpu) {
    // Once per process: the adapters do not change while it runs.
    const found = await (childProbe ??= adapterInChild(webgpuModule));
    if ('error' in found) return { ok: false, reason: found.error };
    if (!found.info) return { ok: false, reason: 'no adapter (dawn.node found no GPU)' };
    const software = isSoftwareAdapter(found.info);
    if (software && !opts.allowSoftware) {
      return { ok: false, reason: `only a software adapter (${describeAdapter(found.info)}), slower than wasm for training; SEMSEG_WEBGPU_SOFTWARE=1 with --backend webgpu runs on it for testing` };
    }
  }
  let dawn: { create(o: string[]): GpuLike; globals: Record<string, unknown> };
  try {
    dawn = await importEsm(webgpuModule);
  } catch (err) {
    return { ok: false, reason: `dawn.node did not load: ${(err as Error).message.split('\n')[0]}` };
  }
  // One Dawn instance per process: a second one hung requesting its adapter (lavapipe).
  const request = async () => (dawnGpu ??= dawn.create([])).requestAdapter({ powerPreference: 'high-performance' });
  // A software adapter (opted into) needs the software drivers; a hardware one is better off without them.
  const childSawSoftware = childProbe && (await childProbe.then((f) => ('info' in f && f.info ? isSoftwareAdapter(f.info) : true)));
  const adapter = childSawSoftware ? await request() : await withoutSoftwareDrivers(request);
  const gpu = dawnGpu!;
  if (!adapter) return { ok: false, reason: 'no adapter (dawn.node found no GPU)' };
  const info = adapter.info ?? {};
  const desc = describeAdapter(info);
  const software = isSoftwareAdapter(info);
  if (software && !opts.allowSoftware) {
    return { ok: false, reason: `only a software adapter (${desc}), slower than wasm for training; SEMSEG_WEBGPU_SOFTWARE=1 with --backend webgpu runs on it for testing` };
  }
  return { ok: true, gpu, globals: dawn.globals, adapter: desc, software };
}

/** Which dW formulation the webgpu kernel uses; TFJS_SEMSEG_WEBGPU_DW=forward selects the other one for timing. */
export function webgpuFilterGrad(env: NodeJS.ProcessEnv = process.env): FilterGradFormulation {
  const v = env.TFJS_SEMSEG_WEBGPU_DW ?? 'matmul';
  if (v !== 'matmul' && v !== 'forward') throw new UserError(`TFJS_SEMSEG_WEBGPU_DW must be 'matmul' or 'forward', got '${v}'`);
  return v;
}

/** Puts the WebGPU classes and navigator.gpu on globalThis (before the tfjs package is required). */
function installGlobals(gpu: GpuLike, globals: Record<string, unknown>): void {
  const g = globalThis as Record<string, unknown>;
  for (const [k, v] of Object.entries(globals)) if (!(k in g)) g[k] = v;
  if (g.window === undefined) g.window = globalThis;
  if (g.navigator === undefined) g.navigator = {};
  // Node 21+ has a navigator without gpu; defineProperty also works where it is read-only.
  Object.defineProperty(g.navigator as object, 'gpu', { value: gpu, configurable: true, writable: true });
}

/** Waits for the device's queued work, then destroys it (before the process exits). */
async function releaseDevice(): Promise<void> {
  const device = webgpuDevice<{ queue: { onSubmittedWorkDone(): Promise<void> }; destroy(): void }>();
  if (!device) return;
  await device.queue.onSubmittedWorkDone();
  device.destroy();
  await new Promise((r) => setTimeout(r, 20)); // lets Dawn's threads see the device go
}

/** Starts tfjs on webgpu with a probed hardware adapter; returns the start-up description. */
export async function startWebgpu(probe: Extract<AdapterProbe, { ok: true }>): Promise<string> {
  installGlobals(probe.gpu, probe.globals);
  try {
    // A literal require, so a bundler (bench/gpu_check.sh) bundles it with the same tfjs-core.
    require('@tensorflow/tfjs-backend-webgpu');
  } catch (err) {
    throw new UserError(`backend 'webgpu': @tensorflow/tfjs-backend-webgpu did not load (${(err as Error).message.split('\n')[0]}); ${INSTALL}`);
  }
  if (!tf.findBackendFactory('webgpu')) throw new UserError("backend 'webgpu': @tensorflow/tfjs-backend-webgpu did not register (navigator.gpu missing at import)");
  const ok = await tf.setBackend('webgpu');
  if (!ok) throw new UserError(`backend 'webgpu' failed to start on ${probe.adapter}`);
  await tf.ready();
  const dw = webgpuFilterGrad();
  // The stock Conv2DBackpropFilter shader is one thread per weight looping over
  // every pixel: 590 of 620 ms per step on an H100 (issue 12).
  registerFilterGradKernel('webgpu', dw);
  registerWebgpuKernels();
  watchDevice();
  onExit(releaseDevice);
  const soft = probe.software ? '; software adapter (SEMSEG_WEBGPU_SOFTWARE=1): for testing, slower than wasm' : '';
  return `webgpu (Dawn, ${probe.adapter}; dW via ${dw}${soft})`;
}

export const selfTest: SelfTest = {
  'adapters are described by vendor and architecture'() {
    assert.equal(describeAdapter({ vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H100 80GB HBM3' }), 'nvidia hopper (NVIDIA H100 80GB HBM3)');
    assert.equal(describeAdapter({}), 'unknown vendor');
  },
  'software adapters are recognised'() {
    assert.ok(isSoftwareAdapter({ vendor: 'mesa', description: 'llvmpipe (LLVM 15.0.6, 256 bits)' }));
    assert.ok(isSoftwareAdapter({ vendor: 'google', architecture: 'swiftshader' }));
    assert.ok(isSoftwareAdapter({ isFallbackAdapter: true }));
    assert.ok(!isSoftwareAdapter({ vendor: 'nvidia', architecture: 'hopper', adapterType: 'discrete GPU' }));
  },
  'software adapters need SEMSEG_WEBGPU_SOFTWARE=1 exactly'() {
    assert.ok(softwareOptIn({ SEMSEG_WEBGPU_SOFTWARE: '1' }));
    for (const v of [undefined, '0', 'yes', '']) assert.ok(!softwareOptIn({ SEMSEG_WEBGPU_SOFTWARE: v }));
  },
  'the dW formulation is chosen by TFJS_SEMSEG_WEBGPU_DW'() {
    assert.equal(webgpuFilterGrad({}), 'matmul');
    assert.equal(webgpuFilterGrad({ TFJS_SEMSEG_WEBGPU_DW: 'forward' }), 'forward');
    assert.throws(() => webgpuFilterGrad({ TFJS_SEMSEG_WEBGPU_DW: 'naive' }), UserError);
  },
  async 'the probe child that cannot load Dawn says why in one line'() {
    const r = await adapterInChild(path.join(__dirname, 'no-such-webgpu.js'));
    assert.ok('error' in r);
    assert.match(r.error, /^adapter probe failed \(exit 1\): .*no-such-webgpu/);
    assert.equal(r.error.split('\n').length, 1);
  },
  async 'the probe answers with an adapter or one line saying why not'() {
    const p = await probeAdapter();
    if (p.ok) assert.match(p.adapter, /\S/);
    else assert.equal(p.reason.split('\n').length, 1);
  },
};

runIfMain(module, selfTest);
