import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../backends/tf';
import '@tensorflow/tfjs-backend-wasm';
import { buildLoss, registeredLosses } from '../training/losses';
import { parseConfig } from '../config/resolve';
import { UserError } from '../utils/errors';

before(async () => {
  await tf.setBackend('cpu'); // importing wasm may make it the default; compare explicitly at the end
});

const cfgWith = (loss: Record<string, unknown>, numClasses = 2) => parseConfig({ data: { num_classes: numClasses }, training: { loss } });
const val = (t: tf.Scalar) => t.dataSync()[0];
const near = (a: number, b: number, tol = 1e-5) => assert.ok(Math.abs(a - b) < tol, `${a} vs ${b}`);
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

// 1 image, 2x3 pixels; the last pixel (and, in the binary case, pixel 2) ignored.
const binLabels = () => tf.tensor3d([1, 0, 255, 1, 0, 255], [1, 2, 3], 'int32');
const mcLabels = () => tf.tensor3d([0, 1, 2, 2, 255, 1], [1, 2, 3], 'int32');

const SINGLE = ['bce', 'ce', 'dice', 'jaccard', 'focal', 'lovasz', 'bce+dice', 'focal+jaccard', 'ce+lovasz'];

for (const [c, labels, numClasses] of [
  [1, binLabels, 2],
  [3, mcLabels, 3],
] as const) {
  for (const name of SINGLE) {
    test(`${name} (C=${c}): ignored pixels change neither value nor gradient`, () => {
      const f = buildLoss(cfgWith({ name }, numClasses));
      const lab = labels();
      const ign = tf.notEqual(lab, 255).expandDims(-1);
      const a = tf.randomNormal([1, 2, 3, c], 0, 2, 'float32', 1) as tf.Tensor4D;
      const b = tf.where(ign, a, tf.mul(tf.randomNormal(a.shape, 0, 1, 'float32', 2), 50)) as tf.Tensor4D;
      near(val(f(a, lab)), val(f(b, lab)));
      const g = tf.grad((x: tf.Tensor) => f(x as tf.Tensor4D, lab))(b);
      const gv = g.dataSync();
      const iv = ign.cast('float32').broadcastTo(g.shape).dataSync();
      for (let i = 0; i < gv.length; i++) {
        assert.ok(Number.isFinite(gv[i]));
        if (iv[i] === 0) assert.ok(gv[i] === 0, `gradient ${gv[i]} at ignored pixel ${i}`);
      }
      assert.ok(gv.some((x) => x !== 0), 'some gradient flows');
    });

    test(`${name} (C=${c}): all pixels ignored gives 0 and finite gradients`, () => {
      const f = buildLoss(cfgWith({ name }, numClasses));
      const lab = tf.fill([1, 2, 3], 255, 'int32') as tf.Tensor3D;
      const x = tf.randomNormal([1, 2, 3, c]) as tf.Tensor4D;
      assert.equal(val(f(x, lab)), 0);
      const g = tf.grad((t: tf.Tensor) => f(t as tf.Tensor4D, lab))(x);
      assert.ok(g.dataSync().every((v) => v === 0));
    });
  }
}

test('bce matches the closed form, stable at ±200', () => {
  const f = buildLoss(cfgWith({ name: 'bce' }));
  const x = tf.tensor4d([1.5, -200, 200, 0.3, 9, -1], [1, 2, 3, 1]);
  const lab = binLabels(); // [1,0,ign,1,0,ign]
  const l = (z: number, y: number) => Math.max(z, 0) - z * y + Math.log1p(Math.exp(-Math.abs(z)));
  near(val(f(x, lab)), (l(1.5, 1) + l(-200, 0) + l(0.3, 1) + l(9, 0)) / 4);
});

test('ce with class weights = weighted mean of -log p[label]', () => {
  const f = buildLoss(cfgWith({ name: 'ce', class_weights: [1, 2, 0.5] }, 3));
  const x = tf.tensor4d([2, 0, 0, 0, 1, 0], [1, 1, 2, 3]);
  const lab = tf.tensor3d([0, 2], [1, 1, 2], 'int32');
  const lse = (a: number[]) => Math.log(a.reduce((s, v) => s + Math.exp(v), 0));
  const l0 = lse([2, 0, 0]) - 2;
  const l1 = lse([0, 1, 0]) - 0;
  near(val(f(x, lab)), (1 * l0 + 0.5 * l1) / 1.5);
});

