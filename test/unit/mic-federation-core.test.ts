// Federated mode, pure parts: credential names (src/crds/federation.ts) and the desired credential set per
// user-assigned identity (src/mic/core/federation.ts).
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  FEDERATED_AUDIENCE,
  FEDERATED_CREDENTIAL_NAME,
  federatedCredentialName,
  isOwnFederatedCredential,
  parseServiceAccountSubject,
  serviceAccountSubject,
} from '../../src/crds/federation.js';
import type { AzureIdentity, PodView } from '../../src/crds/types.js';
import type { DesiredAssignment } from '../../src/mic/core/desired.js';
import { desiredFederatedCredentials, federatedUses } from '../../src/mic/core/federation.js';
import { identity, rid } from './mic-core.builders.js';

const ISSUER = 'https://westeurope.oic.prod-aks.azure.com/tenant/uuid/';

const federated = (ns: string, name: string, opts: Parameters<typeof identity>[2] = {}): AzureIdentity => ({
  ...identity(ns, name, opts),
  mode: 'Federated',
});

describe('federated credential names', () => {
  it('is aadpodid-<namespace>-<sa>-<10 hex of sha256(issuer \\n subject)>', () => {
    const subject = serviceAccountSubject('team-a', 'web');
    expect(subject).toBe('system:serviceaccount:team-a:web');
    const hash = createHash('sha256').update(`${ISSUER}\n${subject}`).digest('hex').slice(0, 10);
    expect(federatedCredentialName(ISSUER, subject)).toBe(`aadpodid-team-a-web-${hash}`);
  });

  it('differs per issuer byte for byte (the trailing slash counts) and per subject', () => {
    const s = serviceAccountSubject('ns', 'sa');
    const names = new Set([
      federatedCredentialName(ISSUER, s),
      federatedCredentialName(ISSUER.slice(0, -1), s),
      federatedCredentialName(ISSUER, serviceAccountSubject('ns', 'sb')),
      // namespace-sa joins ambiguously ("a-b" + "c" vs "a" + "b-c"): the hash keeps them apart
      federatedCredentialName(ISSUER, serviceAccountSubject('a-b', 'c')),
      federatedCredentialName(ISSUER, serviceAccountSubject('a', 'b-c')),
    ]);
    expect(names.size).toBe(5);
  });

  it('stays inside Azure\'s name rule for the longest Kubernetes names, turning dots into dashes', () => {
    const ns = 'n'.repeat(63);
    const sa = `${'s'.repeat(200)}.x`;
    const name = federatedCredentialName(ISSUER, serviceAccountSubject(ns, sa));
    expect(name.length).toBe(120);
    expect(name).toMatch(FEDERATED_CREDENTIAL_NAME);
    expect(federatedCredentialName(ISSUER, serviceAccountSubject('my.ns', 'app.v1'))).toMatch(/^aadpodid-my-ns-app-v1-[0-9a-f]{10}$/);
  });

  it('parses only service-account subjects', () => {
    expect(parseServiceAccountSubject('system:serviceaccount:ns:sa')).toEqual({ namespace: 'ns', serviceAccount: 'sa' });
    for (const bad of ['repo:org/x:ref', 'system:serviceaccount:ns', 'system:serviceaccount::sa', 'system:serviceaccount:a:b:c']) {
      expect(parseServiceAccountSubject(bad), bad).toBeNull();
    }
  });

  it('owns only its own name for this issuer', () => {
    const subject = serviceAccountSubject('ns', 'sa');
    const name = federatedCredentialName(ISSUER, subject);
    expect(isOwnFederatedCredential({ name, issuer: ISSUER, subject }, ISSUER)).toBe(true);
    // another cluster sharing the identity: its own issuer, its own names
    const other = 'https://other.example/';
    expect(isOwnFederatedCredential({ name: federatedCredentialName(other, subject), issuer: other, subject }, ISSUER)).toBe(false);
    expect(isOwnFederatedCredential({ name: 'aadpodid-by-hand', issuer: ISSUER, subject }, ISSUER)).toBe(false);
    expect(isOwnFederatedCredential({ name: 'users-own', issuer: ISSUER, subject }, ISSUER)).toBe(false);
    expect(isOwnFederatedCredential({ name, issuer: ISSUER, subject: serviceAccountSubject('ns', 'other') }, ISSUER)).toBe(false);
  });
});

