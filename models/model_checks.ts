// The checks every model definition's self-test runs (models/<name>.ts calls
// modelChecks): output size at odd input sizes, the parameter count against the built
// model and its PyTorch twin (bench/torch_models/<name>.py), the activation count
// against the built layers, the export's stock-layers copy against the model, the loss
// falling on a fixed batch, and no leaked tensors.
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { runIfMain, SelfTest } from '../utils/self_test';
import { countTrainable, ModelDefinition, ModelIO, tracedActivationFloats } from './registry';

export interface ModelCheckCases<O> {
  /** Small options, for the shape, activation and training checks. */
  small: Partial<O>;
  /** Options of the PyTorch twin and the count it printed (bench/torch_models.py NAME --params). */
  torch: { options: Partial<O>; io: ModelIO; params: number };
  /** Input sizes [h, w] the model must keep; odd ones included. Default [[37, 51], [64, 64]]. */
  sizes?: [number, number][];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function modelChecks<S extends z.ZodObject<any>>(def: ModelDefinition<S>, cases: ModelCheckCases<z.infer<S>>): SelfTest {
  const opts = (o: Partial<z.infer<S>>) => def.options.parse(o) as z.infer<S>;
  const io: ModelIO = { inChannels: 3, outChannels: 3, seed: 1 };
  const sizes = cases.sizes ?? [[37, 51], [64, 64]];
  return {
    [`${def.name}: output has the input size, also at odd sizes`]() {
      const m = def.build(opts(cases.small), io);
      for (const [h, w] of sizes) {
        for (const n of [1, 2]) {
          const y = tf.tidy(() => m.predict(tf.zeros([n, h, w, 3])) as tf.Tensor);
          assert.deepEqual(y.shape, [n, h, w, 3], `${n}x${h}x${w}`);
          y.dispose();
        }
      }
      m.dispose();
    },
    [`${def.name}: parameter count equals the built model and the PyTorch twin`]() {
      const o = opts(cases.torch.options);
      const m = def.build(o, cases.torch.io);
      const built = countTrainable(m);
      m.dispose();
      assert.equal(def.paramCount(o, cases.torch.io), built, 'paramCount vs built');
      assert.equal(built, cases.torch.params, 'built vs PyTorch');
      const s = opts(cases.small);
      const small = def.build(s, io);
      assert.equal(def.paramCount(s, io), countTrainable(small), 'paramCount vs built (small)');
      small.dispose();
    },
    async [`${def.name}: activation floats match the built layers' outputs within 2%`]() {
      const o = opts(cases.small);
      const m = def.build(o, io);
      for (const [h, w] of sizes) {
        const traced = await tracedActivationFloats(m, h, w);
        const counted = def.activationFloats(o, io, h, w);
        assert.ok(Math.abs(counted - traced) <= 0.02 * traced, `${h}x${w}: counted ${counted}, layers ${traced}`);
      }
      m.dispose();
    },
    async [`${def.name}: the stock-layers export computes the same outputs at 64x64 and 50x70`]() {
      const { comparePortable } = await import('../engine/portable'); // on use: engine/ builds on models/
      const { isProjectLayer } = await import('./layers/custom_layers');
      const m = def.build(opts(cases.small), io);
      // Non-trivial batch-norm statistics, so a wrong mapping would show.
      for (const v of m.weights) if (/moving_(mean|variance)/.test(v.name)) v.write(tf.randomUniform(v.shape as number[], 0.5, 1.5, 'float32', 3));
      for (const size of [[64, 64], [50, 70]] as [number, number][]) {
        const { classes, difference: d } = await comparePortable(m, size, def);
        for (const c of classes) assert.ok(!isProjectLayer(c), `${c} left in the export`);
        assert.ok(d < 1e-4, `max difference ${d} at ${size}`);
      }
      m.dispose();
    },
    async [`${def.name}: the loss falls on a fixed batch on wasm and no tensor leaks`]() {
      // On wasm, the backend models train on: the cpu backend takes minutes for a ResNet encoder.
      const previous = tf.getBackend();
      const { initBackend } = await import('../backends'); // on use: importing it makes wasm the default backend
      await initBackend('wasm');
      try {
        const before = tf.memory().numTensors;
        const m = def.build(opts(cases.small), { inChannels: 3, outChannels: 1, seed: 3 });
        // Noise drawn at 4x4 and upsampled: blobs of ~8 pixels, which models that predict at
        // stride 8 and upsample can follow too (per-pixel noise they cannot).
        const x = tf.tidy(() => tf.image.resizeBilinear(tf.randomNormal([2, 4, 4, 3], 0, 1, 'float32', 7) as tf.Tensor4D, [32, 32]));
        // Foreground where the first channel is positive: learnable from the input.
        const y = tf.tidy(() => tf.cast(tf.greater(x.slice([0, 0, 0, 0], [-1, -1, -1, 1]), 0), 'float32'));
        const opt = tf.train.adam(1e-2);
        const losses: number[] = [];
        for (let i = 0; i < 15; i++) {
          const loss = opt.minimize(() => tf.losses.sigmoidCrossEntropy(y, m.apply(x, { training: true }) as tf.Tensor) as tf.Scalar, true);
          losses.push(loss!.dataSync()[0]);
          loss!.dispose();
        }
        assert.ok(losses.every(Number.isFinite), losses.join(' '));
        assert.ok(losses[14] < 0.8 * losses[0], `loss ${losses[0]} -> ${losses[14]}`);
        opt.dispose();
        tf.dispose([x, y]);
        m.dispose();
        assert.equal(tf.memory().numTensors, before, 'tensors left after the model, batch and optimizer were disposed');
      } finally {
        await tf.setBackend(previous);
      }
    },
  };
}

export const selfTest: SelfTest = {
  async 'the checks catch a wrong parameter count'() {
    const { getModelDefinition } = await import('./registry');
    const unet = getModelDefinition('unet');
    const wrong = { ...unet, paramCount: () => 1 };
    const checks = modelChecks(wrong, { small: { base: 4, depth: 2 }, torch: { options: { base: 4, depth: 2 }, io: { inChannels: 3, outChannels: 1, seed: 0 }, params: 0 } });
    await assert.rejects(async () => checks['unet: parameter count equals the built model and the PyTorch twin'](), /paramCount vs built/);
  },
};

runIfMain(module, selfTest);
