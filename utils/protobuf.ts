// Protocol-buffer fields, encoded by hand for the few messages this project writes
// (TensorBoard events, ONNX models): varints and the wire types they use. Each field is
// a Buffer; messages join their fields once (spreading large byte arrays into number
// arrays overflows the call stack).
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

export const selfTest: SelfTest = {
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
