// The on-disk encoding of tensors and training state: `<x>.bin` holds float32
// little-endian values back to back, `<x>.json` lists {name, shape, dtype, offset}
// (offset in bytes) so the files stay readable with any tool.
import assert from 'node:assert/strict';
import { z } from 'zod';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';

export interface NamedTensor { name: string; shape: number[]; values: Float32Array }
/** An optimizer's state as checkpoints store it (training/optimizers.ts getState, setState). */
export interface OptimizerState {
  name: string;
  /** Number of applyGradients calls so far (Adam bias correction). */
  step: number;
  lr: number;
  /** Slot tensors, named `<variable name>/<slot>`. */
  tensors: { name: string; shape: number[]; values: Float32Array }[];
}

export interface ManifestEntry { name: string; shape: number[]; dtype: string; offset: number }

export const FORMAT = 'tfjs-semseg-checkpoint';
export const FORMAT_VERSION = 1;

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Concatenates tensors into one buffer plus its manifest. Programming errors (not user input) throw plain Errors. */
export function packTensors(list: (NamedTensor & { dtype?: string })[]): { bin: Buffer; manifest: ManifestEntry[] } {
  const total = list.reduce((n, t) => n + t.values.length, 0);
  const all = new Float32Array(total);
  const manifest: ManifestEntry[] = [];
  const seen = new Set<string>();
  let at = 0;
  for (const t of list) {
    if (seen.has(t.name)) throw new Error(`duplicate tensor name '${t.name}'`);
    seen.add(t.name);
    if (numel(t.shape) !== t.values.length) {
      throw new Error(`tensor '${t.name}': shape [${t.shape}] needs ${numel(t.shape)} values, got ${t.values.length}`);
    }
    all.set(t.values, at);
    manifest.push({ name: t.name, shape: [...t.shape], dtype: t.dtype ?? 'float32', offset: at * 4 });
    at += t.values.length;
  }
  return { bin: toLittleEndian(all), manifest };
}

const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function toLittleEndian(a: Float32Array): Buffer {
  const buf = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  return littleEndian ? buf : Buffer.from(buf).swap32();
}

const EntrySchema = z.object({
  name: z.string().min(1),
  shape: z.array(z.number().int().min(0)),
  dtype: z.string(),
  offset: z.number().int().min(0),
});

function firstIssue(err: z.ZodError): string {
  const iss = err.issues[0];
  const at = iss.path.length ? `at '${iss.path.join('.')}': ` : '';
  return `${at}${iss.message}`;
}

/** Parses JSON text; one-line UserError naming the file when it is not JSON. */
export function parseJson(text: string, file: string, expected: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new UserError(`${file}: not valid JSON; expected ${expected}`);
  }
}

/** Splits `bin` by `manifest`; `binFile`/`jsonFile` label errors. */
export function unpackTensors(bin: Buffer, manifestRaw: unknown, binFile: string, jsonFile: string): NamedTensor[] {
  const parsed = z.array(EntrySchema).safeParse(manifestRaw);
  if (!parsed.success) throw new UserError(`${jsonFile}: expected a list of {name, shape, dtype, offset} (${firstIssue(parsed.error)})`);
  const entries = parsed.data;
  const needed = entries.reduce((end, e) => Math.max(end, e.offset + numel(e.shape) * 4), 0);
  if (bin.length !== needed) {
    throw new UserError(`${binFile}: has ${bin.length} bytes but ${jsonFile.split(/[\\/]/).pop()} describes ${needed} (truncated or mismatched files)`);
  }
  const names = new Set<string>();
  return entries.map((e) => {
    if (names.has(e.name)) throw new UserError(`${jsonFile}: tensor '${e.name}' is listed twice`);
    names.add(e.name);
    if (e.offset % 4) throw new UserError(`${jsonFile}: tensor '${e.name}' has offset ${e.offset}; expected a multiple of 4`);
    // ArrayBuffer.slice copies into a fresh, aligned buffer (Buffer memory may be pooled/unaligned).
    const start = bin.byteOffset + e.offset;
    const own = bin.buffer.slice(start, start + numel(e.shape) * 4);
    if (!littleEndian) Buffer.from(own).swap32();
    const values = new Float32Array(own);
    return { name: e.name, shape: e.shape, values };
  });
}

export const StateSchema = z.object({
  format: z.literal(FORMAT),
  version: z.number().int(),
  epoch: z.number(),
  step: z.number(),
  bestMetric: z.number().nullable(),
  bestMetricName: z.string(),
  rng: z.unknown(),
  config: z.unknown(),
  savedAt: z.string().optional(),
  // The epoch's shape when saved (absent in checkpoints from before they were recorded).
  stepsPerEpoch: z.number().int().positive().optional(),
  trainPairs: z.number().int().nonnegative().optional(),
});

export type StateJson = z.infer<typeof StateSchema>;

export function parseState(raw: unknown, file: string): StateJson {
  const res = StateSchema.safeParse(raw);
  if (!res.success) {
    throw new UserError(`${file}: expected {format: '${FORMAT}', version, epoch, step, bestMetric, bestMetricName, rng, config} (${firstIssue(res.error)})`);
  }
  if (res.data.version > FORMAT_VERSION) {
    throw new UserError(`${file}: checkpoint format version ${res.data.version} is newer than this program reads (${FORMAT_VERSION})`);
  }
  return res.data;
}

export const OptimizerJsonSchema = z.object({ name: z.string().nullable(), state: z.record(z.unknown()).default({}), tensors: z.array(z.unknown()) });

export const selfTest: SelfTest = {
  'pack/unpack round trip keeps names, shapes and exact values'() {
    const a = { name: 'enc0_conv1/kernel', shape: [1, 2, 3], values: new Float32Array([1, -2, 3.5, 1e-30, NaN, Infinity]) };
    const b = { name: 'enc0_bn1/moving_mean', shape: [2], values: new Float32Array([0.25, 7]) };
    const { bin, manifest } = packTensors([a, b]);
    assert.equal(bin.length, 32);
    assert.deepEqual(manifest[1], { name: b.name, shape: [2], dtype: 'float32', offset: 24 });
    const out = unpackTensors(Buffer.concat([Buffer.alloc(1), bin]).subarray(1), JSON.parse(JSON.stringify(manifest)), 'w.bin', 'w.json');
    assert.deepEqual(out, [a, b]);
  },
  'size mismatch and bad manifest are one-line UserErrors'() {
    const { bin, manifest } = packTensors([{ name: 'k', shape: [4], values: new Float32Array(4) }]);
    assert.throws(() => unpackTensors(bin.subarray(0, 8), manifest, 'x/weights.bin', 'x/weights.json'), /x\/weights\.bin: has 8 bytes but weights\.json describes 16/);
    assert.throws(() => unpackTensors(bin, [{ name: 'k' }], 'b', 'x/weights.json'), (e: Error) => e instanceof UserError && /x\/weights\.json: expected a list/.test(e.message));
    assert.throws(() => parseJson('{"a":', 'x/state.json', 'an object'), /x\/state\.json: not valid JSON/);
    assert.throws(() => packTensors([{ name: 'k', shape: [3], values: new Float32Array(2) }]), /needs 3 values, got 2/);
  },
  'state schema names the bad key'() {
    const good = { format: FORMAT, version: 1, epoch: 1, step: 5, bestMetric: null, bestMetricName: 'val.mIoU', rng: { s: 1 }, config: {} };
    assert.equal(parseState(good, 's').step, 5);
    assert.throws(() => parseState({ ...good, step: 'x' }, 'c/state.json'), /c\/state\.json: .*at 'step'/);
  },
};

runIfMain(module, selfTest);
