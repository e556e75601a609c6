// Things registered by name, each declared in a file of one folder named after it
// (datasets in loaders/, models in models/): a name's file is loaded on first use and
// registers itself, so adding one needs no list or switch edited anywhere.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { UserError } from './errors';
import { runIfMain, SelfTest } from './self_test';

const ext = path.extname(__filename); // .ts under tsx, .js compiled: the same for the folders' files

// The browser bundle (deploy/web_train/bundle.ts) has no folders to read: it imports every
// entry file at build time, from the list entryFiles() gives, and sets this flag first.
const isStatic = () => (globalThis as { __semsegStaticRegistries?: boolean }).__semsegStaticRegistries === true;

/** Every registry made so far (the browser bundle's build lists their entry files). */
export const allRegistries: FolderRegistry<{ name: string }>[] = [];

export class FolderRegistry<T extends { name: string }> {
  private readonly items = new Map<string, T>();

  /**
   * `dir`: the folder; `notEntries`: its files that are not entries; `unknown(name, known)`:
   * the one-line message for a name that is neither registered nor a file there.
   */
  constructor(private readonly dir: string, private readonly notEntries: Set<string>, private readonly unknown: (name: string, known: string[]) => string) {
    allRegistries.push(this as unknown as FolderRegistry<{ name: string }>);
  }

  /** The folder and the paths of its entry files (the browser bundle imports each). */
  entryFiles(): { dir: string; files: string[] } {
    return { dir: this.dir, files: this.fileNames().map((n) => this.fileOf(n)).filter((f): f is string => f !== null) };
  }

  private fileNames(): string[] {
    return fs.readdirSync(this.dir).filter((f) => f.endsWith(ext) && !f.endsWith('.d.ts')).map((f) => f.slice(0, -ext.length));
  }

  register(item: T): void {
    this.items.set(item.name, item);
  }

  /** Forgets a registered entry (self-tests that register their own). */
  remove(name: string): void {
    this.items.delete(name);
  }

  private fileOf(name: string): string | null {
    if (isStatic() || !/^[a-z][a-z0-9_]*$/.test(name) || this.notEntries.has(name)) return null;
    const f = path.join(this.dir, name + ext);
    return fs.existsSync(f) ? f : null;
  }

  /** Names of the entries in the folder and any registered from elsewhere, sorted. */
  names(): string[] {
    const files = isStatic() ? [] : this.fileNames();
    return [...new Set([...files.filter((n) => this.fileOf(n)), ...this.items.keys()])].sort();
  }

  get(name: string): T {
    if (!this.items.has(name)) {
      const file = this.fileOf(name);
      if (file) require(file); // registers itself
    }
    const d = this.items.get(name);
    if (!d) throw new UserError(this.unknown(name, this.names()));
    return d;
  }
}

export const selfTest: SelfTest = {
  'entries come from file names; others register; unknown names get the message'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freg-'));
    const reg = new FolderRegistry<{ name: string }>(dir, new Set(['helpers']), (n, known) => `no '${n}'; known: ${known.join(', ')}`);
    const registerFile = path.join(dir, 'regs.cjs');
    fs.writeFileSync(registerFile, '');
    for (const f of ['alpha', 'helpers', 'Bad-Name']) fs.writeFileSync(path.join(dir, f + ext), `require(${JSON.stringify(registerFile)}).register({ name: '${f}' });`);
    require.cache[require.resolve(registerFile)] = { exports: reg } as NodeModule;
    reg.register({ name: 'zeta' });
    assert.deepEqual(reg.names(), ['alpha', 'zeta']);
    assert.equal(reg.get('alpha').name, 'alpha');
    assert.throws(() => reg.get('helpers'), (e: Error) => e instanceof UserError && e.message === "no 'helpers'; known: alpha, zeta");
    assert.throws(() => reg.get('../alpha'), /no '\.\.\/alpha'/);
    assert.deepEqual(reg.entryFiles(), { dir, files: [path.join(dir, 'alpha' + ext)] });
    assert.ok(allRegistries.includes(reg as FolderRegistry<{ name: string }>));
    reg.remove('zeta');
    assert.deepEqual(reg.names(), ['alpha']);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
