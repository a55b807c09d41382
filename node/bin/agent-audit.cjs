#!/usr/bin/env node
// `npx agent-audit …`: the same command-line code as the Rust binary
// (agent_audit_cli::run_cli), called through the native module.
'use strict';
const native = require('../src/native.js');
process.exitCode = native.runCli(['agent-audit', ...process.argv.slice(2)]);
