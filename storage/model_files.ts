// TF.js LayersModel files on disk (model.json + binary shards): writing them, an IO
// handler that reads them for tf.loadLayersModel (tfjs's own file:// handler lives in
// tfjs-node, which is optional here), weight quantisation in tfjs's format, and the
// weights of an export as checkpoint-style named tensors (for --weights).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '../backends/tf';
import type { NamedTensor } from './format';
import { UserError } from '../utils/errors';
import { checkListed } from './atomic_dir';
import { runIfMain, SelfTest } from '../utils/self_test';

export type Quantization = 'uint8' | 'float16';
export const QUANTIZATIONS: readonly Quantization[] = ['uint8', 'float16'];
/** tfjs's converter writes 4 MB shards: browsers cache and fetch them in parallel. */
export const SHARD_BYTES = 4 * 1024 * 1024;

type WeightSpec = tf.io.WeightsManifestEntry;

// --- float16 (IEEE half) bits of a float32, round to nearest even. tfjs only decodes them.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
export function toHalfBits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> signed zero
    mant |= 0x800000; // subnormal half: shift the implicit bit in
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent is correct rounding
  return sign | h;
}

/**
 * Affine uint8 quantisation as tfjs's Python converter does it: range nudged so that
 * 0 is exactly representable (zero biases and padding stay zero).
 */
export function quantizeUint8(values: Float32Array): { data: Uint8Array; scale: number; min: number } {
  let lo = 0;
  let hi = 0;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  let scale = (hi - lo) / 255;
  if (scale === 0) scale = 1;
  const min = -Math.round(-lo / scale) * scale;
  const data = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = Math.max(0, Math.min(255, Math.round((values[i] - min) / scale)));
  return { data, scale, min };
}

/**
 * Re-encodes float32 weights as uint8/float16 with the `quantization` field tfjs's loader
 * dequantises. Reads asynchronously: on webgpu a synchronous read fails.
 */
export async function quantizeWeights(data: ArrayBuffer, specs: WeightSpec[], q: Quantization): Promise<{ data: ArrayBuffer; specs: WeightSpec[] }> {
  const named = tf.io.decodeWeights(data, specs);
  const parts: Uint8Array[] = [];
  const out: WeightSpec[] = [];
  for (const spec of specs) {
    const t = named[spec.name];
    const values = await t.data();
    t.dispose();
    if (spec.dtype !== 'float32') {
      parts.push(new Uint8Array(new Int32Array(values).buffer));
      out.push({ name: spec.name, shape: spec.shape, dtype: spec.dtype });
      continue;
    }
    if (q === 'uint8') {
      const { data: d, scale, min } = quantizeUint8(values as Float32Array);
      parts.push(d);
      out.push({ name: spec.name, shape: spec.shape, dtype: 'float32', quantization: { dtype: 'uint8', scale, min } });
    } else {
      const half = Uint16Array.from(values as Float32Array, toHalfBits);
      parts.push(new Uint8Array(half.buffer));
      out.push({ name: spec.name, shape: spec.shape, dtype: 'float32', quantization: { dtype: 'float16' } });
    }
  }
  return { data: tf.io.concatenateArrayBuffers(parts.map((p) => p.buffer.slice(p.byteOffset, p.byteOffset + p.byteLength) as ArrayBuffer)), specs: out };
}

/** model.json plus `group1-shardKofN.bin` files, as tfjs's converter lays them out. */
export function modelFiles(artifacts: tf.io.ModelArtifacts, userDefinedMetadata: Record<string, unknown>): { name: string; data: Buffer }[] {
  const data = Buffer.from(artifacts.weightData as ArrayBuffer);
  const n = Math.max(1, Math.ceil(data.length / SHARD_BYTES));
  const shards = Array.from({ length: n }, (_, i) => ({ name: `group1-shard${i + 1}of${n}.bin`, data: data.subarray(i * SHARD_BYTES, (i + 1) * SHARD_BYTES) }));
  const json = {
    format: 'layers-model',
    generatedBy: artifacts.generatedBy,
    convertedBy: artifacts.convertedBy ?? null,
    modelTopology: artifacts.modelTopology,
    weightsManifest: [{ paths: shards.map((s) => s.name), weights: artifacts.weightSpecs }],
    userDefinedMetadata,
  };
  return [{ name: 'model.json', data: Buffer.from(JSON.stringify(json)) }, ...shards];
}

/** model.json is topology and metadata only: a larger one is not ours (and is not read whole). */
export const MODEL_JSON_MAX_BYTES = 64 * 1024 * 1024;
/** All weight shards of one model together; wasm32 could not hold more anyway. */
export const WEIGHTS_MAX_BYTES = 2 * 1024 * 1024 * 1024;

/**
 * Reads a regular file of at most `limit` bytes through one fd: fstat on the opened fd (not
 * stat on the name, which may be swapped), then a read that stops at limit + 1 bytes, since
 * a special file (/dev/zero: size 0) or a growing one can hold more than fstat says.
 * O_NONBLOCK keeps open(2) of a FIFO from waiting for a writer. `what` names the file in errors.
 */
