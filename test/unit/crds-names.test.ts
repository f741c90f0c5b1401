import { describe, expect, it } from 'vitest';
import {
  assignedIdentityName,
  assignedIdentityNamespace,
  collectionPath,
  isDns1123Subdomain,
  isNamespacedBehavior,
  MAX_NAME_LENGTH,
  objectPath,
  redactClientID,
} from '../../src/crds/names.js';
import { nodeViewFrom, podViewFrom } from '../../src/crds/types.js';

describe('assignedIdentityName', () => {
  it('is <pod>-<podns>-<identity> when that is a valid name, as the original', () => {
    expect(assignedIdentityName('web-5d8f', 'team-a', 'reader')).toBe('web-5d8f-team-a-reader');
    expect(assignedIdentityName('pod.with.dots', 'ns', 'id')).toBe('pod.with.dots-ns-id');
  });

  it('truncates over-long names stably into a valid DNS-1123 subdomain with a hash suffix', () => {
    const pod = 'p'.repeat(200);
    const identity = 'i'.repeat(100);
    const name = assignedIdentityName(pod, 'ns', identity);
    expect(name.length).toBeLessThanOrEqual(MAX_NAME_LENGTH);
    expect(isDns1123Subdomain(name)).toBe(true);
    expect(name).toMatch(/-[0-9a-f]{10}$/);
    expect(name.startsWith('p'.repeat(100))).toBe(true);
    expect(assignedIdentityName(pod, 'ns', identity)).toBe(name);
  });

  it('keeps truncated names distinct when only the cut-off tail differs', () => {
    const pod = 'p'.repeat(250);
    const a = assignedIdentityName(pod, 'ns', 'identity-a');
    const b = assignedIdentityName(pod, 'ns', 'identity-b');
    const c = assignedIdentityName(pod, 'ns2', 'identity-a');
    expect(new Set([a, b, c]).size).toBe(3);
  });

  it('does not confuse triples whose long joined forms are equal', () => {
    // Short names keep the original's ambiguity ("a-b","c" and "a","b-c" join alike); hashed ones must not.
    expect(assignedIdentityName('a-b', 'c', 'd')).toBe(assignedIdentityName('a', 'b-c', 'd'));
    const long = 'x'.repeat(260);
    expect(assignedIdentityName(`${long}-a`, 'b', 'c')).not.toBe(assignedIdentityName(long, 'a-b', 'c'));
  });

  it('turns names a real API server would reject into valid ones', () => {
    for (const [pod, ns, id] of [
      ['Upper', 'ns', 'id'],
      ['pod', 'ns', 'id_with_underscore'],
      ['pod.', 'ns', 'id'],
      ['pod', 'ns', '.id'],
      ['', '', ''],
      ['p'.repeat(252) + '.', 'n', 'i'],
    ]) {
      const name = assignedIdentityName(pod as string, ns as string, id as string);
      expect(isDns1123Subdomain(name), `${pod}/${ns}/${id} -> ${name}`).toBe(true);
    }
  });

  it('is exactly 253 characters at the boundary without hashing, and hashes one over', () => {
    const pod = 'p'.repeat(253 - 'ns'.length - 'id'.length - 2);
    expect(assignedIdentityName(pod, 'ns', 'id')).toBe(`${pod}-ns-id`);
    const over = assignedIdentityName(`${pod}p`, 'ns', 'id');
    expect(over.length).toBeLessThanOrEqual(253);
    expect(over).toMatch(/-[0-9a-f]{10}$/);
  });
});

describe('isDns1123Subdomain', () => {
  it('follows the Kubernetes rule', () => {
    expect(isDns1123Subdomain('a.b-c.d')).toBe(true);
    expect(isDns1123Subdomain('a'.repeat(253))).toBe(true);
    for (const bad of ['', 'A', 'a_b', '-a', 'a-', 'a..b', 'a.-b', 'a'.repeat(254)]) expect(isDns1123Subdomain(bad), bad).toBe(false);
  });
});

