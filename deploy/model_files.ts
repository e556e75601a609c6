// TF.js LayersModel files on disk (model.json + binary shards): writing them, an IO
// handler that reads them for tf.loadLayersModel (tfjs's own file:// handler lives in
// tfjs-node, which is optional here), weight quantisation in tfjs's format, and the
// weights of an export as checkpoint-style named tensors (for --weights).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { NamedTensor } from '../engine/checkpoint/format';
import { UserError } from '../utils/errors';
import { checkListed } from '../engine/checkpoint/atomic_dir';
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

/** Parses model.json; a missing or foreign file is a one-line UserError. */
export function readModelJson(file: string): tf.io.ModelJSON {
  let json: tf.io.ModelJSON;
  try {
    const buf = fs.readFileSync(file);
    json = JSON.parse(buf.toString('utf8'));
    checkListed(path.dirname(file), path.basename(file), buf);
  } catch (e) {
    if (e instanceof UserError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${file}: ${code === 'ENOENT' ? 'not found' : code ? `cannot read (${code})` : 'not valid JSON'}; expected a TF.js model.json`);
  }
  if (!json || typeof json !== 'object' || !json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new UserError(`${file}: not a TF.js LayersModel model.json (needs modelTopology and weightsManifest)`);
  }
  return json;
}

function readShards(dir: string, manifest: tf.io.WeightsManifestConfig): [WeightSpec[], ArrayBuffer] {
  const specs = manifest.flatMap((g) => g.weights);
  const bufs = manifest.flatMap((g) => g.paths).map((p) => {
    const file = path.join(dir, p);
    if (!fs.existsSync(file)) throw new UserError(`${file}: weight shard listed in model.json is missing`);
    const b = fs.readFileSync(file);
    checkListed(dir, p, b); // an export of ours lists each shard's sha256 in complete.json
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  });
  const have = bufs.reduce((n, b) => n + b.byteLength, 0);
  const need = specs.reduce((n, s) => n + specBytes(s), 0);
  if (have !== need) throw new UserError(`${path.join(dir, 'model.json')}: its weight shards hold ${have} bytes but the manifest needs ${need} (a shard truncated or replaced?)`);
  return [specs, tf.io.concatenateArrayBuffers(bufs)];
}

/** Bytes one weight takes in the shards (quantised weights: their stored type). */
function specBytes(s: WeightSpec): number {
  const n = s.shape.reduce((a, b) => a * b, 1);
  const dtype = s.quantization?.dtype ?? s.dtype;
  return n * (dtype === 'uint8' || dtype === 'bool' ? 1 : dtype === 'uint16' || dtype === 'float16' ? 2 : 4);
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
};

runIfMain(module, selfTest);
