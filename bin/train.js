#!/usr/bin/env node
// Launcher for the compiled command (npm install builds dist/ through its prepare script).
require('../dist/train.js');
