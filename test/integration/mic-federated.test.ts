// Issue 13 item 4, MIC against both emulators: an AzureIdentity with spec.mode Federated gets a federated identity
// credential per service account its bound pods run as (issuer discovered from the API emulator, subject
// system:serviceaccount:<ns>:<sa>), its AAI becomes Assigned once the credential exists, and no VM or VMSS is ever
// PATCHed for it. The 21st service account, the flag off and a namespace-policy refusal all leave it unfederated.
import * as k8s from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { serviceAccountSubject } from '../../src/crds/federation.js';
import { PERMITTED_IDENTITIES_ANNOTATION } from '../../src/crds/namespace-policy.js';
import { explain } from '../../src/explain/analyze.js';
import { gatherExplainInput } from '../../src/explain/gather.js';
import { renderExplain } from '../../src/explain/render.js';
import { eventually, NODES, startMicWorld, type MicWorld } from './mic-world.js';

const FED = ['--enable-federated-identities'];

let w: MicWorld;
let issuer: string;
beforeEach(async () => {
  // https, so the API emulator publishes its issuer discovery as a real API server does.
  w = await startMicWorld({ api: { tls: true } });
  issuer = w.api.server.serviceAccountIssuer.issuer;
  const e = w.az.emulator;
  // Federated credential writes need Managed Identity Contributor on the identities (docs/federated.md).
  e.grantRole(w.az.servicePrincipal.objectId, 'Managed Identity Contributor', `/subscriptions/${e.subscriptionId}/resourceGroups/${w.rg}`);
});
afterEach(async () => {
  await w?.stop();
});

const vmPatches = () => w.az.emulator.requestLog().filter((r) => r.operation === 'vm_patch' || r.operation === 'vmss_patch');
const credentials = (id: string) => w.az.emulator.listFederatedCredentials(id).map((f) => `${f.subject} ${f.issuer}`).sort();
const states = async () => (await w.assigned()).map((a) => `${a.podNamespace}/${a.pod}:${a.identityRef?.name ?? '?'}:${a.state}`).sort();

/** `explain` as a cluster admin runs it, with MIC's flags and ARM access. */
async function explainText(ns: string, name: string, federation: { enabled: boolean; issuer: string }): Promise<string> {
  const e = w.az.emulator;
  const input = await gatherExplainInput(w.api.kc, ns, name, {
    forceNamespaced: false,
    federation,
    arm: { credential: w.az.credential, endpoint: e.url, caPem: e.caPem },
  });
  return renderExplain(explain(input));
}

async function namespace(name: string, annotations?: Record<string, string>): Promise<void> {
  await w.core.createNamespace({ body: { metadata: { name, ...(annotations ? { annotations } : {}) } } });
}

async function serviceAccount(ns: string, name: string): Promise<void> {
  await w.core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name } } });
}

async function pod(name: string, ns: string, selector: string, sa?: string, node: string = NODES.vmss0): Promise<void> {
  await w.core.createNamespacedPod({
    namespace: ns,
    body: {
      metadata: { name, labels: { aadpodidbinding: selector } },
      spec: { nodeName: node, ...(sa !== undefined ? { serviceAccountName: sa } : {}), containers: [{ name: 'app', image: 'busybox' }] },
    },
  });
}

/** A Federated AzureIdentity (or Attached with mode 'Attached') and its binding in `ns`. */
async function identity(name: string, ns: string, selector: string, mode: 'Federated' | 'Attached' = 'Federated'): Promise<{ id: string; clientId: string }> {
  const m = w.msi(`${ns}-${name}`);
  await w.createIdentity(name, { type: 0, resourceID: m.id, clientID: m.clientId, mode }, { namespace: ns });
  await w.createBinding(`${name}-binding`, { azureIdentity: name, selector }, ns);
  return m;
}

