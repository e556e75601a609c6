// Encoder 'resnet34': torchvision's ResNet-34 without its head (resnet.ts builds it).
import assert from 'node:assert/strict';
import { registerEncoder } from './index';
import { resnet34 } from './resnet';
import { runIfMain, SelfTest } from '../../utils/self_test';

registerEncoder(resnet34);

export const selfTest: SelfTest = {
  'registered under its file name with its stage widths'() {
    assert.equal(resnet34.name, 'resnet34');
    assert.deepEqual(resnet34.channels, [64, 64, 128, 256, 512]);
  },
};

runIfMain(module, selfTest);
