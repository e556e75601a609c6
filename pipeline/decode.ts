// Decodes one image/mask pair into plain typed arrays: image RGB uint8 HWC, mask
// class ids uint8. Images are resized with a smooth filter (sharp/libvips, off the
// main thread); masks are only ever resized nearest-neighbour, so no new values appear.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { checkPixels, isPng, MAX_PIXELS, readPngMask } from './png';
import { mapMask, pairMask, resizeNearest } from './mask_values';

// In mask_values.ts so that the browser bundle (deploy/web_train) reads masks by the same rules.
export { applyLut, checkMaskValues, mapMask, resizeNearest } from './mask_values';

export { MAX_PIXELS };
import type { MaskLut, PairRef } from '../loaders/registry';

export interface RgbImage { data: Uint8Array; width: number; height: number } // HWC, 3 channels
export type { LabelMask, MaskRules } from './mask_values';
import type { LabelMask, MaskRules } from './mask_values';

// Keep libvips from caching decoded files: every sample is read once per epoch, so a
// cache only grows memory.
sharp.cache(false);

async function readFile(file: string): Promise<Buffer> {
  try {
    return await fs.promises.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${file}: cannot read file (${code === 'ENOENT' ? 'missing' : code ?? (e as Error).message})`);
  }
}

function short(e: unknown): string {
  return String((e as Error).message ?? e).split('\n')[0];
}

/** The EXIF orientation (1-8) in an APP1 payload, 1 when it has none. */
function exifOrientation(seg: Buffer): number {
  try {
    if (seg.toString('latin1', 0, 6) !== 'Exif\0\0') return 1;
    const t = 6; // the TIFF header: byte order, 42, offset of the first IFD
    const le = seg.toString('latin1', t, t + 2) === 'II';
    const u16 = (o: number) => (le ? seg.readUInt16LE(t + o) : seg.readUInt16BE(t + o));
    const ifd = le ? seg.readUInt32LE(t + 4) : seg.readUInt32BE(t + 4);
    for (let i = 0, n = u16(ifd); i < n; i++) {
      const e = ifd + 2 + i * 12;
      if (u16(e) === 0x0112) {
        const v = u16(e + 8);
        return v >= 1 && v <= 8 ? v : 1;
      }
    }
  } catch {
    // a short or odd EXIF block: as stored
  }
  return 1;
}

/** Width/height (as stored) and EXIF orientation from a JPEG's SOF and APP1 markers, or null. */
function jpegSize(buf: Buffer): { width: number; height: number; orientation: number } | null {
  if (buf[0] !== 0xff || buf[1] !== 0xd8) return null;
  let off = 2;
  let orientation = 1;
  while (off + 9 < buf.length) {
    if (buf[off] !== 0xff) return null;
    const marker = buf[off + 1];
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      off += 2;
      continue;
    }
    const len = buf.readUInt16BE(off + 2);
    if (marker === 0xe1 && orientation === 1) orientation = exifOrientation(buf.subarray(off + 4, off + 2 + len));
    // SOF0-SOF15 except DHT (c4), JPG (c8), DAC (cc)
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc)
      return { height: buf.readUInt16BE(off + 5), width: buf.readUInt16BE(off + 7), orientation };
    off += 2 + len;
  }
  return null;
}

export interface FileHeader { width: number; height: number; orientation: number } // as stored; EXIF orientation 1-8

/**
 * Stored size and EXIF orientation of an image or mask file, from its header alone (no
 * pixel decoded), checked against MAX_PIXELS. JPEG is parsed here (saves a libvips call);
 * anything else asks libvips, the decoder that turns it, so size and pixels always agree.
 */
async function readHeader(buf: Buffer, file: string, what: 'image' | 'mask'): Promise<FileHeader & { meta?: sharp.Metadata }> {
  if (isPng(buf) && buf.length >= 24) checkPixels(file, what, buf.readUInt32BE(16), buf.readUInt32BE(20)); // before libvips looks further
  const j = jpegSize(buf);
  if (j) {
    checkPixels(file, what, j.width, j.height);
    return j;
  }
  let meta: sharp.Metadata;
  try {
    meta = await sharp(buf).metadata();
    if (!meta.width || !meta.height) throw new Error('no size');
  } catch (e) {
    // A PNG with its header but cut short: the decoder's message says so ("truncated").
    if (isPng(buf) && buf.length >= 24) return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20), orientation: 1 };
    throw new UserError(`${file}: not a readable ${what === 'mask' ? 'mask image' : 'image'} (${short(e)})`);
  }
  checkPixels(file, what, meta.width, meta.height);
  return { width: meta.width, height: meta.height, orientation: meta.orientation ?? 1, meta };
}

/** The size as a viewer shows it: EXIF orientations 5-8 turn the picture a quarter. */
function uprightSize(h: FileHeader): { width: number; height: number } {
  return h.orientation >= 5 ? { width: h.height, height: h.width } : { width: h.width, height: h.height };
}

/**
 * Any image sharp reads -> 3-channel 8-bit sRGB (greyscale expanded, alpha dropped,
 * 16-bit scaled to 8-bit). `size` = [h, w] resizes (stretching, like the network input).
 * Every format is turned upright by its EXIF orientation, as a viewer shows it; srcWidth
 * and srcHeight are that upright size.
 */
export async function decodeImage(file: string, size?: readonly [number, number], buf?: Buffer): Promise<RgbImage & { srcWidth: number; srcHeight: number; orientation: number }> {
  buf ??= await readFile(file);
  const head = await readHeader(buf, file, 'image');
  const src = uprightSize(head);
  try {
    // Turned upright by its EXIF orientation, as a viewer (and the deploy page's browser) shows it.
    let s = sharp(buf, { failOn: 'warning', limitInputPixels: MAX_PIXELS }).autoOrient();
    if (size && (size[0] !== src.height || size[1] !== src.width)) s = s.resize(size[1], size[0], { fit: 'fill' });
    const { data, info } = await s.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`got ${info.channels} channels`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, srcWidth: src.width, srcHeight: src.height, orientation: head.orientation };
  } catch (e) {
    throw new UserError(`${file}: cannot decode image, truncated or corrupt? (${short(e)})`);
  }
}

/** `values` (ws x hs, as stored) turned upright by EXIF orientation `o`. */
function orientValues<T extends Uint8Array | Uint16Array>(values: T, ws: number, hs: number, o: number): { values: T; width: number; height: number } {
  const { width: w, height: h } = uprightSize({ width: ws, height: hs, orientation: o });
  const at = storedAt(o, ws, hs);
  const out = (values instanceof Uint16Array ? new Uint16Array(w * h) : new Uint8Array(w * h)) as T;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const [sx, sy] = at(x, y);
    out[y * w + x] = values[sy * ws + sx];
  }
  return { values: out, width: w, height: h };
}

/**
 * Raw single-channel values of a mask file (palette index / grey level, 8 or 16 bit),
 * turned upright by its EXIF orientation like every image (a mask without one, the usual
 * case, is read as stored).
 */
export async function readMaskValues(file: string, buf?: Buffer): Promise<{ values: Uint8Array | Uint16Array; width: number; height: number; orientation: number }> {
  buf ??= await readFile(file);
  const head = await readHeader(buf, file, 'mask');
  // PNG masks are read by our own decoder: bit-exact for palette/16-bit, and measured
  // faster than libvips for 8-bit grey (1.3 vs 2.0 ms CPU per 256x256 mask).
  if (isPng(buf)) {
    const m = await readPngMask(buf, file);
    return { ...(head.orientation === 1 ? m : orientValues(m.values, m.width, m.height, head.orientation)), orientation: head.orientation };
  }
  const meta = head.meta ?? (await sharp(buf).metadata());
  if ((meta.channels ?? 1) >= 3) throw new UserError(`${file}: mask is a colour image; expected single-channel class ids (greyscale or palette PNG)`);
  if (meta.depth && meta.depth !== 'uchar' && meta.depth !== 'char')
    throw new UserError(`${file}: ${meta.depth} mask; expected 8-bit class ids (save it as an 8-bit greyscale PNG)`);
  try {
    const { data, info } = await sharp(buf, { failOn: 'warning', limitInputPixels: MAX_PIXELS }).autoOrient().extractChannel(0).raw().toBuffer({ resolveWithObject: true });
    return { values: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, orientation: head.orientation };
  } catch (e) {
    throw new UserError(`${file}: cannot decode mask, truncated or corrupt? (${short(e)})`);
  }
}

/**
 * Decodes a pair at `size` = [h, w] and checks that image and mask agree. With `full`,
 * also returns the mask at its own size (scoring at the label resolution).
 */
export async function decodePair(pair: PairRef, rules: MaskRules, size: readonly [number, number], full = false): Promise<{ image: RgbImage; mask: LabelMask; fullMask?: LabelMask }> {
  const [ibuf, mbuf] = await Promise.all([readFile(pair.image), readFile(pair.mask)]);
  const [image, raw] = await Promise.all([decodeImage(pair.image, size, ibuf), readMaskValues(pair.mask, mbuf)]);
  return { image: { data: image.data, width: image.width, height: image.height }, ...pairMask(pair, image, raw, rules, size, full) };
}

/**
 * For tests: `upright` (w x h RGB, what a viewer shows) as the pixels a camera stores with
 * EXIF orientation `o`, so that turning them by `o` gives `upright` back.
 */
export function storedForOrientation(upright: Uint8Array, w: number, h: number, o: number): { data: Uint8Array; width: number; height: number } {
  const [ws, hs] = o >= 5 ? [h, w] : [w, h];
  const at = storedAt(o, ws, hs);
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [sx, sy] = at(x, y);
      for (let c = 0; c < 3; c++) data[(sy * ws + sx) * 3 + c] = upright[(y * w + x) * 3 + c];
    }
  }
  return { data, width: ws, height: hs };
}

/** Where the shown pixel (x, y) is stored in a ws x hs file, per the EXIF definition of orientation `o`. */
function storedAt(o: number, ws: number, hs: number): (x: number, y: number) => [number, number] {
  const at: Record<number, (x: number, y: number) => [number, number]> = {
    1: (x, y) => [x, y], 2: (x, y) => [ws - 1 - x, y], 3: (x, y) => [ws - 1 - x, hs - 1 - y], 4: (x, y) => [x, hs - 1 - y],
    5: (x, y) => [y, x], 6: (x, y) => [y, hs - 1 - x], 7: (x, y) => [ws - 1 - y, hs - 1 - x], 8: (x, y) => [ws - 1 - y, x],
  };
  return at[o] ?? at[1];
}

export const selfTest: SelfTest = {
  async 'photos come out upright for all eight EXIF orientations, in size and pixels'() {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'decode-'));
    // 6 x 4 blocks of 8 px, each block its own colour: JPEG keeps block centres close.
    const [bw, bh, k] = [6, 4, 8];
    const [w, h] = [bw * k, bh * k];
    const upright = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const b = Math.floor(y / k) * bw + Math.floor(x / k);
      upright.set([b * 10, 255 - b * 10, (b * 70) % 256], (y * w + x) * 3);
    }
    for (let o = 1; o <= 8; o++) {
      const st = storedForOrientation(upright, w, h, o);
      const file = path.join(d, `o${o}.jpg`);
      await sharp(Buffer.from(st.data), { raw: { width: st.width, height: st.height, channels: 3 } }).jpeg({ quality: 100 }).withMetadata({ orientation: o }).toFile(file);
      const img = await decodeImage(file);
      assert.deepEqual([img.width, img.height, img.srcWidth, img.srcHeight], [w, h, w, h], `orientation ${o}`);
      for (let by = 0; by < bh; by++) for (let bx = 0; bx < bw; bx++) {
        const i = ((by * k + k / 2) * w + bx * k + k / 2) * 3;
        for (let c = 0; c < 3; c++) assert.ok(Math.abs(img.data[i + c] - upright[i + c]) <= 12, `orientation ${o}, block ${bx},${by}: ${img.data[i + c]} vs ${upright[i + c]}`);
      }
      const small = await decodeImage(file, [h / 2, w / 2]); // resized after turning
      assert.deepEqual([small.width, small.height], [w / 2, h / 2], `orientation ${o}, resized`);
    }
    fs.rmSync(d, { recursive: true });
  },
  async 'greyscale, RGBA and 16-bit images become 8-bit RGB'() {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'decode-'));
    const g = path.join(d, 'g.png');
    await sharp(Buffer.alloc(12, 200), { raw: { width: 4, height: 3, channels: 1 } }).toColourspace('b-w').png().toFile(g);
    const a = path.join(d, 'a.png');
    await sharp(Buffer.alloc(48, 100), { raw: { width: 4, height: 3, channels: 4 } }).png().toFile(a);
    const s16 = path.join(d, 's.png');
    await sharp(Buffer.alloc(36, 64), { raw: { width: 4, height: 3, channels: 3 } }).toColourspace('rgb16').png().toFile(s16);
    for (const [f, v] of [[g, 200], [a, 100], [s16, 64]] as const) {
      const im = await decodeImage(f);
      assert.equal(im.data.length, 36, f);
      assert.ok(im.data.every((x) => x === v), f);
    }
    fs.rmSync(d, { recursive: true });
  },
  'nearest resize only uses source values'() {
    const src = Uint8Array.from([0, 1, 2, 3]);
    const up = resizeNearest(src, 2, 2, 5, 3);
    assert.ok(up.every((v) => v <= 3));
    assert.deepEqual([...resizeNearest(up, 5, 3, 2, 2)], [0, 1, 2, 3]);
  },
  'unknown mask value names file and value'() {
    const rules = { lut: Int16Array.from({ length: 256 }, (_, i) => (i < 2 ? i : i === 255 ? 255 : -1)), numClasses: 2, ignoreIndex: 255 };
    assert.deepEqual([...mapMask(Uint8Array.from([0, 1, 255]), rules, 'm.png')], [0, 1, 255]);
    assert.throws(() => mapMask(Uint8Array.from([0, 7, 9]), rules, 'm.png'), /m\.png: mask value 7 /);
  },
};

runIfMain(module, selfTest);
