// Optimizers (training.optimizer) written on tf ops rather than wrapping
// tf.train.*: tfjs's SGD/Momentum bake the learning rate into a scalar at
// construction, keep slots by position instead of variable name, and cannot
// do decoupled weight decay. Here every slot is keyed by variable name, the
// step count is plain JS, and the state round-trips exactly for resume.
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { Config, OptimizerConfig, parseConfig } from './config';
import { UserError } from './errors';
import { runIfMain, SelfTest } from './self_test';

export interface OptimizerState {
  name: string;
  /** Number of applyGradients calls so far (Adam bias correction). */
  step: number;
  lr: number;
  /** Slot tensors, named `<variable name>/<slot>`. */
  tensors: { name: string; shape: number[]; values: Float32Array }[];
}

export interface TrainOptimizer {
  readonly name: string;
  setLearningRate(lr: number): void;
  getLearningRate(): number;
  /**
   * Updates `vars` in place from `grads`. Keys are the caller's names for the
   * variables (tf.variableGrads uses Variable.name); optimizer state is keyed
   * by them, so they must be stable across runs for resume. Does not dispose `grads`.
   */
  applyGradients(grads: Record<string, tf.Tensor>, vars: Record<string, tf.Variable>): void;
  /** Global gradient norm of the last step before clipping (only tracked when grad_clip is set). */
  lastGradNorm(): number | null;
  getState(): Promise<OptimizerState>;
  setState(s: OptimizerState): Promise<void>;
  dispose(): void;
}

export interface OptimizerOptions {
  /** Which variables get weight decay; default: names containing 'kernel' (not biases, BN). */
  decayFilter?: (varName: string) => boolean;
}

// RMSProp's moving-average factor for squared gradients (Keras/tfjs default).
const RMSPROP_RHO = 0.9;

/** sqrt of the sum of squares of all gradients, as a tensor (no GPU/CPU sync). */
export function globalNorm(grads: tf.Tensor[]): tf.Scalar {
  return tf.tidy(() => tf.sqrt(tf.addN(grads.map((g) => tf.sum(tf.square(g))))) as tf.Scalar);
}

/** Scales all gradients by min(1, maxNorm / norm); returns new tensors and the norm before clipping. */
export function clipByGlobalNorm(grads: Record<string, tf.Tensor>, maxNorm: number): { grads: Record<string, tf.Tensor>; norm: tf.Scalar } {
  const names = Object.keys(grads);
  const norm = globalNorm(names.map((n) => grads[n]));
  const out: Record<string, tf.Tensor> = {};
  tf.tidy(() => {
    const scale = tf.div(maxNorm, tf.maximum(norm, maxNorm));
    for (const n of names) out[n] = tf.keep(tf.mul(grads[n], scale));
  });
  return { grads: out, norm };
}

class SlotOptimizer implements TrainOptimizer {
  private slots = new Map<string, Record<string, tf.Variable>>();
  private step = 0;
  private lr: number;
  private normTensor: tf.Scalar | null = null;
  // Set by setState until the next step, to catch state saved under other variable names.
  private restored = false;
  private readonly decayFilter: (n: string) => boolean;

  constructor(readonly name: OptimizerConfig['name'], private readonly c: OptimizerConfig, private readonly clip: number | undefined, opts: OptimizerOptions) {
    this.lr = c.lr;
    this.decayFilter = opts.decayFilter ?? ((n) => n.includes('kernel'));
  }

  setLearningRate(lr: number): void {
    this.lr = lr;
  }

  getLearningRate(): number {
    return this.lr;
  }

  lastGradNorm(): number | null {
    return this.normTensor ? this.normTensor.dataSync()[0] : null;
  }

  private slotNames(): string[] {
    const n = this.name;
    if (n === 'adam' || n === 'adamw') return ['m', 'v'];
    if (n === 'rmsprop') return this.c.momentum > 0 ? ['ms', 'mom'] : ['ms'];
    return this.c.momentum > 0 ? ['momentum'] : [];
  }

