// TensorBoard event files, written without TensorFlow: a TFRecord file (length, masked
// CRC-32C of the length, data, masked CRC-32C of the data) of `Event` protocol buffers
// (tensorflow/core/util/event.proto, summary.proto). Only what scalar and image
// summaries need is encoded: Event { wall_time=1 double, step=2 int64, file_version=3
// string, summary=5 } / Summary { repeated Value value=1 } / Value { tag=1, simple_value=2
// float, image=4 } / Image { height=1, width=2, colorspace=3, encoded_image_string=4 }.
// A small writer instead of a library: the npm packages for this need tfjs-node (not
// installable here) or are unmaintained; the format is stable and tested below and
// against TensorFlow's own reader (test/tensorboard.test.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from './self_test';
import { appendFileNoFollow, writeFileReplacing } from './file_out';
import { bytesField, cat, doubleField, floatField, stringField, varintField } from './protobuf';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1; // Castagnoli, reflected
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15, add a constant. */
function masked(crc: number): number {
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

export type SummaryValue = { tag: string; scalar: number } | { tag: string; image: { png: Uint8Array; width: number; height: number; channels: number } };

export function encodeEvent(e: { wallTime: number; step: number; fileVersion?: string; values?: SummaryValue[] }): Uint8Array {
  const out: Uint8Array[] = [doubleField(1, e.wallTime), varintField(2, e.step)];
  if (e.fileVersion) out.push(stringField(3, e.fileVersion));
  if (e.values?.length) {
    const summary = e.values.map((v) => {
      const value: Uint8Array[] = [stringField(1, v.tag)];
      if ('scalar' in v) value.push(floatField(2, v.scalar));
      else {
        const { png, width, height, channels } = v.image;
        value.push(bytesField(4, cat([varintField(1, height), varintField(2, width), varintField(3, channels), bytesField(4, png)])));
      }
      return bytesField(1, cat(value));
    });
    out.push(bytesField(5, cat(summary)));
  }
  return new Uint8Array(cat(out));
}

/** One TFRecord: length, its masked CRC, the data, its masked CRC. */
export function encodeRecord(data: Uint8Array): Buffer {
  const head = Buffer.alloc(12);
  head.writeBigUInt64LE(BigInt(data.length));
  head.writeUInt32LE(masked(crc32c(head.subarray(0, 8))), 8);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(masked(crc32c(data)));
  return Buffer.concat([head, data, tail]);
}

/** The records of a TFRecord file, stopping at a torn or corrupt one (a killed writer's last). */
export function readRecords(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at + 12 <= buf.length) {
    const len = Number(buf.readBigUInt64LE(at));
    if (buf.readUInt32LE(at + 8) !== masked(crc32c(buf.subarray(at, at + 8))) || at + 16 + len > buf.length) break;
    const data = buf.subarray(at + 12, at + 12 + len);
    if (buf.readUInt32LE(at + 12 + len) !== masked(crc32c(data))) break;
    out.push(data);
    at += 16 + len;
  }
  return out;
}

/** The step of an encoded Event (field 2), or 0 when absent. */
export function eventStep(data: Uint8Array): number {
  let at = 0;
  const readVarint = () => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = data[at++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (at < data.length) {
    const k = Number(readVarint());
    const [field, wire] = [k >> 3, k & 7];
    if (field === 2 && wire === 0) return Number(BigInt.asIntN(64, readVarint()));
    if (wire === 0) readVarint();
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) at += Number(readVarint());
    else throw new Error(`unexpected protobuf wire type ${wire}`);
  }
  return 0;
}

export const EVENT_FILE_PREFIX = 'events.out.tfevents.';

/** Appends events to a new event file in `dir`, named as TensorFlow names them. */
export class EventWriter {
  readonly file: string;
  constructor(dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    // The timestamp orders files by name; TensorBoard reads every file of the folder. The
    // milliseconds are zero-padded: unpadded, '98' sorted after '120' within one second.
    // A second writer of this process in the same millisecond takes the next one, so it
    // neither appends to the first's file nor sorts before it.
    const nameAt = (t: number) => path.join(dir, `${EVENT_FILE_PREFIX}${Math.floor(t / 1000)}.${os.hostname()}.${process.pid}.${String(t % 1000).padStart(3, '0')}`);
    let now = Date.now();
    while (fs.existsSync(nameAt(now))) now++;
    this.file = nameAt(now);
    this.write({ step: 0, fileVersion: 'brain.Event:2' });
  }

