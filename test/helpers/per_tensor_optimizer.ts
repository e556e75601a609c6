// The straightforward per-variable update (the optimizer before it ran over flat
// buffers), kept as the reference that training/optimizers.ts must match.
import * as tf from '../../backends/tf';
import type { OptimizerConfig } from '../../utils/config';

const RMSPROP_RHO = 0.9;

export class PerTensorReference {
  private slots = new Map<string, Record<string, tf.Variable>>();
  private step = 0;

  // The resolved section holds the named optimizer's own keys (training/optimizers/<name>.ts).
  private readonly c: OptimizerConfig & { momentum: number; nesterov: boolean; beta1: number; beta2: number; epsilon: number };

  constructor(opt: OptimizerConfig, private readonly clip: number | undefined,
    private readonly decayFilter: (n: string) => boolean = (n) => n.includes('kernel')) {
    this.c = opt as PerTensorReference['c'];
  }

  applyGradients(grads: Record<string, tf.Tensor>, vars: Record<string, tf.Variable>): void {
    const c = this.c;
    let scale: tf.Scalar | null = null;
    if (this.clip !== undefined) {
      const clip = this.clip;
      scale = tf.tidy(() => {
        const norm = tf.sqrt(tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g)))));
        return tf.div(clip, tf.maximum(norm, clip)) as tf.Scalar;
      });
    }
    this.step += 1;
    const bc1 = 1 - Math.pow(c.beta1, this.step);
    const bc2 = 1 - Math.pow(c.beta2, this.step);
    for (const name of Object.keys(grads)) {
      const w = vars[name];
      let s = this.slots.get(name);
      if (!s) {
        s = {};
        const names = c.name === 'adam' || c.name === 'adamw' ? ['m', 'v'] : c.name === 'rmsprop' ? ['ms', 'mom'] : ['momentum'];
        for (const k of names) s[k] = tf.variable(tf.zerosLike(w), false);
        this.slots.set(name, s);
      }
      const decay = c.weight_decay > 0 && this.decayFilter(name);
      tf.tidy(() => {
        let grad = scale ? tf.mul(grads[name], scale) : grads[name];
        if (decay && c.name !== 'adamw') grad = tf.add(grad, tf.mul(w, c.weight_decay));
        if (c.name === 'sgd') {
          if (c.momentum === 0) return w.assign(tf.sub(w, tf.mul(grad, c.lr)));
          const buf = tf.add(tf.mul(s!.momentum, c.momentum), grad);
          s!.momentum.assign(buf);
          const upd = c.nesterov ? tf.add(grad, tf.mul(buf, c.momentum)) : buf;
          return w.assign(tf.sub(w, tf.mul(upd, c.lr)));
        }
        if (c.name === 'rmsprop') {
          const ms = tf.add(tf.mul(s!.ms, RMSPROP_RHO), tf.mul(tf.square(grad), 1 - RMSPROP_RHO));
          s!.ms.assign(ms);
          let upd = tf.div(grad, tf.add(tf.sqrt(ms), c.epsilon));
          if (c.momentum > 0) {
            upd = tf.add(tf.mul(s!.mom, c.momentum), upd);
            s!.mom.assign(upd);
          }
          return w.assign(tf.sub(w, tf.mul(upd, c.lr)));
        }
        const m = tf.add(tf.mul(s!.m, c.beta1), tf.mul(grad, 1 - c.beta1));
        const v = tf.add(tf.mul(s!.v, c.beta2), tf.mul(tf.square(grad), 1 - c.beta2));
        s!.m.assign(m);
        s!.v.assign(v);
        const denom = tf.add(tf.div(tf.sqrt(v), Math.sqrt(bc2)), c.epsilon);
        const base = c.name === 'adamw' && decay ? tf.mul(w, 1 - c.lr * c.weight_decay) : w;
        return w.assign(tf.sub(base, tf.mul(tf.div(m, denom), c.lr / bc1)));
      });
    }
    scale?.dispose();
  }

  dispose(): void {
    for (const s of this.slots.values()) tf.dispose(Object.values(s));
  }
}
