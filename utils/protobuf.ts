// Protocol-buffer fields, encoded by hand for the few messages this project writes
// (TensorBoard events, ONNX models): varints and the wire types they use. Each field is
// a Buffer; messages join their fields once (spreading large byte arrays into number
// arrays overflows the call stack). And one decoder, for the fields of a message this
// project reads back (an ONNX model's metadata_props).
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from './self_test';

/** A varint; negative int64 values are ten bytes of two's complement, as protobuf writes them. */
export function varint(v: number | bigint): Buffer {
  let x = BigInt.asUintN(64, BigInt(v));
  const out: number[] = [];
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x) b |= 0x80;
    out.push(b);
  } while (x);
  return Buffer.from(out);
}

const key = (field: number, wire: number) => varint((field << 3) | wire);
export const cat = (parts: Uint8Array[]) => Buffer.concat(parts);
export const varintField = (field: number, v: number | bigint) => cat([key(field, 0), varint(v)]);
export const bytesField = (field: number, data: Uint8Array) => cat([key(field, 2), varint(data.length), data]);
export const stringField = (field: number, s: string) => bytesField(field, Buffer.from(s, 'utf8'));
export function floatField(field: number, v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return cat([key(field, 5), b]);
}
export function doubleField(field: number, v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(v);
  return cat([key(field, 1), b]);
}

/** One decoded field: a varint or fixed-width number (`int`), or length-delimited bytes (a view into the input). */
export interface Field { field: number; wire: number; int?: bigint; bytes?: Uint8Array }

/**
 * The fields of one message, in order, undecoded below the top level (a nested message
 * is `bytes` to decode in turn). Throws on a truncated or malformed message.
 */
export function decodeFields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let at = 0;
  const readVarint = (): bigint => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (at >= buf.length || shift > 63n) throw new Error(`protobuf: truncated varint at byte ${at}`);
      const b = buf[at++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  const take = (n: number): Uint8Array => {
    if (n < 0 || at + n > buf.length) throw new Error(`protobuf: a field of ${n} bytes at byte ${at} runs past the end (${buf.length})`);
    const v = buf.subarray(at, at + n);
    at += n;
    return v;
  };
  const le = (b: Uint8Array) => b.reduceRight((v, x) => (v << 8n) | BigInt(x), 0n);
  while (at < buf.length) {
    const k = readVarint();
    const field = Number(k >> 3n), wire = Number(k & 7n);
    if (wire === 0) out.push({ field, wire, int: readVarint() });
    else if (wire === 1) out.push({ field, wire, int: le(take(8)) });
    else if (wire === 2) out.push({ field, wire, bytes: take(Number(readVarint())) });
    else if (wire === 5) out.push({ field, wire, int: le(take(4)) });
    else throw new Error(`protobuf: wire type ${wire} (field ${field}) at byte ${at} is not supported`);
  }
  return out;
}

export const selfTest: SelfTest = {
  'decodeFields reads back what the encoders write, nested messages as bytes'() {
    const inner = cat([stringField(1, 'key'), stringField(2, 'value')]);
    const msg = cat([varintField(1, 300), bytesField(14, inner), floatField(3, 1), doubleField(4, 1), varintField(5, -1)]);
    const f = decodeFields(msg);
    assert.deepEqual(f.map((x) => [x.field, x.wire]), [[1, 0], [14, 2], [3, 5], [4, 1], [5, 0]]);
    assert.equal(f[0].int, 300n);
    assert.deepEqual(decodeFields(f[1].bytes!).map((x) => Buffer.from(x.bytes!).toString()), ['key', 'value']);
    assert.equal(f[2].int, 0x3f800000n);
    assert.equal(f[3].int, 0x3ff0000000000000n);
    assert.equal(BigInt.asIntN(64, f[4].int!), -1n);
    assert.throws(() => decodeFields(msg.subarray(0, 5)), /runs past the end/);
  },
  'varints and fields as protobuf encodes them'() {
    assert.deepEqual([...varint(300)], [0xac, 0x02]);
    assert.deepEqual([...varint(-1)], [...Array(9).fill(0xff), 0x01]);
    assert.deepEqual([...varintField(1, 150)], [0x08, 0x96, 0x01]);
    assert.deepEqual([...stringField(2, 'testing')], [0x12, 0x07, ...Buffer.from('testing')]);
    assert.deepEqual([...floatField(5, 1)], [0x2d, 0, 0, 0x80, 0x3f]);
    assert.deepEqual([...doubleField(1, 1)], [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
  },
};

runIfMain(module, selfTest);
