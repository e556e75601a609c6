// Cast (webgpu) from int32 or bool to float32 as a real conversion. The stock kernel
// only relabels the buffer (no precision is lost), so the float32 tensor still holds
// int32 data; programs that copy their input straight to a float32 output, such as the
// transpose inside a sum over leading axes, then fail to compile and the result is
// garbage (the multi-class Dice loss hit this: its one-hot target is cast from int32).
import * as tf from '../tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { dispatchingKernel, program, webgpuVsCpu } from './program';

function toFloatProgram(shape: number[]) {
  return program({
    key: 'semseg_cast_to_float', inputs: ['x'], outputShape: shape,
    body: `
      fn main(index : i32) {
        if (index < uniforms.size) { result[index] = f32(x[index]); }
      }`,
  });
}

/** The Cast kernel: int32/bool to float32 here, anything else by the stock kernel. */
export function castKernel(stock: tf.KernelFunc): tf.KernelFunc {
  const toFloat = dispatchingKernel((d, { inputs }) => {
    const x = inputs.x as tf.TensorInfo;
    return d.run(toFloatProgram(x.shape), [x]);
  });
  return ((args: Parameters<tf.KernelFunc>[0]) => {
    const x = args.inputs.x as tf.TensorInfo;
    // Scalars keep the stock path: nothing transposes them, and a program needs a shape.
    const convert = args.attrs?.dtype === 'float32' && (x.dtype === 'int32' || x.dtype === 'bool') && x.shape.length > 0;
    return (convert ? toFloat : stock)(args);
  }) as tf.KernelFunc;
}

export const selfTest: SelfTest = {
  async 'int32 and bool cast to float32 survive a sum over leading axes (a transpose)'() {
    const err = await webgpuVsCpu(() => {
      const labels = tf.tensor3d([0, 1, 2, 2, 1, 0, 3, 3, 1, 0, 2, 1], [2, 2, 3], 'int32');
      const oneHot = tf.oneHot(labels, 4).cast('float32');
      const mask = tf.greater(labels, 0).cast('float32');
      return [tf.sum(oneHot, [0, 1, 2]), tf.sum(mask, [0, 1]), tf.sum(labels.cast('float32'), [0])];
    });
    assert.equal(err, 0, `rel err ${err}`);
  },
};

runIfMain(module, selfTest);
