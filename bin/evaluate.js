#!/usr/bin/env node
// Launcher for the compiled command (dist/ is built by npm install in a clone, and shipped in the package).
require('../dist/evaluate.js');
