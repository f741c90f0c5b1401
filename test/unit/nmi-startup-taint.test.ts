import jsonpatch from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import { startupTaintRemoval } from '../../src/nmi/core/startup-taint.js';

const KEY = 'aadpodidentity.k8s.io/nmi-not-ready';
const apply = (taints: unknown[], ops: readonly unknown[]) =>
  (jsonpatch.applyPatch({ spec: { taints } }, ops as jsonpatch.Operation[], true, false).newDocument as { spec: { taints: unknown[] } }).spec.taints;

describe('startupTaintRemoval', () => {
  it('removes every taint with the key, whatever its value and effect, and nothing else', () => {
    const taints = [
      { key: KEY, value: 'true', effect: 'NoSchedule' },
      { key: 'dedicated', value: 'gpu', effect: 'NoExecute' },
      { key: KEY, effect: 'NoExecute', timeAdded: '2026-01-01T00:00:00Z' },
    ];
    const r = startupTaintRemoval(taints, KEY);
    expect(r?.removed).toEqual([`${KEY}:NoSchedule`, `${KEY}:NoExecute`]);
    expect(apply(taints, r!.patch)).toEqual([{ key: 'dedicated', value: 'gpu', effect: 'NoExecute' }]);
  });

  it('guards each removal with a test of the key at its index, so a list changed since it was read fails', () => {
    const read = [{ key: 'a', effect: 'NoSchedule' }, { key: KEY, effect: 'NoSchedule' }];
    const r = startupTaintRemoval(read, KEY)!;
    expect(r.patch).toEqual([
      { op: 'test', path: '/spec/taints/1/key', value: KEY },
      { op: 'remove', path: '/spec/taints/1' },
    ]);
    // Someone removed taint 'a' in between: index 1 is now another taint (or gone), and the patch must not apply.
    expect(() => apply([{ key: KEY, effect: 'NoSchedule' }, { key: 'b', effect: 'NoSchedule' }], r.patch)).toThrow();
    expect(() => apply([{ key: KEY, effect: 'NoSchedule' }], r.patch)).toThrow();
  });

  it('has nothing to do without the key, without taints, or with the feature off', () => {
    expect(startupTaintRemoval([{ key: 'a', effect: 'NoSchedule' }], KEY)).toBeUndefined();
    expect(startupTaintRemoval(undefined, KEY)).toBeUndefined();
    expect(startupTaintRemoval([{ key: '', effect: 'NoSchedule' }], '')).toBeUndefined();
    expect(startupTaintRemoval([null, 'x', { key: KEY, effect: 'NoSchedule' }], KEY)?.patch[0]).toEqual({ op: 'test', path: '/spec/taints/2/key', value: KEY });
  });
});