  private slotsFor(varName: string, w: tf.Variable): Record<string, tf.Variable> {
    let s = this.slots.get(varName);
    if (!s) {
      s = {};
      for (const k of this.slotNames()) {
        const z = tf.zerosLike(w);
        s[k] = tf.variable(z, false);
        z.dispose();
      }
      this.slots.set(varName, s);
    }
    return s;
  }

  applyGradients(grads: Record<string, tf.Tensor>, vars: Record<string, tf.Variable>): void {
    if (this.restored && Object.keys(grads).some((n) => !this.slots.has(n))) this.remapByOrder(Object.keys(grads), vars);
    this.restored = false;
    let g = grads;
    if (this.clip !== undefined) {
      const clipped = clipByGlobalNorm(grads, this.clip);
      this.normTensor?.dispose();
      this.normTensor = clipped.norm;
      g = clipped.grads;
    }
    this.step += 1;
    const { lr, step } = this;
    const c = this.c;
    const wd = c.weight_decay;
    const bc1 = 1 - Math.pow(c.beta1, step);
    const bc2 = 1 - Math.pow(c.beta2, step);
    for (const name of Object.keys(g)) {
      const w = vars[name];
      if (!w) throw new Error(`optimizer: gradient for unknown variable '${name}'`);
      const s = this.slotsFor(name, w);
      const decay = wd > 0 && this.decayFilter(name);
      tf.tidy(() => {
        let grad = g[name];
        if (decay && this.name !== 'adamw') grad = tf.add(grad, tf.mul(w, wd)); // L2 in the gradient
        switch (this.name) {
          case 'sgd': {
            if (c.momentum === 0) {
              w.assign(tf.sub(w, tf.mul(grad, lr)));
              break;
            }
            const buf = tf.add(tf.mul(s.momentum, c.momentum), grad);
            s.momentum.assign(buf);
            const upd = c.nesterov ? tf.add(grad, tf.mul(buf, c.momentum)) : buf;
            w.assign(tf.sub(w, tf.mul(upd, lr)));
            break;
          }
          case 'adam':
          case 'adamw': {
            const m = tf.add(tf.mul(s.m, c.beta1), tf.mul(grad, 1 - c.beta1));
            const v = tf.add(tf.mul(s.v, c.beta2), tf.mul(tf.square(grad), 1 - c.beta2));
            s.m.assign(m);
            s.v.assign(v);
            const denom = tf.add(tf.div(tf.sqrt(v), Math.sqrt(bc2)), c.epsilon);
            // Decoupled decay (AdamW): shrink the weight itself, apart from the Adam step.
            const base = this.name === 'adamw' && decay ? tf.mul(w, 1 - lr * wd) : w;
            w.assign(tf.sub(base, tf.mul(tf.div(m, denom), lr / bc1)));
            break;
          }
          case 'rmsprop': {
            const ms = tf.add(tf.mul(s.ms, RMSPROP_RHO), tf.mul(tf.square(grad), 1 - RMSPROP_RHO));
            s.ms.assign(ms);
            let upd = tf.div(grad, tf.add(tf.sqrt(ms), c.epsilon));
            if (c.momentum > 0) {
              upd = tf.add(tf.mul(s.mom, c.momentum), upd);
              s.mom.assign(upd);
            }
            w.assign(tf.sub(w, tf.mul(upd, lr)));
            break;
          }
        }
      });
    }
    if (g !== grads) tf.dispose(Object.values(g));
  }

