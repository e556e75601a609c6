// A config section that names parts of one kind (`training.loss`, `training.optimizer`,
// `training.lr_schedule`): beside the keys every part of the kind has, each part owns
// its keys, declared by its own zod schema with defaults. Checked when the config is
// read, so a misspelt name or option is one line naming the key before any data is read.
import assert from 'node:assert/strict';
import { z } from 'zod';
import { formatIssues } from './config';
import { UserError } from './errors';
import { runIfMain, SelfTest } from './self_test';

/** What a registry entry of a pluggable kind declares about its options. */
export interface PartWithOptions {
  name: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  options: z.ZodObject<any>;
}

export interface PartKind<P extends PartWithOptions> {
  /** e.g. 'loss', for the messages. */
  kind: string;
  /** The section's path, e.g. ['training', 'loss']. */
  at: string[];
  /** The section's keys every part has (validated by the config schema). */
  common: readonly string[];
  /** The entry of a name; throws a UserError listing the registered names. */
  get(name: string): P;
  /** Every registered name: keys of parts not chosen are accepted (saved configs carry every default). */
  names(): string[];
}

/**
 * The section with the chosen parts' own keys parsed by their schemas (defaults filled).
 * `names`: the chosen parts (a loss may be a sum of several). A key no chosen part owns is
 * refused unless another part of the kind owns it: configs saved by earlier versions hold
 * every option, and such a key never had an effect; it is dropped.
 */
export function resolvePartSection<P extends PartWithOptions>(k: PartKind<P>, section: Record<string, unknown>, names: string[], source: string, raw: unknown): { section: Record<string, unknown>; parts: P[] } {
  const key = (s: string) => [...k.at, s].join('.');
  const parts = names.map((n) => {
    try {
      return k.get(n);
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      const why = err.message.replace(/^[^']*'[^']*' /, '');
      throw new UserError(`${source}: key '${key('name')}' has ${JSON.stringify(section.name)}; '${n}' ${why}`);
    }
  });
  const own = Object.keys(section).filter((s) => !k.common.includes(s));
  const owned = new Set(parts.flatMap((p) => Object.keys(p.options.shape)));
  const foreign = own.filter((s) => !owned.has(s));
  if (foreign.length) {
    const others = new Set(k.names().flatMap((n) => Object.keys(k.get(n).options.shape)));
    const unknown = foreign.find((s) => !others.has(s));
    if (unknown !== undefined) {
      const theirs = [...owned].sort().join(', ') || 'none';
      throw new UserError(`${source}: unknown key '${key(unknown)}' (check the spelling; ${k.kind} '${names.join('+')}' takes ${theirs}, every ${k.kind} ${k.common.join(', ')})`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const c of k.common) if (section[c] !== undefined) out[c] = section[c];
  for (const p of parts) {
    const mine = Object.fromEntries(Object.keys(p.options.shape).filter((s) => section[s] !== undefined).map((s) => [s, section[s]]));
    const res = p.options.strict().safeParse(mine);
    if (!res.success) throw new UserError(formatIssues(source, raw, res.error.issues.map((i) => ({ ...i, path: [...k.at, ...i.path] }))));
    Object.assign(out, res.data);
  }
  return { section: out, parts };
}

/** A part's own options from a section resolved by resolvePartSection (its defaults already filled). */
export function partOptions<P extends PartWithOptions>(part: P, section: Record<string, unknown>): z.infer<P['options']> {
  return part.options.parse(Object.fromEntries(Object.keys(part.options.shape).filter((s) => section[s] !== undefined).map((s) => [s, section[s]])));
}

export const selfTest: SelfTest = {
  'own keys parsed with defaults; a key no part owns is one line naming it; other parts\' keys dropped'() {
    const parts: Record<string, PartWithOptions> = {
      a: { name: 'a', options: z.object({ x: z.number().default(1) }) },
      b: { name: 'b', options: z.object({ y: z.boolean().default(false) }) },
    };
    const k: PartKind<PartWithOptions> = {
      kind: 'thing',
      at: ['s', 't'],
      common: ['name'],
      get: (n) => parts[n] ?? (() => { throw new UserError(`s.t.name '${n}' is not a registered thing; registered: a, b`); })(),
      names: () => Object.keys(parts),
    };
    const { section } = resolvePartSection(k, { name: 'a', y: true }, ['a'], 'x.yaml', {});
    assert.deepEqual(section, { name: 'a', x: 1 });
    assert.deepEqual(partOptions(parts.a, section), { x: 1 });
    assert.throws(() => resolvePartSection(k, { name: 'a', z: 1 }, ['a'], 'x.yaml', {}), /^UserError: x\.yaml: unknown key 's\.t\.z' \(check the spelling; thing 'a' takes x, every thing name\)$/);
    assert.throws(() => resolvePartSection(k, { name: 'c' }, ['c'], 'x.yaml', {}), /^UserError: x\.yaml: key 's\.t\.name' has "c"; 'c' is not a registered thing; registered: a, b$/);
    assert.throws(() => resolvePartSection(k, { name: 'a', x: 'no' }, ['a'], 'x.yaml', { s: { t: { x: 'no' } } }), /x\.yaml: key 's\.t\.x' has "no"; expected number/);
  },
};

runIfMain(module, selfTest);