describe('assignedIdentityNamespace', () => {
  it("uses the identity's namespace when namespaced, else default", () => {
    expect(assignedIdentityNamespace({ namespace: 'team', namespaced: true }, false)).toBe('team');
    expect(assignedIdentityNamespace({ namespace: 'team', namespaced: false }, true)).toBe('team');
    expect(assignedIdentityNamespace({ namespace: 'team', namespaced: false }, false)).toBe('default');
  });

  it('reads the Behavior annotation exactly', () => {
    expect(isNamespacedBehavior({ 'aadpodidentity.k8s.io/Behavior': 'namespaced' })).toBe(true);
    expect(isNamespacedBehavior({ 'aadpodidentity.k8s.io/Behavior': 'NAMESPACED' })).toBe(false);
    expect(isNamespacedBehavior({})).toBe(false);
  });
});

describe('redactClientID', () => {
  it("keeps the first and last four characters, as the original's log lines", () => {
    expect(redactClientID('aabc0000-a83v-9h4m-000j-2c0a66b0c1f9')).toBe('aabc##### REDACTED #####c1f9');
    expect(redactClientID('12345678')).toBe('1234##### REDACTED #####5678');
  });

  it('hides short values completely and leaves empty as empty', () => {
    expect(redactClientID('abc1234')).toBe('##### REDACTED #####');
    expect(redactClientID('')).toBe('');
  });
});

describe('paths', () => {
  it('builds collection and object paths', () => {
    expect(collectionPath('azureidentities')).toBe('/apis/aadpodidentity.k8s.io/v1/azureidentities');
    expect(collectionPath('azureidentities', 'ns')).toBe('/apis/aadpodidentity.k8s.io/v1/namespaces/ns/azureidentities');
    expect(objectPath('azureassignedidentities', 'default', 'a-b')).toBe(
      '/apis/aadpodidentity.k8s.io/v1/namespaces/default/azureassignedidentities/a-b',
    );
  });
});

describe('podViewFrom / nodeViewFrom', () => {
  it('reads the fields MIC and NMI use', () => {
    const pod = podViewFrom({
      metadata: {
        name: 'p',
        namespace: 'ns',
        uid: 'u',
        resourceVersion: '9',
        labels: { aadpodidbinding: 'sel', n: 1 },
        deletionTimestamp: new Date(),
        ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'mic-1', uid: 'r', controller: true }],
      },
      spec: { nodeName: 'node-1', hostNetwork: true, serviceAccountName: 'runner' },
      status: { podIP: '10.0.0.5', podIPs: [{ ip: '10.0.0.5' }, { ip: 'fd00::5' }], phase: 'Running' },
    });
    expect(pod).toEqual({
      namespace: 'ns',
      name: 'p',
      uid: 'u',
      resourceVersion: '9',
      labels: { aadpodidbinding: 'sel' },
      nodeName: 'node-1',
      podIP: '10.0.0.5',
      podIPs: ['10.0.0.5', 'fd00::5'],
      phase: 'Running',
      hostNetwork: true,
      deleting: true,
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'mic-1', uid: 'r', controller: true }],
      serviceAccountName: 'runner',
    });
    // The deprecated spelling, as older manifests write it.
    expect(podViewFrom({ metadata: { name: 'p' }, spec: { serviceAccount: 'legacy' } })?.serviceAccountName).toBe('legacy');
  });

  it('falls back to podIP when podIPs is absent and tolerates garbage', () => {
    expect(podViewFrom({ metadata: { name: 'p' }, status: { podIP: '10.0.0.7' } })?.podIPs).toEqual(['10.0.0.7']);
    expect(podViewFrom({ metadata: { name: 'p' } })).toMatchObject({ podIPs: [], nodeName: '', deleting: false, ownerReferences: [] });
    for (const raw of [null, 1, 'pod', [], {}, { metadata: { name: 3 } }]) expect(podViewFrom(raw)).toBeNull();
  });

  it('reads a node', () => {
    expect(nodeViewFrom({ metadata: { name: 'n1', uid: 'u', labels: { a: 'b' } }, spec: { providerID: 'azure:///x' } })).toEqual({
      name: 'n1',
      uid: 'u',
      providerID: 'azure:///x',
      labels: { a: 'b' },
    });
    expect(nodeViewFrom({ spec: {} })).toBeNull();
  });
});
