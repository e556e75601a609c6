// Running an ONNX export (`npx export-model --format onnx`) for evaluate and predict on
// ONNX Runtime's native CPU kernels. onnxruntime-node is an optional package (~290 MB
// with its install; most users never need it), required here only when an .onnx model is
// given; without it, one line saying how to install it. The network is all it runs: inputs
// are prepared and logits decided by the same code as for a TF.js model (inference.ts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '../backends/tf';
import { resolveComplete } from '../storage/atomic_dir';
import { readBoundedFile, WEIGHTS_MAX_BYTES } from '../storage/model_files';
import { decodeFields } from '../utils/protobuf';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import type { Runtime } from './inference';

export const ONNX_FILE = 'model.onnx';
/** The metadata_props key that holds the export's metadata as JSON (ExportMetadata, as model.json's userDefinedMetadata). */
export const ONNX_METADATA_KEY = 'tfjs_semseg';
/** The graph's input and output names (deploy/onnx/lower.ts). */
const INPUT = 'image', OUTPUT = 'logits';
/** `skip` leaves out the CUDA provider download of its postinstall (hundreds of MB; fails offline). */
export const ORT_INSTALL = 'npm install onnxruntime-node --onnxruntime-node-install=skip';

/** An .onnx file's bytes, bounded as exported weights are (protobuf's own ceiling is 2 GiB). */
const readOnnx = (file: string): Buffer => readBoundedFile(file, WEIGHTS_MAX_BYTES);

/** The .onnx file `source` names: the file itself, or model.onnx in an export folder without a TF.js model.json; else null. */
export function onnxModelFile(source: string): string | null {
  const st = fs.statSync(source, { throwIfNoEntry: false });
  if (st?.isFile()) return /\.onnx$/i.test(source) ? source : null;
  if (!st?.isDirectory()) return null;
  const dir = resolveComplete(source) ?? source; // an interrupted replacing export: its old copy
  const file = path.join(dir, ONNX_FILE);
  return fs.existsSync(file) && !fs.existsSync(path.join(dir, 'model.json')) ? file : null;
}

/** metadata_props of an ONNX model's bytes (ModelProto field 14: StringStringEntryProto key 1, value 2). */
export function onnxMetadataProps(bytes: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  const text = (b?: Uint8Array) => Buffer.from(b ?? []).toString('utf8');
  for (const f of decodeFields(bytes)) {
    if (f.field !== 14 || !f.bytes) continue;
    const entry = decodeFields(f.bytes);
    out[text(entry.find((e) => e.field === 1)?.bytes)] = text(entry.find((e) => e.field === 2)?.bytes);
  }
  return out;
}

/** The export metadata recorded in an .onnx file (as model.json's userDefinedMetadata); null where it has none. Throws a one-line UserError naming the file when it is not a readable ONNX model. */
export function onnxExportMetadata(file: string, bytes: Uint8Array = readOnnx(file)): Record<string, unknown> | null {
  let props: Record<string, string>;
  try {
    props = onnxMetadataProps(bytes);
  } catch (e) {
    throw new UserError(`${file}: not a readable ONNX model (${(e as Error).message})`);
  }
  const json = props[ONNX_METADATA_KEY];
  if (json === undefined) return null;
  try {
    const md = JSON.parse(json);
    return md && typeof md === 'object' && !Array.isArray(md) ? md : null;
  } catch {
    throw new UserError(`${file}: its '${ONNX_METADATA_KEY}' metadata is not JSON`);
  }
}

/** The parts of onnxruntime-node used here (its own types are a devDependency's, not the library's). */
interface OrtTensor { readonly data: unknown; readonly dims: readonly number[]; dispose?(): void }
interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
interface Ort {
  Tensor: new (type: 'float32', data: Float32Array, dims: readonly number[]) => OrtTensor;
  InferenceSession: { create(model: Uint8Array, opts: Record<string, unknown>): Promise<OrtSession> };
  env?: { versions?: { node?: string } };
}

/** onnxruntime-node, or a one-line UserError saying how to install it (`what` names the model that needs it). */
export function loadOrt(what: string): Ort {
  try {
    return require('onnxruntime-node') as Ort;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const first = String(err?.message ?? err).split('\n')[0];
    if (err?.code === 'MODULE_NOT_FOUND') throw new UserError(`${what}: an ONNX model runs on the optional package onnxruntime-node, which is not installed; install it with: ${ORT_INSTALL}`);
    // Installed but its native library did not load (another platform's install, a missing system library).
    throw new UserError(`${what}: onnxruntime-node is installed but did not load (${first}); reinstall it with: ${ORT_INSTALL}`);
  }
}

/** ONNX Runtime's intra-op threads: SEMSEG_ORT_THREADS, else every core this process may use. */
export function ortThreads(): number {
  const env = process.env.SEMSEG_ORT_THREADS;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1) throw new UserError(`SEMSEG_ORT_THREADS must be a positive integer, got '${env}'`);
    return n;
  }
  return Math.max(1, typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);
}

