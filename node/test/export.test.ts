// init({ export }): the exporter thread next to the writer ships the log
// through a real `nats-server -js` to the collector (`npx agent-audit
// collect`), whose central log holds every local record and verifies; with
// the broker down, the agent's calls and its shutdown do not wait for it.
// Needs nats-server (scripts/test.sh installs it).
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as audit from 'agent-audit';
import { checkLog, readRecords, tempLogDir, PACKAGE_DIR, type Rec } from './helpers';

const BIN = path.join(PACKAGE_DIR, 'bin', 'agent-audit.cjs');

function natsBinary(): string {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  const found = [...dirs.map((d) => path.join(d, 'nats-server')), '/usr/sbin/nats-server', '/usr/bin/nats-server']
    .find((p) => { try { fs.accessSync(p, fs.constants.X_OK); return true; } catch { return false; } });
  if (!found) {
    throw new Error('nats-server is not installed: these tests need a real NATS server with JetStream ' +
      '(Debian: `apt-get install nats-server`; scripts/test.sh installs it)');
  }
  return found;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

let nats: ChildProcess | undefined;
let natsUrl = '';

before(async () => {
  const dir = tempLogDir('nats');
  const port = await freePort();
  const log = path.join(dir, 'nats-server.log');
  nats = spawn(natsBinary(), ['-js', '-sd', path.join(dir, 'jetstream'), '-a', '127.0.0.1', '-p', String(port), '-l', log],
    { stdio: 'ignore' });
  const deadline = Date.now() + 20_000;
  for (;;) {
    const text = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
    if (text.includes('Server is ready')) break;
    assert.equal(nats.exitCode, null, `nats-server exited: ${text}`);
    assert.ok(Date.now() < deadline, 'nats-server did not become ready');
    await new Promise((r) => setTimeout(r, 20));
  }
  natsUrl = `nats://127.0.0.1:${port}`;
});

after(() => {
  nats?.kill('SIGKILL');
});

function keypair(label: string): { key: string; pub: string } {
  const dir = tempLogDir(label);
  const key = path.join(dir, 'writer.pem');
  const pub = path.join(dir, 'writer.pub.pem');
  const r = spawnSync(process.execPath, [BIN, 'keygen', '--out', key, '--public-out', pub], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return { key, pub };
}

async function runAgent(): Promise<unknown[]> {
  const lookup = audit.tool('orders.lookup', async (orderId: string) => ({ orderId, status: 'shipped' }));
  const refund = audit.tool('refund.issue', (orderId: string, amount: number) => `refunded ${amount} on ${orderId}`, { version: '1.2.0' });
  return audit.trace('customer_support_resolution', { userId: 'u_abc', input: 'where is my order?' }, async () => {
    const out: unknown[] = [];
    for (let i = 0; i < 5; i++) out.push(await lookup(`o-${i}`));
    out.push(refund('o-3', 12.5));
    return out;
  });
}

function lines(streamDir: string): string[] {
  return fs.readdirSync(streamDir).filter((f) => f.startsWith('seg-')).sort()
    .flatMap((f) => fs.readFileSync(path.join(streamDir, f), 'utf8').split('\n').filter((l) => l.trim()));
}

test('export ships every record to a central log that verifies', async () => {
  const local = tempLogDir('export');
  const central = tempLogDir('central');
  const { key, pub } = keypair('export-key');
  const info = audit.init({ dir: local, signingKey: key, tenantId: 'acme', agentId: 'agent-1', export: natsUrl });
  assert.notEqual(audit.exportStats(), null);
  const out = await runAgent();
  assert.equal(out.at(-1), 'refunded 12.5 on o-3');
  assert.equal(await audit.shutdown(10_000), true);

  const records = readRecords(local);
  await checkLog(local);
  const stats = audit.exportStats();
  assert.ok(stats);
  assert.equal(stats.exporter, 'nats');
  assert.equal(stats.state, 'stopped');
  assert.equal(stats.caughtUp, true, JSON.stringify(stats));
  // Every local record was acknowledged by JetStream, each once.
  assert.equal(stats.shipped, records.length);
  assert.equal(stats.consecutiveFailures, 0);
  assert.ok(fs.existsSync(path.join(local, '.ship-cursor.nats.json')));

  const collect = spawnSync(process.execPath,
    [BIN, 'collect', '--from', natsUrl, '--to', central, '--trust', pub, '--until-idle', '1.5'],
    { encoding: 'utf8', timeout: 120_000 });
  assert.equal(collect.status, 0, collect.stderr);

  // Filed under its tenant and retention class; other streams may share
  // the broker, so look at ours.
  const partition = path.join(central, 'acme', 'standard_7y');
  const streamDir = path.join(partition, info.streamId);
  assert.ok(fs.existsSync(streamDir), fs.readdirSync(partition).join(', '));
  // Every record of the local stream, byte for byte, in order.
  assert.deepEqual(lines(streamDir), lines(path.join(local, info.streamId)));
  const tools = (recs: Rec[]) => recs.filter((r) => r.kind === 'tool_call');
  assert.deepEqual(tools(readRecords(partition)), tools(records));
  assert.equal(tools(records).length, 6);

  const verify = spawnSync(process.execPath, [BIN, 'verify', partition], { encoding: 'utf8' });
  assert.equal(verify.status, 0, verify.stdout + verify.stderr);
  const report = await audit.verify(partition, { trustedKeys: [pub] });
  assert.equal(report.tampered, false);
  const ours = report.streams.filter((s) => s.stream_id === info.streamId);
  assert.equal(ours.length, 1);
  assert.equal(ours[0]!.status, 'clean');
});

test('a broker that is down slows neither the agent nor its shutdown', async () => {
  const local = tempLogDir('export-down');
  const down = `nats://127.0.0.1:${await freePort()}`; // nothing listens there
  audit.init({ dir: local, signingKey: keypair('export-down-key').key, tenantId: 'acme', export: down });
  let t = Date.now();
  const out = await runAgent();
  assert.ok(Date.now() - t < 1000, `the calls took ${Date.now() - t} ms`);
  assert.deepEqual(out[0], { orderId: 'o-0', status: 'shipped' });

  // The stream closes at once; the drain of the exporter, which cannot
  // reach the broker, ends at the shutdown's bound.
  t = Date.now();
  assert.equal(await audit.shutdown(2000), true);
  const took = Date.now() - t;
  assert.ok(took < 5000, `shutdown took ${took} ms`);
  const stats = audit.exportStats();
  assert.ok(stats);
  assert.equal(stats.shipped, 0);
  assert.equal(stats.caughtUp, false);
  // The local log, the write-ahead log, is complete and verifies.
  const recs = await checkLog(local);
  assert.equal(recs.filter((r) => r.kind === 'tool_call').length, 6);
});

test('a bad export URL is a ConfigError and opens nothing', () => {
  const dir = tempLogDir('export-bad');
  for (const bad of ['ftp://host:21', '127.0.0.1:4222', 'nats://host:notaport']) {
    assert.throws(() => audit.init({ dir, export: bad }), (e: unknown) =>
      e instanceof audit.ConfigError && /export/.test(e.message));
  }
  assert.equal(audit.isInitialized(), false);
  assert.deepEqual(fs.readdirSync(dir), []);
});
