// Stock tfjs layers as ONNX (opset 17) nodes. The graph runs NCHW, as ONNX's convolutions
// and pools do: the NHWC input is transposed once, every 4-D tensor inside is NCHW, and
// the output is transposed back, so the ONNX model takes and gives what the TF.js one does.
// Shapes other than the batch are static (the portable model is built at a fixed size),
// so 'same' paddings are written as explicit pads computed as TensorFlow computes them.
import assert from 'node:assert/strict';
import * as tf from '../../backends/tf';
import { UserError } from '../../utils/errors';
import { runIfMain, SelfTest } from '../../utils/self_test';
import type { AttrValue, ModelSpec, NodeSpec, TensorSpec } from './proto';

export const ONNX_OPSET = 17;

type Graph = ModelSpec['graph'];
interface Value { name: string; rank: number }

/** What each lowering gets: its layer, its inputs (NCHW when 4-D) and a graph to add to. */
interface Ctx {
  layer: tf.layers.Layer;
  config: any;
  inputs: Value[];
  /** Adds a node; returns its (first) output's name. */
  node(op: string, inputs: string[], attrs?: Record<string, AttrValue>, outputs?: number): string;
  /** Adds an initializer; returns its name. */
  constant(suffix: string, dims: number[], data: Float32Array | number[], type?: 'float32' | 'int64'): string;
  weight(suffix: string): tf.LayerVariable | undefined;
}

const pair = (v: number | number[]): [number, number] => (Array.isArray(v) ? [v[0], v[1] ?? v[0]] : [v, v]);

/** TensorFlow's SAME padding: the output is ceil(in / stride), the odd pixel goes after. */
function samePads(inHW: number[], kernel: number[], strides: number[], dilation: number[]): number[] {
  const before: number[] = [];
  const after: number[] = [];
  for (let i = 0; i < 2; i++) {
    const out = Math.ceil(inHW[i] / strides[i]);
    const total = Math.max((out - 1) * strides[i] + (kernel[i] - 1) * dilation[i] + 1 - inHW[i], 0);
    before.push(Math.floor(total / 2));
    after.push(total - Math.floor(total / 2));
  }
  return [...before, ...after];
}

// Each layer of the portable model is called once, so its input is one symbolic tensor.
const shapeIn = (layer: tf.layers.Layer) => (layer.input as tf.SymbolicTensor).shape as number[];

function inputHW(layer: tf.layers.Layer): number[] {
  const s = shapeIn(layer);
  return [s[1], s[2]];
}

/** A fused or standalone activation after `x`. */
function activation(c: Ctx, x: string, name: string | undefined): string {
  switch (name ?? 'linear') {
    case 'linear': return x;
    case 'relu': return c.node('Relu', [x]);
    case 'relu6': return c.node('Clip', [x, c.constant('min', [], [0]), c.constant('max', [], [6])]);
    case 'sigmoid': return c.node('Sigmoid', [x]);
    case 'tanh': return c.node('Tanh', [x]);
    case 'softmax': return c.node('Softmax', [x], { axis: 1 });
    default: throw new UserError(`--format onnx: activation '${name}' of layer ${c.layer.name} has no ONNX lowering`);
  }
}

/** Conv2D [kh,kw,in,out] and DepthwiseConv2D [kh,kw,in,mult] kernels as ONNX's [out, in/group, kh, kw]. */
function conv(c: Ctx, depthwise: boolean): string {
  const k = c.weight(depthwise ? 'depthwise_kernel' : 'kernel')!;
  const [kh, kw, cin, cout] = k.shape as number[];
  const kernel = tf.tidy(() => {
    const t = k.read();
    return depthwise ? tf.transpose(t, [2, 3, 0, 1]).reshape([cin * cout, 1, kh, kw]) : tf.transpose(t, [3, 2, 0, 1]);
  });
  const dims = kernel.shape as number[];
  const data = kernel.dataSync() as Float32Array;
  kernel.dispose();
  const strides = pair(c.config.strides);
  const dilations = pair(c.config.dilationRate ?? 1);
  const pads = c.config.padding === 'same' ? samePads(inputHW(c.layer), [kh, kw], strides, dilations) : [0, 0, 0, 0];
  const ins = [c.inputs[0].name, c.constant('W', dims, data)];
  const b = c.weight('bias');
  if (b) ins.push(c.constant('B', b.shape as number[], b.read().dataSync() as Float32Array));
  const y = c.node('Conv', ins, { kernel_shape: [kh, kw], strides, dilations, pads, group: depthwise ? cin : 1 });
  return activation(c, y, c.config.activation);
}