test('binary dice and jaccard match hand computation', () => {
  const x = tf.tensor4d([0, 1, 5, -1, 2, 0], [1, 2, 3, 1]);
  const lab = binLabels(); // valid: 0:1, 1:0, 3:1, 4:0
  const p = [0, 1, -1, 2].map(sigmoid);
  const y = [1, 0, 1, 0];
  const inter = p[0] * y[0] + p[2] * y[2];
  const sums = p.reduce((a, b) => a + b) + 2;
  for (const smooth of [0, 1]) {
    near(val(buildLoss(cfgWith({ name: 'dice', smooth }))(x, lab)), 1 - (2 * inter + smooth) / (sums + smooth));
    near(val(buildLoss(cfgWith({ name: 'jaccard', smooth }))(x, lab)), 1 - (inter + smooth) / (sums - inter + smooth));
  }
});

test('multi-class dice averages per-class soft dice', () => {
  const x = tf.tensor4d([3, 0, 0, 0, 3, 0], [1, 1, 2, 3]);
  const lab = tf.tensor3d([0, 1], [1, 1, 2], 'int32');
  const e = Math.exp(3);
  const hi = e / (e + 2);
  const lo = 1 / (e + 2);
  // class 0: inter hi, sums (hi+lo)+1; class 1 same; class 2: inter 0, sums 2*lo.
  const d01 = (2 * hi) / (hi + lo + 1);
  const d2 = 0 / (2 * lo);
  near(val(buildLoss(cfgWith({ name: 'dice', smooth: 0 }, 3))(x, lab)), 1 - (2 * d01 + d2) / 3, 1e-4);
});

test('focal with gamma 0 equals cross-entropy; gamma > 0 down-weights easy pixels', () => {
  for (const [c, labels, k] of [
    [1, binLabels, 2],
    [3, mcLabels, 3],
  ] as const) {
    const x = tf.randomNormal([1, 2, 3, c], 0, 2, 'float32', 7) as tf.Tensor4D;
    const ce = val(buildLoss(cfgWith({ name: 'ce' }, k))(x, labels()));
    near(val(buildLoss(cfgWith({ name: 'focal', focal_gamma: 0 }, k))(x, labels())), ce);
    const f2 = val(buildLoss(cfgWith({ name: 'focal', focal_gamma: 2 }, k))(x, labels()));
    const f15 = val(buildLoss(cfgWith({ name: 'focal', focal_gamma: 1.5 }, k))(x, labels()));
    assert.ok(f2 < f15 && f15 < ce, `${f2} ${f15} ${ce}`);
  }
});

test('binary focal matches the formula', () => {
  const x = tf.tensor4d([1, -2, 0, 3, 0.5, 0], [1, 2, 3, 1]);
  const lab = binLabels();
  const fl = (z: number, y: number) => {
    const pt = y ? sigmoid(z) : 1 - sigmoid(z);
    return -Math.pow(1 - pt, 2) * Math.log(pt);
  };
  near(val(buildLoss(cfgWith({ name: 'focal' }))(x, lab)), (fl(1, 1) + fl(-2, 0) + fl(3, 1) + fl(0.5, 0)) / 4);
});

/**
 * Lovász-softmax written out as in Berman's reference code: per present class, errors of the
 * valid pixels sorted descending, dotted with the Jaccard loss's discrete gradient.
 */
function lovaszReference(probs: number[][], labels: number[], ignore: number, cw?: number[]): number {
  const c = probs[0].length;
  let total = 0, wsum = 0;
  for (let k = 0; k < c; k++) {
    const px = labels.map((l, i) => ({ l, i })).filter((p) => p.l !== ignore);
    const fgAll: number[] = px.map((p) => (p.l === k ? 1 : 0));
    const gts = fgAll.reduce((a, b) => a + b, 0);
    if (gts === 0) continue;
    const order = px.map((p, j) => ({ e: Math.abs(fgAll[j] - probs[p.i][k]), fg: fgAll[j] })).sort((a, b) => b.e - a.e);
    let cumFg = 0, cumBg = 0, prev = 0, loss = 0;
    for (const o of order) {
      cumFg += o.fg;
      cumBg += 1 - o.fg;
      const jac = 1 - (gts - cumFg) / (gts + cumBg);
      loss += o.e * (jac - prev);
      prev = jac;
    }
    const w = cw ? cw[k] : 1;
    total += w * loss;
    wsum += w;
  }
  return wsum ? total / wsum : 0;
}

