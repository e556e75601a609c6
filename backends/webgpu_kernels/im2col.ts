// SemsegIm2Col (webgpu): the columns of the filter gradient's matmul formulation
// (backends/conv_grads.ts) in one shader: cols[(n,oh,ow), (kh,kw,ci)] =
// x[n, oh*sh + kh - top, ow*sw + kw - left, ci], 0 outside x. Built from tf ops it
// was a pad, a slice per tap and a concat split by the buffer limit: ~13 dispatches
// per 3x3 convolution, 230 per U-Net step.
import * as tf from '../tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { seededValues } from '../../utils/rng';
import { IM2COL_KERNEL } from '../conv_grads';
import { dispatchingKernel, program, webgpuVsCpu } from './program';

function im2colProgram(shape: number[]) {
  return program({
    key: 'semseg_im2col', inputs: ['x'], outputShape: shape,
    uniforms: 'inH : i32, inW : i32, inC : i32, outH : i32, outW : i32, kW : i32, strideH : i32, strideW : i32, padTop : i32, padLeft : i32, cols : i32,',
    body: `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let row = index / uniforms.cols;
          let col = index % uniforms.cols;
          let tap = col / uniforms.inC;
          let ci = col % uniforms.inC;
          let ow = row % uniforms.outW;
          let oh = (row / uniforms.outW) % uniforms.outH;
          let n = row / (uniforms.outW * uniforms.outH);
          let ih = oh * uniforms.strideH + tap / uniforms.kW - uniforms.padTop;
          let iw = ow * uniforms.strideW + tap % uniforms.kW - uniforms.padLeft;
          var v = 0.0;
          if (ih >= 0 && ih < uniforms.inH && iw >= 0 && iw < uniforms.inW) {
            v = x[((n * uniforms.inH + ih) * uniforms.inW + iw) * uniforms.inC + ci];
          }
          result[index] = v;
        }
      }`,
  });
}

export const im2colConfig: tf.KernelConfig = {
  kernelName: IM2COL_KERNEL,
  backendName: 'webgpu',
  kernelFunc: dispatchingKernel((d, { inputs, attrs }) => {
    const x = inputs.x as tf.TensorInfo;
    const a = attrs as Record<string, number>;
    const [n, h, w, c] = x.shape;
    const cols = a.filterHeight * a.filterWidth * c;
    const ints = [h, w, c, a.outHeight, a.outWidth, a.filterWidth, a.strideHeight, a.strideWidth, a.padTop, a.padLeft, cols];
    return d.run(im2colProgram([n, a.outHeight, a.outWidth, cols]), [x], ints.map((v) => ({ type: 'int32' as const, data: [v] })));
  }),
};

export const selfTest: SelfTest = {
  async 'the filter gradient through im2col equals cpu at strides 1 and 2, same and valid padding'() {
    for (const [k, stride, pad] of [[3, 1, 'same'], [3, 2, 'same'], [5, 2, 'valid'], [2, 1, 'same']] as const) {
      const err = await webgpuVsCpu(() => {
        const x = tf.tensor4d(seededValues(2 * 9 * 7 * 3, 1), [2, 9, 7, 3]);
        const w = tf.tensor4d(seededValues(k * k * 3 * 4, 2), [k, k, 3, 4]);
        const y = tf.conv2d(x, w, stride, pad);
        const dy = tf.tensor(seededValues(y.size, 3), y.shape);
        return [tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(x, v as tf.Tensor4D, stride, pad), dy)))(w)];
      });
      assert.ok(err <= 1e-5, `${k}x${k} stride ${stride} ${pad}: rel err ${err}`);
    }
  },
};

runIfMain(module, selfTest);
