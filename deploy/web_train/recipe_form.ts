// The training page's recipe form: the settings a user changes most (model, classes, size,
// epochs, batch, loss, optimizer, learning rate, schedule, seed), each an edit of the YAML
// config, which stays the one text that trains, is saved and is downloaded. Choices come from
// the registries, so a part added as one file appears here too. The edits are pure functions
// on the config text, self-tested in Node; mountRecipeForm builds the fields in the page.
import assert from 'node:assert/strict';
import yaml from 'js-yaml';
import { Config } from '../../utils/config';
import { parseYamlText } from '../../utils/config_files';
import { UserError } from '../../utils/errors';
import { COMMON_MODEL_KEYS, registeredModels } from '../../models/registry';
import { registeredLosses } from '../../training/losses';
import { registeredOptimizers } from '../../training/optimizers';
import { registeredSchedules } from '../../training/lr_schedule';
import { runIfMain, SelfTest } from '../../utils/self_test';

type Raw = Record<string, unknown>;

export interface FormField {
  key: string; // dotted config key
  label: string;
  kind: 'choice' | 'integer' | 'number' | 'size' | 'text';
  choices?: string[]; // a choice's options, or a text's suggestions
  /** A part's name: changing it leaves its section `{ name }` (+ `keep`), as its other keys belong to the old part. */
  part?: { keep: string[] };
}

/** The form's fields; the choices are the registered parts' names. */
export function recipeFields(): FormField[] {
  const losses = registeredLosses();
  return [
    { key: 'model.name', label: 'Model', kind: 'choice', choices: registeredModels(), part: { keep: [...COMMON_MODEL_KEYS] } },
    { key: 'data.num_classes', label: 'Classes', kind: 'integer' },
    { key: 'data.size', label: 'Input size (H x W)', kind: 'size' },
    { key: 'training.epochs', label: 'Epochs', kind: 'integer' },
    { key: 'training.batch_size', label: 'Batch size', kind: 'integer' },
    // A loss is a name or a sum of names (bce+dice): a text with the names suggested. Its
    // `weights` are per term of the old sum, so they go; class weights stay.
    { key: 'training.loss.name', label: 'Loss', kind: 'text', choices: [...losses, ...['bce+dice', 'ce+dice'].filter((c) => c.split('+').every((n) => losses.includes(n)))], part: { keep: ['class_weights'] } },
    { key: 'training.optimizer.name', label: 'Optimizer', kind: 'choice', choices: registeredOptimizers(), part: { keep: ['lr', 'weight_decay', 'lr_mult'] } },
    { key: 'training.optimizer.lr', label: 'Learning rate', kind: 'number' },
    { key: 'training.lr_schedule.name', label: 'LR schedule', kind: 'choice', choices: registeredSchedules(), part: { keep: ['warmup_iters', 'warmup_ratio'] } },
    { key: 'training.seed', label: 'Seed', kind: 'integer' },
  ];
}

function get(obj: unknown, key: string): unknown {
  return key.split('.').reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Raw)[k] : undefined), obj);
}

/** The fields' values in the validated config, as the form shows them. */
export function formValues(cfg: Config, fields: FormField[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of fields) {
    const v = get(cfg, f.key);
    out[f.key] = f.kind === 'size' && Array.isArray(v) ? v.join('x') : v === undefined || v === null ? '' : String(v);
  }
  return out;
}

/** The form's text as the config's value; one line naming the field when it is not one. */
function parseValue(f: FormField, text: string): unknown {
  const t = text.trim();
  if (f.kind === 'integer' || f.kind === 'number') {
    const n = Number(t);
    if (t === '' || !Number.isFinite(n) || (f.kind === 'integer' && !Number.isInteger(n))) throw new UserError(`${f.label} (${f.key}): '${text}' is not ${f.kind === 'integer' ? 'a whole number' : 'a number'}`);
    return n;
  }
  if (f.kind === 'size') {
    const m = /^(\d+)\s*[x×,]\s*(\d+)$/i.exec(t);
    if (!m) throw new UserError(`${f.label} (${f.key}): '${text}' is not a size such as 64x64 (height x width)`);
    return [Number(m[1]), Number(m[2])];
  }
  return t;
}

/**
 * The config text with one field set, dumped back as YAML (comments are not kept: js-yaml
 * reads none). The schema checks the result as it checks any text, so the form can never
 * accept what a pasted config could not.
 */