test('lovasz matches the reference Lovász-softmax, with and without class weights', () => {
  const x = tf.randomNormal([2, 3, 4, 4], 0, 2, 'float32', 11) as tf.Tensor4D;
  // class 3 absent: not scored; pixel 5 and 17 ignored.
  const lab = [0, 1, 2, 0, 1, 255, 2, 2, 0, 0, 1, 1, 2, 0, 1, 0, 2, 255, 1, 1, 0, 2, 2, 1];
  const labels = tf.tensor3d(lab, [2, 3, 4], 'int32');
  const sm = tf.softmax(x).arraySync() as number[][][][];
  const probs = sm.flat(2);
  for (const cw of [undefined, [1, 2, 0.5, 3]]) {
    const v = val(buildLoss(cfgWith({ name: 'lovasz', class_weights: cw }, 4))(x, labels));
    near(v, lovaszReference(probs, lab, 255, cw), 1e-5);
  }
  // A sigmoid output is two classes, background and foreground.
  const xb = tf.tensor4d([1.5, -2, 7, 0.3, 0.1, -9], [1, 2, 3, 1]);
  const pb = [1.5, -2, 7, 0.3, 0.1, -9].map(sigmoid).map((p) => [1 - p, p]);
  near(val(buildLoss(cfgWith({ name: 'lovasz' }))(xb, binLabels())), lovaszReference(pb, [1, 0, 255, 1, 0, 255], 255), 1e-5);
});

test('lovasz gradient matches finite differences; a perfect prediction scores ~0', () => {
  const f = buildLoss(cfgWith({ name: 'lovasz' }, 3));
  const lab = mcLabels();
  const x = tf.tensor4d(Array.from({ length: 18 }, (_, k) => Math.sin(k * 2.3) * 2), [1, 2, 3, 3]);
  const g = tf.grad((t: tf.Tensor) => f(t as tf.Tensor4D, lab))(x).dataSync();
  const xs = x.dataSync();
  const h = 1e-3;
  for (let i = 0; i < xs.length; i++) {
    const plus = Float32Array.from(xs), minus = Float32Array.from(xs);
    plus[i] += h;
    minus[i] -= h;
    const fd = (val(f(tf.tensor4d(plus, x.shape), lab)) - val(f(tf.tensor4d(minus, x.shape), lab))) / (2 * h);
    near(g[i], fd, 2e-3);
  }
  assert.ok(g.some((v) => Math.abs(v) > 1e-3), 'some gradient flows');
  const perfect = tf.mul(tf.oneHot(tf.tensor1d([0, 1, 2, 2, 0, 1], 'int32'), 3), 30).reshape([1, 2, 3, 3]) as tf.Tensor4D;
  assert.ok(val(f(perfect, lab)) < 1e-6);
});

test('ohem ce/bce/focal: value and gradient are those of the loss with the easy pixels ignored', () => {
  for (const [name, c, k] of [['ce', 4, 4], ['bce', 1, 2], ['focal', 4, 4]] as const) {
    const x = tf.mul(tf.randomNormal([2, 5, 7, c], 0, 1, 'float32', 11), 3) as tf.Tensor4D;
    const u = tf.randomUniform([2, 5, 7], 0, 1, 'float32', 12).dataSync();
    const lab = Array.from(u, (v) => (v < 0.1 ? 255 : Math.min(k - 1, Math.floor(((v - 0.1) / 0.9) * k))));
    // the reference: each pixel's own-class probability, from the same logits
    const pr = c === 1 ? tf.sigmoid(x).dataSync() : tf.softmax(x).dataSync();
    const pt = lab.map((l, i) => (l === 255 ? Infinity : c === 1 ? (l === 1 ? pr[i] : 1 - pr[i]) : pr[i * c + l]));
    const cw = Array.from({ length: k }, (_, i) => 1 + i / 3);
    for (const [thresh, minKept] of [[0.5, 1], [0.2, 25], [0.9, 5], [0.5, 1000]]) {
      const sorted = pt.filter(Number.isFinite).sort((a, b) => a - b);
      const cut = Math.max(thresh, sorted[Math.min(minKept, sorted.length - 1)]);
      const kept = pt.map((p) => p < cut || (minKept >= sorted.length && Number.isFinite(p)));
      const easyIgnored = tf.tensor3d(lab.map((l, i) => (kept[i] ? l : 255)), [2, 5, 7], 'int32');
      const ohem = buildLoss(cfgWith({ name, class_weights: cw, ohem: { thresh, min_kept: minKept } }, k));
      const ref = buildLoss(cfgWith({ name, class_weights: cw }, k));
      const labels = tf.tensor3d(lab, [2, 5, 7], 'int32');
      const a = tf.valueAndGrad((t: tf.Tensor) => ohem(t as tf.Tensor4D, labels))(x);
      const b = tf.valueAndGrad((t: tf.Tensor) => ref(t as tf.Tensor4D, easyIgnored))(x);
      const what = `${name} thresh ${thresh} min_kept ${minKept}`;
      near(val(a.value), val(b.value), 1e-5);
      const ga = a.grad.dataSync(), gb = b.grad.dataSync();
      ga.forEach((g, i) => near(g, gb[i], 1e-6));
      const nKept = kept.filter(Boolean).length;
      assert.ok(nKept >= Math.min(minKept, sorted.length), `${what}: ${nKept} kept`);
      if (minKept < sorted.length && thresh <= 0.5) assert.ok(nKept < sorted.length, `${what}: some pixels are left out`);
    }
  }
});

