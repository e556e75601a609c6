// Each dataset layout read from tiny sharp-written fixtures, and each bad-input case
// failing with a one-line UserError that names the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import zlib from 'node:zlib';
import path from 'node:path';
import sharp from 'sharp';
import { parseConfig } from '../config/resolve';
import { UserError } from '../utils/errors';
import { listSplit, maskLutFor } from '../loaders/registry';
import { decodePair, MaskRules } from '../pipeline/decode';
import { bandMask, imageForMask, tmpDir, writeCamvid, writeCityscapes, writeIsic, writeRaw } from '../loaders/fixtures';
import type { Config } from '../utils/config';
import type { PairRef } from '../loaders/registry';

test('fixtures are readable: single-channel masks, bands in order', async () => {
  const d = tmpDir('fx');
  await writeIsic(d, 'Training', ['ISIC_0000001'], 8, 6);
  const meta = await sharp(path.join(d, 'ISIC2018_Task1_Training_GroundTruth', 'ISIC_0000001_segmentation.png')).metadata();
  assert.equal(meta.channels, 1);
  assert.deepEqual([...bandMask(2, 4, [1, 2])], [1, 1, 1, 1, 2, 2, 2, 2]);
  fs.rmSync(d, { recursive: true });
});

function rules(cfg: Config): MaskRules {
  return { lut: maskLutFor(cfg), numClasses: cfg.data.num_classes, ignoreIndex: cfg.data.ignore_index };
}

async function decodeAll(cfg: Config, split: string, size?: [number, number]) {
  const pairs = await listSplit(cfg, split);
  return Promise.all(pairs.map(async (p) => ({ p, ...(await decodePair(p, rules(cfg), size ?? cfg.data.size)) })));
}

