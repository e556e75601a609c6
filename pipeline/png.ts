// Minimal PNG reader for label masks. libvips expands palette PNGs to RGB colours
// and squeezes 16-bit to 8-bit, but a mask's class id is the stored value (palette
// index or grey level), so masks are read here, bit-exact.
import zlib from 'node:zlib';
import assert from 'node:assert/strict';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';

const SIGNATURE = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);

export interface PngHeader { width: number; height: number; bitDepth: number; colorType: number; interlace: number }
export interface MaskValues { width: number; height: number; values: Uint8Array | Uint16Array }

export function isPng(buf: Buffer): boolean {
  return buf.length >= 8 && buf.subarray(0, 8).equals(SIGNATURE);
}

export function readPngHeader(buf: Buffer, file: string): PngHeader {
  if (!isPng(buf) || buf.length < 33 || buf.toString('latin1', 12, 16) !== 'IHDR') throw new UserError(`${file}: not a readable PNG file`);
  return {
    width: buf.readUInt32BE(16),
    height: buf.readUInt32BE(20),
    bitDepth: buf[24],
    colorType: buf[25],
    interlace: buf[28],
  };
}

const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/**
 * Reads the first channel of a greyscale / grey+alpha / palette PNG as raw values
 * (palette index, not colour). RGB PNGs are refused: class ids must be one value per pixel.
 */
export async function readPngMask(buf: Buffer, file: string): Promise<MaskValues> {
  const h = readPngHeader(buf, file);
  if (h.colorType === 2 || h.colorType === 6)
    throw new UserError(`${file}: mask is an RGB(A) colour image; expected single-channel class ids (greyscale or palette PNG)`);
  if (!(h.colorType in CHANNELS)) throw new UserError(`${file}: unsupported PNG colour type ${h.colorType}`);
  if (h.interlace) throw new UserError(`${file}: interlaced PNG masks are not supported; re-save it without interlacing`);
  const idat: Buffer[] = [];
  let off = 8;
  let ended = false;
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    if (off + 12 + len > buf.length) break;
    if (type === 'IDAT') idat.push(buf.subarray(off + 8, off + 8 + len));
    if (type === 'IEND') {
      ended = true;
      break;
    }
    off += 12 + len;
  }
  if (!ended || !idat.length) throw new UserError(`${file}: truncated or corrupt PNG (no complete image data)`);
  let raw: Buffer;
  try {
    raw = zlib.inflateSync(idat.length === 1 ? idat[0] : Buffer.concat(idat)); // sync: measured cheaper than the async round trip for mask-sized data
  } catch {
    throw new UserError(`${file}: truncated or corrupt PNG (image data does not decompress)`);
  }
  const ch = CHANNELS[h.colorType];
  const bitsPP = ch * h.bitDepth;
  const stride = Math.ceil((h.width * bitsPP) / 8);
  const bpp = Math.max(1, bitsPP >> 3);
  if (raw.length < (stride + 1) * h.height) throw new UserError(`${file}: truncated or corrupt PNG (too little image data)`);
  // Undo the per-row filters (one loop per filter type: this runs for every pixel).
  const rows = Buffer.alloc(stride * h.height);
  for (let y = 0; y < h.height; y++) {
    const f = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const dst = y * stride;
    const prev = dst - stride;
    const up = (i: number) => (y > 0 ? rows[prev + i] : 0);
    if (f === 0) raw.copy(rows, dst, src, src + stride);
    else if (f === 1) for (let i = 0; i < stride; i++) rows[dst + i] = raw[src + i] + (i >= bpp ? rows[dst + i - bpp] : 0);
    else if (f === 2) for (let i = 0; i < stride; i++) rows[dst + i] = raw[src + i] + up(i);
    else if (f === 3) for (let i = 0; i < stride; i++) rows[dst + i] = raw[src + i] + (((i >= bpp ? rows[dst + i - bpp] : 0) + up(i)) >> 1);
    else if (f === 4)
      for (let i = 0; i < stride; i++) {
        const a = i >= bpp ? rows[dst + i - bpp] : 0;
        const b = up(i);
        const c = i >= bpp ? up(i - bpp) : 0;
        const p = a + b - c;
        const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        rows[dst + i] = raw[src + i] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
      }
    else throw new UserError(`${file}: corrupt PNG (bad row filter ${f})`);
  }
  const n = h.width * h.height;
  const values = h.bitDepth === 16 ? new Uint16Array(n) : new Uint8Array(n);
  for (let y = 0; y < h.height; y++) {
    const r = y * stride;
    for (let x = 0; x < h.width; x++) {
      const i = y * h.width + x;
      if (h.bitDepth === 8) values[i] = rows[r + x * ch];
      else if (h.bitDepth === 16) values[i] = rows.readUInt16BE(r + x * ch * 2);
      else {
        const bit = x * h.bitDepth;
        values[i] = (rows[r + (bit >> 3)] >> (8 - h.bitDepth - (bit & 7))) & ((1 << h.bitDepth) - 1);
      }
    }
  }
  return { width: h.width, height: h.height, values };
}

export const selfTest: SelfTest = {
  async 'reads grey, palette and 16-bit PNG values exactly'() {
    const sharp = (await import('sharp')).default;
    const w = 7, h = 5;
    const v = Buffer.from(Array.from({ length: w * h }, (_, i) => (i * 37) % 256));
    const grey = await sharp(v, { raw: { width: w, height: h, channels: 1 } }).toColourspace('b-w').png().toBuffer();
    assert.deepEqual([...(await readPngMask(grey, 'g')).values], [...v]);
    const g16 = await sharp(v, { raw: { width: w, height: h, channels: 1 } }).toColourspace('grey16').png().toBuffer();
    assert.equal(readPngHeader(g16, 'g16').bitDepth, 16);
    assert.deepEqual([...(await readPngMask(g16, 'g16')).values], [...v].map((x) => x * 257));
    // Palette PNG: the values read back are indices, whatever the colours.
    const small = Buffer.from(Array.from({ length: w * h }, (_, i) => (i % 3) * 100));
    const pal = await sharp(small, { raw: { width: w, height: h, channels: 1 } }).png({ palette: true, colours: 4, dither: 0 }).toBuffer();
    assert.equal(readPngHeader(pal, 'p').colorType, 3);
    const idx = (await readPngMask(pal, 'p')).values;
    assert.equal(new Set(idx).size, 3);
    for (let i = 0; i < idx.length; i++) assert.equal(idx[i], idx[i % 3]);
  },
  async 'refuses RGB and truncated PNGs'() {
    const sharp = (await import('sharp')).default;
    const rgb = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#ff0000' } }).png().toBuffer();
    await assert.rejects(readPngMask(rgb, 'rgb.png'), /rgb\.png: mask is an RGB/);
    const grey = await sharp(Buffer.alloc(400, 3), { raw: { width: 20, height: 20, channels: 1 } }).toColourspace('b-w').png().toBuffer();
    await assert.rejects(readPngMask(grey.subarray(0, grey.length - 20), 't.png'), /t\.png: truncated/);
  },
};

runIfMain(module, selfTest);