  /**
   * Restored state names no variable: tfjs suffixes names (`conv/kernel_1`)
   * when a model is built twice in one process. Slots are kept in first-update
   * order, so match them to the variables by position if every shape agrees.
   */
  private remapByOrder(keys: string[], vars: Record<string, tf.Variable>): void {
    const entries = [...this.slots.values()];
    const fits =
      entries.length === keys.length &&
      entries.every((s, i) => Object.values(s).every((v) => tf.util.arraysEqual(v.shape, vars[keys[i]]?.shape ?? [])));
    if (!fits) {
      const missing = keys.find((n) => !this.slots.has(n));
      throw new UserError(`optimizer state from the checkpoint has no entry for variable '${missing}' and does not match the model's variables in order; resume without optimizer state`);
    }
    this.slots = new Map(keys.map((k, i) => [k, entries[i]]));
  }

  async getState(): Promise<OptimizerState> {
    const tensors: OptimizerState['tensors'] = [];
    for (const [varName, s] of this.slots) {
      for (const [k, v] of Object.entries(s)) {
        tensors.push({ name: `${varName}/${k}`, shape: v.shape.slice(), values: new Float32Array(await v.data()) });
      }
    }
    return { name: this.name, step: this.step, lr: this.lr, tensors };
  }

  async setState(st: OptimizerState): Promise<void> {
    if (st.name !== this.name) {
      throw new UserError(`training.optimizer.name: is '${this.name}' but the checkpoint's optimizer state is for '${st.name}'`);
    }
    this.disposeSlots();
    for (const t of st.tensors) {
      const cut = t.name.lastIndexOf('/');
      const varName = t.name.slice(0, cut);
      const slot = t.name.slice(cut + 1);
      let s = this.slots.get(varName);
      if (!s) this.slots.set(varName, (s = {}));
      const init = tf.tensor(t.values, t.shape, 'float32');
      s[slot] = tf.variable(init, false);
      init.dispose();
    }
    this.step = st.step;
    this.lr = st.lr;
    this.restored = st.tensors.length > 0;
  }

  private disposeSlots(): void {
    for (const s of this.slots.values()) tf.dispose(Object.values(s));
    this.slots.clear();
  }

  dispose(): void {
    this.disposeSlots();
    this.normTensor?.dispose();
    this.normTensor = null;
  }
}

/** Optimizer from training.optimizer, with training.grad_clip (global norm) applied first. */
export function createOptimizer(cfg: Config, opts: OptimizerOptions = {}): TrainOptimizer {
  return new SlotOptimizer(cfg.training.optimizer.name, cfg.training.optimizer, cfg.training.grad_clip, opts);
}

// ---------------------------------------------------------------------------
function quadraticLoss(opt: TrainOptimizer, w: tf.Variable, steps: number): number {
  for (let i = 0; i < steps; i++) {
    const { grads } = tf.variableGrads(() => tf.sum(tf.square(tf.sub(w, 3))) as tf.Scalar, [w]);
    opt.applyGradients(grads, { [w.name]: w });
    tf.dispose(grads);
  }
  return tf.tidy(() => tf.sum(tf.square(tf.sub(w, 3))).dataSync()[0]);
}

export const selfTest: SelfTest = {
  'every optimizer lowers a quadratic'() {
    for (const name of ['sgd', 'adam', 'adamw', 'rmsprop']) {
      const cfg = parseConfig({ training: { optimizer: { name, lr: 0.05 } } });
      const w = tf.variable(tf.zeros([4]), true, `selftest_${name}/kernel`);
      const opt = createOptimizer(cfg);
      const loss = quadraticLoss(opt, w, 20);
      assert.ok(loss < 36 * 0.5, `${name}: ${loss}`);
      opt.dispose();
      w.dispose();
    }
  },
  'setLearningRate takes effect (lr 0 leaves weights unchanged)'() {
    const cfg = parseConfig({ training: { optimizer: { name: 'sgd', lr: 0.1 } } });
    const w = tf.variable(tf.ones([2]), true, 'selftest_lr/kernel');
    const opt = createOptimizer(cfg);
    opt.setLearningRate(0);
    quadraticLoss(opt, w, 2);
    assert.deepEqual(Array.from(w.dataSync()), [1, 1]);
    opt.dispose();
    w.dispose();
  },
};

runIfMain(module, selfTest);
