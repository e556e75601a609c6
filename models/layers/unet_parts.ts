// U-Net building blocks, named after milesial/Pytorch-UNet's unet_parts:
// DoubleConv, Down, Up, OutConv. Each takes and returns symbolic tensors of the
// tfjs layers functional API; every layer gets an explicit name so that weight
// names are stable across builds (checkpoints match weights by name).
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { fastBatchNorm } from './batch_norm';
import { CropToMatch } from './upsample';
import { heInit as init } from './init';

type T = tf.SymbolicTensor;
export type UpMode = 'nearest' | 'bilinear' | 'transpose';

/** (3x3 conv 'same' -> batch norm -> ReLU) x 2; spatial size is kept (padded convs). */
export function DoubleConv(x: T, filters: number, name: string, batchNorm = true, seed = 0): T {
  for (const i of [1, 2]) {
    x = tf.layers
      .conv2d({ filters, kernelSize: 3, padding: 'same', useBias: !batchNorm, kernelInitializer: init(`${name}_conv${i}`, seed), name: `${name}_conv${i}` })
      .apply(x) as T;
    if (batchNorm) {
      // momentum 0.9 = PyTorch's 0.1: running stats that follow a short training run.
      // FastBatchNorm: tfjs's layer with a training gradient that avoids full-size Tile.
      x = fastBatchNorm({ momentum: 0.9, epsilon: 1e-5, name: `${name}_bn${i}` }).apply(x) as T;
    }
    x = tf.layers.reLU({ name: `${name}_relu${i}` }).apply(x) as T;
  }
  return x;
}

/** 2x2 max-pool ('same', so odd sizes round up) then DoubleConv. */
export function Down(x: T, filters: number, name: string, batchNorm = true, seed = 0): T {
  x = tf.layers.maxPooling2d({ poolSize: 2, strides: 2, padding: 'same', name: `${name}_pool` }).apply(x) as T;
  return DoubleConv(x, filters, name, batchNorm, seed);
}

/**
 * x2 upsampling (nearest by default), crop to the skip, concat [skip, up], DoubleConv.
 * `gate` (Attention U-Net) replaces the skip before the concat, given the cropped map.
 */
export function Up(x: T, skip: T, filters: number, name: string, mode: UpMode = 'nearest', batchNorm = true, seed = 0, gate?: (up: T, skip: T) => T): T {
  if (mode === 'transpose') {
    const ch = x.shape[3] as number;
    x = tf.layers.conv2dTranspose({ filters: ch, kernelSize: 2, strides: 2, padding: 'same', kernelInitializer: init(`${name}_upconv`, seed), name: `${name}_upconv` }).apply(x) as T;
  } else {
    x = tf.layers.upSampling2d({ size: [2, 2], interpolation: mode, name: `${name}_up` }).apply(x) as T;
  }
  x = new CropToMatch({ name: `${name}_crop` }).apply([x, skip]) as T;
  x = tf.layers.concatenate({ axis: -1, name: `${name}_concat` }).apply([gate ? gate(x, skip) : skip, x]) as T;
  return DoubleConv(x, filters, name, batchNorm, seed);
}

/** 1x1 convolution to the class logits. */
export function OutConv(x: T, classes: number, name = 'head', seed = 0): T {
  return tf.layers.conv2d({ filters: classes, kernelSize: 1, kernelInitializer: init(name, seed), name }).apply(x) as T;
}

export const selfTest: SelfTest = {
  'DoubleConv keeps spatial size'() {
    const inp = tf.input({ shape: [17, 23, 3] });
    const out = DoubleConv(inp, 8, 't_dc');
    assert.deepEqual(out.shape, [null, 17, 23, 8]);
  },
  'Down halves, rounding up'() {
    const inp = tf.input({ shape: [17, 23, 3] });
    assert.deepEqual(Down(inp, 4, 't_down').shape, [null, 9, 12, 4]);
  },
  'Up crops to the skip size and puts the skip first'() {
    const skip = tf.input({ shape: [17, 23, 5] });
    const low = tf.input({ shape: [9, 12, 7] });
    for (const mode of ['nearest', 'bilinear', 'transpose'] as UpMode[]) {
      const out = Up(low, skip, 6, `t_up_${mode}`, mode);
      assert.deepEqual(out.shape, [null, 17, 23, 6]);
    }
    const up = tf.layers.upSampling2d({ size: [2, 2] }).apply(low) as T;
    const cropped = new CropToMatch({}).apply([up, skip]) as T;
    const m = tf.model({ inputs: [skip, low], outputs: tf.layers.concatenate().apply([skip, cropped]) as T });
    const y = tf.tidy(() => (m.predict([tf.ones([1, 17, 23, 5]), tf.zeros([1, 9, 12, 7])]) as tf.Tensor));
    assert.deepEqual(y.shape, [1, 17, 23, 12]);
    const v = y.dataSync();
    assert.equal(v[0], 1); // skip channels come first
    assert.equal(v[5], 0);
    y.dispose();
  },
};

runIfMain(module, selfTest);