/** Asserts a one-line UserError whose message matches every pattern. */
async function rejectsUser(fn: () => Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(fn, (e: Error) => {
    assert.ok(e instanceof UserError, `expected UserError, got ${e.name}: ${e.message}`);
    assert.equal(e.message.split('\n').length, 1);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

test('isic: official layout, 0/255 -> 0/1, in-between values thresholded at 128', async () => {
  const root = tmpDir('isic');
  await writeIsic(root, 'Training', ['ISIC_0000000', 'ISIC_0000001', 'ISIC_0000002'], 16, 12, [0, 255]);
  await writeIsic(root, 'Validation', ['ISIC_0000010'], 16, 12, [100, 200]);
  const cfg = parseConfig({ data: { name: 'isic', root, size: [12, 16] } });
  const train = await decodeAll(cfg, 'train');
  assert.deepEqual(train.map((x) => x.p.id), ['ISIC_0000000', 'ISIC_0000001', 'ISIC_0000002']);
  for (const { mask } of train) assert.deepEqual([...new Set(mask.data)].sort(), [0, 1]);
  const [val] = await decodeAll(cfg, 'val');
  assert.deepEqual([...val.mask.data], [...bandMask(16, 12, [1, 0])]); // 200 -> 1, 100 -> 0
  await rejectsUser(() => listSplit(cfg, 'test'), /ISIC2018_Task1-2_Test_Input not found/);
  await rejectsUser(() => listSplit(cfg, 'holdout'), /split 'holdout'/);
});

test('datasets made of symbolic links load like the files; a broken link is one line naming it', async () => {
  const real = tmpDir('isic-real');
  await writeIsic(real, 'Training', ['ISIC_0000000', 'ISIC_0000001'], 16, 12, [0, 255]);
  // ISIC: the input folder a link to a folder, each mask a link to a file.
  const root = tmpDir('isic-links');
  fs.symlinkSync(path.join(real, 'ISIC2018_Task1-2_Training_Input'), path.join(root, 'ISIC2018_Task1-2_Training_Input'));
  const masks = path.join(root, 'ISIC2018_Task1_Training_GroundTruth');
  fs.mkdirSync(masks);
  for (const f of fs.readdirSync(path.join(real, 'ISIC2018_Task1_Training_GroundTruth'))) fs.symlinkSync(path.join(real, 'ISIC2018_Task1_Training_GroundTruth', f), path.join(masks, f));
  const viaLinks = await decodeAll(parseConfig({ data: { name: 'isic', root, size: [12, 16] } }), 'train');
  const direct = await decodeAll(parseConfig({ data: { name: 'isic', root: real, size: [12, 16] } }), 'train');
  assert.deepEqual(viaLinks.map((x) => x.p.id), ['ISIC_0000000', 'ISIC_0000001']);
  viaLinks.forEach((x, i) => assert.deepEqual([...x.mask.data], [...direct[i].mask.data]));
  // Cityscapes: a city folder that is a link.
  const cs = tmpDir('cs-real');
  await writeCityscapes(cs, 'val', 'lindau', ['lindau_000000_000002'], [8], 8, 12);
  const csLinks = tmpDir('cs-links');
  for (const top of ['leftImg8bit', 'gtFine']) {
    fs.mkdirSync(path.join(csLinks, top, 'val'), { recursive: true });
    fs.symlinkSync(path.join(cs, top, 'val', 'lindau'), path.join(csLinks, top, 'val', 'lindau'));
  }
  const out = await decodeAll(parseConfig({ data: { name: 'cityscapes', root: csLinks, num_classes: 19, size: [12, 8] } }), 'val');
  assert.deepEqual(out.map((x) => x.p.id), ['lindau_000000_000002']);
  // A link to nothing.
  const broken = path.join(masks, 'ISIC_0000002_segmentation.png');
  fs.symlinkSync(path.join(real, 'missing.png'), broken);
  await rejectsUser(() => listSplit(parseConfig({ data: { name: 'isic', root } }), 'train'), /broken symbolic link/, new RegExp(broken.replace(/[.]/g, '\\.')));
});

test('cityscapes: label ids -> 19 train ids, everything else ignored', async () => {
  const root = tmpDir('cs');
  // road(7)->0, car(26)->13, unlabeled(0)->255, caravan(29)->255, bicycle(33)->18, license-plate-ish 5 -> 255
  await writeCityscapes(root, 'val', 'frankfurt', ['frankfurt_000000_000001'], [7, 26, 0, 29, 33, 5], 8, 12);
  await writeCityscapes(root, 'val', 'lindau', ['lindau_000000_000002'], [8], 8, 12);
  const cfg = parseConfig({ data: { name: 'cityscapes', root, num_classes: 19, size: [12, 8] } });
  const out = await decodeAll(cfg, 'val');
  assert.deepEqual(out.map((x) => x.p.id), ['frankfurt_000000_000001', 'lindau_000000_000002']);
  assert.deepEqual([...out[0].mask.data], [...bandMask(8, 12, [0, 13, 255, 255, 18, 255])]);
  assert.ok(out[1].mask.data.every((v) => v === 1));
  // A value outside the 34 label ids is an error naming the file.
  await writeCityscapes(root, 'val', 'ulm', ['ulm_1'], [40], 8, 12);
  await rejectsUser(() => decodeAll(cfg, 'val'), /ulm_1_gtFine_labelIds\.png: mask value 40/);
});

test('camvid: SegNet layout, void (11) -> ignore index', async () => {
  const root = tmpDir('camvid');
  await writeCamvid(root, 'train', ['0001TP_006690', '0001TP_006720'], [0, 3, 10, 11], 12, 8);
  const cfg = parseConfig({ data: { name: 'camvid', root, num_classes: 11, size: [8, 12] } });
  const out = await decodeAll(cfg, 'train');
  assert.equal(out.length, 2);
  assert.deepEqual([...out[0].mask.data], [...bandMask(12, 8, [0, 3, 10, 255])]);
});

test('folder: stems, mask suffix and value_map', async () => {
  const root = tmpDir('folder');
  for (const n of ['a', 'b']) {
    const m = bandMask(10, 10, [0, 255, 128]);
    await writeRaw(path.join(root, 'images', `${n}.jpg`), imageForMask(m), 10, 10, 3);
    await writeRaw(path.join(root, 'labels', `${n}_mask.png`), m, 10, 10, 1);
  }
  const cfg = parseConfig({
    data: { name: 'folder', root, images_dir: 'images', masks_dir: 'labels', mask_suffix: '_mask', num_classes: 2, value_map: { '255': 1, '128': 255 }, size: [10, 10] },
  });
  const out = await decodeAll(cfg, 'train');
  assert.deepEqual(out.map((x) => x.p.id), ['a', 'b']);
  assert.deepEqual([...new Set(out[0].mask.data)].sort((a, b) => a - b), [0, 1, 255]);
  const noMap = parseConfig({ data: { ...cfg.data, value_map: undefined } });
  await rejectsUser(() => decodeAll(noMap, 'train'), /[ab]_mask\.png: mask value 128/);
});

test('synthetic: deterministic files in the isic layout, multiclass ids', async () => {
  const roots = [tmpDir('syn1'), tmpDir('syn2')].map((r) => path.join(r, 'ds'));
  const read = (p: PairRef) => [fs.readFileSync(p.image), fs.readFileSync(p.mask)];
  const lists: PairRef[][] = [];
  for (const root of roots) lists.push(await listSplit(parseConfig({ data: { root, synthetic: { train: 5, val: 2, image_size: 32 } } }), 'train'));
  assert.equal(lists[0].length, 5);
  for (let i = 0; i < 5; i++) assert.deepEqual(read(lists[0][i]), read(lists[1][i]));
  assert.ok(fs.existsSync(path.join(roots[0], 'ISIC2018_Task1-2_Validation_Input')));
  const mc = parseConfig({ data: { root: path.join(roots[0], '..', 'mc'), num_classes: 4, synthetic: { kind: 'multiclass', train: 4, val: 2, image_size: 32 } } });
  const out = await decodeAll(mc, 'val');
  assert.ok(out.every((o) => o.mask.data.every((v) => v <= 3)));
  await rejectsUser(() => listSplit(parseConfig({ data: { ...mc.data, num_classes: 2 } }), 'train'), /set data\.num_classes: 4/);
});

test('missing root, empty folder, image without mask, mask without image', async () => {
  const root = tmpDir('bad');
  await rejectsUser(() => listSplit(parseConfig({ data: { name: 'isic', root: path.join(root, 'isic2018') } }), 'train'), /isic2018 not found: download ISIC 2018 Task 1/, /README/);
  await rejectsUser(() => listSplit(parseConfig({ data: { name: 'camvid', root: path.join(root, 'cv'), num_classes: 11 } }), 'train'), /cv not found: download CamVid/);
  await rejectsUser(() => listSplit(parseConfig({ data: { name: 'cityscapes', root: path.join(root, 'cs'), num_classes: 19 } }), 'train'), /cs not found: download Cityscapes/);
  fs.mkdirSync(path.join(root, 'ISIC2018_Task1-2_Training_Input'));
  fs.mkdirSync(path.join(root, 'ISIC2018_Task1_Training_GroundTruth'));
  const cfg = parseConfig({ data: { name: 'isic', root } });
  await rejectsUser(() => listSplit(cfg, 'train'), /no images found in .*Training_Input \(expected files like ISIC_xxxxxxx\.jpg\)/);
  await writeIsic(root, 'Training', ['ISIC_1', 'ISIC_2']);
  fs.rmSync(path.join(root, 'ISIC2018_Task1_Training_GroundTruth', 'ISIC_2_segmentation.png'));
  await rejectsUser(() => listSplit(cfg, 'train'), /1 image\(s\) without a mask .*ISIC_2\.jpg/);
  await writeIsic(root, 'Training', ['ISIC_2']);
  fs.rmSync(path.join(root, 'ISIC2018_Task1-2_Training_Input', 'ISIC_1.jpg'));
  await rejectsUser(() => listSplit(cfg, 'train'), /1 mask\(s\) without an image .*ISIC_1_segmentation\.png/);
});

test('size mismatch names both files; bad mask value names file and value', async () => {
  const root = tmpDir('mismatch');
  const img = path.join(root, 'a.png'), mask = path.join(root, 'a_m.png');
  await writeRaw(img, new Uint8Array(10 * 8 * 3), 10, 8, 3);
  await writeRaw(mask, new Uint8Array(9 * 8), 9, 8, 1);
  const cfg = parseConfig({ data: { name: 'folder', root } });
  const pair = { id: 'a', image: img, mask };
  await rejectsUser(() => decodePair(pair, rules(cfg), [8, 8]), /a\.png is 10x8 but its mask .*a_m\.png is 9x8/);
  const m = new Uint8Array(10 * 8);
  m[13] = 7;
  await writeRaw(mask, m, 10, 8, 1);
  await rejectsUser(() => decodePair(pair, rules(cfg), [8, 8]), /a_m\.png: mask value 7 \(first bad pixel #13\)/);
});

test('truncated or unreadable files are errors naming the file', async () => {
  const root = tmpDir('trunc');
  const m = bandMask(32, 32, [0, 1]);
  const img = path.join(root, 'x.jpg'), mask = path.join(root, 'x.png');
  await writeRaw(img, imageForMask(m), 32, 32, 3);
  await writeRaw(mask, m, 32, 32, 1);
  const cfg = parseConfig({});
  const ok = await decodePair({ id: 'x', image: img, mask }, rules(cfg), [16, 16]);
  assert.equal(ok.image.data.length, 16 * 16 * 3);
  const cut = (f: string) => fs.writeFileSync(f, fs.readFileSync(f).subarray(0, Math.floor(fs.statSync(f).size / 2)));
  const timg = path.join(root, 't.jpg'), tmask = path.join(root, 't.png');
  fs.copyFileSync(img, timg);
  fs.copyFileSync(mask, tmask);
  cut(timg);
  await rejectsUser(() => decodePair({ id: 't', image: timg, mask }, rules(cfg), [16, 16]), /t\.jpg/);
  cut(tmask);
  await rejectsUser(() => decodePair({ id: 't', image: img, mask: tmask }, rules(cfg), [16, 16]), /t\.png: truncated/);
  fs.writeFileSync(timg, 'not an image');
  await rejectsUser(() => decodePair({ id: 't', image: timg, mask }, rules(cfg), [16, 16]), /t\.jpg: not a readable image/);
  await rejectsUser(() => decodePair({ id: 'n', image: path.join(root, 'none.jpg'), mask }, rules(cfg), [16, 16]), /none\.jpg: cannot read file \(missing\)/);
});

test('16-bit and palette masks keep their values; RGB masks refused', async () => {
  const root = tmpDir('formats');
  const w = 6, h = 4;
  const grey = path.join(root, 'g.png');
  await writeRaw(grey, new Uint8Array(w * h).fill(77), w, h, 1);
  const cfg = parseConfig({ data: { name: 'folder', root, num_classes: 3 } });
  const m16 = path.join(root, 'm16.png'); // values 0..2 stored in 16 bits (would be 0 if squeezed to 8-bit)
  const vals = bandMask(w, h, [0, 1, 2]);
  fs.writeFileSync(m16, png16(vals, w, h));
  const got = await decodePair({ id: 'm', image: grey, mask: m16 }, rules(cfg), [h, w]);
  assert.deepEqual([...got.mask.data], [...vals]);
  const pal = path.join(root, 'pal.png');
  await sharp(Buffer.from(bandMask(w, h, [10, 200, 90])), { raw: { width: w, height: h, channels: 1 } }).png({ palette: true, colours: 3, dither: 0 }).toFile(pal);
  const p = await decodePair({ id: 'p', image: grey, mask: pal }, rules(cfg), [h, w]);
  assert.deepEqual(new Set(p.mask.data).size, 3); // palette indices 0..2, not colours
  assert.ok(p.mask.data.every((v) => v <= 2));
  const rgbMask = path.join(root, 'rgb_mask.png');
  await writeRaw(rgbMask, new Uint8Array(w * h * 3), w, h, 3);
  await assert.rejects(decodePair({ id: 'r', image: grey, mask: rgbMask }, rules(cfg), [h, w]), /rgb_mask\.png: mask is an RGB/);
});

/** Minimal 16-bit greyscale PNG encoder (filter 0), for the 16-bit mask case. */
function png16(values: Uint8Array, w: number, h: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 255] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 16;
  ihdr[9] = 0;
  const raw = Buffer.alloc((w * 2 + 1) * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.writeUInt16BE(values[y * w + x], y * (w * 2 + 1) + 1 + x * 2);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

test('masks are resized nearest: no new values appear', async () => {
  const root = tmpDir('nearest');
  const w = 20, h = 14;
  await writeCamvid(root, 'val', ['f'], [0, 5, 9, 11], w, h);
  const cfg = parseConfig({ data: { name: 'camvid', root, num_classes: 11 } });
  const [out] = await decodeAll(cfg, 'val', [37, 23]);
  assert.equal(out.mask.data.length, 37 * 23);
  assert.deepEqual([...new Set(out.mask.data)].sort((a, b) => a - b), [0, 5, 9, 255]);
  assert.equal(out.image.data.length, 37 * 23 * 3);
});
