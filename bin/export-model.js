#!/usr/bin/env node
// Launcher for the compiled export command (npm install builds dist/ through its prepare
// script). Named export-model: `npx export` would run the shell's `export` builtin.
require('../dist/export.js');