describe('MIC federated mode (issue 13 item 4)', () => {
  it('gives a bound pod a credential for its service account and an Assigned AAI, with zero VM/VMSS PATCHes', async () => {
    await namespace('team-a');
    await serviceAccount('team-a', 'web');
    const m = await identity('fed', 'team-a', 'web-app');
    await pod('web-0', 'team-a', 'web-app', 'web');
    await w.startMic({ flags: FED });

    await eventually(async () => expect(await states()).toEqual(['team-a/web-0:fed:Assigned']));
    expect(credentials(m.id)).toEqual([`${serviceAccountSubject('team-a', 'web')} ${issuer}`]);
    const [fic] = w.az.emulator.listFederatedCredentials(m.id);
    expect(fic?.audiences).toEqual(['api://AzureADTokenExchange']);
    expect(fic?.name).toMatch(/^aadpodid-team-a-web-[0-9a-f]{10}$/);
    expect(vmPatches()).toEqual([]);
    expect(w.vmssIds()).toEqual([]);
  });

  it('writes again a credential of ours deleted behind its back (the periodic Azure check lists credentials afresh)', async () => {
    await namespace('team-a');
    await serviceAccount('team-a', 'web');
    const m = await identity('fed', 'team-a', 'web-app');
    await pod('web-0', 'team-a', 'web-app', 'web');
    await w.startMic({ flags: [...FED, '--identity-assignment-reconcile-interval=300ms'] });
    await eventually(async () => expect(await states()).toEqual(['team-a/web-0:fed:Assigned']));
    const [fic] = w.az.emulator.listFederatedCredentials(m.id);
    expect(w.az.emulator.deleteFederatedCredential(m.id, fic?.name ?? '')).toBe(true);
    expect(credentials(m.id)).toEqual([]);

    await eventually(() => expect(credentials(m.id)).toEqual([`${serviceAccountSubject('team-a', 'web')} ${issuer}`]));
    expect(w.az.emulator.listFederatedCredentials(m.id)[0]?.name).toBe(fic?.name);
    expect(vmPatches()).toEqual([]);
  });

  it('two service accounts of one namespace get two credentials; the last pod of one going removes its credential', async () => {
    await namespace('team-a');
    await serviceAccount('team-a', 'web');
    await serviceAccount('team-a', 'worker');
    const m = await identity('fed', 'team-a', 'app');
    await pod('web-0', 'team-a', 'app', 'web');
    await pod('worker-0', 'team-a', 'app', 'worker', NODES.vm);
    await pod('worker-1', 'team-a', 'app', 'worker', NODES.vmss1);
    await w.startMic({ flags: FED });

    await eventually(async () =>
      expect(await states()).toEqual(['team-a/web-0:fed:Assigned', 'team-a/worker-0:fed:Assigned', 'team-a/worker-1:fed:Assigned']),
    );
    expect(credentials(m.id)).toEqual([`${serviceAccountSubject('team-a', 'web')} ${issuer}`, `${serviceAccountSubject('team-a', 'worker')} ${issuer}`]);

    // One worker left: the credential stays; the last one gone: it goes, and web's stays.
    await w.deletePod('worker-0', 'team-a');
    await eventually(async () => expect(await states()).toEqual(['team-a/web-0:fed:Assigned', 'team-a/worker-1:fed:Assigned']));
    expect(credentials(m.id)).toHaveLength(2);
    await w.deletePod('worker-1', 'team-a');
    await eventually(() => expect(credentials(m.id)).toEqual([`${serviceAccountSubject('team-a', 'web')} ${issuer}`]));
    await eventually(async () => expect(await states()).toEqual(['team-a/web-0:fed:Assigned']));
    expect(vmPatches()).toEqual([]);
  });

  it('the 21st service account gets no credential: FederatedCredentialLimit events on the identity and the pod, AAI not Assigned', async () => {
    await namespace('team-a');
    const m = await identity('fed', 'team-a', 'app');
    // 19 credentials someone else made, one for our first pod: the second pod's would be the 21st.
    for (let i = 0; i < 19; i++) w.az.emulator.putFederatedCredential(m.id, `user-${i}`, { issuer: 'https://github.example/', subject: `repo:${i}` });
    await serviceAccount('team-a', 'first');
    await serviceAccount('team-a', 'second');
    await pod('first-0', 'team-a', 'app', 'first');
    await pod('second-0', 'team-a', 'app', 'second');
    await w.startMic({ flags: FED });

    await eventually(async () => expect(await states()).toEqual(['team-a/first-0:fed:Assigned', 'team-a/second-0:fed:Created']));
    await eventually(async () => {
      const events = await w.events('FederatedCredentialLimit');
      expect(events.map((e) => `${e.type} ${e.kind}/${e.name}`).sort()).toEqual(['Warning AzureIdentity/fed', 'Warning Pod/second-0']);
      for (const e of events) {
        expect(e.message).toContain('team-a/fed');
        expect(e.message).toContain('20 federated identity credentials');
      }
    });
    expect(w.az.emulator.listFederatedCredentials(m.id)).toHaveLength(20);
    // explain, from MIC's own core and what Azure holds, says why the second pod waits; the first is fine.
    const text = await explainText('team-a', 'second-0', { enabled: true, issuer: '' });
    expect(text).toMatch(/waiting: FederatedCredentialLimit: .*20 federated identity credentials/);
    expect(await explainText('team-a', 'first-0', { enabled: true, issuer: '' })).not.toContain('FederatedCredential');
    // Stays Created, cycle after cycle.
    await new Promise((r) => setTimeout(r, 500));
    expect(await states()).toEqual(['team-a/first-0:fed:Assigned', 'team-a/second-0:fed:Created']);
    expect(vmPatches()).toEqual([]);
  });

  it('mixed mode on one node: the attached identity is PATCHed onto the VMSS, the federated one never', async () => {
    await namespace('team-a');
    await serviceAccount('team-a', 'web');
    const attached = await identity('att', 'team-a', 'att-app', 'Attached');
    const fed = await identity('fed', 'team-a', 'fed-app');
    await pod('att-0', 'team-a', 'att-app', 'web');
    await pod('fed-0', 'team-a', 'fed-app', 'web');
    await w.startMic({ flags: FED });

    await eventually(async () => expect(await states()).toEqual(['team-a/att-0:att:Assigned', 'team-a/fed-0:fed:Assigned']));
    expect(w.vmssIds()).toEqual([attached.id.toLowerCase()]);
    expect(credentials(fed.id)).toEqual([`${serviceAccountSubject('team-a', 'web')} ${issuer}`]);
    expect(credentials(attached.id)).toEqual([]);
    const patches = vmPatches();
    expect(patches.length).toBeGreaterThan(0);
    expect(w.vmIds()).toEqual([]);
  });

  it('flag off: a Federated identity is skipped with an event naming --enable-federated-identities, never attached', async () => {
    await namespace('team-a');
    const m = await identity('fed', 'team-a', 'app');
    await w.createIdentity('plain', { type: 0, resourceID: w.msi('plain').id, clientID: 'c0ffee00-0000-0000-0000-000000000001' }, { namespace: 'team-a' });
    await w.createBinding('plain-binding', { azureIdentity: 'plain', selector: 'plain-app' }, 'team-a');
    await pod('fed-0', 'team-a', 'app');
    await pod('plain-0', 'team-a', 'plain-app');
    await w.startMic();

    // The attached identity next to it works, so MIC did cycle over the federated one.
    await eventually(async () => expect(await states()).toEqual(['team-a/plain-0:plain:Assigned']));
    await eventually(async () => {
      const events = (await w.events('FederationDisabled')).filter((e) => e.kind === 'AzureIdentity' && e.name === 'fed');
      expect(events).toHaveLength(1);
      expect(events[0]?.type).toBe('Warning');
      expect(events[0]?.message).toContain('--enable-federated-identities');
    });
    expect(w.vmssIds()).not.toContain(m.id.toLowerCase());
    expect(credentials(m.id)).toEqual([]);
    expect(await explainText('team-a', 'fed-0', { enabled: false, issuer: '' })).toContain('--enable-federated-identities');
  });

  it('enforce: a namespace policy that refuses the identity refuses it federated too (no credential, no AAI)', async () => {
    const a = w.msi('team-a-id');
    await namespace('team-a', { [PERMITTED_IDENTITIES_ANNOTATION]: a.id });
    await namespace('team-b');
    await serviceAccount('team-a', 'web');
    await serviceAccount('team-b', 'thief');
    await w.createIdentity('mine', { type: 0, resourceID: a.id, clientID: a.clientId, mode: 'Federated' }, { namespace: 'team-a' });
    await w.createBinding('ba', { azureIdentity: 'mine', selector: 'a-app' }, 'team-a');
    await pod('victim', 'team-a', 'a-app', 'web');
    // team-b names team-a's Azure identity in its own Federated AzureIdentity.
    await w.createIdentity('stolen', { type: 0, resourceID: a.id, clientID: a.clientId, mode: 'Federated' }, { namespace: 'team-b' });
    await w.createBinding('bb', { azureIdentity: 'stolen', selector: 'b-app' }, 'team-b');
    await pod('attacker', 'team-b', 'b-app', 'thief', NODES.vm);
    await w.startMic({ flags: [...FED, '--namespace-identity-policy=enforce'] });

    await eventually(async () => expect(await states()).toEqual(['team-a/victim:mine:Assigned']));
    await eventually(async () =>
      expect((await w.events('IdentityNotPermitted')).map((e) => `${e.kind}/${e.name}`)).toContain('AzureIdentity/stolen'),
    );
    expect(credentials(a.id)).toEqual([`${serviceAccountSubject('team-a', 'web')} ${issuer}`]);
    expect(w.az.emulator.listFederatedCredentials(a.id).some((f) => f.subject.includes('team-b'))).toBe(false);
    expect(vmPatches()).toEqual([]);
  });

  it('switching an attached identity to Federated detaches it from the VMSS and federates it; switching back attaches it and removes the credential', async () => {
    await namespace('team-a');
    await serviceAccount('team-a', 'web');
    const m = await identity('id', 'team-a', 'app', 'Attached');
    await pod('web-0', 'team-a', 'app', 'web');
    await w.startMic({ flags: FED });
    await eventually(async () => expect(await states()).toEqual(['team-a/web-0:id:Assigned']));
    expect(w.vmssIds()).toEqual([m.id.toLowerCase()]);

    const setMode = (mode: string) =>
      w.custom.patchNamespacedCustomObject(
        { group: 'aadpodidentity.k8s.io', version: 'v1', plural: 'azureidentities', namespace: 'team-a', name: 'id', body: { spec: { mode } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    await setMode('Federated');
    await eventually(() => expect(w.vmssIds()).toEqual([]));
    await eventually(() => expect(credentials(m.id)).toEqual([`${serviceAccountSubject('team-a', 'web')} ${issuer}`]));
    await eventually(async () => {
      const [a] = await w.assigned();
      expect(a?.state).toBe('Assigned');
      expect(a?.identityRef?.mode).toBe('Federated');
    });

    await setMode('Attached');
    await eventually(() => expect(w.vmssIds()).toEqual([m.id.toLowerCase()]));
    await eventually(() => expect(credentials(m.id)).toEqual([]));
    await eventually(async () => {
      const [a] = await w.assigned();
      expect(a?.state).toBe('Assigned');
      expect(a?.identityRef?.mode ?? 'Attached').toBe('Attached');
    });
  });

  it('a throttled credential PUT (429, Retry-After) is retried, and the AAI becomes Assigned after it', async () => {
    await namespace('team-a');
    const m = await identity('fed', 'team-a', 'app');
    await pod('web-0', 'team-a', 'app');
    w.az.emulator.injectFault({ operation: 'fic_put', status: 429, retryAfter: 1, count: 1 });
    await w.startMic({ flags: FED });
    await eventually(async () => expect(await states()).toEqual(['team-a/web-0:fed:Assigned']));
    const puts = w.az.emulator.requestLog().filter((r) => r.operation === 'fic_put').map((r) => r.status);
    expect(puts[0]).toBe(429);
    expect(puts.slice(1).every((s) => s < 300)).toBe(true);
    expect(credentials(m.id)).toHaveLength(1);
  });

  it('an explicit --service-account-issuer is written byte for byte', async () => {
    await namespace('team-a');
    const m = await identity('fed', 'team-a', 'app');
    await pod('web-0', 'team-a', 'app');
    const explicit = 'https://oidc.example.test/cluster-1/';
    await w.startMic({ flags: [...FED, `--service-account-issuer=${explicit}`] });
    await eventually(async () => expect(await states()).toEqual(['team-a/web-0:fed:Assigned']));
    expect(credentials(m.id)).toEqual([`${serviceAccountSubject('team-a', 'default')} ${explicit}`]);
    expect(vmPatches()).toEqual([]);
  });
});

describe('MIC federated mode without a discoverable issuer', () => {
  it('skips Federated identities with an event naming --service-account-issuer: no AAI, no attachment, no credential', async () => {
    // Plain http: the API emulator, as a real API server, publishes no issuer discovery then.
    const plain = await startMicWorld();
    try {
      await plain.core.createNamespace({ body: { metadata: { name: 'team-a' } } });
      const f = plain.msi('fed');
      await plain.createIdentity('fed', { type: 0, resourceID: f.id, clientID: f.clientId, mode: 'Federated' }, { namespace: 'team-a' });
      await plain.createBinding('fed-binding', { azureIdentity: 'fed', selector: 'app' }, 'team-a');
      await plain.createPod('web-0', NODES.vmss0, 'app', 'team-a');
      await plain.startMic({ flags: FED });
      await eventually(async () => {
        const events = (await plain.events('FederationIssuerUnknown')).filter((e) => e.kind === 'AzureIdentity' && e.name === 'fed');
        expect(events).toHaveLength(1);
        expect(events[0]?.message).toContain('--service-account-issuer');
      });
      expect(await plain.assigned()).toEqual([]);
      expect(plain.vmssIds()).toEqual([]);
      expect(plain.az.emulator.listFederatedCredentials(f.id)).toEqual([]);
    } finally {
      await plain.stop();
    }
  });
});
