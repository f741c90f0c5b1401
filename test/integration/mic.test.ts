// MIC end to end against the API and Azure emulators, with the real client-node and arm-compute clients:
// assignment, release, edits, shared identities on a VMSS, immutable and pre-existing identities, the periodic
// Azure check, invalid identities, service principals and legacy manifests.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { explain } from '../../src/explain/analyze.js';
import { gatherExplainInput } from '../../src/explain/gather.js';
import { eventually, NODES, startMicWorld, type MicWorld } from './mic-world.js';

let w: MicWorld;
beforeEach(async () => {
  w = await startMicWorld();
});
afterEach(async () => {
  await w?.stop();
});

const stateOf = async (name: string): Promise<string | undefined> => (await w.assigned()).find((a) => a.name === name)?.state;

describe('MIC', () => {
  it('assigns a user-assigned identity to the VMSS of a labelled pod and marks its AzureAssignedIdentity Assigned', async () => {
    const id = w.msi('id1');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    const mic = await w.startMic();

    await eventually(async () => expect(await stateOf('p1-default-id1')).toBe('Assigned'));
    expect(w.vmssIds()).toEqual([id.id.toLowerCase()]);
    expect(w.vmIds()).toEqual([]);
    const aai = (await w.assigned()).find((a) => a.name === 'p1-default-id1')!;
    expect(aai).toMatchObject({ namespace: 'default', pod: 'p1', podNamespace: 'default', nodeName: NODES.vmss0 });
    const podUid = (await w.core.readNamespacedPod({ namespace: 'default', name: 'p1' })).metadata?.uid;
    expect(aai.labels).toEqual({ nodename: NODES.vmss0, 'aadpodidentity.k8s.io/pod-uid': podUid });
    expect(aai.podUid).toBe(podUid);
    expect(aai.finalizers).toEqual(['azureassignedidentity.finalizers.aadpodidentity.k8s.io']);
    expect(aai.identityRef?.resourceID).toBe(id.id);
    expect(aai.bindingRef?.selector).toBe('app1');
    expect(mic.isLeader()).toBe(true);
    const health = await fetch(`${mic.probeUrl}/healthz`);
    expect(await health.text()).toBe('Active');
    const metrics = await (await fetch(mic.metricsUrl)).text();
    expect(metrics).toMatch(/aadpodidentity_assigned_identity_addition_count 1/);
    expect(metrics).toMatch(/aadpodidentity_mic_new_leader_election_count 1/);
    await eventually(async () => expect((await w.events('binding applied')).map((e) => e.name)).toContain('b1'));
  });

  it('warns once, on the AzureIdentity, when its clientID is not the client ID Azure has for its resourceID', async () => {
    const id = w.msi('id-mm');
    const wrong = '0badc0de-0000-4000-8000-000000000001';
    await w.createIdentity('id-mm', { type: 0, resourceID: id.id, clientID: wrong });
    await w.createBinding('b-mm', { azureIdentity: 'id-mm', selector: 'app-mm' });
    await w.createPod('pm1', NODES.vmss0, 'app-mm');
    await w.createPod('pm2', NODES.vmss1, 'app-mm');
    // explain before MIC attaches it (Azure's answer from MSI) and after (from the scale set's identity map).
    const explainPod = async () =>
      explain(await gatherExplainInput(w.api.kc, 'default', 'pm1', { forceNamespaced: false, arm: { credential: w.az.credential, endpoint: w.az.emulator.url, caPem: w.az.emulator.caPem } }));
    const before = await explainPod();
    expect(before.identities[0]).toMatchObject({ name: 'id-mm', principalId: w.az.emulator.getUserAssignedIdentity(id.id)?.principalId });
    expect(before.verdict).toContain(`set spec.clientID to ${id.clientId}`);
    await w.startMic();
    await eventually(async () => {
      expect(await stateOf('pm1-default-id-mm')).toBe('Assigned');
      expect(await stateOf('pm2-default-id-mm')).toBe('Assigned');
    });
    await eventually(async () => expect((await w.events('ClientIDMismatch')).length).toBeGreaterThan(0));
    const events = await w.events('ClientIDMismatch');
    // One for the identity, not one per pod; it names both client IDs and the fix.
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: 'Warning', kind: 'AzureIdentity', name: 'id-mm' });
    expect(events[0].message).toContain(`spec.clientID ${wrong}`);
    expect(events[0].message).toContain(`client ID ${id.clientId}`);
    expect(events[0].message).toContain(`Set spec.clientID to ${id.clientId}`);
    const after = await explainPod();
    expect(after.identities[0]).toMatchObject({ onNode: true, principalId: w.az.emulator.getUserAssignedIdentity(id.id)?.principalId });
    expect(after.identities[0]?.clientIdMismatch).toContain(`(${id.clientId})`);
    // A correct identity raises none.
    const ok = w.msi('id-ok');
    await w.createIdentity('id-ok', { type: 0, resourceID: ok.id, clientID: ok.clientId });
    await w.createBinding('b-ok', { azureIdentity: 'id-ok', selector: 'app-ok' });
    await w.createPod('pok', NODES.vmss0, 'app-ok');
    await eventually(async () => expect(await stateOf('pok-default-id-ok')).toBe('Assigned'));
    expect((await w.events('ClientIDMismatch')).filter((e) => e.name === 'id-ok')).toEqual([]);
  });

  it('writes the new pod uid into the AAI when a pod is recreated under the same name', async () => {
    const id = w.msi('id-r');
    await w.createIdentity('id-r', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b-r', { azureIdentity: 'id-r', selector: 'app-r' });
    await w.createPod('pr', NODES.vmss0, 'app-r');
    await w.startMic();
    await eventually(async () => expect(await stateOf('pr-default-id-r')).toBe('Assigned'));
    const uidOf = async () => (await w.core.readNamespacedPod({ namespace: 'default', name: 'pr' })).metadata?.uid;
    const first = await uidOf();
    expect((await w.assigned()).find((a) => a.name === 'pr-default-id-r')?.podUid).toBe(first);

    await w.deletePod('pr');
    await w.createPod('pr', NODES.vmss0, 'app-r');
    const second = await uidOf();
    expect(second).not.toBe(first);
    await eventually(async () => {
      const aai = (await w.assigned()).find((a) => a.name === 'pr-default-id-r');
      expect(aai?.podUid).toBe(second);
      expect(aai?.state).toBe('Assigned');
    });
  });

  it('releases the identity when the pod goes: AAI deleted, identity detached from the VM', async () => {
    const id = w.msi('id1');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vm, 'app1');
    await w.startMic();
    await eventually(async () => expect(await stateOf('p1-default-id1')).toBe('Assigned'));
    expect(w.vmIds()).toEqual([id.id.toLowerCase()]);

    await w.deletePod('p1');
    await eventually(async () => expect(await w.assigned()).toEqual([]));
    expect(w.vmIds()).toEqual([]);
  });
});

