// The few ONNX protobuf messages an export needs, encoded by hand (varints and
// length-delimited fields; onnx.proto's field numbers), so the export needs no protobuf
// dependency. Repeated scalars are written unpacked, which every protobuf parser reads.
import assert from 'node:assert/strict';
import { bytesField, cat, floatField, stringField, varintField } from '../../utils/protobuf';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const DataType = { FLOAT: 1, INT64: 7 } as const;
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 } as const;

/** Bytes of one message under construction. */
class Writer {
  private parts: Uint8Array[] = [];
  int(field: number, v: number | bigint): this {
    this.parts.push(varintField(field, v));
    return this;
  }
  float(field: number, v: number): this {
    this.parts.push(floatField(field, v));
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.parts.push(bytesField(field, b));
    return this;
  }
  string(field: number, s: string): this {
    this.parts.push(stringField(field, s));
    return this;
  }
  finish(): Uint8Array {
    return cat(this.parts);
  }
}

export type AttrValue = number | string | number[] | { float: number } | { floats: number[] };

export interface NodeSpec { op: string; inputs: string[]; outputs: string[]; name?: string; attrs?: Record<string, AttrValue> }
export interface TensorSpec { name: string; dims: number[]; type: 'float32' | 'int64'; data: Float32Array | BigInt64Array }
/** A tensor's shape: numbers are fixed dims, strings symbolic (a dynamic batch). */
export interface ValueSpec { name: string; dims: (number | string)[] }
export interface ModelSpec {
  opset: number;
  producer: { name: string; version: string };
  graph: { name: string; nodes: NodeSpec[]; initializers: TensorSpec[]; inputs: ValueSpec[]; outputs: ValueSpec[] };
  metadata: Record<string, string>;
  doc?: string;
}

/** Integer attributes are INT(S); {float}/{floats} mark float ones, since 1.0 is also an integer. */
function attribute(name: string, v: AttrValue): Uint8Array {
  const w = new Writer().string(1, name);
  if (typeof v === 'string') w.string(4, v).int(20, AttrType.STRING);
  else if (typeof v === 'number') {
    assert.ok(Number.isInteger(v), `attribute ${name}: ${v} is not an integer; pass { float: ${v} }`);
    w.int(3, v).int(20, AttrType.INT);
  } else if (Array.isArray(v)) {
    for (const x of v) w.int(8, x);
    w.int(20, AttrType.INTS);
  } else if ('float' in v) w.float(2, v.float).int(20, AttrType.FLOAT);
  else {
    for (const x of v.floats) w.float(7, x);
    w.int(20, AttrType.FLOATS);
  }
  return w.finish();
}

function node(n: NodeSpec): Uint8Array {
  const w = new Writer();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  if (n.name) w.string(3, n.name);
  w.string(4, n.op);
  for (const [k, v] of Object.entries(n.attrs ?? {})) w.bytes(5, attribute(k, v));
  return w.finish();
}

function tensor(t: TensorSpec): Uint8Array {
  const w = new Writer();
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.type === 'float32' ? DataType.FLOAT : DataType.INT64);
  w.string(8, t.name);
  // raw_data is little-endian, as typed arrays are on every platform Node runs on.
  w.bytes(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return w.finish();
}

function valueInfo(v: ValueSpec): Uint8Array {
  const shape = new Writer();
  for (const d of v.dims) shape.bytes(1, typeof d === 'number' ? new Writer().int(1, d).finish() : new Writer().string(2, d).finish());
  const tensorType = new Writer().int(1, DataType.FLOAT).bytes(2, shape.finish()).finish();
  return new Writer().string(1, v.name).bytes(2, new Writer().bytes(1, tensorType).finish()).finish();
}

/** The serialised ModelProto. IR version 8 is the one that opset 17 came with. */
export function encodeModel(m: ModelSpec): Uint8Array {
  const g = new Writer();
  for (const n of m.graph.nodes) g.bytes(1, node(n));
  g.string(2, m.graph.name);
  for (const t of m.graph.initializers) g.bytes(5, tensor(t));
  for (const v of m.graph.inputs) g.bytes(11, valueInfo(v));
  for (const v of m.graph.outputs) g.bytes(12, valueInfo(v));
  const w = new Writer().int(1, 8).string(2, m.producer.name).string(3, m.producer.version);
  if (m.doc) w.string(6, m.doc);
  w.bytes(7, g.finish());
  w.bytes(8, new Writer().string(1, '').int(2, m.opset).finish());
  for (const [k, v] of Object.entries(m.metadata)) w.bytes(14, new Writer().string(1, k).string(2, v).finish());
  return w.finish();
}

export const selfTest: SelfTest = {
  'varints, negative int64s and nested messages encode as protobuf does'() {
    const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
    assert.equal(hex(new Writer().int(1, 300).finish()), '08ac02');
    assert.equal(hex(new Writer().int(2, -1).finish()), '10ffffffffffffffffff01');
    assert.equal(hex(new Writer().string(1, 'ab').finish()), '0a026162');
    assert.equal(hex(new Writer().float(2, 1).finish()), '150000803f');
    // AttributeProto { name: "k", ints: [1, 2], type: INTS }
    assert.equal(hex(attribute('k', [1, 2])), '0a016b40014002a00107');
  },
};

runIfMain(module, selfTest);
