// Optimizers (training.optimizer) written on tf ops rather than wrapping
// tf.train.*: tfjs's SGD/Momentum bake the learning rate into a scalar at
// construction, keep slots by position instead of variable name, and cannot
// do decoupled weight decay. Here every slot is keyed by variable name, the
// step count is plain JS, and the state round-trips exactly for resume.
// An optimizer's own arithmetic and options are one file, training/optimizers/<name>.ts
// (an OptimizerDefinition, found by its file name); this file runs it over flat buffers.
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import path from 'node:path';
import { z } from 'zod';
import { Config, OptimizerConfig, parseSchema } from '../utils/config';
import { UserError } from '../utils/errors';
import { FolderRegistry } from '../utils/folder_registry';
import { partOptions, resolvePartSection } from '../utils/part_options';
import type { OptimizerState } from '../storage/format';
import { runIfMain, SelfTest } from '../utils/self_test';

/** One update of a flat group of variables (weights, gradients and slots as 1-D buffers). */
export interface GroupStep {
  w: tf.Tensor1D;
  grad: tf.Tensor;
  /** The group's slots, by the names `slots` gave: assign their new values. */
  slots: Record<string, tf.Variable>;
  /** Learning rate of the group (training.optimizer.lr_mult applied). */
  lr: number;
  /** 1-based count of updates (bias correction). */
  step: number;
  /** training.optimizer.weight_decay for a decayed group, else 0. */
  decay: number;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface OptimizerDefinition<S extends z.ZodObject<any> = z.ZodObject<any>> {
  name: string;
  /** One line: what it is (README, messages). */
  summary: string;
  /** The keys of training.optimizer it owns, with their defaults (beside OPTIMIZER_KEYS). */
  options: S;
  /** Its slots per variable; checkpoints hold them as `<variable>/<slot>`. */
  slots(o: z.infer<S>): string[];
  /** The group's new weights; element-wise, so a flat group updates as its variables would. */
  update(g: GroupStep, o: z.infer<S>): tf.Tensor;
}

/** The training.optimizer keys of every optimizer; the rest belong to the named one's schema. */
export const OPTIMIZER_KEYS = ['name', 'lr', 'weight_decay', 'lr_mult'] as const;

const optimizers = new FolderRegistry<OptimizerDefinition>(path.join(__dirname, 'optimizers'), new Set(), (name, known) => `training.optimizer.name '${name}' is not a registered optimizer; registered: ${known.join(', ')}`);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registerOptimizer<S extends z.ZodObject<any>>(d: OptimizerDefinition<S>): OptimizerDefinition<S> {
  optimizers.register(d as unknown as OptimizerDefinition);
  return d;
}

/** Names of the optimizers in training/optimizers/ (and any registered from elsewhere). */
export function registeredOptimizers(): string[] {
  return optimizers.names();
}

export function getOptimizerDefinition(name: string): OptimizerDefinition {
  return optimizers.get(name);
}

/** training.optimizer with the named optimizer's own keys checked and defaulted (config/resolve.ts). */
export function resolveOptimizerSection(section: Record<string, unknown>, source: string, raw: unknown): Record<string, unknown> {
  const kind = { kind: 'optimizer', at: ['training', 'optimizer'], common: OPTIMIZER_KEYS, get: getOptimizerDefinition, names: registeredOptimizers };
  return resolvePartSection(kind, section, [String(section.name)], source, raw).section;
}

/** The gradient with L2 weight decay added (decay 0: unchanged), for the optimizers that decay through it. */
export function withL2(g: GroupStep): tf.Tensor {
  return g.decay > 0 ? tf.add(g.grad, tf.mul(g.w, g.decay)) : g.grad;
}

export type { OptimizerState }; // declared by the checkpoint format that stores it

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
  /**
   * applyGradients in two halves, so a step can check its gradients before the update
   * without a kernel per variable: the gradients are flattened once, `sum` is the
   * sum of all of them (not finite when any is), and `apply` updates from the same
   * flat buffers. The caller disposes the result.
   */
  stageGradients(grads: Record<string, tf.Tensor>, vars: Record<string, tf.Variable>): StagedGradients;
  /** Global gradient norm of the last step before clipping (only tracked when grad_clip is set). */
  lastGradNorm(): Promise<number | null>;
  getState(): Promise<OptimizerState>;
  setState(s: OptimizerState): Promise<void>;
  dispose(): void;
}

