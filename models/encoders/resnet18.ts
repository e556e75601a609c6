// Encoder 'resnet18': torchvision's ResNet-18 without its head (resnet.ts builds it).
import assert from 'node:assert/strict';
import { registerEncoder } from './index';
import { resnet18 } from './resnet';
import { runIfMain, SelfTest } from '../../utils/self_test';

registerEncoder(resnet18);

export const selfTest: SelfTest = {
  'registered under its file name with its stage widths'() {
    assert.equal(resnet18.name, 'resnet18');
    assert.deepEqual(resnet18.channels, [64, 64, 128, 256, 512]);
  },
};

runIfMain(module, selfTest);