describe('MIC follows edits', () => {
  it('updates the AAI and reassigns when the identity is edited in place', async () => {
    const id1 = w.msi('id1');
    const id2 = w.msi('id2');
    await w.createIdentity('ident', { type: 0, resourceID: id1.id, clientID: id1.clientId });
    await w.createBinding('b1', { azureIdentity: 'ident', selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    await w.startMic();
    await eventually(async () => expect(await stateOf('p1-default-ident')).toBe('Assigned'));

    await w.custom.patchNamespacedCustomObject(
      {
        group: 'aadpodidentity.k8s.io', version: 'v1', plural: 'azureidentities', namespace: 'default', name: 'ident',
        body: [{ op: 'replace', path: '/spec/resourceID', value: id2.id }, { op: 'replace', path: '/spec/clientID', value: id2.clientId }],
      },
    );
    await eventually(async () => {
      const [aai] = await w.assigned();
      expect(aai?.identityRef?.resourceID).toBe(id2.id);
      expect(aai?.state).toBe('Assigned');
      expect(w.vmssIds()).toEqual([id2.id.toLowerCase()]);
    });
    expect(await w.assigned()).toHaveLength(1);
  });

  it('releases every pod of a binding when the binding is deleted', async () => {
    const id = w.msi('id1');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    await w.createPod('p2', NODES.vm, 'app1');
    await w.startMic();
    await eventually(async () => expect((await w.assigned()).map((a) => a.state)).toEqual(['Assigned', 'Assigned']));

    await w.custom.deleteNamespacedCustomObject({ group: 'aadpodidentity.k8s.io', version: 'v1', plural: 'azureidentitybindings', namespace: 'default', name: 'b1' });
    await eventually(async () => expect(await w.assigned()).toEqual([]));
    expect(w.vmssIds()).toEqual([]);
    expect(w.vmIds()).toEqual([]);
  });

  it('moves the pod to the other identity when its label changes', async () => {
    const id1 = w.msi('id1');
    const id2 = w.msi('id2');
    await w.createIdentity('id1', { type: 0, resourceID: id1.id, clientID: id1.clientId });
    await w.createIdentity('id2', { type: 0, resourceID: id2.id, clientID: id2.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createBinding('b2', { azureIdentity: 'id2', selector: 'app2' });
    await w.createPod('p1', NODES.vm, 'app1');
    await w.startMic();
    await eventually(async () => expect(await stateOf('p1-default-id1')).toBe('Assigned'));

    await w.setPodLabel('p1', 'app2');
    await eventually(async () => {
      expect((await w.assigned()).map((a) => `${a.name}:${a.state}`)).toEqual(['p1-default-id2:Assigned']);
      expect(w.vmIds()).toEqual([id2.id.toLowerCase()]);
    });
  });

  it('keeps a shared identity on the VMSS until the last pod using it goes', async () => {
    const id = w.msi('id1');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    await w.createPod('p2', NODES.vmss1, 'app1');
    const mic = await w.startMic();
    await eventually(async () => expect((await w.assigned()).map((a) => a.state)).toEqual(['Assigned', 'Assigned']));

    await w.deletePod('p1');
    await eventually(async () => expect((await w.assigned()).map((a) => a.name)).toEqual(['p2-default-id1']));
    await mic.idle();
    expect(w.vmssIds()).toEqual([id.id.toLowerCase()]);

    await w.deletePod('p2');
    await eventually(async () => expect(await w.assigned()).toEqual([]));
    await eventually(() => expect(w.vmssIds()).toEqual([]));
  });
});

describe('MIC leaves alone what is not its own', () => {
  it('never touches pre-existing user-assigned and system-assigned identities', async () => {
    const pre = w.msi('pre-existing');
    const id = w.msi('id1');
    w.az.emulator.setVmIdentities({ vmss: 'ss1' }, [pre.id], { systemAssigned: true });
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    await w.startMic();
    await eventually(async () => expect(await stateOf('p1-default-id1')).toBe('Assigned'));
    expect(w.vmssIds()).toEqual([id.id, pre.id].map((i) => i.toLowerCase()).sort());

    await w.deletePod('p1');
    await eventually(async () => expect(await w.assigned()).toEqual([]));
    await eventually(() => expect(w.vmssIds()).toEqual([pre.id.toLowerCase()]));
    expect(w.az.emulator.getVmss(w.rg, 'ss1')!.identity.systemAssigned).toBe(true);
  });

  it('keeps an immutable identity attached after its last pod goes', async () => {
    const id = w.msi('cluster-wide');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    const mic = await w.startMic({ flags: [`--immutable-user-msis=${id.clientId.toUpperCase()}`] });
    await eventually(async () => expect(await stateOf('p1-default-id1')).toBe('Assigned'));

    w.az.emulator.clearRequestLog();
    await w.deletePod('p1');
    await eventually(async () => expect(await w.assigned()).toEqual([]));
    await mic.idle();
    expect(w.vmssIds()).toEqual([id.id.toLowerCase()]);
    expect(w.az.emulator.requestLog().filter((r) => r.operation === 'vmss_patch')).toEqual([]);
  });

  it('re-attaches an identity detached by hand at the next periodic Azure check, keeping the AAI Assigned', async () => {
    const id = w.msi('id1');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vmss1, 'app1');
    await w.startMic();
    await eventually(async () => expect(await stateOf('p1-default-id1')).toBe('Assigned'));

    w.az.emulator.setVmIdentities({ vmss: 'ss1' }, []);
    expect(w.vmssIds()).toEqual([]);
    await eventually(() => expect(w.vmssIds()).toEqual([id.id.toLowerCase()]), 8000);
    expect(await stateOf('p1-default-id1')).toBe('Assigned');
  });
});

describe('MIC with identities it cannot or need not attach', () => {
  it('assigns the valid identity, skips the malformed one with a warning event, and keeps the unknown one Created', async () => {
    const good = w.msi('good');
    const ghost = `/subscriptions/${w.az.emulator.subscriptionId}/resourceGroups/${w.rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ghost`;
    await w.createIdentity('good', { type: 0, resourceID: good.id, clientID: good.clientId });
    await w.createIdentity('bad', { type: 0, resourceID: 'not-a-resource-id', clientID: good.clientId });
    await w.createIdentity('ghost', { type: 0, resourceID: ghost, clientID: '00000000-0000-0000-0000-000000000001' });
    for (const name of ['good', 'bad', 'ghost']) await w.createBinding(`b-${name}`, { azureIdentity: name, selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    await w.startMic();

    await eventually(async () => expect(await stateOf('p1-default-good')).toBe('Assigned'));
    expect(w.vmssIds()).toEqual([good.id.toLowerCase()]);
    expect(await stateOf('p1-default-bad')).toBeUndefined();
    expect(await stateOf('p1-default-ghost')).toBe('Created');
    await eventually(async () => {
      const invalid = await w.events('invalid identity');
      expect(invalid.map((e) => `${e.kind}/${e.name}/${e.type}`)).toEqual(['AzureIdentity/bad/Warning']);
      expect(invalid[0]!.message).toMatch(/spec\.resourceID/);
      const applyErrors = await w.events('binding apply error');
      expect(applyErrors.some((e) => e.name === 'b-ghost' && e.type === 'Warning')).toBe(true);
    });
  });

  it('marks a service-principal identity Assigned without any ARM call', async () => {
    await w.createIdentity('sp', {
      type: 1,
      clientID: '11111111-2222-3333-4444-555555555555',
      tenantID: w.az.emulator.tenantId,
      clientPassword: { name: 'sp-secret', namespace: 'default' },
    });
    await w.createBinding('b-sp', { azureIdentity: 'sp', selector: 'app-sp' });
    await w.createPod('p1', NODES.vm, 'app-sp');
    w.az.emulator.clearRequestLog();
    const mic = await w.startMic();
    await eventually(async () => expect(await stateOf('p1-default-sp')).toBe('Assigned'));
    await mic.idle();
    const arm = w.az.emulator.requestLog().filter((r) => /^(vm|vmss)_(patch|lro)$/.test(r.operation));
    expect(arm).toEqual([]);
    expect(w.vmIds()).toEqual([]);
  });

  // Issue 10 rows 1 and 2, MIC's side: team-b's service principal naming team-a's Secret, or an authority of its own.
  const tenantIdentities = async () => {
    await w.core.createNamespace({ body: { metadata: { name: 'team-b' } } });
    const sp = (name: string, extra: Record<string, unknown>) =>
      w.createIdentity(name, {
        type: 1,
        clientID: '11111111-2222-3333-4444-555555555555',
        tenantID: w.az.emulator.tenantId,
        clientPassword: { name: `${name}-secret`, namespace: 'team-b' },
        ...extra,
      }, { namespace: 'team-b' });
    await sp('stolen', { clientPassword: { name: 'team-a-creds', namespace: 'team-a' } });
    await sp('evil', { adEndpoint: 'https://127.0.0.1:1/' });
    await sp('own', { adEndpoint: w.az.emulator.url }); // MIC's own cloud authority (the emulator here)
    for (const name of ['stolen', 'evil', 'own']) {
      await w.createBinding(`b-${name}`, { azureIdentity: name, selector: `app-${name}` }, 'team-b');
      await w.createPod(`p-${name}`, NODES.vm, `app-${name}`, 'team-b');
    }
  };

  it("skips a service principal whose Secret is in another namespace or whose adEndpoint is not allowed, with a Warning event", async () => {
    await tenantIdentities();
    const mic = await w.startMic();
    await eventually(async () => expect(await stateOf('p-own-team-b-own')).toBe('Assigned'));
    await eventually(async () => {
      const refused = await w.events('identity refused');
      expect(refused.map((e) => `${e.kind}/${e.name}/${e.type}`).sort()).toEqual(['AzureIdentity/evil/Warning', 'AzureIdentity/stolen/Warning']);
      expect(refused.find((e) => e.name === 'stolen')!.message).toContain('--allow-cross-namespace-secrets');
      expect(refused.find((e) => e.name === 'evil')!.message).toContain('--allowed-ad-endpoints');
    });
    await mic.idle();
    expect((await w.assigned()).map((a) => a.name).sort()).toEqual(['p-own-team-b-own']);
  });

  it('assigns them when the admin allows cross-namespace Secrets and that authority', async () => {
    await tenantIdentities();
    await w.startMic({ flags: ['--allow-cross-namespace-secrets', '--allowed-ad-endpoints=https://127.0.0.1:1'] });
    await eventually(async () => {
      const states = await Promise.all(['stolen', 'evil', 'own'].map((n) => stateOf(`p-${n}-team-b-${n}`)));
      expect(states).toEqual(['Assigned', 'Assigned', 'Assigned']);
    });
    expect(await w.events('identity refused')).toEqual([]);
  });

  it('accepts legacy capitalised manifests and says so once with a warning event', async () => {
    const id = w.msi('legacy');
    await w.createIdentity('legacy', { type: 0, ResourceID: id.id, ClientID: id.clientId });
    await w.createBinding('b-legacy', { AzureIdentity: 'legacy', Selector: 'old-app' });
    await w.createPod('p1', NODES.vmss0, 'old-app');
    const mic = await w.startMic();
    await eventually(async () => expect(await stateOf('p1-default-legacy')).toBe('Assigned'));
    expect(w.vmssIds()).toEqual([id.id.toLowerCase()]);
    const aai = (await w.assigned())[0]!;
    expect(aai.identityRef?.resourceID).toBe(id.id); // written camelCase for NMI

    await eventually(async () => {
      const warnings = await w.events('legacy fields');
      expect(warnings.map((e) => `${e.kind}/${e.name}`).sort()).toEqual(['AzureIdentity/legacy', 'AzureIdentityBinding/b-legacy']);
      expect(warnings.find((e) => e.kind === 'AzureIdentity')!.message).toMatch(/spec\.ResourceID/);
    });
    // Later cycles do not repeat it: one Event each, never bumped.
    await w.createPod('p2', NODES.vmss1, 'old-app');
    await eventually(async () => expect(await stateOf('p2-default-legacy')).toBe('Assigned'));
    await mic.idle();
    const events = await w.core.listEventForAllNamespaces({});
    const legacy = events.items.filter((e) => e.reason === 'legacy fields');
    expect(legacy.map((e) => e.count)).toEqual([1, 1]);
  });
});
