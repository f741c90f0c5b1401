import { describe, expect, it } from 'vitest';
import { parseNamespacePolicy } from '../../src/crds/namespace-policy.js';
import { explain, type ExplainInput } from '../../src/explain/analyze.js';
import type {
  AzureAssignedIdentity,
  AzureIdentity,
  AzureIdentityBinding,
  AzurePodIdentityException,
  PodView,
} from '../../src/crds/types.js';

const meta = (namespace: string, name: string) => ({
  namespace, name, uid: `u-${namespace}-${name}`, resourceVersion: '1', labels: {}, annotations: {},
  creationTimestamp: '', finalizers: [], deleting: false,
});

const CLIENT = '0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b';
const RESOURCE = '/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/web';

function identity(namespace: string, name: string, extra: Partial<AzureIdentity> = {}): AzureIdentity {
  return {
    ...meta(namespace, name), type: 0, invalidType: '', resourceID: RESOURCE, clientID: CLIENT, clientPassword: null,
    tenantID: '', auxiliaryTenantIDs: [], adEndpoint: '', adResourceID: '', namespaced: false, ...extra,
  };
}

function binding(namespace: string, name: string, azureIdentity: string, selector: string): AzureIdentityBinding {
  return { ...meta(namespace, name), azureIdentity, selector, weight: null };
}

const pod: PodView = {
  namespace: 'apps', name: 'web', uid: 'u-web', resourceVersion: '1', labels: { aadpodidbinding: 'web', app: 'Web' },
  nodeName: 'node-1', podIP: '10.0.0.5', podIPs: ['10.0.0.5'], phase: 'Running', hostNetwork: false, deleting: false,
  ownerReferences: [],
};

function aai(id: AzureIdentity, state: AzureAssignedIdentity['state'], nodeName = 'node-1'): AzureAssignedIdentity {
  return { ...meta('default', `web-apps-${id.name}`), identityRef: id, bindingRef: null, pod: 'web', podNamespace: 'apps', nodeName, state, podUid: '' };
}

function input(extra: Partial<ExplainInput>): ExplainInput {
  return {
    pod, bindings: [], identities: [], assigned: [], exceptions: [], forceNamespaced: false,
    arm: { kind: 'ok', target: 'vmss/ss', userAssigned: [RESOURCE.toUpperCase()], systemAssigned: false }, ignored: [], ...extra,
  };
}