/** An ONNX model on ONNX Runtime's CPU kernels as a Runtime: NHWC float32 batches of `size` in, logits out. */
export async function openOnnx(file: string, opts: { size?: readonly [number, number]; threads?: number; bytes?: Uint8Array } = {}): Promise<Runtime> {
  const ort = loadOrt(file);
  const threads = opts.threads ?? ortThreads();
  const bytes = opts.bytes ?? readOnnx(file);
  let session: OrtSession;
  try {
    // One image batch at a time: the cores go to the kernels (intra-op), not to parallel branches.
    // No spin-waiting between kernels: the process shares the cores with the TF.js backend's
    // threads and the data workers (and machines with other jobs); spinning threads then took
    // the cores from the working ones (U-Net 128x128 on 2 busy cores: 27-55 img/s spinning, 81-84 not).
    session = await ort.InferenceSession.create(bytes, {
      executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
  } catch (e) {
    throw new UserError(`${file}: ONNX Runtime cannot load it (${String((e as Error)?.message ?? e).split('\n')[0]})`);
  }
  if (!session.inputNames.includes(INPUT) || !session.outputNames.includes(OUTPUT)) {
    await session.release();
    throw new UserError(`${file}: expected an input '${INPUT}' and an output '${OUTPUT}' (an export of npx export-model --format onnx), got ${JSON.stringify(session.inputNames)} -> ${JSON.stringify(session.outputNames)}`);
  }
  let released = false;
  return {
    description: `ONNX Runtime ${ort.env?.versions?.node ?? ''} (CPU, ${threads} thread${threads > 1 ? 's' : ''})`.replace('  ', ' '),
    async logits(x: tf.Tensor4D): Promise<tf.Tensor4D> {
      // The export is at a fixed input size (its crops and pads are static).
      if (opts.size && (x.shape[1] !== opts.size[0] || x.shape[2] !== opts.size[1])) throw new UserError(`${file}: exported for ${opts.size.join('x')} inputs, got ${x.shape[1]}x${x.shape[2]}`);
      const data = (await x.data()) as Float32Array;
      const out = await session.run({ [INPUT]: new ort.Tensor('float32', data, x.shape) });
      const y = out[OUTPUT];
      try {
        return tf.tensor4d(y.data as Float32Array, y.dims as [number, number, number, number]);
      } finally {
        for (const t of Object.values(out)) t.dispose?.();
      }
    },
    dispose() {
      if (released) return;
      released = true;
      void session.release();
    },
  };
}

export const selfTest: SelfTest = {
  async 'metadata_props are read back from an encoded model; other files say what they are not'() {
    const { encodeModel } = await import('../deploy/onnx/proto');
    const bytes = encodeModel({
      opset: 17, producer: { name: 't', version: '0' }, doc: '',
      graph: { name: 'g', nodes: [{ op: 'Identity', inputs: ['image'], outputs: ['logits'], name: 'id' }], initializers: [], inputs: [{ name: 'image', dims: ['batch', 2, 2, 3] }], outputs: [{ name: 'logits', dims: ['batch', 2, 2, 3] }] },
      metadata: { [ONNX_METADATA_KEY]: JSON.stringify({ input: { size: [2, 2] } }), other: 'x' },
    });
    assert.deepEqual(onnxMetadataProps(bytes), { [ONNX_METADATA_KEY]: '{"input":{"size":[2,2]}}', other: 'x' });
    assert.deepEqual(onnxExportMetadata('m.onnx', bytes), { input: { size: [2, 2] } });
    assert.throws(() => onnxExportMetadata('m.onnx', Buffer.from('{"not": "onnx"}')), (e: Error) => e instanceof UserError && /^m\.onnx: not a readable ONNX model/.test(e.message));
  },
  async 'a model runs on ONNX Runtime as a Runtime; another input size is refused in one line'() {
    const { encodeModel } = await import('../deploy/onnx/proto');
    // logits = image * 2, at 2x3 inputs with a dynamic batch.
    const bytes = encodeModel({
      opset: 17, producer: { name: 't', version: '0' }, doc: '', metadata: {},
      graph: {
        name: 'g', nodes: [{ op: 'Mul', inputs: ['image', 'two'], outputs: ['logits'], name: 'mul' }],
        initializers: [{ name: 'two', dims: [], type: 'float32', data: Float32Array.of(2) }],
        inputs: [{ name: 'image', dims: ['batch', 2, 3, 1] }], outputs: [{ name: 'logits', dims: ['batch', 2, 3, 1] }],
      },
    });
    const rt = await openOnnx('m.onnx', { bytes, size: [2, 3], threads: 1 });
    assert.match(rt.description, /^ONNX Runtime [\d.]+ \(CPU, 1 thread\)$/);
    const x = tf.tensor4d([...Array(12).keys()], [2, 2, 3, 1]);
    const y = await rt.logits(x);
    assert.deepEqual([...(await y.data())], [...Array(12).keys()].map((v) => 2 * v));
    assert.deepEqual(y.shape, [2, 2, 3, 1]);
    const wrong = tf.zeros([1, 3, 3, 1]) as tf.Tensor4D;
    await assert.rejects(rt.logits(wrong), (e: Error) => e instanceof UserError && e.message === 'm.onnx: exported for 2x3 inputs, got 3x3');
    tf.dispose([x, y, wrong]);
    rt.dispose();
  },
  'an .onnx file, or an ONNX export folder, is an ONNX model; a TF.js export is not'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ortfile-'));
    const file = path.join(dir, ONNX_FILE);
    fs.writeFileSync(file, '');
    assert.equal(onnxModelFile(file), file);
    assert.equal(onnxModelFile(dir), file);
    fs.writeFileSync(path.join(dir, 'model.json'), '{}');
    assert.equal(onnxModelFile(dir), null);
    assert.equal(onnxModelFile(path.join(dir, 'model.json')), null);
    assert.equal(onnxModelFile(path.join(dir, 'nothing.onnx')), null);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
