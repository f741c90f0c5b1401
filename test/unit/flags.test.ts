import { describe, expect, it } from 'vitest';
import {
  formatDuration,
  parseBaseUrl,
  parseFlags,
  parseGoDuration,
  usage,
  type FlagDefs,
} from '../../src/common/flags.js';

const DEFS = {
  name: { kind: 'string', name: 'name', default: 'x', help: 'a name' },
  mode: { kind: 'string', name: 'mode', default: 'standard', choices: ['standard', 'managed'], lowercase: true, help: 'mode' },
  force: { kind: 'bool', name: 'forceNamespaced', default: false, help: 'force' },
  header: { kind: 'bool', name: 'metadata-header-required', default: true, help: 'header' },
  qps: { kind: 'number', name: 'clientQps', default: 5, positive: true, help: 'qps' },
  batch: { kind: 'int', name: 'createDeleteBatch', default: 20, min: 1, help: 'batch' },
  port: { kind: 'int', name: 'http-probe-port', default: 8080, min: 0, max: 65535, help: 'port' },
  sync: { kind: 'duration', name: 'syncRetryDuration', default: 3_600_000, help: 'sync' },
  interval: { kind: 'seconds', name: 'find-identity-retry-interval', default: 5000, help: 'interval' },
  ids: { kind: 'list', name: 'immutable-user-msis', default: [], help: 'ids' },
  node: { kind: 'string', name: 'node', default: '', env: 'NODE_NAME', help: 'node' },
} as const satisfies FlagDefs;

function ok(argv: string[], env: Record<string, string | undefined> = {}) {
  const r = parseFlags(DEFS, argv, env);
  if (!r.ok) throw new Error(`unexpected errors: ${r.errors.join('; ')}`);
  return r.value;
}
function errors(argv: string[], env: Record<string, string | undefined> = {}): readonly string[] {
  const r = parseFlags(DEFS, argv, env);
  if (r.ok) throw new Error('expected errors');
  return r.errors;
}

describe('parseFlags', () => {
  it('returns every default when nothing is given', () => {
    const v = ok([]).values;
    expect(v).toEqual({
      name: 'x', mode: 'standard', force: false, header: true, qps: 5, batch: 20, port: 8080,
      sync: 3_600_000, interval: 5000, ids: [], node: '',
    });
    expect(Object.isFrozen(v)).toBe(true);
  });

  it('accepts the Go flag forms: --a=b, --a b, -a=b, -a b', () => {
    expect(ok(['--name=one']).values.name).toBe('one');
    expect(ok(['--name', 'two']).values.name).toBe('two');
    expect(ok(['-name=three']).values.name).toBe('three');
    expect(ok(['-name', 'four']).values.name).toBe('four');
    expect(ok(['--name=a=b']).values.name).toBe('a=b');
    expect(ok(['--name=']).values.name).toBe('');
  });

  it('takes booleans as --flag, -flag and --flag=true|false in every spelling Go accepts', () => {
    expect(ok(['--forceNamespaced']).values.force).toBe(true);
    expect(ok(['-forceNamespaced']).values.force).toBe(true);
    for (const t of ['1', 't', 'T', 'TRUE', 'true', 'True']) expect(ok([`--forceNamespaced=${t}`]).values.force).toBe(true);
    for (const f of ['0', 'f', 'F', 'FALSE', 'false', 'False']) {
      expect(ok([`--metadata-header-required=${f}`]).values.header).toBe(false);
    }
    expect(errors(['--forceNamespaced=yes'])).toEqual(["--forceNamespaced: expected true or false, got 'yes'"]);
  });

  it('does not let a bool flag swallow the next argument, and says how to write it', () => {
    expect(errors(['--forceNamespaced', 'false'])).toEqual([
      "unexpected argument 'false' (boolean flags take their value as --forceNamespaced=false)",
    ]);
  });

  it('lets the last occurrence win, as Go does', () => {
    expect(ok(['--name=a', '--name=b']).values.name).toBe('b');
  });

  it('names unknown flags and suggests the right casing', () => {
    expect(errors(['--nope'])).toEqual(['unknown flag --nope']);
    expect(errors(['--forcenamespaced'])).toEqual(['unknown flag --forcenamespaced (did you mean --forceNamespaced?)']);
  });

  it('reports every problem at once with the flag name and the bad value', () => {
    expect(errors(['--createDeleteBatch=abc', '--clientQps=0', '--http-probe-port=70000', '--syncRetryDuration=5'])).toEqual([
      "--createDeleteBatch: expected a positive integer, got 'abc'",
      "--clientQps: expected a positive number, got '0'",
      "--http-probe-port: expected between 0 and 65535, got '70000'",
      "--syncRetryDuration: expected a duration such as 30s, 3m, 1h30m or 500ms, got '5'",
    ]);
    expect(errors(['--createDeleteBatch=0'])).toEqual(["--createDeleteBatch: expected a positive integer, got '0'"]);
    expect(errors(['--name'])).toEqual(['--name: flag needs an argument']);
    expect(errors(['stray'])).toEqual(["unexpected argument 'stray'"]);
    expect(errors(['--', 'a'])).toEqual(["unexpected argument 'a'"]);
    expect(errors(['---name=x'])).toEqual(['bad flag syntax: ---name=x']);
  });

  it('parses floats for number flags and validates choices after lower-casing', () => {
    expect(ok(['--clientQps=2.5']).values.qps).toBe(2.5);
    expect(ok(['--mode=Managed']).values.mode).toBe('managed');
    expect(errors(['--mode=other'])).toEqual(["--mode: expected one of standard, managed, got 'other'"]);
  });

  it('splits comma lists, trimming blanks and dropping empty items', () => {
    expect(ok(['--immutable-user-msis= a ,b,,c ']).values.ids).toEqual(['a', 'b', 'c']);
    expect(ok(['--immutable-user-msis=']).values.ids).toEqual([]);
  });

  it('reads seconds flags as bare seconds (the original) or as a duration (ours)', () => {
    expect(ok(['--find-identity-retry-interval=5']).values.interval).toBe(5000);
    expect(ok(['--find-identity-retry-interval=250ms']).values.interval).toBe(250);
    expect(errors(['--find-identity-retry-interval=-1'])).toEqual([
      "--find-identity-retry-interval: expected a duration of at least 0s, got '-1'",
    ]);
  });

  it('falls back to the environment only when the flag is absent, and tells which variable was bad', () => {
    expect(ok([], { NODE_NAME: 'node-a' }).values.node).toBe('node-a');
    expect(ok(['--node=node-b'], { NODE_NAME: 'node-a' }).values.node).toBe('node-b');
    expect(ok([], { NODE_NAME: '' }).values.node).toBe('');
    const withEnv = ok([], { NODE_NAME: 'n' });
    expect(withEnv.explicit.has('node')).toBe(true);
    expect(withEnv.explicit.has('name')).toBe(false);
    const bad = parseFlags(
      { n: { kind: 'int', name: 'n', default: 1, min: 1, env: 'N', help: 'n' } } as const,
      [],
      { N: 'many' },
    );
    expect(bad).toEqual({ ok: false, errors: ["N (environment for --n): expected a positive integer, got 'many'"] });
  });

  it('recognises -h, -help and --help', () => {
    for (const h of ['-h', '-help', '--help']) expect(ok([h]).helpRequested).toBe(true);
    expect(ok([]).helpRequested).toBe(false);
  });
});