export interface StagedGradients {
  sum: tf.Scalar;
  apply(): void;
  dispose(): void;
}

export interface OptimizerOptions {
  /** Which variables get weight decay; default: names containing 'kernel' (not biases, BN). */
  decayFilter?: (varName: string) => boolean;
}

/** sqrt of the sum of squares of all gradients, as a tensor (no GPU/CPU sync). */
export function globalNorm(grads: tf.Tensor[]): tf.Scalar {
  return tf.tidy(() => tf.sqrt(tf.addN(grads.map((g) => tf.sum(tf.square(g))))) as tf.Scalar);
}

/** Scales all gradients by min(1, maxNorm / norm); returns new tensors and the norm before clipping. */
export function clipByGlobalNorm(grads: tf.Tensor[], maxNorm: number): { grads: tf.Tensor[]; norm: tf.Scalar } {
  const norm = globalNorm(grads);
  const scale = tf.div(maxNorm, tf.maximum(norm, maxNorm));
  const out = grads.map((g) => tf.mul(g, scale));
  scale.dispose();
  return { grads: out, norm };
}

/** Variables updated together: their gradients, weights and slots as one 1-D buffer each. */
interface FlatGroup {
  names: string[];
  shapes: number[][];
  sizes: number[];
  /** Weight decay applies to every variable in the group, or to none. */
  decay: boolean;
  /** The group's multiple of the learning rate (training.optimizer.lr_mult). */
  lrMult: number;
  /** Flat slot variables, each the concatenation of the per-variable slots in `names` order. */
  slots: Record<string, tf.Variable>;
}

/** Flattens to 1-D, skipping the reshape (a kernel call) when already 1-D. */
function flat1d(t: tf.Tensor): tf.Tensor1D {
  return (t.rank === 1 ? t : tf.reshape(t, [-1])) as tf.Tensor1D;
}

function concat1d(ts: tf.Tensor[]): tf.Tensor1D {
  return ts.length === 1 ? flat1d(ts[0]) : tf.concat(ts.map(flat1d));
}

/**
 * Runs each update over flat buffers, one per group (decayed or not, per lr_mult), instead of
 * ~10 kernels per variable: ~90 variables made a U-Net step run ~1000 optimizer
 * kernels. The arithmetic is element-wise and the same as per variable, so
 * results match a per-variable update. State is still per variable
 * (`<var>/<slot>`), so checkpoints are unchanged.
 */
class FlatOptimizer implements TrainOptimizer {
  private groups: FlatGroup[] = [];
  /** Variable names of the current groups, in gradient order; a change regroups. */
  private layoutKey: string | null = null;
  /** Per-variable slots outside the groups: restored state not yet grouped, or variables not in the last update. */
  private loose = new Map<string, Record<string, tf.Tensor>>();
  /** Variables with slots, in first-update order (getState order; remapByOrder relies on it). */
  private order: string[] = [];
  private step = 0;
  private lr: number;
  private normTensor: tf.Scalar | null = null;
  // Set by setState until the next step, to catch state saved under other variable names.
  private restored = false;
  private readonly decayFilter: (n: string) => boolean;
  /** lr_mult's keys, longest first: the first one a name contains is the longest that matches. */
  private readonly multKeys: string[];

  readonly name: string;

  constructor(private readonly def: OptimizerDefinition, private readonly o: Record<string, unknown>, private readonly c: OptimizerConfig, private readonly clip: number | undefined, opts: OptimizerOptions) {
    this.name = def.name;
    this.lr = c.lr;
    this.decayFilter = opts.decayFilter ?? ((n) => n.includes('kernel'));
    this.multKeys = Object.keys(c.lr_mult).sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
  }

  setLearningRate(lr: number): void {
    this.lr = lr;
  }

  getLearningRate(): number {
    return this.lr;
  }

  async lastGradNorm(): Promise<number | null> {
    return this.normTensor ? (await this.normTensor.data())[0] : null; // async: GPU backends cannot read synchronously
  }

  private slotNames(): string[] {
    return this.def.slots(this.o);
  }