export function readBoundedFile(file: string, limit: number, what = file): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${what}: ${code === 'ENOENT' ? 'not found' : code === 'EISDIR' ? 'is a folder, not a file' : `cannot read (${code ?? (e as Error).message})`}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) throw new UserError(`${what}: is a folder, not a file`);
    if (!st.isFile()) throw new UserError(`${what}: not a regular file (a device, FIFO or socket); refused`);
    if (st.size > limit) throw new UserError(`${what}: ${st.size} bytes, more than the ${limit}-byte limit`);
    const buf = Buffer.alloc(st.size + 1);
    let got = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, got, buf.length - got, null);
      if (n === 0) break;
      got += n;
      if (got === buf.length) throw new UserError(`${what}: grew past its ${st.size} bytes while being read; refused`);
    }
    return buf.subarray(0, got);
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${what}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  } finally {
    fs.closeSync(fd);
  }
}

/** Parses model.json; a missing, oversized or foreign file is a one-line UserError. */
export function readModelJson(file: string): tf.io.ModelJSON {
  let json: tf.io.ModelJSON;
  let buf: Buffer;
  try {
    buf = readBoundedFile(file, MODEL_JSON_MAX_BYTES);
  } catch (e) {
    throw e instanceof UserError ? new UserError(`${e.message}; expected a TF.js model.json`) : e;
  }
  try {
    json = JSON.parse(buf.toString('utf8'));
  } catch {
    throw new UserError(`${file}: not valid JSON; expected a TF.js model.json`);
  }
  checkListed(path.dirname(file), path.basename(file), buf);
  if (!json || typeof json !== 'object' || !json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new UserError(`${file}: not a TF.js LayersModel model.json (needs modelTopology and weightsManifest)`);
  }
  return json;
}

/**
 * The file of one listed shard, confined to the model's folder: a relative name without
 * `..`, whose real path (symlinks resolved) is inside the folder's real path. A model.json
 * someone was given must not read other files into its weights.
 */
function shardFile(dir: string, p: unknown, modelJson: string): string {
  const bad = (why: string) => new UserError(`${modelJson}: weight shard ${JSON.stringify(p)} ${why}; shards must be files inside the model's folder`);
  if (typeof p !== 'string' || !p || p.includes('\0')) throw bad('is not a file name');
  if (path.isAbsolute(p) || path.win32.isAbsolute(p)) throw bad('is an absolute path');
  if (p.split(/[\\/]/).includes('..')) throw bad("climbs out with '..'");
  const file = path.join(dir, p);
  let real: string;
  let realDir: string;
  try {
    realDir = fs.realpathSync(dir);
    real = fs.realpathSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`${file}: weight shard listed in ${modelJson} is missing`);
    throw new UserError(`${file}: weight shard listed in ${modelJson} cannot be read (${(e as NodeJS.ErrnoException).code})`);
  }
  if (!real.startsWith(realDir + path.sep)) throw bad(`resolves to ${real}, outside ${realDir} (a symlink?)`);
  return file;
}

function readShards(dir: string, manifest: tf.io.WeightsManifestConfig): [WeightSpec[], ArrayBuffer] {
  const modelJson = path.join(dir, 'model.json');
  if (!manifest.every((g) => g && Array.isArray(g.paths) && Array.isArray(g.weights))) throw new UserError(`${modelJson}: weightsManifest groups need paths and weights lists`);
  const specs = manifest.flatMap((g) => g.weights);
  // What the shards must hold, from dtypes and shapes, bounded before a byte is read.
  const need = specs.reduce((n, s) => n + specBytes(s, modelJson), 0);
  if (need > WEIGHTS_MAX_BYTES) throw new UserError(`${modelJson}: its manifest needs ${need} bytes of weights, more than the ${WEIGHTS_MAX_BYTES}-byte limit`);
  let have = 0;
  const bufs = manifest.flatMap((g) => g.paths).map((p) => {
    const file = shardFile(dir, p, modelJson);
    // Each shard may hold at most what the manifest still needs: no shard is read past that.
    const b = readBoundedFile(file, need - have, `${file} (weight shard of ${modelJson})`);
    have += b.length;
    checkListed(dir, p as string, b); // an export of ours lists each shard's sha256 in complete.json
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  });
  if (have !== need) throw new UserError(`${modelJson}: its weight shards hold ${have} bytes but the manifest needs ${need} (a shard truncated or replaced?)`);
  return [specs, tf.io.concatenateArrayBuffers(bufs)];
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, uint8: 1, bool: 1, uint16: 2, float16: 2 };