describe('Go durations', () => {
  it.each([
    ['3600s', 3_600_000],
    ['3m', 180_000],
    ['1h30m', 5_400_000],
    ['500ms', 500],
    ['1.5s', 1500],
    ['.5s', 500],
    ['1s500ms', 1500],
    ['0', 0],
    ['+2h', 7_200_000],
    ['-1s', -1000],
    ['1000us', 1],
    ['1000µs', 1],
    ['2000000ns', 2],
  ])('parses %s', (text, ms) => {
    expect(parseGoDuration(text)).toEqual({ ok: true, value: ms });
  });

  it.each(['', '5', 's', '1x', '1.s.', '1h 30m', '.s', 'abc'])('rejects %j', (text) => {
    expect(parseGoDuration(text).ok).toBe(false);
  });

  it('formats as Go prints defaults', () => {
    expect(formatDuration(3_600_000)).toBe('1h0m0s');
    expect(formatDuration(180_000)).toBe('3m0s');
    expect(formatDuration(15_000)).toBe('15s');
    expect(formatDuration(1500)).toBe('1.5s');
    expect(formatDuration(500)).toBe('500ms');
    expect(formatDuration(0)).toBe('0s');
  });
});

describe('usage', () => {
  it('lists every flag with its type and default', () => {
    const text = usage('prog', DEFS);
    expect(text.startsWith('Usage of prog:\n')).toBe(true);
    for (const def of Object.values(DEFS)) expect(text).toContain(`--${def.name}`);
    expect(text).toContain('(default 1h0m0s)');
    expect(text).toContain('--mode standard|managed');
    expect(text).toContain('(environment NODE_NAME)');
  });
});

describe('parseBaseUrl', () => {
  it('accepts the allowed schemes and strips the trailing slash', () => {
    expect(parseBaseUrl('https://127.0.0.1:8443/', ['https:'])).toEqual({ ok: true, value: 'https://127.0.0.1:8443' });
    expect(parseBaseUrl('http://127.0.0.1:1', ['https:']).ok).toBe(false);
    expect(parseBaseUrl('not a url', ['https:']).ok).toBe(false);
    expect(parseBaseUrl('https://h/?q=1', ['https:']).ok).toBe(false);
  });
});
