// Models by name, the twin of loaders/registry.ts. A model is declared once, in
// models/<name>.ts, as a ModelDefinition: its own options (a zod schema for the keys of
// the `model:` section), how to build it, its parameter count and activation memory
// (for the checks before the first step) and the stock tfjs stand-ins for its own layer
// classes (for export). `model.name: X` loads models/X.ts on first use, so a new model
// needs no list or switch edited anywhere else.
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { Config, outChannels } from '../utils/config';
import { UserError } from '../utils/errors';
import { FolderRegistry } from '../utils/folder_registry';
import { runIfMain, SelfTest } from '../utils/self_test';

/** What every model gets besides its own options. */
export interface ModelIO {
  inChannels: number;
  /** Logit channels: 1 (sigmoid) for binary, else one per class. */
  outChannels: number;
  /** Seeds the weight initialisation (training.seed). */
  seed: number;
}

/**
 * Rewrites one layer of a model's JSON topology, built at a fixed input size, into stock
 * tfjs layers (class_name, config, inbound_nodes); `built` is that layer in the fixed-size
 * build, for shapes. Weights are matched by name afterwards, so keep the layer's name
 * and its weights' names.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type PortableLayer = (layer: any, built: tf.layers.Layer) => void;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface ModelDefinition<S extends z.ZodObject<any> = z.ZodObject<any>> {
  name: string;
  /** One line: what it is and what it is for (README table, `--help`). */
  summary: string;
  /** The model's own keys under `model:` with their defaults (beside the common ones). */
  options: S;
  /** The key that makes the model smaller, for memory advice (e.g. 'model.base'). */
  widthKey: string;
  build(o: z.infer<S>, io: ModelIO): tf.LayersModel;
  /** Trainable parameters, counted from the definition (no weights allocated). */
  paramCount(o: z.infer<S>, io: ModelIO): number;
  /** Floats of every layer's output (the input included) in one forward pass of one h x w sample. */
  activationFloats(o: z.infer<S>, io: ModelIO, height: number, width: number): number;
  /**
   * Wasm heap bytes per activation float in a training step (kept for the backward pass,
   * gradients, the kernels' temporaries), measured with bench/memory.ts; default 16.
   */
  activationBytes?: number;
  /** Stock stand-ins for the project's layer classes this model uses, by class name. */
  portable: Record<string, PortableLayer>;
}

/** The `model:` keys every model has; the rest belong to the chosen model's schema. */
export const COMMON_MODEL_KEYS = ['name', 'in_channels', 'out_channels', 'encoder_weights'] as const;

// Models by file name in this folder; these files are not models.
const models = new FolderRegistry<ModelDefinition>(__dirname, new Set(['registry', 'model_checks']), (name, known) => `model.name '${name}' is not a registered model; registered: ${known.join(', ')}`);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registerModel<S extends z.ZodObject<any>>(d: ModelDefinition<S>): ModelDefinition<S> {
  models.register(d as unknown as ModelDefinition);
  return d;
}

/** Names of the models in this folder (and any registered from elsewhere). */
export function registeredModels(): string[] {
  return models.names();
}

export function getModelDefinition(name: string): ModelDefinition {
  return models.get(name);
}

/** The model-specific part of a validated config's `model:` section (defaults filled by parseConfig). */
export function modelOptions(cfg: Config): Record<string, unknown> {
  const rest: Record<string, unknown> = { ...cfg.model };
  for (const k of COMMON_MODEL_KEYS) delete rest[k];
  return rest;
}

export function modelIO(cfg: Config): ModelIO {
  return { inChannels: cfg.model.in_channels, outChannels: outChannels(cfg), seed: cfg.training.seed };
}

/** The configured model: its definition, its own options parsed by its schema, what it gets besides. */
export interface ResolvedModel {
  definition: ModelDefinition;
  options: Record<string, unknown>;
  io: ModelIO;
}

/** The model of a config validated by config/resolve.ts: derived once (config/resolve.ts resolveRun), for the helpers below. */
export function resolveModel(cfg: Config): ResolvedModel {
  const definition = getModelDefinition(cfg.model.name);
  return { definition, options: definition.options.parse(modelOptions(cfg)), io: modelIO(cfg) };
}

/** Builds the resolved model; a Config is resolved here first (tests, direct library use). */
export function getModel(model: ResolvedModel | Config): tf.LayersModel {
  const m = 'definition' in model ? model : resolveModel(model);
  return m.definition.build(m.options, m.io);
}

/** Trainable parameters of the model, without building it. */
export function modelParamCount(m: ResolvedModel): number {
  return m.definition.paramCount(m.options, m.io);
}

/** Wasm heap bytes per activation float of a training step of the model. */
export function modelActivationBytes(m: ResolvedModel): number {
  return m.definition.activationBytes ?? 16;
}

/** Activation floats of one forward pass of one sample of the model. */
export function modelActivationFloats(m: ResolvedModel, height: number, width: number): number {
  return m.definition.activationFloats(m.options, m.io, height, width);
}

/** Trainable parameters of a built model (what paramCount must equal). */
export function countTrainable(m: tf.LayersModel): number {
  return m.trainableWeights.reduce((s, w) => s + (w.shape as number[]).reduce((a, b) => a * b, 1), 0);
}

/**
 * The JSON topology of `m` with its input fixed at [batch, h, w, channels] (batch null:
 * any), from which tfjs builds a copy whose every layer has static shapes (export's
 * stand-ins, FLOP and activation counts).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function fixedSizeTopology(m: tf.LayersModel, height: number, width: number, batch: number | null = 1): any {
  const topo = JSON.parse(JSON.stringify(m.toJSON(null, false)));
  for (const l of topo.config.layers) {
    if (l.class_name === 'InputLayer') l.config.batch_input_shape = [batch, height, width, l.config.batch_input_shape[3]];
  }
  return topo;
}

/**
 * Floats of every layer's output for one sample at h x w, from a copy of `m` built at
 * that fixed size: what activationFloats must match (self-tests).
 */
export async function tracedActivationFloats(m: tf.LayersModel, height: number, width: number): Promise<number> {
  const fixed = await tf.models.modelFromJSON({ modelTopology: fixedSizeTopology(m, height, width) });
  let n = 0;
  for (const l of fixed.layers) {
    const shapes = (Array.isArray((l.outputShape as unknown[])[0]) ? l.outputShape : [l.outputShape]) as number[][];
    for (const s of shapes) n += s.slice(1).reduce((a, b) => a * b, 1);
  }
  fixed.dispose();
  return n;
}

export const selfTest: SelfTest = {
  'built-in models are found by file name'() {
    const names = registeredModels();
    assert.ok(names.includes('unet'), names.join(', '));
    for (const n of names) assert.equal(getModelDefinition(n).name, n);
  },
  async 'builds unet by name with outputs from the config'() {
    const { parseConfig } = await import('../config/resolve');
    const m = getModel(parseConfig({ model: { base: 4, depth: 2 }, data: { num_classes: 19 } }));
    assert.equal(m.outputs[0].shape[3], 19);
    m.dispose();
  },
  'unknown name lists the registered ones'() {
    assert.throws(() => getModelDefinition('segformer'), (e: Error) => e instanceof UserError && /'segformer' is not a registered model; registered: .*unet/.test(e.message));
    assert.throws(() => getModelDefinition('registry'), /is not a registered model/);
    assert.throws(() => getModelDefinition('../unet'), /is not a registered model/);
  },
};

runIfMain(module, selfTest);
