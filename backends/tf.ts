// The TensorFlow.js API this package uses, as `import * as tf from '../backends/tf'`: core
// (tensors, ops, gradients, the engine), layers and the cpu backend. The umbrella
// @tensorflow/tfjs would add the converter, tf.data, the webgl backend and every browser
// bundle with its maps: 190 MB more in a user's node_modules, none of it used in Node.
// What the umbrella does besides re-exporting is done here: tfjs-layers' Node build
// registers all of core's gradients, and the chained ops (`x.add(y)`, `x.toFloat()`) are
// installed below, as the umbrella's register_all_chained_ops does (that file is an ES
// module, which Node 18 and 20 cannot require).
import * as core from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-layers';
import '@tensorflow/tfjs-backend-cpu';
// Types only (erased): the chained ops' declarations on Tensor.
import type * as _chainedOps from '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';

export * from '@tensorflow/tfjs-core';
export * from '@tensorflow/tfjs-layers';
export * from '@tensorflow/tfjs-backend-cpu';

/** Methods that call the op of the same name with the tensor first: x.add(y) is tf.add(x, y). */
const SAME_NAME = 'abs acos acosh add all any argMax argMin asin asinh atan atan2 atanh avgPool batchToSpaceND batchNorm broadcastTo cast ceil clipByValue conv1d conv2dTranspose conv2d cos cosh cumprod cumsum depthToSpace depthwiseConv2d dilation2d divNoNan div dot elu equal erf euclideanNorm exp expandDims expm1 fft floor floorDiv gather greaterEqual greater ifft irfft isFinite isInf isNaN leakyRelu lessEqual less localResponseNormalization logSigmoid logSoftmax logSumExp log log1p logicalAnd logicalNot logicalOr logicalXor matMul maxPool max maximum mean min minimum mirrorPad mod mul neg norm notEqual oneHot onesLike pad pool pow prelu prod reciprocal relu relu6 reshape resizeBilinear resizeNearestNeighbor reverse rfft round rsqrt selu separableConv2d sigmoid sign sin sinh slice softmax softplus spaceToBatchND split sqrt square squaredDifference squeeze step stridedSlice sub sum tan tanh tile topk transpose unique unsortedSegmentSum unstack zerosLike'.split(' ');

type T = core.Tensor;
/** The others, as register_all_chained_ops defines them. */
const OTHERS: Record<string, (this: T, ...a: any[]) => unknown> = {
  asType(dtype: core.DataType) { return core.cast(this, dtype); },
  asScalar() {
    assert(this.size === 1, 'The array must have only 1 element.');
    return core.reshape(this, []);
  },
  as1D() { return core.reshape(this, [this.size]); },
  as2D(...s: number[]) { return core.reshape(this, s); },
  as3D(...s: number[]) { return core.reshape(this, s); },
  as4D(...s: number[]) { return core.reshape(this, s); },
  as5D(...s: number[]) { return core.reshape(this, s); },
  flatten() { return core.reshape(this, [this.size]); },
  reshapeAs(x: T) { return core.reshape(this, x.shape); },
  concat(x: T | T[], axis?: number) { return core.concat([this, ...(x instanceof core.Tensor ? [x] : x)], axis); },
  stack(x: T | T[], axis?: number) { return core.stack([this, ...(x instanceof core.Tensor ? [x] : x)], axis); },
  toBool() { return core.cast(this, 'bool'); },
  toFloat() { return core.cast(this, 'float32'); },
  toInt() { return core.cast(this, 'int32'); },
  where(condition: T, x: T) { return core.where(condition, this, x); },
};

const proto = core.Tensor.prototype as unknown as Record<string, unknown>;
const ops = core as unknown as Record<string, (...a: unknown[]) => unknown>;
for (const name of SAME_NAME) {
  // Where the umbrella (loaded by tfjs-node, say) installed them already, its own stay.
  if (!(name in proto)) proto[name] = function (this: T, ...a: unknown[]) { this.throwIfDisposed(); return ops[name](this, ...a); };
}
for (const [name, fn] of Object.entries(OTHERS)) {
  if (!(name in proto)) proto[name] = function (this: T, ...a: unknown[]) { this.throwIfDisposed(); return fn.apply(this, a); };
}

export const selfTest: SelfTest = {
  'chained ops, gradients and layers work without the umbrella package'() {
    const x = core.tensor1d([1, -2, 3]);
    assert.deepEqual(Array.from(x.abs().add(1).toFloat().dataSync()), [2, 3, 4]);
    assert.deepEqual(x.as2D(1, 3).shape, [1, 3]);
    assert.deepEqual(Array.from(x.concat(x).dataSync()), [1, -2, 3, 1, -2, 3]);
    const g = core.grad((t: T) => core.square(t).sum())(x);
    assert.deepEqual(Array.from(g.dataSync()), [2, -4, 6]);
    assert.equal(core.getBackend(), 'cpu');
  },
};

runIfMain(module, selfTest);