describe('explain', () => {
  it('says a bound, assigned and attached identity works, and what NMI answers', () => {
    const id = identity('apps', 'web');
    const report = explain(input({ bindings: [binding('apps', 'web', 'web', 'web')], identities: [id], assigned: [aai(id, 'Assigned')] }));
    expect(report.verdict).toBe('works: the pod gets a token');
    expect(report.nmi).toEqual({ status: 200, summary: '200 with a token for apps/web' });
    expect(report.identities).toEqual([expect.objectContaining({ name: 'web', assignment: 'Assigned', onNode: true, problems: [] })]);
    expect(report.bindings).toEqual([expect.objectContaining({ name: 'web', matched: true, reasons: [] })]);
  });

  it("shows the principal ID Azure reports (what object_id names), and reports a clientID Azure does not have for the resourceID", () => {
    const id = identity('apps', 'web');
    const base = { bindings: [binding('apps', 'web', 'web', 'web')], identities: [id], assigned: [aai(id, 'Assigned')] };
    const ok = explain(input({ ...base, azureIdentities: new Map([[RESOURCE.toLowerCase(), { clientId: CLIENT.toUpperCase(), principalId: 'p-123' }]]) }));
    expect(ok.identities[0]).toMatchObject({ principalId: 'p-123' });
    expect(ok.identities[0]?.clientIdMismatch).toBeUndefined();
    expect(ok.verdict).toBe('works: the pod gets a token');

    const other = '11111111-2222-4333-8444-555555555555';
    const bad = explain(input({ ...base, azureIdentities: new Map([[RESOURCE.toLowerCase(), { clientId: other, principalId: 'p-123' }]]) }));
    expect(bad.identities[0]?.clientIdMismatch).toContain(`set spec.clientID to ${other}`);
    expect(bad.verdict).toBe(`no token: AzureIdentity apps/web: ${bad.identities[0]?.clientIdMismatch}`);
    // Unknown to Azure (lookup failed): nothing claimed.
    const unknown = explain(input({ ...base, azureIdentities: new Map([[RESOURCE.toLowerCase(), { error: 'not found' }]]) }));
    expect(unknown.identities[0]).not.toHaveProperty('principalId');
    expect(unknown.identities[0]).not.toHaveProperty('clientIdMismatch');
  });

  it("says why a service principal is refused: a Secret in another namespace, an authority not allowed", () => {
    const sp = (name: string, extra: Partial<AzureIdentity>) =>
      identity('apps', name, { type: 1, resourceID: '', tenantID: 't', clientPassword: { name: 's', namespace: 'apps' }, ...extra });
    const credentials = { allowCrossNamespaceSecrets: false, allowedAuthorities: new Set(['https://login.microsoftonline.com']) };
    const stolen = explain(input({ bindings: [binding('apps', 'web', 'web', 'web')], identities: [sp('web', { clientPassword: { name: 's', namespace: 'team-a' } })], credentials }));
    expect(stolen.bindings[0]?.reasons[0]).toMatch(/^AzureIdentity apps\/web is refused .*--allow-cross-namespace-secrets/);
    expect(stolen.identities).toEqual([]);
    expect(stolen.verdict).toContain('--allow-cross-namespace-secrets');
    const evil = explain(input({ bindings: [binding('apps', 'web', 'web', 'web')], identities: [sp('web', { adEndpoint: 'https://evil.example' })], credentials }));
    expect(evil.bindings[0]?.reasons[0]).toContain('--allowed-ad-endpoints');
    const allowed = explain(input({
      bindings: [binding('apps', 'web', 'web', 'web')],
      identities: [sp('web', { adEndpoint: 'https://evil.example', clientPassword: { name: 's', namespace: 'team-a' } })],
      credentials: { allowCrossNamespaceSecrets: true, allowedAuthorities: new Set(['https://evil.example']) },
    }));
    expect(allowed.bindings[0]?.reasons).toEqual([]);
  });

  it('names the selector mismatch when no binding matches the label', () => {
    const report = explain(input({ bindings: [binding('apps', 'other', 'web', 'other')], identities: [identity('apps', 'web')] }));
    expect(report.bindings[0]).toMatchObject({ matched: false, reasons: ['selector "other" ≠ the pod\'s aadpodidbinding "web"'] });
    expect(report.verdict).toBe('no token: no AzureIdentityBinding has selector "web" (see the bindings below)');
    expect(report.nmi.status).toBe(404);
  });

  it('points at a binding whose identity is missing or invalid', () => {
    const missing = explain(input({ bindings: [binding('apps', 'web', 'nope', 'web')] }));
    expect(missing.verdict).toContain('AzureIdentity apps/nope does not exist');
    const invalid = explain(input({ bindings: [binding('apps', 'web', 'web', 'web')], identities: [identity('apps', 'web', { clientID: 'not-a-guid' })] }));
    expect(invalid.bindings[0]?.reasons[0]).toMatch(/^AzureIdentity apps\/web is invalid: /);
  });

  it('explains namespaced matching across namespaces', () => {
    const report = explain(input({ bindings: [binding('other', 'web', 'web', 'web')], identities: [identity('other', 'web')], forceNamespaced: true }));
    expect(report.bindings[0]?.reasons).toEqual(['namespaced matching (--forceNamespaced): binding is in other, pod in apps']);
  });

  it('says an identity is still being attached while its AAI is Created', () => {
    const id = identity('apps', 'web');
    const report = explain(input({ bindings: [binding('apps', 'web', 'web', 'web')], identities: [id], assigned: [aai(id, 'Created')] }));
    expect(report.verdict).toBe('no token yet: the identity is not attached to the node yet (AzureAssignedIdentity Created)');
    expect(report.nmi.status).toBe(404);
  });

  it('does not count an AAI for another node, as NMI does not', () => {
    const id = identity('apps', 'web');
    const report = explain(input({ bindings: [binding('apps', 'web', 'web', 'web')], identities: [id], assigned: [aai(id, 'Assigned', 'node-2')] }));
    expect(report.nmi.status).toBe(404);
  });

  it('applies an exception as NMI does: any one label pair, value case-insensitive', () => {
    const exception: AzurePodIdentityException = { ...meta('apps', 'skip'), podLabels: { app: 'web', missing: 'x' } };
    const report = explain(input({ exceptions: [exception] }));
    expect(report.exception).toBe('apps/skip');
    expect(report.nmi.status).toBe(200);
    expect(report.nmi.summary).toContain("node's identity");
  });

  it('warns when an Assigned identity is missing on the node in ARM', () => {
    const id = identity('apps', 'web');
    const report = explain(
      input({ bindings: [binding('apps', 'web', 'web', 'web')], identities: [id], assigned: [aai(id, 'Assigned')], arm: { kind: 'ok', target: 'vmss/ss', userAssigned: [], systemAssigned: true } }),
    );
    expect(report.verdict).toContain('is Assigned yet missing on the node in ARM');
  });
});