export function applyField(text: string, f: FormField, value: string): string {
  const raw = { ...parseYamlText(text, 'config.yaml') } as Raw;
  const keys = f.key.split('.');
  let o = raw;
  for (const k of keys.slice(0, -1)) {
    const next = o[k];
    o[k] = next && typeof next === 'object' && !Array.isArray(next) ? { ...(next as Raw) } : {};
    o = o[k] as Raw;
  }
  const last = keys[keys.length - 1];
  const v = parseValue(f, value);
  if (f.part && o[last] !== v) {
    for (const k of Object.keys(o)) if (k !== last && !f.part.keep.includes(k)) delete o[k];
  }
  o[last] = v;
  return yaml.dump(raw, { flowLevel: 2, lineWidth: 120, noRefs: true });
}

/**
 * Builds the form in `box` (browser only): a choice, number or text field per setting, each
 * change written into the config text through `text` (a value it cannot take goes to
 * `onError`, the text unchanged). Returns `show`, which fills the fields from a validated config.
 */
export function mountRecipeForm(box: HTMLElement, text: { get(): string; set(text: string): void }, onError: (message: string) => void): (cfg: Config) => void {
  const fields = recipeFields();
  const fieldId = (key: string) => `form-${key.replace(/\./g, '-')}`;
  for (const f of fields) {
    const label = document.createElement('label');
    label.textContent = f.label;
    label.htmlFor = fieldId(f.key);
    let input: HTMLInputElement | HTMLSelectElement;
    if (f.kind === 'choice') {
      input = document.createElement('select');
      for (const c of f.choices!) input.add(new Option(c, c));
    } else {
      input = document.createElement('input');
      input.type = f.kind === 'integer' || f.kind === 'number' ? 'number' : 'text';
      if (f.kind === 'number') input.step = 'any';
      if (f.choices) {
        const list = document.createElement('datalist');
        list.id = `${fieldId(f.key)}-choices`;
        for (const c of f.choices) list.append(new Option(c, c));
        box.append(list);
        input.setAttribute('list', list.id);
      }
    }
    input.id = fieldId(f.key);
    input.addEventListener('change', () => {
      let next: string;
      try {
        next = applyField(text.get(), f, input.value);
      } catch (e) {
        return onError((e as Error).message);
      }
      text.set(next);
    });
    box.append(label, input);
  }
  return (cfg) => {
    const values = formValues(cfg, fields);
    for (const f of fields) (box.querySelector(`#${fieldId(f.key)}`) as HTMLInputElement).value = values[f.key];
  };
}

export const selfTest: SelfTest = {
  async 'each field edits the YAML, the schema checks it, and a part change drops the old part\'s keys'() {
    require('../../config/resolve'); // the registries, as the page's registry_entries loads them
    const { parseConfig } = await import('../../config/resolve');
    const fields = recipeFields();
    const field = (k: string) => fields.find((f) => f.key === k)!;
    assert.ok(field('model.name').choices!.includes('deeplabv3plus') && field('training.optimizer.name').choices!.includes('adamw'));
    assert.ok(field('training.loss.name').choices!.includes('bce+dice'));
    let text = 'name: w\nmodel: { name: unet, base: 8, depth: 3, encoder_weights: null }\ndata: { num_classes: 2, size: [64, 64] }\ntraining: { optimizer: { name: adam, lr: 0.003 } }\n';
    text = applyField(text, field('data.size'), '96 x 128');
    text = applyField(text, field('training.optimizer.lr'), '0.01');
    text = applyField(text, field('training.optimizer.name'), 'sgd');
    text = applyField(text, field('model.name'), 'fpn');
    const cfg = parseConfig(parseYamlText(text, 'config.yaml'), 'config.yaml');
    assert.deepEqual([cfg.model.name, cfg.data.size, cfg.training.optimizer.name, cfg.training.optimizer.lr], ['fpn', [96, 128], 'sgd', 0.01]);
    assert.equal((cfg.model as Raw).base, undefined, "unet's base went with unet");
    assert.ok('encoder_weights' in ((parseYamlText(text, 'c') as Raw).model as Raw), 'a key every model has stays');
    const shown = formValues(cfg, fields);
    assert.deepEqual([shown['data.size'], shown['model.name'], shown['training.epochs']], ['96x128', 'fpn', String(cfg.training.epochs)]);
    // The same name again keeps the part's keys.
    assert.match(applyField('model: { name: unet, base: 4 }', field('model.name'), 'unet'), /base: 4/);
    assert.throws(() => applyField(text, field('training.epochs'), 'five'), (e: Error) => e instanceof UserError && e.message === "Epochs (training.epochs): 'five' is not a whole number");
    assert.throws(() => applyField(text, field('data.size'), '64'), /not a size such as 64x64/);
    assert.throws(() => applyField('model: [', field('model.name'), 'fpn'), UserError);
  },
};

runIfMain(module, selfTest);