test('ohem leaves dice and lovasz as they are', () => {
  const x = tf.randomNormal([1, 2, 3, 3], 0, 2, 'float32', 4) as tf.Tensor4D;
  for (const name of ['dice', 'lovasz']) {
    near(val(buildLoss(cfgWith({ name, ohem: { thresh: 0.1, min_kept: 1 } }, 3))(x, mcLabels())), val(buildLoss(cfgWith({ name }, 3))(x, mcLabels())));
  }
});

// 1 where a labelled pixel has a labelled pixel of another class within `width` (square window).
function boundaryRef(lab: number[], [, h, w]: number[], width: number): number[] {
  return lab.map((l, i) => {
    if (l === 255) return 0;
    const b = Math.floor(i / (h * w)), r = Math.floor((i % (h * w)) / w), c = i % w;
    for (let y = Math.max(0, r - width); y <= Math.min(h - 1, r + width); y++) {
      for (let x = Math.max(0, c - width); x <= Math.min(w - 1, c + width); x++) {
        const o = lab[b * h * w + y * w + x];
        if (o !== 255 && o !== l) return 1;
      }
    }
    return 0;
  });
}

test('boundary ce/bce/focal: value and gradient are the per-pixel loss weighted 1 + weight near another class', () => {
  const shape = [2, 6, 7];
  for (const [name, c, k] of [['ce', 4, 4], ['bce', 1, 2], ['focal', 4, 4]] as const) {
    const x = tf.mul(tf.randomNormal([...shape, c], 0, 1, 'float32', 21), 2) as tf.Tensor4D;
    // blocks of one class with a few ignored pixels, so that there are interiors and edges
    const lab = Array.from({ length: 84 }, (_, i) => {
      const r = Math.floor((i % 42) / 7), col = i % 7;
      return (r * 7 + col) % 11 === 5 ? 255 : (Math.floor(r / 3) + Math.floor(col / 4) + Math.floor(i / 42)) % k;
    });
    const labels = tf.tensor3d(lab, shape as [number, number, number], 'int32');
    const cw = Array.from({ length: k }, (_, i) => 1 + i / 3);
    for (const [weight, width] of [[2, 1], [0.5, 2]]) {
      const edge = boundaryRef(lab, shape, width);
      assert.ok(edge.includes(1) && lab.some((l, i) => l !== 255 && edge[i] === 0), 'the fixture has edges and interiors');
      const wpx = tf.tensor3d(lab.map((l, i) => (l === 255 ? 0 : cw[l] * (1 + weight * edge[i]))), shape as [number, number, number]);
      const onehot = tf.oneHot(tf.tensor3d(lab.map((l) => (l === 255 ? 0 : l)), shape as [number, number, number], 'int32'), k);
      const perPixel = (t: tf.Tensor): tf.Tensor => {
        if (c === 1) {
          const y = tf.equal(labels, 1).cast('float32');
          const z = tf.squeeze(t, [3]);
          return tf.sub(tf.softplus(z), tf.mul(z, y));
        }
        const logPt = tf.sum(tf.mul(tf.logSoftmax(t), onehot), -1);
        return name === 'focal' ? tf.neg(tf.mul(tf.square(tf.sub(1, tf.exp(logPt))), logPt)) : tf.neg(logPt);
      };
      const ref = (t: tf.Tensor) => tf.div(tf.sum(tf.mul(perPixel(t), wpx)), tf.sum(wpx)) as tf.Scalar;
      const f = buildLoss(cfgWith({ name, class_weights: cw, boundary: { weight, width } }, k));
      const a = tf.valueAndGrad((t: tf.Tensor) => f(t as tf.Tensor4D, labels))(x);
      const b = tf.valueAndGrad(ref)(x);
      near(val(a.value), val(b.value), 1e-5);
      const ga = a.grad.dataSync(), gb = b.grad.dataSync();
      ga.forEach((g, i) => near(g, gb[i], 1e-6));
    }
  }
});