describe('explain with --namespace-identity-policy=enforce', () => {
  const KEY = 'aadpodidentity.k8s.io/permitted-identities';
  const id = identity('apps', 'web');
  const base = { bindings: [binding('apps', 'web', 'web', 'web')], identities: [id], assigned: [aai(id, 'Assigned')] };

  it('shows IdentityNotPermitted on the binding and a 403 from NMI when the namespace does not permit the identity', () => {
    const report = explain(input({ ...base, namespacePolicy: { mode: 'enforce', policies: new Map([['apps', parseNamespacePolicy({})]]) } }));
    expect(report.bindings[0]?.reasons[0]).toMatch(/^IdentityNotPermitted: Namespace apps has no aadpodidentity.k8s.io\/permitted-identities annotation/);
    expect(report.bindings[0]?.reasons[0]).toContain(`add "${RESOURCE.toLowerCase()}"`);
    expect(report.nmi.status).toBe(403);
    expect(report.verdict).toMatch(/^no token: the namespace identity policy does not permit the identity/);
  });

  it('works when the annotation permits it, and off ignores the annotations', () => {
    const permitted = new Map([['apps', parseNamespacePolicy({ [KEY]: RESOURCE })]]);
    expect(explain(input({ ...base, namespacePolicy: { mode: 'enforce', policies: permitted } })).verdict).toBe('works: the pod gets a token');
    expect(explain(input({ ...base, namespacePolicy: { mode: 'off', policies: new Map() } })).verdict).toBe('works: the pod gets a token');
  });
});

