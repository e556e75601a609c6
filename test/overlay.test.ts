import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import {
  BOTH_COLOR,
  BOUNDARY_COLOR,
  colorizePng,
  contour,
  GT_COLOR,
  IGNORE_COLOR,
  overlayPng,
  PANEL_GAP,
  PRED_COLOR,
  vocPalette,
} from '../report/overlay';

const W = 12;
const H = 10;
const GREY = 90;
const binary = { binary: true, palette: vocPalette(2), ignoreIndex: 255 };

function square(x0: number, y0: number, size: number, value = 1, w = W, h = H): Uint8Array {
  const m = new Uint8Array(w * h);
  for (let y = y0; y < y0 + size; y++) for (let x = x0; x < x0 + size; x++) m[y * w + x] = value;
  return m;
}

const greyImage = (w = W, h = H) => new Uint8Array(w * h * 3).fill(GREY);

async function decode(png: Buffer) {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const at = (x: number, y: number) => [...data.subarray((y * info.width + x) * 3, (y * info.width + x) * 3 + 3)];
  const count = (c: number[]) => {
    let n = 0;
    for (let i = 0; i < data.length; i += 3) if (data[i] === c[0] && data[i + 1] === c[1] && data[i + 2] === c[2]) n++;
    return n;
  };
  return { info, at, count };
}

test('binary: prediction contour is exactly the ring of a hand-made square', async () => {
  // Square covering x,y in [3, 7): its ring is the 12 border pixels of the 4x4 block.
  const d = await decode(await overlayPng(greyImage(), W, H, square(3, 3, 4), null, binary));
  assert.deepEqual([d.info.width, d.info.height], [W, H]);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const inside = x >= 3 && x <= 6 && y >= 3 && y <= 6;
      const ring = inside && (x === 3 || x === 6 || y === 3 || y === 6);
      assert.deepEqual(d.at(x, y), ring ? PRED_COLOR : [GREY, GREY, GREY], `pixel ${x},${y}`);
    }
  }
});

test('binary: gt contour in its own colour, shared edges in the "both" colour', async () => {
  // Pred [2,6) x [2,6), gt [2,6) x [2,8): top and sides shared, bottoms differ.
  const pred = square(2, 2, 4);
  const gt = square(2, 2, 4);
  for (let y = 6; y < 8; y++) for (let x = 2; x < 6; x++) gt[y * W + x] = 1;
  const d = await decode(await overlayPng(greyImage(), W, H, pred, gt, binary));
  assert.deepEqual(d.at(2, 2), BOTH_COLOR);
  assert.deepEqual(d.at(3, 5), PRED_COLOR); // pred's bottom edge is inside gt
  assert.deepEqual(d.at(3, 7), GT_COLOR); // gt's bottom edge
  assert.deepEqual(d.at(3, 3), [GREY, GREY, GREY]);
});

test('binary: a blank prediction draws no prediction colour', async () => {
  const d = await decode(await overlayPng(greyImage(), W, H, new Uint8Array(W * H), square(3, 3, 4), binary));
  assert.equal(d.count(PRED_COLOR), 0);
  assert.equal(d.count(BOTH_COLOR), 0);
  assert.equal(d.count(GT_COLOR), 12);
});

test('binary: ignored gt pixels are not outlined; masks touching the border are', async () => {
  const gt = new Uint8Array(W * H).fill(255);
  const pred = new Uint8Array(W * H).fill(1);
  const d = await decode(await overlayPng(greyImage(), W, H, pred, gt, binary));
  assert.equal(d.count(GT_COLOR), 0);
  assert.equal(d.count(PRED_COLOR), 2 * W + 2 * H - 4);
});

test('contour thickness 2 is a 2-px band', () => {
  const c = contour(square(2, 2, 6), W, H, 2);
  assert.equal(c.reduce((a, b) => a + b, 0), 36 - 4); // 6x6 minus the 2x2 core
  assert.equal(c[4 * W + 4], 0);
  assert.equal(c[3 * W + 3], 1);
});

test('multi-class: 50% blend of the prediction colour, boundaries, pred | gt panels', async () => {
  const pal = vocPalette(3);
  const opts = { binary: false, palette: pal, ignoreIndex: 255 };
  const pred = square(3, 3, 4, 2);
  const d1 = await decode(await overlayPng(greyImage(), W, H, pred, null, opts));
  assert.deepEqual([d1.info.width, d1.info.height], [W, H]);
  assert.deepEqual(d1.at(0, 0), pal[0].map((c) => (GREY + c + 1) >> 1));
  assert.deepEqual(d1.at(4, 4), pal[2].map((c) => (GREY + c + 1) >> 1));
  assert.deepEqual(d1.at(3, 3), BOUNDARY_COLOR);
  assert.deepEqual(d1.at(2, 3), BOUNDARY_COLOR); // both sides of the edge

  const gt = square(3, 3, 4, 1);
  gt.fill(255, 0, 2 * W); // top two rows ignored (row 1 is then a boundary)
  const d2 = await decode(await overlayPng(greyImage(), W, H, pred, gt, opts));
  assert.deepEqual([d2.info.width, d2.info.height], [2 * W + PANEL_GAP, H]);
  const right = W + PANEL_GAP;
  assert.deepEqual(d2.at(right + 4, 4), pal[1].map((c) => (GREY + c + 1) >> 1));
  assert.deepEqual(d2.at(right + 5, 0), [GREY, GREY, GREY].map((v) => (v + 128 + 1) >> 1)); // neutral
  assert.deepEqual(d2.at(W, 5), [255, 255, 255]); // gap
});

test('colorizePng: indexed PNG with class ids as indices and palette colours', async () => {
  const m = square(1, 1, 3, 2);
  m[W * H - 1] = 255;
  const png = await colorizePng(m, W, H, vocPalette(3), 255);
  assert.equal(png.readUInt32BE(16), W);
  assert.equal(png.readUInt32BE(20), H);
  assert.equal(png[25], 3); // colour type: indexed
  const d = await decode(png);
  assert.deepEqual([d.info.width, d.info.height], [W, H]);
  assert.deepEqual(d.at(2, 2), [0, 128, 0]);
  assert.deepEqual(d.at(0, 0), [0, 0, 0]);
  assert.deepEqual(d.at(W - 1, H - 1), IGNORE_COLOR);
});

test('size mismatches are rejected', async () => {
  await assert.rejects(overlayPng(greyImage(), W, H, new Uint8Array(5), null, binary), /expected 12x10 = 120/);
  await assert.rejects(overlayPng(new Uint8Array(3), W, H, new Uint8Array(W * H), null, binary), /image has 3 bytes/);
  await assert.rejects(colorizePng(new Uint8Array(4), W, H, [], 255), /mask has 4 values/);
});