/** Bytes one weight takes in the shards (quantised weights: their stored type). */
function specBytes(s: WeightSpec, modelJson = 'model.json'): number {
  const dtype = s?.quantization?.dtype ?? s?.dtype;
  const size = DTYPE_BYTES[dtype as string];
  if (!s || !Array.isArray(s.shape) || !s.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || !size)
    throw new UserError(`${modelJson}: weight ${JSON.stringify(s?.name)} has no valid shape and dtype (${JSON.stringify(s?.shape)}, ${JSON.stringify(dtype)})`);
  return s.shape.reduce((a, b) => a * b, 1) * size;
}

/** An IOHandler for tf.loadLayersModel that reads model.json and its shards from disk. */
export function fileLoadHandler(modelJson: string): tf.io.IOHandler {
  return {
    load: async () => {
      const json = readModelJson(modelJson);
      return tf.io.getModelArtifactsForJSON(json, async (m) => readShards(path.dirname(modelJson), m));
    },
  };
}

/** The (dequantised) weights of an exported model.json, named like checkpoint weights (read asynchronously, as webgpu needs). */
export async function readExportedWeights(modelJson: string): Promise<NamedTensor[]> {
  const json = readModelJson(modelJson);
  const [specs, data] = readShards(path.dirname(modelJson), json.weightsManifest);
  const named = tf.io.decodeWeights(data, specs);
  const out: NamedTensor[] = [];
  for (const s of specs) {
    const t = named[s.name];
    out.push({ name: s.name, shape: [...s.shape], values: Float32Array.from(await t.data()) });
    t.dispose();
  }
  return out;
}

export const selfTest: SelfTest = {
  'float16 bits decode back through tfjs to the nearest half'() {
    const vals = [0, 1, -2.5, 65504, 1e5, 1e-5, 3.14159, -1e-8, 0.1];
    const half = Uint16Array.from(vals, toHalfBits);
    const t = tf.io.decodeWeights(half.buffer, [{ name: 'w', shape: [vals.length], dtype: 'float32', quantization: { dtype: 'float16' } }]).w;
    const got = Array.from(t.dataSync());
    t.dispose();
    assert.deepEqual(got.slice(0, 4), [0, 1, -2.5, 65504]);
    assert.equal(got[4], Infinity);
    for (const i of [5, 6, 8]) assert.ok(Math.abs(got[i] - vals[i]) <= Math.abs(vals[i]) * 1e-3 + 6e-8, `${vals[i]} -> ${got[i]}`);
    assert.equal(Math.abs(got[7]), 0);
  },
  'uint8 keeps zero exact and errors within half a step'() {
    const v = Float32Array.from([-0.7, 0, 0.013, 0.5, 1.3]);
    const q = quantizeUint8(v);
    const t = tf.io.decodeWeights(q.data.buffer as ArrayBuffer, [{ name: 'w', shape: [5], dtype: 'float32', quantization: { dtype: 'uint8', scale: q.scale, min: q.min } }]).w;
    const got = t.dataSync();
    t.dispose();
    assert.equal(got[1], 0);
    for (let i = 0; i < v.length; i++) assert.ok(Math.abs(got[i] - v[i]) <= q.scale / 2 + 1e-6, `${v[i]} -> ${got[i]}`);
  },
  'a foreign JSON file is one line naming it'() {
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'mf-'));
    fs.writeFileSync(path.join(dir, 'model.json'), '{"a":1}');
    assert.throws(() => readModelJson(path.join(dir, 'model.json')), (e: Error) => e instanceof UserError && /not a TF\.js LayersModel/.test(e.message));
    assert.throws(() => readModelJson(path.join(dir, 'nope.json')), /not found/);
    fs.rmSync(dir, { recursive: true });
  },
  'shards outside the folder, special files and oversized shards are refused in one line'() {
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'mf-'));
    const secret = path.join(dir, '..', path.basename(dir) + '-secret');
    fs.writeFileSync(secret, Buffer.alloc(8));
    const manifest = (p: string) => [{ paths: [p], weights: [{ name: 'w', shape: [2], dtype: 'float32' as const }] }];
    try {
      for (const p of ['../' + path.basename(secret), secret]) assert.throws(() => readShards(dir, manifest(p)), /outside|absolute|climbs out/);
      fs.symlinkSync(secret, path.join(dir, 'link.bin'));
      assert.throws(() => readShards(dir, manifest('link.bin')), /resolves to .* outside/);
      fs.symlinkSync('/dev/zero', path.join(dir, 'zero.bin'));
      assert.throws(() => readShards(dir, manifest('zero.bin')), /outside|not a regular file/);
      fs.writeFileSync(path.join(dir, 'ok.bin'), Buffer.alloc(8));
      assert.equal(readShards(dir, manifest('ok.bin'))[1].byteLength, 8);
      fs.writeFileSync(path.join(dir, 'big.bin'), Buffer.alloc(12));
      assert.throws(() => readShards(dir, manifest('big.bin')), /more than the 8-byte limit/);
      assert.throws(() => readBoundedFile('/dev/zero', 16), /not a regular file/);
    } finally {
      fs.rmSync(dir, { recursive: true });
      fs.rmSync(secret);
    }
  },
};

runIfMain(module, selfTest);
