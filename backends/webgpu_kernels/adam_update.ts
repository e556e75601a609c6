// SemsegAdamUpdate (webgpu): one Adam/AdamW step over a flat buffer of weights in one
// kernel (three shaders: the new weights, m and v), instead of ~13 op kernels per
// weight group. Same arithmetic as training/optimizers.ts:
//   g' = g + l2 * w                    (Adam with L2 weight decay; l2 = 0 otherwise)
//   m = b1 m + (1 - b1) g',  v = b2 v + (1 - b2) g'^2
//   w = w * shrink - m / (sqrt(v) / sqrt(bc2) + eps) * lr / bc1   (shrink = 1 - lr wd for AdamW)
import * as tf from '../tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { seededValues } from '../../utils/rng';
import { dispatchingKernel, program, UniformValue, webgpuVsCpu } from './program';

export const ADAM_UPDATE = 'SemsegAdamUpdate';

export interface AdamStep { lr: number; beta1: number; beta2: number; epsilon: number; bc1: number; bc2: number; l2: number; shrink: number }

/** which = 0: the new weights; 1: m; 2: v. */
function adamProgram(n: number) {
  return program({
    key: 'semseg_adam', inputs: ['w', 'g', 'm', 'v'], outputShape: [n],
    uniforms: 'lr : f32, beta1 : f32, beta2 : f32, epsilon : f32, sqrtBc2 : f32, bc1 : f32, l2 : f32, shrink : f32, which : i32,',
    body: `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let grad = g[index] + uniforms.l2 * w[index];
          let m1 = m[index] * uniforms.beta1 + grad * (1.0 - uniforms.beta1);
          let v1 = v[index] * uniforms.beta2 + grad * grad * (1.0 - uniforms.beta2);
          if (uniforms.which == 1) {
            result[index] = m1;
          } else if (uniforms.which == 2) {
            result[index] = v1;
          } else {
            let denom = sqrt(v1) / uniforms.sqrtBc2 + uniforms.epsilon;
            result[index] = w[index] * uniforms.shrink - m1 / denom * (uniforms.lr / uniforms.bc1);
          }
        }
      }`,
  });
}

export const adamUpdateConfig: tf.KernelConfig = {
  kernelName: ADAM_UPDATE,
  backendName: 'webgpu',
  kernelFunc: dispatchingKernel((d, { inputs, attrs }) => {
    const { w, g, m, v } = inputs as Record<string, tf.TensorInfo>;
    const a = attrs as unknown as AdamStep;
    const f = (x: number): UniformValue => ({ type: 'float32', data: [x] });
    const uniforms = (which: number) => [f(a.lr), f(a.beta1), f(a.beta2), f(a.epsilon), f(Math.sqrt(a.bc2)), f(a.bc1), f(a.l2), f(a.shrink), { type: 'int32' as const, data: [which] }];
    return [0, 1, 2].map((which) => d.run(adamProgram(w.shape[0]), [w, g, m, v], uniforms(which)));
  }),
};

/** The Adam step as tf ops (the other backends' arithmetic), for the self-test. */
function adamOps(w: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, a: AdamStep): tf.Tensor[] {
  const grad = a.l2 ? tf.add(g, tf.mul(w, a.l2)) : g;
  const m2 = tf.add(tf.mul(m, a.beta1), tf.mul(grad, 1 - a.beta1));
  const v2 = tf.add(tf.mul(v, a.beta2), tf.mul(tf.square(grad), 1 - a.beta2));
  const denom = tf.add(tf.div(tf.sqrt(v2), Math.sqrt(a.bc2)), a.epsilon);
  return [tf.sub(tf.mul(w, a.shrink), tf.mul(tf.div(m2, denom), a.lr / a.bc1)), m2, v2];
}

export const selfTest: SelfTest = {
  async 'weights, m and v equal the tf-ops step on cpu, for Adam, Adam with L2 and AdamW'() {
    const base = { lr: 0.003, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, bc1: 1 - 0.9 ** 3, bc2: 1 - 0.999 ** 3 };
    for (const extra of [{ l2: 0, shrink: 1 }, { l2: 1e-4, shrink: 1 }, { l2: 0, shrink: 1 - 0.003 * 0.01 }]) {
      const a = { ...base, ...extra };
      const err = await webgpuVsCpu(() => {
        const [w, g, m] = [1, 2, 3].map((s) => tf.tensor1d(seededValues(301, s)));
        const v = tf.tensor1d(seededValues(301, 4).map((x) => x * x));
        if (tf.getBackend() === 'webgpu') return tf.engine().runKernel(ADAM_UPDATE, { w, g, m, v }, a as unknown as tf.NamedAttrMap) as tf.Tensor[];
        return adamOps(w, g, m, v, a);
      });
      assert.ok(err <= 1e-5, `${JSON.stringify(extra)}: rel err ${err}`);
    }
  },
};

runIfMain(module, selfTest);