  private hasState(name: string): boolean {
    return this.loose.has(name) || this.groups.some((g) => g.names.includes(name));
  }

  /** Moves the grouped slots back to per-variable tensors in `loose`. */
  private ungroup(): void {
    for (const g of this.groups) {
      for (const [slot, buf] of Object.entries(g.slots)) {
        const parts = g.sizes.length === 1 ? [tf.clone(buf)] : tf.split(buf, g.sizes);
        g.names.forEach((n, i) => {
          const s = this.loose.get(n) ?? {};
          s[slot] = parts[i];
          this.loose.set(n, s);
        });
      }
      tf.dispose(Object.values(g.slots));
    }
    this.groups = [];
    this.layoutKey = null;
  }

  /** The learning-rate multiple of a variable: the longest lr_mult key in its name, else 1. */
  private lrMultOf(name: string): number {
    const key = this.multKeys.find((k) => name.includes(k));
    return key === undefined ? 1 : this.c.lr_mult[key];
  }

  /** Groups `names` by weight decay and learning-rate multiple and builds their flat slots from `loose` (zeros where none). */
  private regroup(names: string[], vars: Record<string, tf.Variable>): void {
    const unmatched = this.multKeys.find((k) => !names.some((n) => n.includes(k)));
    if (unmatched !== undefined) {
      throw new UserError(`training.optimizer.lr_mult: '${unmatched}' is in no trainable weight's name (they read like '${names[0]}')`);
    }
    this.ungroup();
    const wd = this.c.weight_decay;
    const byGroup = new Map<string, { decay: boolean; lrMult: number; members: string[] }>();
    for (const n of names) {
      if (!vars[n]) throw new Error(`optimizer: gradient for unknown variable '${n}'`);
      const decay = wd > 0 && this.decayFilter(n);
      const lrMult = this.lrMultOf(n);
      const key = `${decay} ${lrMult}`;
      if (!byGroup.has(key)) byGroup.set(key, { decay, lrMult, members: [] });
      byGroup.get(key)!.members.push(n);
      if (!this.order.includes(n)) this.order.push(n);
    }
    for (const { decay, lrMult, members } of byGroup.values()) {
      const sizes = members.map((n) => vars[n].size);
      const slots: Record<string, tf.Variable> = {};
      for (const slot of this.slotNames()) {
        const init = tf.tidy(() => concat1d(members.map((n) => {
          const old = this.loose.get(n)?.[slot];
          if (old && !tf.util.arraysEqual(old.shape, vars[n].shape)) {
            throw new UserError(`optimizer state '${n}/${slot}' has shape [${old.shape}] but the variable has [${vars[n].shape}]; resume without optimizer state`);
          }
          return old ?? tf.zeros([vars[n].size]);
        })));
        slots[slot] = tf.variable(init, false);
        init.dispose();
      }
      for (const n of members) {
        const s = this.loose.get(n);
        if (s) tf.dispose(Object.values(s));
        this.loose.delete(n);
      }
      this.groups.push({ names: members, shapes: members.map((n) => vars[n].shape.slice()), sizes, decay, lrMult, slots });
    }
    this.layoutKey = names.join('\n');
  }

  applyGradients(grads: Record<string, tf.Tensor>, vars: Record<string, tf.Variable>): void {
    const staged = this.stageGradients(grads, vars);
    try {
      staged.apply();
    } finally {
      staged.dispose();
    }
  }

  stageGradients(grads: Record<string, tf.Tensor>, vars: Record<string, tf.Variable>): StagedGradients {
    const names = Object.keys(grads);
    if (this.restored && names.some((n) => !this.hasState(n))) this.remapByOrder(names, vars);
    this.restored = false;
    if (names.join('\n') !== this.layoutKey) this.regroup(names, vars);
    // Copies, so that disposing them never frees a caller's 1-D gradient.
    const flat = tf.tidy(() => this.groups.map((g) => g.names.length === 1 ? tf.clone(flat1d(grads[g.names[0]])) : concat1d(g.names.map((n) => grads[n]))));
    // One sum per group (decayed or not, per learning-rate multiple), never an AddN over every variable.
    const sum = tf.tidy(() => (flat.length ? flat.map((f) => tf.sum(f)).reduce((a, b) => tf.add(a, b)) : tf.scalar(0)) as tf.Scalar);
    let applied = false;
    return {
      sum,
      apply: () => {
        if (applied) throw new Error('optimizer: staged gradients applied twice');
        applied = true;
        this.update(flat, vars);
      },
      dispose: () => tf.dispose([...flat, sum]),
    };
  }

