// The page's config from picked YAML files: the config and the files its `extends:` names,
// picked together (a page cannot read a path). Composed with the rules of utils/config_files.ts
// composeConfig (its mergeConfigs and parseYamlText, the same one-line errors), but a base is
// looked up among the picked files by its file name, not resolved as a path. The page then
// shows the composed config, so what it trains, saves and exports is one text.
import assert from 'node:assert/strict';
import yaml from 'js-yaml';
import { mergeConfigs, parseYamlText } from '../../utils/config_files';
import { UserError } from '../../utils/errors';
import { runIfMain, SelfTest } from '../../utils/self_test';

type Raw = Record<string, unknown>;
export interface PickedText { name: string; text: string }

const baseName = (p: string) => p.split(/[\\/]/).pop()!;

function compose(name: string, byName: Map<string, string>, chain: string[]): Raw {
  if (chain.includes(name)) throw new UserError(`${name}: extends itself through ${[...chain.slice(chain.indexOf(name)), name].join(' -> ')}`);
  const text = byName.get(name);
  if (text === undefined) throw new UserError(`${chain[chain.length - 1]}: key 'extends' names ${name}, which was not picked with it; pick the config and the files it extends together`);
  const own = { ...parseYamlText(text, name) };
  const ext = own.extends;
  delete own.extends;
  if (ext === undefined || ext === null) return own;
  const bases = typeof ext === 'string' ? [ext] : Array.isArray(ext) && ext.length && ext.every((e) => typeof e === 'string') ? (ext as string[]) : null;
  if (!bases) throw new UserError(`${name}: key 'extends' has ${JSON.stringify(ext)}; expected a config file or a list of them`);
  let merged: Raw = {};
  for (const b of bases) merged = mergeConfigs(merged, compose(baseName(b), byName, [...chain, name]));
  return mergeConfigs(merged, own);
}

/**
 * The picked files' config as YAML text: the one file no other picked file extends, with what
 * it extends merged under it (a header comment names the files). One file without `extends` is
 * returned as it is.
 */
export function composePicked(files: PickedText[]): string {
  if (files.length === 1 && !/^extends\s*:/m.test(files[0].text)) return files[0].text;
  const byName = new Map(files.map((f) => [baseName(f.name), f.text]));
  const extended = new Set<string>();
  for (const f of files) {
    const ext = parseYamlText(f.text, f.name).extends;
    for (const e of typeof ext === 'string' ? [ext] : Array.isArray(ext) ? ext : []) if (typeof e === 'string') extended.add(baseName(e));
  }
  const tops = [...byName.keys()].filter((n) => !extended.has(n));
  if (tops.length !== 1) throw new UserError(`picked ${files.map((f) => f.name).join(', ')}: expected one config and the files it extends, found ${tops.length ? `${tops.length} configs no other extends (${tops.join(', ')})` : 'each extended by another'}`);
  const raw = compose(tops[0], byName, []);
  return `# ${tops[0]} with what it extends (${[...byName.keys()].filter((n) => n !== tops[0]).join(', ')}), composed by the page\n${yaml.dump(raw, { lineWidth: 120 })}`;
}

export const selfTest: SelfTest = {
  'a config and its picked bases compose as composeConfig does; what is missing or circular is one line'() {
    const base = { name: 'configs/base.yaml', text: 'model: { name: unet, base: 8 }\ntraining: { epochs: 3, batch_size: 4 }\n' };
    const child = { name: 'child.yaml', text: 'extends: ../configs/base.yaml\nname: c\ntraining: { epochs: 5 }\n' };
    const out = yaml.load(composePicked([base, child])) as Raw;
    assert.deepEqual(out, { model: { name: 'unet', base: 8 }, training: { epochs: 5, batch_size: 4 }, name: 'c' });
    assert.match(composePicked([child, base]), /^# child\.yaml with what it extends \(base\.yaml\), composed by the page\n/);
    assert.equal(composePicked([base]), base.text);
    assert.throws(() => composePicked([child]), (e: Error) => e instanceof UserError && e.message === "child.yaml: key 'extends' names base.yaml, which was not picked with it; pick the config and the files it extends together");
    assert.throws(() => composePicked([{ name: 'a.yaml', text: 'extends: b.yaml\n' }, { name: 'b.yaml', text: 'extends: a.yaml\n' }]), /each extended by another/);
    assert.throws(() => composePicked([{ name: 'a.yaml', text: 'extends: b.yaml\n' }, { name: 'b.yaml', text: 'extends: c.yaml\n' }, { name: 'c.yaml', text: 'extends: b.yaml\n' }]), /^UserError: b\.yaml: extends itself through b\.yaml -> c\.yaml -> b\.yaml$/);
    assert.throws(() => composePicked([base, { name: 'x.yaml', text: 'a: 1\n' }]), /expected one config and the files it extends, found 2 configs no other extends/);
  },
};

runIfMain(module, selfTest);
