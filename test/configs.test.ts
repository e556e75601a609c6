// Every shipped config validates against the schema and names a registered model and loader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../config/resolve';
import { registeredModels } from '../models/registry';
import { registeredDatasets } from '../loaders/registry';

const dir = path.resolve(__dirname, '..', '..', 'configs');
const root = fs.existsSync(dir) ? dir : path.resolve(__dirname, '..', 'configs'); // compiled or under tsx

for (const file of fs.readdirSync(root).filter((f) => f.endsWith('.yaml'))) {
  test(`configs/${file} is valid`, () => {
    const cfg = loadConfig(path.join(root, file));
    assert.ok(registeredModels().includes(cfg.model.name), cfg.model.name);
    assert.ok(registeredDatasets().includes(cfg.data.name), cfg.data.name);
    assert.equal(cfg.name, path.basename(file, '.yaml'));
  });
}

test('the configs the README names are all there', () => {
  for (const name of ['demo', 'isic', 'cityscapes', 'camvid']) assert.ok(fs.existsSync(path.join(root, `${name}.yaml`)), name);
});
