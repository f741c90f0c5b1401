import { describe, expect, it } from 'vitest';
import type { PodView } from '../../src/crds/types.js';
import { compareLivePod } from '../../src/nmi/core/live-caller.js';

const cached: PodView = {
  namespace: 'team-a',
  name: 'app',
  uid: 'uid-1',
  resourceVersion: '10',
  labels: {},
  nodeName: 'node-0',
  podIP: '10.0.0.5',
  podIPs: ['10.0.0.5'],
  phase: 'Running',
  hostNetwork: false,
  deleting: false,
  ownerReferences: [],
};

describe('compareLivePod', () => {
  it('confirms the same pod, on this node, running at the caller’s IP', () => {
    expect(compareLivePod(cached, { ...cached, resourceVersion: '11' }, 'node-0', '10.0.0.5')).toEqual({ ok: true });
    expect(compareLivePod(cached, { ...cached, phase: 'Pending' }, 'node-0', undefined)).toEqual({ ok: true });
  });

  it.each([
    ['gone', null, 'no longer exists'],
    ['recreated under the same name', { ...cached, uid: 'uid-2' }, 'was recreated'],
    ['moved to another node', { ...cached, nodeName: 'node-1' }, 'is not on node node-0'],
    ['being deleted', { ...cached, deleting: true }, 'is being deleted'],
    ['finished', { ...cached, phase: 'Succeeded' }, 'phase Succeeded'],
    ['host-network', { ...cached, hostNetwork: true }, 'host network'],
    ['holding another IP now', { ...cached, podIP: '10.0.0.9', podIPs: ['10.0.0.9'] }, 'no longer has IP 10.0.0.5'],
  ] as const)('refutes a pod that is %s', (_what, live, reason) => {
    const result = compareLivePod(cached, live, 'node-0', '10.0.0.5');
    expect(result.ok).toBe(false);
    expect(result.ok ? '' : result.reason).toContain(reason);
  });
});
