// Every image and mask is checked against one pixel limit from its header, before any
// pixel is decoded; PNG and JPEG alike are turned upright by their EXIF orientation, and
// sized upright, so a mask pairs with what the image shows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import sharp from 'sharp';
import { decodeImage, decodePair, MAX_PIXELS, readMaskValues } from '../pipeline/decode';
import { UserError } from '../utils/errors';
import { tmpDir } from '../loaders/fixtures';

const dir = tmpDir('bounds');
test.after(() => { if (!process.env.KEEP) fs.rmSync(dir, { recursive: true, force: true }); });

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(Buffer.concat([Buffer.from(type, 'latin1'), data])) >>> 0);
  return Buffer.concat([len, Buffer.from(type, 'latin1'), data, crc]);
}

/** A valid all-zero 1-bit greyscale PNG of w x h: tiny on disk, huge decoded. */
function bigPng(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([1, 0, 0, 0, 0], 8);
  const rows = Buffer.alloc((Math.ceil(w / 8) + 1) * h);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(rows, { level: 1 })), chunk('IEND', Buffer.alloc(0))]);
}

const rules = { lut: Int16Array.from({ length: 256 }, (_, i) => (i < 2 ? i : i === 255 ? 255 : -1)), numClasses: 2, ignoreIndex: 255 };

test('a mask, an image and a predict input over the pixel limit are refused from the header, at once', async () => {
  const f = path.join(dir, 'huge.png');
  fs.writeFileSync(f, bigPng(20000, 20000)); // 400 megapixels, about 50 KB
  const limit = new RegExp(`huge\\.png: (mask|image) is 20000x20000 \\(400\\.0 megapixels\\); the largest accepted is ${(MAX_PIXELS / 1e6).toFixed(1)} megapixels \\(16383x16383\\)`);
  for (const read of [() => readMaskValues(f), () => decodeImage(f), () => decodeImage(f, [32, 32])]) {
    const t = Date.now();
    await assert.rejects(read(), (e: Error) => e instanceof UserError && limit.test(e.message) && e.message.split('\n').length === 1);
    assert.ok(Date.now() - t < 2000, `took ${Date.now() - t} ms: decoded before checking?`);
  }
  const jpg = path.join(dir, 'huge.jpg');
  const small = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } }).jpeg().toBuffer();
  // The SOF of a real 8x8 JPEG, rewritten to claim 20000 x 20000.
  for (let i = 2; i < small.length - 9; i++) if (small[i] === 0xff && small[i + 1] === 0xc0) { small.writeUInt16BE(20000, i + 5); small.writeUInt16BE(20000, i + 7); break; }
  fs.writeFileSync(jpg, small);
  await assert.rejects(decodeImage(jpg, [32, 32]), /huge\.jpg: image is 20000x20000 \(400\.0 megapixels\)/);
});

test('a PNG image with an EXIF orientation is sized upright and pairs with an upright mask', async () => {
  const [w, h] = [12, 8]; // upright, as a viewer shows it
  const stored = Buffer.alloc(h * w * 3); // stored turned (orientation 6: stored h x w)
  for (let i = 0; i < stored.length; i++) stored[i] = (i * 5) % 256;
  const img = path.join(dir, 'o6.png');
  await sharp(stored, { raw: { width: h, height: w, channels: 3 } }).png().withMetadata({ orientation: 6 }).toFile(img);
  const d = await decodeImage(img);
  assert.deepEqual([d.width, d.height, d.srcWidth, d.srcHeight], [w, h, w, h]);
  const mask = path.join(dir, 'o6_mask.png');
  const m = Buffer.alloc(w * h);
  for (let x = 0; x < w / 2; x++) for (let y = 0; y < h; y++) m[y * w + x] = 1; // left half
  await sharp(m, { raw: { width: w, height: h, channels: 1 } }).toColourspace('b-w').png().toFile(mask);
  const pair = await decodePair({ id: 'o6', image: img, mask }, rules, [h, w]);
  assert.deepEqual([...pair.mask.data], [...m]);
  // A mask saved as stored (not upright) no longer pairs silently: one line naming both sizes.
  const storedMask = path.join(dir, 'o6_stored.png');
  await sharp(Buffer.alloc(w * h), { raw: { width: h, height: w, channels: 1 } }).toColourspace('b-w').png().toFile(storedMask);
  await assert.rejects(decodePair({ id: 's', image: img, mask: storedMask }, rules, [h, w]), /o6\.png is 12x8 \(upright, by its EXIF orientation 6\) but its mask .*o6_stored\.png is 8x12/);
});

test('a PNG mask with an EXIF orientation is turned upright like its image', async () => {
  const [w, h] = [6, 4];
  const upright = Buffer.from(Array.from({ length: w * h }, (_, i) => (i % w < 2 ? 1 : 0))); // two left columns
  // EXIF 6: the shown pixel (x, y) is stored at (y, w - 1 - x) of an h x w file.
  const st = { data: Buffer.alloc(w * h), info: { width: h, height: w } };
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) st.data[(w - 1 - x) * h + y] = upright[y * w + x];
  const f = path.join(dir, 'm6.png');
  const grey = await sharp(st.data, { raw: { width: st.info.width, height: st.info.height, channels: 1 } }).toColourspace('b-w').png().toBuffer();
  // sharp's withMetadata would make it RGB: an eXIf chunk (orientation 6) from an RGB file, spliced in after IHDR.
  const rgb = await sharp(Buffer.alloc(12), { raw: { width: 2, height: 2, channels: 3 } }).png().withMetadata({ orientation: 6 }).toBuffer();
  let off = 8, exif: Buffer | null = null;
  while (off < rgb.length) {
    const len = rgb.readUInt32BE(off);
    if (rgb.toString('latin1', off + 4, off + 8) === 'eXIf') exif = rgb.subarray(off, off + 12 + len);
    off += 12 + len;
  }
  assert.ok(exif, 'sharp writes eXIf');
  fs.writeFileSync(f, Buffer.concat([grey.subarray(0, 33), exif!, grey.subarray(33)]));
  const got = await readMaskValues(f);
  assert.deepEqual([got.width, got.height], [w, h]);
  assert.deepEqual([...got.values], [...upright]);
});
