// Dilated ("atrous") convolution that tfjs can differentiate: tf.conv2d with
// dilations > 1 has no gradient in tfjs 4.22, so the convolution runs as one 1x1
// convolution over the kernel's taps, each tap a shifted copy of the input (slice and
// pad) stacked on the channels; all have gradients on every backend here. Taps whose
// shift lies wholly in the zero padding are left out: at DeepLab's rates on small maps
// (rate 12 or 18 on an 8x8 map) only the centre tap is left. TensorFlow's lowering
// (spaceToBatchND, conv, batchToSpaceND) was 7-100x slower on wasm (forward + backward at
// ASPP shapes, scratch measurement: 308 vs 43 ms at [4,8,8,320] rate 6, 596 vs 6 ms at
// rate 12). 'same' padding, stride 1 (as DeepLab's ASPP uses it). AtrousConv2D is the layer.
import * as tf from '../../backends/tf';
import type { Conv2D } from '@tensorflow/tfjs-layers/dist/layers/convolutional';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { seededValues } from '../../utils/rng';
import { registerLayerClass } from './custom_layers';

/** out[i, j] = x[i + dy, j + dx], zero outside x. */
function shifted(x: tf.Tensor4D, dy: number, dx: number): tf.Tensor4D {
  if (!dy && !dx) return x;
  const [, h, w] = x.shape;
  const inside = tf.slice(x, [0, Math.max(0, dy), Math.max(0, dx), 0], [-1, h - Math.abs(dy), w - Math.abs(dx), -1]);
  return tf.pad(inside, [[0, 0], [Math.max(0, -dy), Math.max(0, dy)], [Math.max(0, -dx), Math.max(0, dx)], [0, 0]]);
}

/** The taps of a k x k kernel dilated by `rate` ('same' padding) that reach into an h x w map. */
export function liveTaps(h: number, w: number, kh: number, kw: number, rate: number): { a: number; b: number; dy: number; dx: number }[] {
  const top = Math.floor(((kh - 1) * rate) / 2);
  const left = Math.floor(((kw - 1) * rate) / 2);
  const taps = [];
  for (let a = 0; a < kh; a++) {
    for (let b = 0; b < kw; b++) {
      const dy = a * rate - top;
      const dx = b * rate - left;
      if (Math.abs(dy) < h && Math.abs(dx) < w) taps.push({ a, b, dy, dx });
    }
  }
  return taps;
}

/** conv2d(x, filter, 1, 'same', 'NHWC', [rate, rate]), differentiable. */
export function atrousConv2d(x: tf.Tensor4D, filter: tf.Tensor4D, rate: number): tf.Tensor4D {
  if (rate === 1) return tf.conv2d(x, filter, 1, 'same');
  return tf.tidy(() => {
    const [, h, w, cin] = x.shape;
    const [kh, kw, , cout] = filter.shape;
    const taps = liveTaps(h, w, kh, kw, rate);
    const cols = taps.map((t) => shifted(x, t.dy, t.dx));
    const weights = taps.map((t) => tf.slice(filter, [t.a, t.b, 0, 0], [1, 1, cin, cout]));
    const stack = <R extends tf.Tensor>(ts: R[], axis: number) => (ts.length === 1 ? ts[0] : tf.concat(ts, axis));
    return tf.conv2d(stack(cols, 3), stack(weights, 2) as tf.Tensor4D, 1, 'valid');
  });
}

type ConvArgs = Parameters<typeof tf.layers.conv2d>[0];
// The class itself is not exported by @tensorflow/tfjs; take it from an instance.
const Conv2DBase = Object.getPrototypeOf(tf.layers.conv2d({ filters: 1, kernelSize: 1 })).constructor as new (args: ConvArgs) => Conv2D;

export interface AtrousConv2DArgs {
  filters: number;
  kernelSize: number;
  dilationRate: number;
  useBias?: boolean;
  kernelInitializer?: ConvArgs['kernelInitializer'];
  name?: string;
}

