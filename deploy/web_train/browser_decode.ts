// pipeline/decode.ts for the browser bundle (bundle.ts puts this file in its place): the
// same decodePair, its pairs' `image` and `mask` naming files the person picked (setFiles),
// not paths. Images are decoded by the browser (createImageBitmap, no colour conversion, no
// premultiplied alpha, EXIF orientation applied as sharp's autoOrient does); masks by the
// project's own PNG reader (pipeline/png.ts, on the file's bytes: exact label values) and
// mapped by the same rules (pipeline/mask_values.ts). Tested in Chromium by
// test/web_train.test.ts; the self-test covers the mask path, which runs in Node too.
import assert from 'node:assert/strict';
import type { PairRef } from '../../loaders/registry';
import { UserError } from '../../utils/errors';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { LabelMask, MaskRules, pairMask } from '../../pipeline/mask_values';
import { checkPixels, isPng, MAX_PIXELS, readPngMask } from '../../pipeline/png';

export { applyLut, checkMaskValues, mapMask, resizeNearest } from '../../pipeline/mask_values';
export type { LabelMask, MaskRules };
export { MAX_PIXELS };
export interface RgbImage { data: Uint8Array; width: number; height: number }

/** The picked files by the name pairs use (their path inside the picked folder). */
const files = new Map<string, Blob>();

export function setFiles(entries: Iterable<[string, Blob]>): void {
  files.clear();
  for (const [k, v] of entries) files.set(k, v);
}

async function bytesOf(name: string): Promise<Uint8Array> {
  const f = files.get(name);
  if (!f) throw new UserError(`${name}: cannot read file (missing)`);
  try {
    return new Uint8Array(await f.arrayBuffer());
  } catch (e) {
    throw new UserError(`${name}: cannot read file (${(e as Error).message})`);
  }
}

/** RGB bytes of an image file at `size` [h, w] (stretched) or as stored; srcWidth/srcHeight: upright size. */
export async function decodeImage(name: string, size?: readonly [number, number]): Promise<RgbImage & { srcWidth: number; srcHeight: number; orientation: number }> {
  const f = files.get(name);
  if (!f) throw new UserError(`${name}: cannot read file (missing)`);
  let bmp: ImageBitmap;
  try {
    bmp = await createImageBitmap(f, { colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image' });
  } catch (e) {
    throw new UserError(`${name}: not a readable image (${(e as Error).message || 'the browser could not decode it'})`);
  }
  const srcWidth = bmp.width, srcHeight = bmp.height;
  checkPixels(name, 'image', srcWidth, srcHeight);
  const [h, w] = size ?? [srcHeight, srcWidth];
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext('2d', { colorSpace: 'srgb' } as CanvasRenderingContext2DSettings)!;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bmp, 0, 0, w, h);
  bmp.close();
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const data = new Uint8Array(w * h * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    data[j] = rgba[i];
    data[j + 1] = rgba[i + 1];
    data[j + 2] = rgba[i + 2];
  }
  return { data, width: w, height: h, srcWidth, srcHeight, orientation: 1 };
}

/** Raw values of a PNG mask, read exactly as the Node side reads them. */
export async function readMaskValues(name: string, bytes?: Uint8Array): Promise<{ values: Uint8Array | Uint16Array; width: number; height: number; orientation: number }> {
  const buf = Buffer.from(bytes ?? (await bytesOf(name)));
  // A .png that is not one gets the PNG reader's own message (not a readable PNG file).
  if (!isPng(buf) && !/\.png$/i.test(name)) throw new UserError(`${name}: the page reads PNG masks only (single-channel class ids, greyscale or palette); convert it to PNG`);
  return { ...(await readPngMask(buf, name)), orientation: 1 };
}

/** decode.ts's decodePair, on the picked files. */
export async function decodePair(pair: PairRef, rules: MaskRules, size: readonly [number, number], full = false): Promise<{ image: RgbImage; mask: LabelMask; fullMask?: LabelMask }> {
  const [image, raw] = await Promise.all([decodeImage(pair.image, size), readMaskValues(pair.mask)]);
  return { image: { data: image.data, width: image.width, height: image.height }, ...pairMask(pair, image, raw, rules, size, full) };
}

export const selfTest: SelfTest = {
  async 'a picked PNG mask is read and a missing or non-PNG one is one line naming it'() {
    const { encode } = await import('fast-png');
    const png = encode({ width: 2, height: 2, data: Uint8Array.from([0, 255, 255, 0]), channels: 1, depth: 8 });
    setFiles([['m/a.png', new Blob([png as Uint8Array<ArrayBuffer>])], ['m/b.jpg', new Blob([Uint8Array.from([0xff, 0xd8, 0xff])])]]);
    assert.deepEqual([...(await readMaskValues('m/a.png')).values], [0, 255, 255, 0]);
    await assert.rejects(readMaskValues('m/b.jpg'), /m\/b\.jpg: the page reads PNG masks only/);
    await assert.rejects(readMaskValues('m/c.png'), (e: Error) => e instanceof UserError && e.message === 'm/c.png: cannot read file (missing)');
    setFiles([['m/d.png', new Blob(['not a png'])]]);
    await assert.rejects(readMaskValues('m/d.png'), (e: Error) => e instanceof UserError && e.message === 'm/d.png: not a readable PNG file');
    setFiles([]);
  },
};

runIfMain(module, selfTest);
