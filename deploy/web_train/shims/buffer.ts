// The global Buffer for the browser bundle (esbuild's inject puts it where modules use the
// global): the PNG mask reader (pipeline/png.ts) and the export's file layout
// (storage/model_files.ts) are run as they are. A Uint8Array with the few methods they call.
import assert from 'node:assert/strict';
import type { SelfTest } from '../../../utils/self_test';

// @ts-expect-error Node's Buffer.from(value, offset, length), not Uint8Array.from(arrayLike, mapfn)
export class Buffer extends Uint8Array {
  static from(x: ArrayBuffer | ArrayLike<number> | string, offset?: number | string, length?: number): Buffer {
    if (typeof x === 'string') return Buffer.fromBytes(new TextEncoder().encode(x));
    if (x instanceof ArrayBuffer) return new Buffer(x, (offset as number | undefined) ?? 0, length ?? x.byteLength - ((offset as number | undefined) ?? 0));
    if (ArrayBuffer.isView(x)) return Buffer.fromBytes(new Uint8Array(x.buffer, x.byteOffset, x.byteLength).slice());
    return Buffer.fromBytes(Uint8Array.from(x as ArrayLike<number>));
  }
  private static fromBytes(u: Uint8Array): Buffer {
    return new Buffer(u.buffer as ArrayBuffer, u.byteOffset, u.byteLength);
  }
  static alloc(n: number): Buffer {
    return new Buffer(n);
  }
  static isBuffer(x: unknown): x is Buffer {
    return x instanceof Buffer;
  }
  static concat(list: Uint8Array[]): Buffer {
    const out = new Buffer(list.reduce((s, b) => s + b.length, 0));
    let o = 0;
    for (const b of list) {
      out.set(b, o);
      o += b.length;
    }
    return out;
  }
  private view(): DataView {
    return new DataView(this.buffer, this.byteOffset, this.byteLength);
  }
  readUInt32BE(o = 0): number { return this.view().getUint32(o, false); }
  readUInt32LE(o = 0): number { return this.view().getUint32(o, true); }
  readUInt16BE(o = 0): number { return this.view().getUint16(o, false); }
  readUInt16LE(o = 0): number { return this.view().getUint16(o, true); }
  equals(b: Uint8Array): boolean {
    return this.length === b.length && this.every((v, i) => v === b[i]);
  }
  toString(enc = 'utf8', start = 0, end = this.length): string {
    const part = this.subarray(start, end);
    if (enc === 'latin1' || enc === 'binary' || enc === 'ascii') return String.fromCharCode(...part);
    return new TextDecoder().decode(part);
  }
}

// test/self_tests.test.ts runs it; no runIfMain: esbuild leaves an injected file's own `module` unset.
export const selfTest: SelfTest = {
  'reads bytes and text as Node\'s Buffer does'() {
    const b = Buffer.from([137, 80, 78, 71, 0, 0, 1, 2]);
    assert.equal(b.readUInt32BE(4), 258);
    assert.equal(b.toString('latin1', 1, 4), 'PNG');
    assert.ok((b.subarray(0, 4) as Buffer).equals(Uint8Array.from([137, 80, 78, 71])));
    assert.equal(Buffer.from('hé').length, 3);
    assert.equal(Buffer.from(new Uint8Array([1, 2, 3]).buffer).length, 3);
  },
};
