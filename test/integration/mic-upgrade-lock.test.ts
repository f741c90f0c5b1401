// MIC during an upgrade from the original: the original's CRDs (no AAI status subresource) and an original MIC
// holding its Endpoints lock default/aad-pod-identity-mic. While that MIC renews, ours writes nothing (no AAI, no
// ARM call, no lock) and reports Not Active; once the record expires ours takes both locks and the pod's AAI
// reaches Assigned.
import { afterEach, describe, expect, it } from 'vitest';
import { upgradedClusterCrdDir } from '../helpers/apiserver.js';
import { holdOriginalMicLock, readOriginalLeaderRecord } from '../helpers/original-mic.js';
import { GROUP, Plurals, VERSION } from '../../src/crds/names.js';
import { eventually, NODES, startMicWorld, VMSS, type MicWorld } from './mic-world.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

describe('MIC taking over from an original MIC', () => {
  it('does not act while the original holds its Endpoints lock, then takes both locks and assigns', async () => {
    const crds = await upgradedClusterCrdDir();
    cleanups.push(crds.cleanup);
    const w: MicWorld = await startMicWorld({ crdDir: crds.dir });
    cleanups.push(() => w.stop());
    const old = holdOriginalMicLock(w.core, { identity: 'mic-5b7c-old', leaseDurationSeconds: 2 });
    cleanups.push(() => old.stop());
    await eventually(async () => expect((await readOriginalLeaderRecord(w.core))?.holderIdentity).toBe('mic-5b7c-old'));

    const id = w.msi('id1');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    const mic = await w.startMic({ instance: 'mic-new-0' });
    const armRequests = (): string[] => w.az.emulator.requestLog().filter((r) => r.path.includes('/Microsoft.Compute/')).map((r) => `${r.method} ${r.path}`);

    // Two lease durations: the original keeps renewing.
    const until = Date.now() + 4500;
    while (Date.now() < until) {
      expect(mic.isLeader()).toBe(false);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await (await fetch(`${mic.probeUrl}/healthz`)).text()).toBe('Not Active');
    expect(await w.assigned()).toEqual([]);
    expect(w.vmssIds()).toEqual([]);
    // Not even a GET of the VMSS: a standby reads only the cluster.
    expect(armRequests()).toEqual([]);
    const leases = w.api.server.requestLog().filter((r) => r.path.includes('/leases/') && r.method !== 'GET');
    expect(leases).toEqual([]);

    await old.stop();
    await eventually(async () => expect((await w.assigned()).find((a) => a.name === 'p1-default-id1')?.state).toBe('Assigned'), 15_000);
    expect(mic.isLeader()).toBe(true);
    expect((await readOriginalLeaderRecord(w.core))?.holderIdentity).toBe('mic-new-0');
    expect(w.vmssIds()).toEqual([id.id.toLowerCase()]);
  });

  it("keeps the original's AAIs as they are: never deleted, recreated or set back from Assigned, no ARM PATCH", async () => {
    const crds = await upgradedClusterCrdDir();
    cleanups.push(crds.cleanup);
    const w: MicWorld = await startMicWorld({ crdDir: crds.dir });
    cleanups.push(() => w.stop());
    const old = holdOriginalMicLock(w.core, { identity: 'mic-5b7c-old', leaseDurationSeconds: 2 });
    cleanups.push(() => old.stop());

    // The cluster as the original MIC left it: identity on the VMSS, the pod's AAI Assigned, in its format.
    const id = w.msi('id1');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    w.az.emulator.setVmIdentities({ vmss: VMSS }, [id.id]);
    const get = (plural: string, name: string) =>
      w.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural, namespace: 'default', name }) as Promise<Record<string, unknown>>;
    const identity = await get(Plurals.AzureIdentity, 'id1');
    const binding = await get(Plurals.AzureIdentityBinding, 'b1');
    const created = (await w.custom.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      plural: Plurals.AzureAssignedIdentity,
      namespace: 'default',
      body: {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: 'AzureAssignedIdentity',
        metadata: { name: 'p1-default-id1', labels: { nodename: NODES.vmss0 }, finalizers: ['azureassignedidentity.finalizers.aadpodidentity.k8s.io'] },
        spec: { azureIdentityRef: identity, azureBindingRef: binding, pod: 'p1', podNamespace: 'default', nodename: NODES.vmss0 },
        status: { status: 'Assigned', availableReplicas: 1 },
      },
    })) as { metadata: { uid: string } };

    const mic = await w.startMic({ instance: 'mic-new-0' });
    const states: string[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        states.push((await w.assigned()).find((a) => a.name === 'p1-default-id1')?.state ?? 'missing');
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await old.stop();
    await eventually(() => expect(mic.isLeader()).toBe(true), 15_000);
    // A new pod after the takeover gets Assigned; the identity is on the VMSS already.
    await w.createPod('p2', NODES.vmss1, 'app1');
    await eventually(async () => expect((await w.assigned()).find((a) => a.name === 'p2-default-id1')?.state).toBe('Assigned'));
    await mic.idle();
    watching = false;
    await watcher;

    expect(new Set(states)).toEqual(new Set(['Assigned']));
    const p1 = (await w.assigned()).find((a) => a.name === 'p1-default-id1');
    expect(p1?.uid).toBe(created.metadata.uid);
    const aaiWrites = w.api.server.requestLog().filter((r) => r.path.includes('/azureassignedidentities/p1-default-id1') && r.method === 'DELETE');
    expect(aaiWrites).toEqual([]);
    expect(w.az.emulator.requestLog().filter((r) => r.method === 'PATCH')).toEqual([]);
    expect(w.vmssIds()).toEqual([id.id.toLowerCase()]);
  });
});