/**
 * Conv2DTranspose, kernel [kh,kw,out,in] as ONNX's [in, out, kh, kw] (both are the adjoint
 * of a correlation: no flip). tfjs's output size is given; ONNX's full output
 * ((in-1)*s + k) is cut by `pads` where TF cuts it (the forward conv's SAME pads: the odd
 * pixel at the end) and, where it is shorter (k < s), lengthened at the end by output_padding.
 */
function convTranspose(c: Ctx): string {
  const k = c.weight('kernel')!;
  const [kh, kw, , cin] = k.shape as number[];
  assert.deepEqual(pair(c.config.dilationRate ?? 1), [1, 1], `layer ${c.layer.name}: dilated Conv2DTranspose`);
  const kernel = tf.tidy(() => tf.transpose(k.read(), [3, 2, 0, 1]));
  const dims = kernel.shape as number[];
  const data = kernel.dataSync() as Float32Array;
  kernel.dispose();
  const strides = pair(c.config.strides);
  const inHW = inputHW(c.layer);
  const outHW = (c.layer.outputShape as number[]).slice(1, 3);
  const before: number[] = [];
  const after: number[] = [];
  const extra: number[] = [];
  [kh, kw].forEach((kk, i) => {
    const full = (inHW[i] - 1) * strides[i] + kk;
    const total = Math.max(full - outHW[i], 0);
    before.push(Math.floor(total / 2));
    after.push(total - Math.floor(total / 2));
    extra.push(Math.max(outHW[i] - full, 0));
  });
  assert.equal(dims[0], cin);
  const ins = [c.inputs[0].name, c.constant('W', dims, data)];
  const b = c.weight('bias');
  if (b) ins.push(c.constant('B', b.shape as number[], b.read().dataSync() as Float32Array));
  const y = c.node('ConvTranspose', ins, { kernel_shape: [kh, kw], strides, pads: [...before, ...after], output_padding: extra });
  return activation(c, y, c.config.activation);
}

function pool(c: Ctx, op: 'MaxPool' | 'AveragePool'): string {
  const kernel = pair(c.config.poolSize);
  const strides = pair(c.config.strides ?? c.config.poolSize);
  const pads = c.config.padding === 'same' ? samePads(inputHW(c.layer), kernel, strides, [1, 1]) : [0, 0, 0, 0];
  // TensorFlow's average leaves the padding out of the count: count_include_pad 0 (the default).
  return c.node(op, [c.inputs[0].name], { kernel_shape: kernel, strides, pads });
}

/** The channel axis of a tensor of this rank, after the NHWC → NCHW move. */
const channelAxis = (rank: number, axis: number) => {
  const a = axis < 0 ? axis + rank : axis;
  if (rank !== 4) return a;
  return [0, 2, 3, 1][a];
};

