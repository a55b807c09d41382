#!/usr/bin/env node
// Reads a log back through the Node package's API (not its command line)
// and prints the result as JSON, for the cross-language tests:
//
//     node read_node.cjs verify LOG_DIR [TRUSTED_PUB.pem]   # audit.verify()
//     node read_node.cjs show LOG_DIR TRACE_ID              # audit.showTrace()
//     node read_node.cjs traces LOG_DIR                     # audit.listTraces()
'use strict';
const path = require('node:path');
const audit = require(path.join(__dirname, '..', '..', 'node'));

async function main() {
  const [cmd, dir, arg] = process.argv.slice(2);
  let out;
  if (cmd === 'verify') {
    out = await audit.verify(dir, arg ? { trustedKeys: [arg] } : {});
  } else if (cmd === 'show') {
    out = await audit.showTrace(dir, arg);
  } else if (cmd === 'traces') {
    out = await audit.listTraces(dir);
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
  process.exitCode = 2;
});
