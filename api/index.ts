// The library: `import { train, evaluate, predict, loadModel, exportModel } from 'tfjs-semseg'`.
// Each takes a config (a YAML path or an object) and the commands' options, and returns
// results instead of printing them; the commands (train.ts, evaluate.ts, ...) call these.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';
import { registeredModels as models } from '../models/registry';

export { train } from './train';
export type { TrainOptions, TrainResult } from './train';
export { evaluate } from './evaluate';
export type { EvaluateOptions, EvaluateResult } from './evaluate';
export { predict, loadModel, SegmentationModel } from './predict';
export type { Mask, LoadOptions, SegmentOptions, PredictApiOptions as PredictOptions, Prediction } from './predict';
export { exportModel } from './export';
export type { ExportOptions, ExportResult } from './export';
export { resolveConfig } from './options';
export type { ConfigInput, ConfigSource, CommonOptions } from './options';
export type { Config } from '../utils/config';
export { registeredDatasets } from '../loaders/registry';

/** The names `model.name` takes. (A wrapper: the registry's declarations bring tfjs-layers' own, which are not strict-clean.) */
export function registeredModels(): string[] {
  return models();
}
export { UserError } from '../utils/errors';

// Not exported: the library's door carries no test code (runIfMain keeps it for the self-test run).
const selfTest: SelfTest = {
  async 'the five entry points are functions'() {
    const api = await import('./index');
    for (const f of ['train', 'evaluate', 'predict', 'loadModel', 'exportModel'] as const) assert.equal(typeof api[f], 'function', f);
  },
};

runIfMain(module, selfTest);
