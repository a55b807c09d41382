// The binding's conversion of JS values (what emit stores) and its errors.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as audit from 'agent-audit';

const conv = (v: unknown) => audit.toAuditValue(v) as any;

test('numbers: integers exact, non-finite marked, bigint as decimal string', () => {
  assert.deepEqual(conv([1, -0, 1.5, 2 ** 53 + 2, NaN, Infinity, -Infinity, 10n ** 30n]), [
    1, 0, 1.5, 9007199254740994, { $float: 'NaN' }, { $float: 'Infinity' }, { $float: '-Infinity' },
    '1000000000000000000000000000000',
  ]);
});

test('null, undefined, booleans, strings, dates', () => {
  assert.deepEqual(conv({ a: null, b: undefined, c: true, d: 'é', e: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)), f: new Date(NaN) }), {
    a: null, c: true, d: 'é', e: '2026-01-02T03:04:05.006Z', f: { $date: 'Invalid Date' },
  });
  assert.deepEqual(conv([undefined]), [null]);
});

test('bytes are a bounded preview with their length', () => {
  const small = conv(Buffer.from('hello'));
  assert.deepEqual(small, { $type: 'Buffer', byteLength: 5, base64: Buffer.from('hello').toString('base64') });
  const big = conv(new Uint8Array(5000).fill(7));
  assert.equal(big.$type, 'Uint8Array');
  assert.equal(big.byteLength, 5000);
  assert.equal(big.truncated, true);
  assert.equal(Buffer.from(big.base64, 'base64').length, 1024);
  assert.equal(conv(new Float64Array(4)).byteLength, 32);
  assert.equal(conv(new ArrayBuffer(3)).byteLength, 3);
});

test('Map, Set, class instances, errors, functions, symbols', () => {
  class Order { id = 7; #secret = 1; get total() { return this.#secret; } }
  assert.deepEqual(conv(new Map<unknown, unknown>([['k', 1], [2, { x: NaN }]])), { $type: 'Map', entries: [['k', 1], [2, { x: { $float: 'NaN' } }]] });
  assert.deepEqual(conv(new Set([1, 'a'])), { $type: 'Set', values: [1, 'a'] });
  assert.deepEqual(conv(new Order()), { $type: 'Order', id: 7 });
  const err = Object.assign(new TypeError('bad input'), { code: 'E_BAD' });
  assert.deepEqual(conv(err), { $type: 'TypeError', name: 'TypeError', message: 'bad input', code: 'E_BAD' });
  assert.deepEqual(conv(function namedFn() {}), { $type: 'function', name: 'namedFn' });
  assert.deepEqual(conv(Symbol('s')), { $type: 'symbol' });
  assert.deepEqual(conv(Object.create(null)), {});
});

test('cycles are marked, shared references are copied, depth is capped', () => {
  const a: any = { name: 'a' };
  a.self = a;
  const shared = { v: 1 };
  assert.deepEqual(conv({ a, l: shared, r: shared }), { a: { name: 'a', self: { $cycle: true } }, l: { v: 1 }, r: { v: 1 } });
  let deep: any = {};
  const root = deep;
  for (let i = 0; i < 200; i++) deep = deep.x = {};
  let v = conv(root);
  let depth = 0;
  while (v.x) { v = v.x; depth++; }
  assert.equal(depth, 64);
  assert.deepEqual(v, { $truncated: { reason: 'depth' } });
});

test('a throwing getter is recorded, never thrown', () => {
  const o = { ok: 1, get bad(): number { throw new Error('boom'); } };
  assert.deepEqual(conv(o), { ok: 1, bad: { $error: 'getter threw' } });
});

test('parameter names are read from the source', () => {
  assert.deepEqual(audit.parameterNames(function f(a: number, b = 2, ...rest: number[]) { return [a, b, rest]; }), { names: ['a', 'b'], rest: 'rest' });
  assert.deepEqual(audit.parameterNames(async (sql: string) => sql), { names: ['sql'], rest: null });
  assert.deepEqual(audit.parameterNames(({ city }: { city: string }) => city), { names: [null], rest: null });
  assert.equal(audit.parameterNames(Math.max), undefined);
});