test('boundary with weight 0 is the plain loss; dice and lovasz ignore it', () => {
  const x = tf.randomNormal([1, 2, 3, 3], 0, 2, 'float32', 4) as tf.Tensor4D;
  const plain = (name: string) => val(buildLoss(cfgWith({ name }, 3))(x, mcLabels()));
  const withBoundary = (name: string, weight: number) => val(buildLoss(cfgWith({ name, boundary: { weight, width: 1 } }, 3))(x, mcLabels()));
  for (const name of ['ce', 'focal', 'dice', 'lovasz']) near(withBoundary(name, 0), plain(name));
  for (const name of ['dice', 'lovasz']) near(withBoundary(name, 3), plain(name));
});

test('weighted sum: bce+dice with weights [2, 3]', () => {
  const x = tf.randomNormal([2, 2, 3, 1], 0, 1, 'float32', 3) as tf.Tensor4D;
  const lab = tf.concat([binLabels(), binLabels()]) as tf.Tensor3D;
  const bce = val(buildLoss(cfgWith({ name: 'bce' }))(x, lab));
  const dice = val(buildLoss(cfgWith({ name: 'dice' }))(x, lab));
  near(val(buildLoss(cfgWith({ name: 'bce + dice', weights: [2, 3] }))(x, lab)), 2 * bce + 3 * dice);
});

test('config errors are one-line UserErrors naming the key', () => {
  const check = (loss: Record<string, unknown>, re: RegExp, k = 2) =>
    assert.throws(
      () => buildLoss(cfgWith(loss, k)),
      (e: Error) => e instanceof UserError && re.test(e.message) && !e.message.includes('\n'),
    );
  check({ name: 'bce+tversky' }, new RegExp(`training\\.loss\\.name.*tversky.*${registeredLosses().join(', ')}`));
  check({ name: 'bce+dice', weights: [1, 1, 1] }, /training\.loss\.weights/);
  check({ name: 'ce', class_weights: [1, 2] }, /training\.loss\.class_weights/, 3);
});

test('trains under optimizer.minimize with int32 labels, no tensor leak', () => {
  const f = buildLoss(cfgWith({ name: 'ce+dice' }, 3));
  const lab = mcLabels();
  const w = tf.variable(tf.zeros([1, 2, 3, 3]));
  const opt = tf.train.adam(0.1);
  const first = val(f(w as unknown as tf.Tensor4D, lab));
  const before = tf.memory().numTensors;
  for (let i = 0; i < 30; i++) opt.minimize(() => f(w as unknown as tf.Tensor4D, lab));
  assert.equal(tf.memory().numTensors - before, 2, 'only the Adam m/v slots persist');
  assert.ok(val(f(w as unknown as tf.Tensor4D, lab)) < first * 0.5);
});

test('wasm backend gives the same values and gradients as cpu', async () => {
  const names = ['bce+dice+focal+jaccard+lovasz', 'ce+dice+focal+jaccard+lovasz', 'bce+focal', 'ce+focal'];
  const run = () =>
    names.map((name, i) => {
      const c = i % 2 === 0 ? 1 : 3;
      const ohem = i >= 2 ? { thresh: 0.6, min_kept: 2 } : undefined;
      const boundary = i % 3 === 0 ? { weight: 2, width: 1 } : undefined;
      const f = buildLoss(cfgWith({ name, ohem, boundary, class_weights: c === 1 ? [1, 2] : [1, 2, 3] }, c === 1 ? 2 : 3));
      const x = tf.tensor4d(Array.from({ length: 6 * c }, (_, k) => Math.sin(k * 1.7) * 3), [1, 2, 3, c]);
      const lab = c === 1 ? binLabels() : mcLabels();
      const { value, grad } = tf.valueAndGrad((t: tf.Tensor) => f(t as tf.Tensor4D, lab))(x);
      return [value.dataSync()[0], ...Array.from(grad.dataSync())];
    });
  await tf.setBackend('cpu');
  const cpu = run();
  await tf.setBackend('wasm');
  try {
    const wasm = run();
    cpu.forEach((arr, i) => arr.forEach((v, k) => near(wasm[i][k], v, 1e-4)));
  } finally {
    await tf.setBackend('cpu');
  }
});
