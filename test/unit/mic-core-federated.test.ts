// MIC's core in federated mode (issue 13 item 4): a Federated identity never enters a VM/VMSS op, its AAI is
// Assigned exactly when FederationState says the pod's service-account credential exists, and it is skipped (never
// attached instead) while federation is off or has no issuer.
import { describe, expect, it } from 'vitest';
import { serviceAccountSubject } from '../../src/crds/federation.js';
import type { AzureIdentity, PodView } from '../../src/crds/types.js';
import { federationKey, type FederationState } from '../../src/mic/core/index.js';
import { aai, attached, binding, expectedSpec, identity, pod, policy, rid, run, snapshot, vmNode, vmssNode } from './mic-core.builders.js';

const ISSUER = 'https://oidc.example/cluster/';
const on = policy({ federation: { enabled: true, issuer: ISSUER } });
const fed = (ns: string, name: string): AzureIdentity => ({ ...identity(ns, name), mode: 'Federated' });
const withSa = (p: PodView, sa: string): PodView => ({ ...p, serviceAccountName: sa });
const state = (ready: Record<string, string[]>, refused: Record<string, Record<string, string>> = {}): FederationState => ({
  ready: new Map(Object.entries(ready).map(([k, v]) => [federationKey(k), new Set(v)])),
  refused: new Map(
    Object.entries(refused).map(([k, v]) => [federationKey(k), new Map(Object.entries(v).map(([s, r]) => [s, { code: 'FederatedCredentialLimit' as const, reason: r }]))]),
  ),
});

const idF = fed('team-a', 'fed');
const bindF = binding('team-a', 'bind-f', 'fed', 'sel-f');
const web = withSa(pod('team-a', 'web', 'sel-f', 'ss-0'), 'web');
const nodes = [vmssNode('ss-0', 'ss'), vmNode('vm0')];
const subject = serviceAccountSubject('team-a', 'web');