/**
 * A stock Conv2D (stride 1, 'same', no activation; the same config and the weights
 * `kernel` and `bias`) whose call runs atrousConv2d, so that it trains; stock Conv2D
 * with dilation_rate > 1 computes the same forward pass but has no gradient.
 */
export class AtrousConv2D extends Conv2DBase {
  static className = 'AtrousConv2D';
  constructor(args: AtrousConv2DArgs & ConvArgs) {
    // Deserialisation passes the full Conv2D config back; the checks below hold for it.
    super({ ...args, strides: 1, padding: 'same' });
    const c = this.getConfig();
    const [rh, rw] = c.dilationRate as number[];
    if (rh !== rw) throw new Error(`AtrousConv2D ${this.name}: dilationRate must be the same on both axes, got ${rh}, ${rw}`);
    if (c.activation !== 'linear') throw new Error(`AtrousConv2D ${this.name}: no fused activation (use its own layer), got ${c.activation}`);
    if (c.dataFormat !== 'channelsLast') throw new Error(`AtrousConv2D ${this.name}: channelsLast only`);
  }
  call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
      // The fields are protected in the typings; read as the base class's own call does.
      const self = this as unknown as { kernel: tf.LayerVariable; bias: tf.LayerVariable | null; dilationRate: number[] };
      const y = atrousConv2d(x, self.kernel.read() as tf.Tensor4D, self.dilationRate[0]);
      return self.bias ? tf.add(y, self.bias.read()) : y;
    });
  }
}
registerLayerClass(AtrousConv2D);

/** For export: stock Conv2D with dilation_rate computes the same inference output (same config and weight names). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function portableAtrousConv2D(layer: any): void {
  layer.class_name = 'Conv2D';
}

export function atrousConv2D(args: AtrousConv2DArgs): AtrousConv2D {
  return new AtrousConv2D(args);
}

/** For tests: x, filter and an output gradient dy of seeded values. */
export function atrousCase(n: number, h: number, w: number, cin: number, cout: number, k: number): { x: tf.Tensor4D; filter: tf.Tensor4D; dy: tf.Tensor4D } {
  return {
    x: tf.tensor4d(seededValues(n * h * w * cin, 1), [n, h, w, cin]),
    filter: tf.tensor4d(seededValues(k * k * cin * cout, 2), [k, k, cin, cout]),
    dy: tf.tensor4d(seededValues(n * h * w * cout, 3), [n, h, w, cout]),
  };
}

/** y, dx and dFilter of atrousConv2d for loss = sum(y * dy). */
export function atrousWithGrads(x: tf.Tensor4D, filter: tf.Tensor4D, dy: tf.Tensor4D, rate: number): tf.Tensor[] {
  const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(atrousConv2d(a as tf.Tensor4D, b as tf.Tensor4D, rate), dy));
  const [dx, df] = tf.grads(loss)([x, filter]);
  return [atrousConv2d(x, filter, rate), dx, df];
}

const CASES: Array<[number, number, number, number, number, number, number]> = [
  // n, h, w, cin, cout, k, rate: odd sizes, sizes not divisible by the rate, batch 1-3
  [1, 9, 7, 3, 4, 3, 2], [2, 13, 11, 2, 3, 3, 3], [3, 8, 8, 4, 2, 3, 6], [2, 10, 9, 3, 2, 1, 2], [1, 6, 5, 2, 2, 3, 1],
  [2, 8, 9, 3, 2, 3, 12], [1, 5, 14, 2, 3, 3, 6], // rates past the size: centre tap, or one row of taps
];