  write(e: { step: number; fileVersion?: string; values?: SummaryValue[] }): void {
    // Appended record by record: a kill loses at most the record being written, which readers skip.
    appendFileNoFollow(this.file, encodeRecord(encodeEvent({ wallTime: Date.now() / 1000, ...e })));
  }
}

/**
 * Drops events after `maxStep` from every event file in `dir` (a resumed run repeats
 * those steps), each file rewritten through a temporary name and a rename.
 */
export function truncateEvents(dir: string, maxStep: number): void {
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir).filter((n) => n.startsWith(EVENT_FILE_PREFIX))) {
    const file = path.join(dir, name);
    const records = readRecords(fs.readFileSync(file));
    const kept = records.filter((r) => eventStep(r) <= maxStep);
    writeFileReplacing(file, Buffer.concat(kept.map(encodeRecord)));
  }
}

export const selfTest: SelfTest = {
  'CRC-32C matches the standard check value, and the masked CRC TFRecord uses'() {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    // Empty data: crc32c 0, masked as TFRecord (and TensorFlow's crc32c::Mask) does.
    assert.equal(masked(0), 0xa282ead8);
  },
  'records round-trip; a torn or corrupt record ends the reading; steps are read back'() {
    const a = encodeEvent({ wallTime: 1.5, step: 7, values: [{ tag: 'train/loss', scalar: 0.25 }] });
    const b = encodeEvent({ wallTime: 2, step: 2 ** 40, values: [{ tag: 'img', image: { png: new Uint8Array([1, 2, 3]), width: 1, height: 1, channels: 3 } }] });
    const buf = Buffer.concat([encodeRecord(a), encodeRecord(b)]);
    assert.deepEqual(readRecords(buf).map((r) => [...r]), [[...a], [...b]]);
    assert.deepEqual(readRecords(buf).map(eventStep), [7, 2 ** 40]);
    assert.equal(readRecords(buf.subarray(0, buf.length - 3)).length, 1);
    const bad = Buffer.from(buf);
    bad[20] ^= 0xff;
    assert.equal(readRecords(bad).length, 0);
  },
  'an image of several megabytes encodes (CamVid overlays once overflowed the call stack)'() {
    const png = new Uint8Array(4 << 20).map((_, i) => i & 255);
    const e = encodeEvent({ wallTime: 1, step: 3, values: [{ tag: 'big', image: { png, width: 480, height: 360, channels: 3 } }] });
    assert.ok(e.length > png.length && e.length < png.length + 64);
    assert.deepEqual([...e.subarray(e.length - 16)], [...png.subarray(png.length - 16)]);
    assert.equal(eventStep(readRecords(encodeRecord(e))[0]), 3);
  },
  'truncateEvents keeps steps up to the resume step'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfev-'));
    const w = new EventWriter(dir);
    for (const step of [1, 2, 3, 4]) w.write({ step, values: [{ tag: 'x', scalar: step }] });
    truncateEvents(dir, 2);
    assert.deepEqual(readRecords(fs.readFileSync(w.file)).map(eventStep), [0, 1, 2]);
    assert.deepEqual(fs.readdirSync(dir), [path.basename(w.file)]);
    fs.rmSync(dir, { recursive: true });
  },
  'writers created in one millisecond get their own files, in creation order'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfev-'));
    const writers = Array.from({ length: 5 }, () => new EventWriter(dir)); // well within a few ms
    assert.equal(new Set(writers.map((w) => w.file)).size, 5);
    assert.deepEqual(fs.readdirSync(dir).sort(), writers.map((w) => path.basename(w.file)));
    for (const w of writers) assert.deepEqual(readRecords(fs.readFileSync(w.file)).map(eventStep), [0]);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
