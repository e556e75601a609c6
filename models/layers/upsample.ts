// Upsampling to another tensor's size for decoders that join maps of different strides
// at any input size: 'same' pooling and strides round up, so x2^k of a coarse map can be
// a few pixels larger than the finer map; it is cut at the bottom and right, where
// 'same' padding put the extra pixels. Stock UpSampling2D plus CropToMatch, whose export
// stand-in is a stock Cropping2D.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { registerLayerClass } from './custom_layers';

/**
 * Cuts the upsampled tensor to the skip tensor's height and width. Needed when the
 * input size is not divisible by 2^depth: pooling rounded up, so x2 upsampling
 * can be one pixel larger than the skip.
 */
export class CropToMatch extends tf.layers.Layer {
  static className = 'CropToMatch';
  computeOutputShape(shapes: tf.Shape[]): tf.Shape {
    const [up, skip] = shapes as tf.Shape[];
    return [up[0], skip[1], skip[2], up[3]];
  }
  call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const [up, skip] = inputs as tf.Tensor4D[];
    const [, h, w] = skip.shape;
    if (up.shape[1] === h && up.shape[2] === w) return up.clone();
    return tf.slice(up, [0, 0, 0, 0], [-1, h, w, -1]);
  }
}
registerLayerClass(CropToMatch);

/** For export at a fixed size: a Cropping2D of the first input by the known excess. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function portableCropToMatch(layer: any, built: tf.layers.Layer): void {
  const [up, skip] = (built as unknown as { inboundNodes: { inputShapes: number[][] }[] }).inboundNodes[0].inputShapes; // not in the public typings
  layer.class_name = 'Cropping2D';
  layer.config = { name: layer.config.name, trainable: layer.config.trainable, cropping: [[0, up[1] - skip[1]], [0, up[2] - skip[2]]], data_format: 'channels_last' };
  layer.inbound_nodes = layer.inbound_nodes.map((node: unknown[]) => node.slice(0, 1));
}

/** Upsamples `x` by `factor` (nearest or bilinear) and crops it to `ref`'s height and width. */
export function upsampleLike(x: tf.SymbolicTensor, ref: tf.SymbolicTensor, factor: number, name: string, interpolation: 'nearest' | 'bilinear' = 'bilinear'): tf.SymbolicTensor {
  const up = tf.layers.upSampling2d({ size: [factor, factor], interpolation, name: `${name}_up` }).apply(x) as tf.SymbolicTensor;
  return new CropToMatch({ name: `${name}_crop` }).apply([up, ref]) as tf.SymbolicTensor;
}

export const selfTest: SelfTest = {
  'upsampleLike lands on the reference size at odd sizes, top-left aligned'() {
    const x = tf.input({ shape: [null, null, 2] });
    const ref = tf.input({ shape: [null, null, 1] });
    const m = tf.model({ inputs: [x, ref], outputs: upsampleLike(x, ref, 4, 't_up', 'nearest') });
    // 37 px at stride 4 rounds up to 10 px; x4 is 40, cut to 37.
    const a = tf.range(0, 2 * 10 * 3 * 2).reshape([2, 10, 3, 2]);
    const y = m.predict([a, tf.zeros([2, 37, 11, 1])]) as tf.Tensor;
    assert.deepEqual(y.shape, [2, 37, 11, 2]);
    const v = y.arraySync() as number[][][][];
    assert.equal(v[0][0][0][0], 0);
    assert.equal(v[0][36][10][1], (a.arraySync() as number[][][][])[0][9][2][1]);
    tf.dispose([a, y]);
    m.dispose();
  },
};

runIfMain(module, selfTest);