  /** One update from the flat gradients of each group (stageGradients). */
  private update(flatIn: tf.Tensor[], vars: Record<string, tf.Variable>): void {
    this.step += 1;
    const { step, c } = this;
    if (this.clip !== undefined) this.normTensor?.dispose();
    tf.tidy(() => {
      let flatGrads: tf.Tensor[] = flatIn;
      if (this.clip !== undefined) {
        const clipped = clipByGlobalNorm(flatGrads, this.clip);
        this.normTensor = tf.keep(clipped.norm);
        flatGrads = clipped.grads;
      }
      this.groups.forEach((grp, gi) => {
        const w = concat1d(grp.names.map((n) => vars[n]));
        const next = this.def.update({ w, grad: flatGrads[gi], slots: grp.slots, lr: this.lr * grp.lrMult, step, decay: grp.decay ? c.weight_decay : 0 }, this.o);
        const parts = grp.sizes.length === 1 ? [next] : tf.split(next, grp.sizes);
        grp.names.forEach((n, i) => {
          const v = vars[n];
          v.assign(v.rank === 1 ? parts[i] : tf.reshape(parts[i], v.shape));
        });
      });
    });
  }

  /**
   * Restored state names no variable: tfjs suffixes names (`conv/kernel_1`)
   * when a model is built twice in one process. Slots are kept in first-update
   * order, so match them to the variables by position if every shape agrees.
   */
  private remapByOrder(keys: string[], vars: Record<string, tf.Variable>): void {
    this.ungroup();
    const entries = this.order.map((n) => this.loose.get(n) ?? {});
    const fits =
      entries.length === keys.length &&
      entries.every((s, i) => Object.values(s).every((v) => tf.util.arraysEqual(v.shape, vars[keys[i]]?.shape ?? [])));
    if (!fits) {
      const missing = keys.find((n) => !this.loose.has(n));
      throw new UserError(`optimizer state from the checkpoint has no entry for variable '${missing}' and does not match the model's variables in order; resume without optimizer state`);
    }
    this.loose = new Map(keys.map((k, i) => [k, entries[i]]));
    this.order = keys.slice();
  }