export const selfTest: SelfTest = {
  async 'equals the dilated tf.conv2d; its gradients are the exact adjoints, on cpu and wasm'() {
    const { initBackend } = await import('../../backends');
    for (const backend of ['cpu', 'wasm'] as const) {
      await initBackend(backend);
      for (const [n, h, w, cin, cout, k, rate] of CASES) {
        const what = `${backend} ${[n, h, w, cin, cout, k, rate]}`;
        tf.tidy(() => {
          const { x, filter, dy } = atrousCase(n, h, w, cin, cout, k);
          const [y, dx, df] = atrousWithGrads(x, filter, dy, rate);
          const ref = tf.conv2d(x, filter, 1, 'same', 'NHWC', [rate, rate]);
          assert.ok(tf.max(tf.abs(tf.sub(y, ref))).dataSync()[0] <= 1e-4, `${what}: forward`);
          // Linear in x and in the filter: <conv(x), dy> = <x, dx> = <filter, dFilter>.
          const inner = tf.sum(tf.mul(y, dy)).dataSync()[0];
          for (const [a, b, name] of [[x, dx, 'dx'], [filter, df, 'dFilter']] as const) {
            const other = tf.sum(tf.mul(a, b)).dataSync()[0];
            assert.ok(Math.abs(inner - other) <= 1e-3 * Math.max(1, Math.abs(inner)), `${what}: ${name} ${other} vs ${inner}`);
          }
          assert.deepEqual(dx.shape, x.shape);
          assert.deepEqual(df.shape, filter.shape);
        });
      }
    }
  },
  async 'AtrousConv2D equals the stock dilated Conv2D, trains, and its stock stand-in loads its weights by name'() {
    const { x, filter } = atrousCase(2, 13, 11, 3, 4, 3);
    const bias = tf.tensor1d(seededValues(4, 4));
    const inp = tf.input({ shape: [null, null, 3], name: 'image' });
    const out = atrousConv2D({ filters: 4, kernelSize: 3, dilationRate: 3, useBias: true, name: 't_atrous' }).apply(inp) as tf.SymbolicTensor;
    const m = tf.model({ inputs: inp, outputs: out });
    const layer = m.getLayer('t_atrous');
    assert.deepEqual(layer.weights.map((w) => w.originalName), ['t_atrous/kernel', 't_atrous/bias']);
    layer.setWeights([filter, bias]);
    const ref = tf.add(tf.conv2d(x, filter, 1, 'same', 'NHWC', [3, 3]), bias);
    const d = (a: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, ref))).dataSync()[0]);
    const y = m.predict(x) as tf.Tensor;
    assert.ok(d(y) <= 1e-4, `forward ${d(y)}`);
    // Gradients reach both weights (stock Conv2D with dilation throws here).
    const { grads } = tf.variableGrads(() => tf.sum(tf.square(m.apply(x) as tf.Tensor)) as tf.Scalar, layer.trainableWeights.map((w) => w.read() as tf.Variable));
    assert.equal(Object.keys(grads).length, 2);
    // Stand-in: the same topology with the stock class, weights matched by name.
    const topo = JSON.parse(JSON.stringify(m.toJSON(null, false)));
    for (const l of topo.config.layers) if (l.class_name === 'AtrousConv2D') portableAtrousConv2D(l);
    const stock = await tf.models.modelFromJSON({ modelTopology: topo });
    assert.equal(stock.getLayer('t_atrous').getClassName(), 'Conv2D');
    assert.deepEqual(stock.getLayer('t_atrous').weights.map((w) => w.originalName), ['t_atrous/kernel', 't_atrous/bias']);
    stock.getLayer('t_atrous').setWeights(layer.getWeights());
    const ys = stock.predict(x) as tf.Tensor;
    assert.ok(d(ys) <= 1e-4, `stand-in ${d(ys)}`);
    // And the project class round-trips through its own JSON.
    const again = await tf.models.modelFromJSON({ modelTopology: JSON.parse(JSON.stringify(m.toJSON(null, false))) });
    assert.equal(again.getLayer('t_atrous').getClassName(), 'AtrousConv2D');
    tf.dispose([x, filter, bias, ref, y, ys, ...Object.values(grads)]);
    [m, stock, again].forEach((a) => a.dispose());
  },
  'only taps that reach into the map are kept: the centre alone when the rate passes the size'() {
    assert.equal(liveTaps(8, 8, 3, 3, 6).length, 9);
    assert.deepEqual(liveTaps(8, 8, 3, 3, 12), [{ a: 1, b: 1, dy: 0, dx: 0 }]);
    assert.equal(liveTaps(8, 20, 3, 3, 12).length, 3); // the row's three taps
  },
};

runIfMain(module, selfTest);