describe("explain decides with MIC's and NMI's own cores", () => {
  it('says MIC assigns nothing to a pod that is not scheduled, finished or on a node the cluster does not have', () => {
    const id = identity('apps', 'web');
    const base = { bindings: [binding('apps', 'web', 'web', 'web')], identities: [id] };
    const unscheduled = explain(input({ ...base, pod: { ...pod, nodeName: '' } }));
    expect(unscheduled.mic.refusal).toBe('pod has no spec.nodeName yet');
    expect(unscheduled.bindings[0]?.reasons).toEqual(['MIC assigns nothing to this pod: pod has no spec.nodeName yet']);
    expect(unscheduled.identities).toEqual([]);
    expect(unscheduled.verdict).toBe('no token: MIC assigns no identity to this pod: pod has no spec.nodeName yet');
    expect(explain(input({ ...base, pod: { ...pod, phase: 'Succeeded' } })).mic.refusal).toBe('pod phase is Succeeded');
    const gone = explain(input({ ...base, node: null }));
    expect(gone.mic.refusal).toContain('node node-1 is not known');
    expect(gone.identities).toEqual([]);
  });

  it('says a binding or identity being deleted gives nothing', () => {
    const deletingIdentity = explain(input({ bindings: [binding('apps', 'web', 'web', 'web')], identities: [identity('apps', 'web', { deleting: true })] }));
    expect(deletingIdentity.bindings[0]?.reasons).toEqual(['AzureIdentity apps/web is being deleted']);
    expect(deletingIdentity.identities).toEqual([]);
    const deletingBinding = explain(input({ bindings: [{ ...binding('apps', 'web', 'web', 'web'), deleting: true }], identities: [identity('apps', 'web')] }));
    expect(deletingBinding.bindings[0]?.reasons).toEqual(['the binding is being deleted']);
    expect(deletingBinding.mic.assignments).toEqual([]);
  });

  it('names the binding whose AzureAssignedIdentity name another binding took first, as MIC resolves it', () => {
    // Two non-namespaced identities named "web": both AAIs would be default/web-apps-web; the first binding wins.
    const report = explain(input({
      bindings: [binding('apps', 'web', 'web', 'web'), binding('other', 'web', 'web', 'web')],
      identities: [identity('apps', 'web'), identity('other', 'web', { resourceID: `${RESOURCE}2` })],
    }));
    expect(report.bindings.map((b) => b.reasons)).toEqual([
      [],
      ['AzureAssignedIdentity default/web-apps-web is already taken by binding apps/web (identity apps/web): MIC makes one per pod and identity name'],
    ]);
    expect(report.identities.map((i) => `${i.namespace}/${i.name}`)).toEqual(['apps/web']);
    expect(report.mic.assignments).toEqual([{ aai: 'default/web-apps-web', binding: 'apps/web', identity: 'apps/web' }]);
  });

  it("shows MIC's next steps from its plan: create the AAI, attach the identity to the node's VMSS, then mark it Assigned", () => {
    const node = { name: 'node-1', uid: 'n1', providerID: '', labels: {}, target: { kind: 'vmss' as const, name: 'ss', key: 'vmss/rg/ss' } };
    const report = explain(input({
      bindings: [binding('apps', 'web', 'web', 'web')], identities: [identity('apps', 'web')], node,
      arm: { kind: 'ok', target: 'VMSS rg/ss', userAssigned: [], systemAssigned: false },
    }));
    expect(report.mic.next).toEqual([
      'create AzureAssignedIdentity default/web-apps-web (Created)',
      `attach ${RESOURCE.toLowerCase()} to VMSS ss`,
      'mark AzureAssignedIdentity default/web-apps-web Assigned once ARM has the identity',
    ]);
    expect(report.verdict).toBe('no token: MIC has not created an AzureAssignedIdentity for this pod (is MIC running and leading?)');
    const bare = explain(input({ bindings: [binding('apps', 'web', 'web', 'web')], identities: [identity('apps', 'web')], node: { ...node, target: undefined } }));
    expect(bare.mic.waiting[0]).toMatch(/^NodeWithoutTarget: /);
  });

  it('answers a request naming an identity as NMI does: the bound one by client_id, 400 at once for one not bound, the node path refusing a declared one', () => {
    const id = identity('apps', 'web');
    const b = binding('apps', 'web', 'web', 'web');
    const base = { bindings: [b], identities: [id], assigned: [{ ...aai(id, 'Assigned'), bindingRef: b }] };
    expect(explain(input({ ...base, request: { clientId: CLIENT.toUpperCase() } })).nmi).toEqual({ status: 200, summary: `200 with a token for apps/web (asked by client_id ${CLIENT.toUpperCase()})` });
    const other = explain(input({ ...base, request: { clientId: '11111111-2222-4333-8444-555555555555' } }));
    expect(other.nmi.status).toBe(400);
    expect(other.verdict).toMatch(/^no token/);
    const exception: AzurePodIdentityException = { ...meta('apps', 'skip'), podLabels: { app: 'web' } };
    const excepted = explain(input({ exceptions: [exception], identities: [identity('team-a', 'theirs')], request: { resourceId: RESOURCE } }));
    expect(excepted.exception).toBe('apps/skip');
    expect(excepted.nmi.status).toBe(400);
    expect(excepted.nmi.summary).toContain('bind it to the pod');
  });
});

describe("explain answers for MIC's own pod as NMI does", () => {
  it("gives MIC's pod (its namespace and ServiceAccount, NMI's --MICNamespace/--mic-service-account) the node's identity", () => {
    const mic: PodView = { ...pod, namespace: 'kube-system', name: 'mic-0', labels: {}, serviceAccountName: 'aad-pod-identity-mic' };
    const report = explain(input({ pod: mic, micNamespace: 'kube-system', micServiceAccount: 'aad-pod-identity-mic' }));
    expect(report.nmi).toEqual({ status: 200, summary: "200 with the node's identity: pod runs as MIC's ServiceAccount kube-system/aad-pod-identity-mic" });
    expect(explain(input({ pod: mic })).nmi.status).toBe(404);
  });
});