describe('MIC core, federated identities', () => {
  it('creates the AAI Created, with no target op and no status until the credential is known', () => {
    const p = run(snapshot({ pods: [web], nodes, identities: [idF], bindings: [bindF] }), on);
    expect(p.createAssigned.map((c) => `${c.key}:${c.state}`)).toEqual(['default/web-team-a-fed:Created']);
    expect(p.targetOps).toEqual([]);
    expect(p.statusUpdates).toEqual([]);
    expect(p.skipped.map((s) => s.code)).toContain('FederatedCredentialPending');
  });

  it('marks it Assigned at once (no afterTarget) when the credential for its service account is ready', () => {
    const s = snapshot({ pods: [web], nodes, identities: [idF], bindings: [bindF], federation: state({ [rid('fed')]: [subject] }) });
    const p = run(s, on);
    expect(p.targetOps).toEqual([]);
    expect(p.statusUpdates).toEqual([
      { key: 'default/web-team-a-fed', namespace: 'default', name: 'web-team-a-fed', from: 'Created', to: 'Assigned', afterTarget: undefined },
    ]);
  });

  it("another service account's credential does not count, and a refusal is the skip's code and reason", () => {
    const other = state({ [rid('fed')]: [serviceAccountSubject('team-a', 'batch')] }, { [rid('fed')]: { [subject]: 'identity fed already has 20 federated identity credentials' } });
    const existing = aai(web, bindF, idF, 'Created', 'default');
    const p = run(snapshot({ pods: [web], nodes, identities: [idF], bindings: [bindF], assigned: [existing], federation: other }), on);
    expect(p.statusUpdates).toEqual([]);
    const limit = p.skipped.find((s) => s.code === 'FederatedCredentialLimit');
    expect(limit?.subject).toEqual({ kind: 'AzureAssignedIdentity', namespace: 'default', name: 'web-team-a-fed' });
    expect(limit?.reason).toContain('20 federated identity credentials');
  });

  it('a pod without spec.serviceAccountName is the default service account', () => {
    const bare = pod('team-a', 'web', 'sel-f', 'ss-0');
    const s = snapshot({ pods: [bare], nodes, identities: [idF], bindings: [bindF], federation: state({ [rid('fed')]: [serviceAccountSubject('team-a', 'default')] }) });
    expect(run(s, on).statusUpdates).toHaveLength(1);
  });

  it('never re-adds (reconcile) nor removes a Federated identity on the VMSS, even when ARM shows it there or not', () => {
    const existing = aai(web, bindF, idF, 'Assigned', 'default');
    const shown = new Map([['vmss/ss', attached([rid('fed').toLowerCase()])]]);
    expect(run(snapshot({ pods: [web], nodes, identities: [idF], bindings: [bindF], assigned: [existing], attachments: new Map([['vmss/ss', attached([])]]) }), on).targetOps).toEqual([]);
    // Pod gone: the AAI is deleted, and nothing is removed from the VMSS for it.
    const p = run(snapshot({ pods: [], nodes, identities: [idF], bindings: [bindF], assigned: [existing], attachments: shown }), on);
    expect(p.deleteAssigned.map((d) => `${d.key}:${String(d.afterTarget)}`)).toEqual(['default/web-team-a-fed:undefined']);
    expect(p.targetOps).toEqual([]);
  });

  it('switching an attached identity to Federated detaches it from the VMSS; switching back attaches it', () => {
    const idAtt = identity('team-a', 'fed', { rv: '1' });
    const wasAttached = aai(web, bindF, idAtt, 'Assigned', 'default');
    const switched = { ...fed('team-a', 'fed'), resourceVersion: '2' };
    const arm = new Map([['vmss/ss', attached([rid('fed').toLowerCase()])]]);
    const p = run(snapshot({ pods: [web], nodes, identities: [switched], bindings: [bindF], assigned: [wasAttached], attachments: arm }), on);
    expect(p.targetOps).toEqual([{ target: nodes[0]!.target, add: [], remove: [rid('fed').toLowerCase()] }]);
    expect(p.updateAssigned.map((u) => u.after.state)).toEqual(['Created']);

    const wasFed = aai(web, bindF, switched, 'Assigned', 'default');
    const back = { ...identity('team-a', 'fed'), resourceVersion: '3' };
    const q = run(snapshot({ pods: [web], nodes, identities: [back], bindings: [bindF], assigned: [wasFed], attachments: new Map([['vmss/ss', attached([])]]) }), on);
    expect(q.targetOps).toEqual([{ target: nodes[0]!.target, add: [rid('fed').toLowerCase()], remove: [] }]);
  });

  it('with federation off, or on without an issuer, a Federated identity gets no AAI and no attachment, with a skip naming the flag', () => {
    const s = snapshot({ pods: [web], nodes, identities: [idF], bindings: [bindF] });
    for (const [pol, code, flag] of [
      [policy(), 'FederationDisabled', '--enable-federated-identities'],
      [policy({ federation: { enabled: true, issuer: '' } }), 'FederationIssuerUnknown', '--service-account-issuer'],
    ] as const) {
      const p = run(s, pol);
      expect(p.createAssigned).toEqual([]);
      expect(p.targetOps).toEqual([]);
      const sk = p.skipped.find((x) => x.code === code);
      expect(sk?.subject).toEqual({ kind: 'AzureIdentity', namespace: 'team-a', name: 'fed' });
      expect(sk?.reason).toContain(flag);
    }
  });

  it('an attached identity beside it on the same node is planned as before', () => {
    const idA = identity('team-a', 'att');
    const bindA = binding('team-a', 'bind-a', 'att', 'sel-a');
    const app = withSa(pod('team-a', 'app', 'sel-a', 'ss-0'), 'web');
    const p = run(snapshot({ pods: [web, app], nodes, identities: [idF, idA], bindings: [bindF, bindA] }), on);
    expect(p.targetOps).toEqual([{ target: nodes[0]!.target, add: [rid('att').toLowerCase()], remove: [] }]);
    expect(p.createAssigned.map((c) => c.key)).toEqual([expectedSpec(app, bindA, idA, 'Created', 'default').key, 'default/web-team-a-fed']);
  });
});