  async getState(): Promise<OptimizerState> {
    // One read per flat slot, then per-variable copies.
    const grouped = new Map<string, { shape: number[]; slots: Record<string, Float32Array> }>();
    for (const g of this.groups) {
      const data: Record<string, Float32Array> = {};
      for (const [slot, buf] of Object.entries(g.slots)) data[slot] = (await buf.data()) as Float32Array;
      let offset = 0;
      g.names.forEach((n, i) => {
        const slots: Record<string, Float32Array> = {};
        for (const [slot, d] of Object.entries(data)) slots[slot] = d.slice(offset, offset + g.sizes[i]);
        grouped.set(n, { shape: g.shapes[i], slots });
        offset += g.sizes[i];
      });
    }
    const tensors: OptimizerState['tensors'] = [];
    for (const varName of this.order) {
      const gs = grouped.get(varName);
      if (gs) {
        for (const [k, values] of Object.entries(gs.slots)) tensors.push({ name: `${varName}/${k}`, shape: gs.shape.slice(), values });
        continue;
      }
      for (const [k, v] of Object.entries(this.loose.get(varName) ?? {})) {
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
      let s = this.loose.get(varName);
      if (!s) {
        this.loose.set(varName, (s = {}));
        this.order.push(varName);
      }
      s[slot] = tf.tensor(t.values, t.shape, 'float32');
    }
    this.step = st.step;
    this.lr = st.lr;
    this.restored = st.tensors.length > 0;
  }

  private disposeSlots(): void {
    for (const g of this.groups) tf.dispose(Object.values(g.slots));
    for (const s of this.loose.values()) tf.dispose(Object.values(s));
    this.groups = [];
    this.loose.clear();
    this.order = [];
    this.layoutKey = null;
  }

  dispose(): void {
    this.disposeSlots();
    this.normTensor?.dispose();
    this.normTensor = null;
  }
}

/** training.optimizer resolved: the named optimizer's definition and own options, the keys every one has. */
export interface ResolvedOptimizer {
  definition: OptimizerDefinition;
  options: Record<string, unknown>;
  /** The section (lr, weight_decay, lr_mult: the keys every optimizer has). */
  common: OptimizerConfig;
  /** training.grad_clip. */
  gradClip?: number;
}

/** The optimizer of a config validated by config/resolve.ts, looked up once (config/resolve.ts resolveRun). */
export function resolveOptimizer(cfg: Config): ResolvedOptimizer {
  const c = cfg.training.optimizer;
  const definition = getOptimizerDefinition(c.name);
  return { definition, options: partOptions(definition, c), common: c, gradClip: cfg.training.grad_clip };
}

/**
 * Optimizer from the resolved training.optimizer, with training.grad_clip (global norm)
 * applied first; a Config is resolved here first (tests, direct library use).
 */
export function createOptimizer(optimizer: ResolvedOptimizer | Config, opts: OptimizerOptions = {}): TrainOptimizer {
  const r = 'definition' in optimizer ? optimizer : resolveOptimizer(optimizer);
  return new FlatOptimizer(r.definition, r.options, r.common, r.gradClip, opts);
}

// For the self-tests: the config with training.optimizer resolved as config/resolve.ts resolves it (that
// module sits above this one, so it is not imported here).
function withOptimizer(raw: { [k: string]: unknown }, source = 'config'): Config {
  const c = parseSchema(raw, source);
  c.training.optimizer = resolveOptimizerSection(c.training.optimizer, source, raw) as typeof c.training.optimizer;
  return c;
}

export const selfTest: SelfTest = {
  'every optimizer in training/optimizers is found by its file name; a misspelt name or option is one line at parse time'() {
    assert.deepEqual(registeredOptimizers(), ['adam', 'adamw', 'rmsprop', 'sgd']);
    assert.throws(() => withOptimizer({ training: { optimizer: { name: 'adma' } } }, 'x.yaml'), /^UserError: x\.yaml: key 'training\.optimizer\.name' has "adma"; 'adma' is not a registered optimizer; registered: adam, adamw, rmsprop, sgd$/);
    assert.throws(() => withOptimizer({ training: { optimizer: { name: 'sgd', nesterv: true } } }, 'x.yaml'), /^UserError: x\.yaml: unknown key 'training\.optimizer\.nesterv' \(check the spelling; optimizer 'sgd' takes momentum, nesterov, every optimizer name, lr, weight_decay, lr_mult\)$/);
    assert.deepEqual(withOptimizer({ training: { optimizer: { name: 'sgd' } } }).training.optimizer, { name: 'sgd', lr: 1e-3, weight_decay: 0, lr_mult: {}, momentum: 0.9, nesterov: false });
  },
  // Behaviour (every optimizer, learning rate, decay, clipping, state) is tested in
  // test/optimizers.test.ts and test/flat_optimizer.test.ts; this is the reason the class exists.
  async 'one update runs a fixed number of kernels, not ~10 per variable'() {
    const cfg = withOptimizer({ training: { optimizer: { name: 'adam', lr: 0.01 } } });
    const count = async (nVars: number) => {
      const vars: Record<string, tf.Variable> = {};
      for (let i = 0; i < nVars; i++) vars[`k${nVars}_${i}/bias`] = tf.variable(tf.ones([3]), true, `selftest_kc${nVars}_${i}`);
      const opt = createOptimizer(cfg);
      const g = Object.fromEntries(Object.keys(vars).map((n) => [n, tf.ones([3])]));
      opt.applyGradients(g, vars); // creates the flat slots
      const p = await tf.profile(() => {
        opt.applyGradients(g, vars);
      });
      opt.dispose();
      tf.dispose([...Object.values(g), ...Object.values(vars)]);
      return p.kernels.length;
    };
    const few = await count(2);
    const many = await count(40);
    // 1-D variables need no reshape: only the split's outputs grow with their number.
    assert.ok(many - few <= 2, `kernels: ${few} for 2 variables, ${many} for 40`);
  },
};

runIfMain(module, selfTest);
