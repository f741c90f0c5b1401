// MIC during an upgrade from the original: the original's CRDs (no AAI status subresource) and an original MIC
// holding its Endpoints lock default/aad-pod-identity-mic. While that MIC renews, ours writes nothing (no AAI, no
// ARM call, no lock) and reports Not Active; once the record expires ours takes both locks and the pod's AAI
// reaches Assigned.
import { afterEach, describe, expect, it } from 'vitest';
import { upgradedClusterCrdDir } from '../helpers/apiserver.js';
import { holdOriginalMicLock, readOriginalLeaderRecord } from '../helpers/original-mic.js';
import { eventually, NODES, startMicWorld, type MicWorld } from './mic-world.js';

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
});
