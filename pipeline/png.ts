// Reads PNG label masks bit-exact. libvips expands palette PNGs to RGB colours and
// squeezes 16-bit to 8-bit, but a mask's class id is the stored value (palette index or
// grey level). Decoding is fast-png's (measured 20-45% faster than the hand-written
// reader it replaced on ISIC, CamVid and Cityscapes masks, identical values, and it reads
// interlaced files); fast-png 6 is its last CommonJS release. This file keeps the checks
// that make a bad mask one clear line.
import assert from 'node:assert/strict';
import { decode } from 'fast-png';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';

const SIGNATURE = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);

export interface PngHeader { width: number; height: number; bitDepth: number; colorType: number; interlace: number }
export interface MaskValues { width: number; height: number; values: Uint8Array | Uint16Array }

/**
 * The largest image or mask read, in pixels (width x height): libvips' own default
 * (sharp's limitInputPixels, 16383 x 16383, about 268 megapixels), which images decoded by
 * sharp always had, applied to every read (PNG masks decoded here too) from the file's
 * header, before any pixel is decoded: a small file can claim a huge image.
 */
export const MAX_PIXELS = 0x3fff * 0x3fff;

/** Throws one line naming the file, its size and the limit when w x h is over MAX_PIXELS. */
export function checkPixels(file: string, what: string, width: number, height: number): void {
  if (width * height <= MAX_PIXELS) return;
  const mp = (n: number) => `${(n / 1e6).toFixed(1)} megapixels`;
  throw new UserError(`${file}: ${what} is ${width}x${height} (${mp(width * height)}); the largest accepted is ${mp(MAX_PIXELS)} (16383x16383); scale it down first`);
}

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

/** True when the chunk list runs to IEND: fast-png decodes a cut-off file without complaint. */
function complete(buf: Buffer): boolean {
  let off = 8;
  while (off + 12 <= buf.length) {
    const len = buf.readUInt32BE(off);
    if (off + 12 + len > buf.length) return false;
    if (buf.toString('latin1', off + 4, off + 8) === 'IEND') return true;
    off += 12 + len;
  }
  return false;
}

/**
 * Reads the first channel of a greyscale / grey+alpha / palette PNG as raw values
 * (palette index, not colour). RGB PNGs are refused: class ids must be one value per pixel.
 */
export async function readPngMask(buf: Buffer, file: string): Promise<MaskValues> {
  const h = readPngHeader(buf, file);
  checkPixels(file, 'mask', h.width, h.height);
  if (h.colorType === 2 || h.colorType === 6)
    throw new UserError(`${file}: mask is an RGB(A) colour image; expected single-channel class ids (greyscale or palette PNG)`);
  if (h.colorType !== 0 && h.colorType !== 3 && h.colorType !== 4) throw new UserError(`${file}: unsupported PNG colour type ${h.colorType}`);
  // fast-png's Adam7 code assumes a byte per pixel.
  if (h.interlace && h.bitDepth < 8) throw new UserError(`${file}: interlaced PNG masks below 8 bits per pixel are not supported; re-save it without interlacing`);
  if (!complete(buf)) throw new UserError(`${file}: truncated or corrupt PNG (no complete image data)`);
  let png: ReturnType<typeof decode>;
  try {
    png = decode(buf);
  } catch (e) {
    throw new UserError(`${file}: truncated or corrupt PNG (${String((e as Error).message).split('\n')[0]})`);
  }
  const { width, height, depth, channels, data } = png;
  const want = depth >= 8 ? width * height * channels : Math.ceil((width * depth * channels) / 8) * height; // elements
  if (data.length < want) throw new UserError(`${file}: truncated or corrupt PNG (too little image data)`);
  if (channels === 1 && depth >= 8) return { width, height, values: data as Uint8Array | Uint16Array };
  const n = width * height;
  const values = depth === 16 ? new Uint16Array(n) : new Uint8Array(n);
  if (depth >= 8) {
    for (let i = 0; i < n; i++) values[i] = data[i * channels]; // grey+alpha: the grey value
  } else {
    // 1/2/4-bit rows stay packed in fast-png's output.
    const stride = Math.ceil((width * depth * channels) / 8);
    const mask = (1 << depth) - 1;
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) {
        const bit = x * depth * channels;
        values[y * width + x] = (data[y * stride + (bit >> 3)] >> (8 - depth - (bit & 7))) & mask;
      }
  }
  return { width, height, values };
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
  async 'reads interlaced and packed low-bit-depth masks'() {
    const sharp = (await import('sharp')).default;
    const w = 9, h = 7;
    const v = Buffer.from(Array.from({ length: w * h }, (_, i) => (i * 11) % 256));
    const inter = await sharp(v, { raw: { width: w, height: h, channels: 1 } }).toColourspace('b-w').png({ progressive: true }).toBuffer();
    assert.equal(readPngHeader(inter, 'i').interlace, 1);
    assert.deepEqual([...(await readPngMask(inter, 'i')).values], [...v]);
    // A 2-bit palette PNG (3 colours): indices come back unpacked, one per pixel.
    const three = Buffer.from(Array.from({ length: w * h }, (_, i) => [0, 120, 240][i % 3]));
    const pal = await sharp(three, { raw: { width: w, height: h, channels: 1 } }).png({ palette: true, colours: 3, dither: 0 }).toBuffer();
    assert.ok(readPngHeader(pal, 'p').bitDepth < 8, 'packed');
    const idx = (await readPngMask(pal, 'p')).values;
    assert.equal(idx.length, w * h);
    for (let i = 0; i < idx.length; i++) assert.equal(idx[i], idx[i % 3], `pixel ${i}`);
    assert.equal(new Set(idx).size, 3);
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