const LOWERINGS: Record<string, (c: Ctx) => string> = {
  Conv2D: (c) => conv(c, false),
  Conv2DTranspose: convTranspose,
  DepthwiseConv2D: (c) => {
    assert.equal(c.config.depthMultiplier ?? 1, c.weight('depthwise_kernel')!.shape[3]);
    return conv(c, true);
  },
  BatchNormalization(c) {
    assert.equal(channelAxis(c.inputs[0].rank, c.config.axis), 1, `layer ${c.layer.name}: batch norm over a non-channel axis`);
    const ch = shapeIn(c.layer).at(-1)!;
    const get = (n: string, fill: number) => {
      const w = c.weight(n);
      return c.constant(n, [ch], w ? (w.read().dataSync() as Float32Array) : new Float32Array(ch).fill(fill));
    };
    return c.node('BatchNormalization', [c.inputs[0].name, get('gamma', 1), get('beta', 0), get('moving_mean', 0), get('moving_variance', 1)], { epsilon: { float: c.config.epsilon } });
  },
  Activation: (c) => activation(c, c.inputs[0].name, c.config.activation),
  ReLU(c) {
    if (c.config.negativeSlope || c.config.threshold) throw new UserError(`--format onnx: layer ${c.layer.name} (ReLU with a negative slope or threshold) has no ONNX lowering`);
    const x = c.inputs[0].name;
    return c.config.maxValue == null ? c.node('Relu', [x]) : c.node('Clip', [x, c.constant('min', [], [0]), c.constant('max', [], [c.config.maxValue])]);
  },
  Add: (c) => c.inputs.slice(1).reduce((a, b) => c.node('Add', [a, b.name]), c.inputs[0].name),
  Multiply: (c) => c.inputs.slice(1).reduce((a, b) => c.node('Mul', [a, b.name]), c.inputs[0].name),
  Concatenate: (c) => c.node('Concat', c.inputs.map((i) => i.name), { axis: channelAxis(c.inputs[0].rank, c.config.axis ?? -1) }),
  UpSampling2D(c) {
    const [sh, sw] = pair(c.config.size);
    // tfjs resizes with alignCorners and halfPixelCenters false: source = destination / scale.
    const attrs: Record<string, AttrValue> = c.config.interpolation === 'bilinear'
      ? { mode: 'linear', coordinate_transformation_mode: 'asymmetric' }
      : { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' };
    return c.node('Resize', [c.inputs[0].name, '', c.constant('scales', [4], [1, 1, sh, sw])], attrs);
  },
  MaxPooling2D: (c) => pool(c, 'MaxPool'),
  AveragePooling2D: (c) => pool(c, 'AveragePool'),
  GlobalAveragePooling2D: (c) => c.node('Flatten', [c.node('GlobalAveragePool', [c.inputs[0].name])], { axis: 1 }),
  GlobalMaxPooling2D: (c) => c.node('Flatten', [c.node('GlobalMaxPool', [c.inputs[0].name])], { axis: 1 }),
  Reshape(c) {
    // Reshape in Keras's NHWC terms: to NHWC first, back to NCHW after.
    const target = c.config.targetShape as number[];
    let x = c.inputs[0].name;
    if (c.inputs[0].rank === 4) x = c.node('Transpose', [x], { perm: [0, 2, 3, 1] });
    const y = c.node('Reshape', [x, c.constant('shape', [target.length + 1], [-1, ...target], 'int64')]);
    return target.length === 3 ? c.node('Transpose', [y], { perm: [0, 3, 1, 2] }) : y;
  },
  Flatten(c) {
    let x = c.inputs[0].name;
    if (c.inputs[0].rank === 4) x = c.node('Transpose', [x], { perm: [0, 2, 3, 1] });
    return c.node('Flatten', [x], { axis: 1 });
  },
  Dropout: (c) => c.node('Identity', [c.inputs[0].name]),
  ZeroPadding2D(c) {
    const p = c.config.padding as number[][];
    return c.node('Pad', [c.inputs[0].name, c.constant('pads', [8], [0, 0, p[0][0], p[1][0], 0, 0, p[0][1], p[1][1]], 'int64')]);
  },
  Cropping2D(c) {
    const k = c.config.cropping as number[][];
    const [h, w] = inputHW(c.layer);
    return c.node('Slice', [c.inputs[0].name, c.constant('starts', [2], [k[0][0], k[1][0]], 'int64'), c.constant('ends', [2], [h - k[0][1], w - k[1][1]], 'int64'), c.constant('axes', [2], [2, 3], 'int64')]);
  },
};

export const LOWERED_CLASSES = Object.keys(LOWERINGS);

/**
 * The ONNX graph of a stock-layers LayersModel with one NHWC image input and one output:
 * input `image` [batch, H, W, C], output `logits` [batch, H', W', K], the same weights.
 */
export function lowerModel(model: tf.LayersModel): Graph {
  const topo = model.toJSON(null, false) as any;
  const cfg = topo.config;
  if (cfg.input_layers.length !== 1 || cfg.output_layers.length !== 1) throw new UserError(`--format onnx: the model has ${cfg.input_layers.length} inputs and ${cfg.output_layers.length} outputs; the ONNX export takes one of each`);
  for (const l of cfg.layers) {
    if (l.class_name !== 'InputLayer' && !LOWERINGS[l.class_name]) throw new UserError(`--format onnx: layer ${l.config.name} (${l.class_name}) has no ONNX lowering; lowered: ${LOWERED_CLASSES.join(', ')}`);
  }
  const nodes: NodeSpec[] = [];
  const initializers: TensorSpec[] = [];
  const values = new Map<string, Value>();
  const inShape = model.inputs[0].shape as number[];
  const outShape = model.outputs[0].shape as number[];
  let counter = 0;
  for (const l of cfg.layers) {
    const name = l.config.name as string;
    if (l.class_name === 'InputLayer') {
      // Named apart from the graph's input, which may have the input layer's name ('image').
      nodes.push({ op: 'Transpose', inputs: ['image'], outputs: [`${name}/nchw`], name: `${name}/to_nchw`, attrs: { perm: [0, 3, 1, 2] } });
      values.set(name, { name: `${name}/nchw`, rank: 4 });
      continue;
    }
    const layer = model.getLayer(name);
    const inbound = (l.inbound_nodes[0] ?? []) as [string, number, number][];
    const inputs = inbound.map(([src]) => {
      const v = values.get(src);
      assert.ok(v, `layer ${name}: input ${src} not yet lowered`);
      return v;
    });
    const byName = new Map(layer.weights.map((w) => [w.originalName.split('/').at(-1)!, w as unknown as tf.LayerVariable]));
    const ctx: Ctx = {
      layer, config: layer.getConfig(), inputs, // camelCase, unlike toJSON's snake_case
      node(op, ins, attrs, outputs = 1) {
        const id = `${name}/${op}_${counter++}`;
        const outs = Array.from({ length: outputs }, (_, i) => (i ? `${id}:${i}` : id));
        nodes.push({ op, inputs: ins, outputs: outs, name: id, attrs });
        return outs[0];
      },
      constant(suffix, dims, data, type = 'float32') {
        const n = `${name}/${suffix}_${counter++}`;
        initializers.push({ name: n, dims, type, data: type === 'int64' ? BigInt64Array.from(data as number[], (v) => BigInt(v)) : Float32Array.from(data) });
        return n;
      },
      weight: (suffix) => byName.get(suffix),
    };
    const out = LOWERINGS[l.class_name](ctx);
    values.set(name, { name: out, rank: (layer.outputShape as number[]).length });
  }
  const last = values.get(cfg.output_layers[0][0])!;
  if (last.rank === 4) nodes.push({ op: 'Transpose', inputs: [last.name], outputs: ['logits'], name: 'logits/to_nhwc', attrs: { perm: [0, 2, 3, 1] } });
  else nodes.push({ op: 'Identity', inputs: [last.name], outputs: ['logits'], name: 'logits' });
  return {
    name: model.name,
    nodes,
    initializers,
    inputs: [{ name: 'image', dims: ['batch', ...inShape.slice(1)] }],
    outputs: [{ name: 'logits', dims: ['batch', ...outShape.slice(1)] }],
  };
}

export const selfTest: SelfTest = {
  'SAME pads as TensorFlow: the odd pixel after, dilation widens the kernel'() {
    assert.deepEqual(samePads([32, 48], [3, 3], [1, 1], [1, 1]), [1, 1, 1, 1]);
    assert.deepEqual(samePads([32, 48], [3, 3], [2, 2], [1, 1]), [0, 0, 1, 1]);
    assert.deepEqual(samePads([8, 8], [3, 3], [1, 1], [6, 6]), [6, 6, 6, 6]);
    assert.deepEqual(samePads([5, 5], [1, 1], [2, 2], [1, 1]), [0, 0, 0, 0]);
  },
  'a layer class with no lowering is refused in one line naming it'() {
    const x = tf.input({ shape: [4, 4, 3] });
    const y = tf.layers.separableConv2d({ filters: 1, kernelSize: 3 }).apply(tf.layers.conv2d({ filters: 2, kernelSize: 1 }).apply(x)) as tf.SymbolicTensor;
    const m = tf.model({ inputs: x, outputs: y });
    assert.throws(() => lowerModel(m), (e: Error) => e instanceof UserError && /\(SeparableConv2D\) has no ONNX lowering/.test(e.message) && !e.message.includes('\n'));
    m.dispose();
  },
};

runIfMain(module, selfTest);