function assignment(id: AzureIdentity, podNamespace: string, pod: string): DesiredAssignment {
  return {
    key: `${podNamespace}/${pod}-${podNamespace}-${id.name}`,
    namespace: podNamespace,
    name: `${pod}-${podNamespace}-${id.name}`,
    identity: id,
    binding: { ...id, azureIdentity: id.name, selector: 's', weight: null },
    pod,
    podNamespace,
    podUid: `uid-${pod}`,
    nodeName: 'n1',
  };
}

const podView = (namespace: string, name: string, serviceAccountName: string): PodView => ({
  namespace, name, uid: `uid-${name}`, resourceVersion: '1', labels: {}, nodeName: 'n1', podIP: '10.0.0.1', podIPs: ['10.0.0.1'],
  phase: 'Running', hostNetwork: false, deleting: false, ownerReferences: [], serviceAccountName,
});

describe('desired federated credentials', () => {
  it('wants one credential per (namespace, service account), shared by every pod of it', () => {
    const id = federated('team-a', 'fed', { resourceID: rid('fed') });
    const pods = new Map([
      ['team-a/p1', podView('team-a', 'p1', 'web')],
      ['team-a/p2', podView('team-a', 'p2', 'web')],
      ['team-a/p3', podView('team-a', 'p3', 'worker')],
    ]);
    const { uses, skipped } = federatedUses(
      ['p1', 'p2', 'p3'].map((p) => assignment(id, 'team-a', p)),
      (ns, name) => pods.get(`${ns}/${name}`),
    );
    expect(skipped).toEqual([]);
    const [want] = desiredFederatedCredentials(ISSUER, [id], uses);
    expect(want).toMatchObject({ key: rid('fed').toLowerCase(), resourceID: rid('fed'), resourceGroup: 'RG', name: 'fed', azureIdentities: ['team-a/fed'] });
    expect(want?.credentials).toEqual([
      { name: federatedCredentialName(ISSUER, 'system:serviceaccount:team-a:web'), issuer: ISSUER, subject: 'system:serviceaccount:team-a:web', audiences: [FEDERATED_AUDIENCE] },
      { name: federatedCredentialName(ISSUER, 'system:serviceaccount:team-a:worker'), issuer: ISSUER, subject: 'system:serviceaccount:team-a:worker', audiences: [FEDERATED_AUDIENCE] },
    ]);
  });

  it('keeps a federated identity nobody uses, with no credentials, so MIC removes its own', () => {
    const id = federated('team-a', 'fed', { resourceID: rid('fed') });
    expect(desiredFederatedCredentials(ISSUER, [id], [])).toEqual([
      expect.objectContaining({ name: 'fed', credentials: [] }),
    ]);
  });

  it('leaves Attached identities and unparsable resource IDs out, and merges AzureIdentities naming one ARM identity', () => {
    const a = federated('team-a', 'fed', { resourceID: rid('shared') });
    const b = federated('team-b', 'fed2', { resourceID: rid('shared').toUpperCase().replace('/SUBSCRIPTIONS/', '/subscriptions/') });
    const attached = identity('team-c', 'att', { resourceID: rid('att') });
    const broken = federated('team-d', 'bad', { resourceID: '/subscriptions/x' });
    const uses = [
      { identity: a, namespace: 'team-a', serviceAccount: 'default' },
      { identity: b, namespace: 'team-b', serviceAccount: 'default' },
      { identity: attached, namespace: 'team-c', serviceAccount: 'default' },
      { identity: broken, namespace: 'team-d', serviceAccount: 'default' },
    ];
    const out = desiredFederatedCredentials(ISSUER, [a, b, attached, broken], uses);
    expect(out).toHaveLength(1);
    expect(out[0]?.azureIdentities).toEqual(['team-a/fed', 'team-b/fed2']);
    expect(out[0]?.credentials.map((c) => c.subject)).toEqual(['system:serviceaccount:team-a:default', 'system:serviceaccount:team-b:default']);
  });

  it('skips a pod without a service account, and ignores attached assignments', () => {
    const fed = federated('ns', 'fed', { resourceID: rid('fed') });
    const att = identity('ns', 'att', { resourceID: rid('att') });
    const pods = new Map([['ns/p1', podView('ns', 'p1', '')], ['ns/p2', podView('ns', 'p2', 'sa')]]);
    const { uses, skipped } = federatedUses([assignment(fed, 'ns', 'p1'), assignment(att, 'ns', 'p2')], (ns, n) => pods.get(`${ns}/${n}`));
    expect(uses).toEqual([]);
    expect(skipped).toEqual([
      expect.objectContaining({ subject: { kind: 'Pod', namespace: 'ns', name: 'p1' }, code: 'ServiceAccountUnknown' }),
    ]);
  });
});
