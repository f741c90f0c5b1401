// Issue 10 row 6, MIC side, against the API and Azure emulators: an AzureIdentity in team-b naming team-a's resource
// ID and client ID. With --namespace-identity-policy=enforce MIC does not assign it (no AzureAssignedIdentity, nothing
// attached in ARM for it, an IdentityNotPermitted event on the AzureIdentity), until a cluster admin permits it on the
// Namespace; with the policy off (the default) MIC assigns it, as the original did.
import * as k8s from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PERMITTED_IDENTITIES_ANNOTATION as KEY } from '../../src/crds/namespace-policy.js';
import { eventually, NODES, startMicWorld, type MicWorld } from './mic-world.js';

let w: MicWorld;
beforeEach(async () => {
  w = await startMicWorld();
});
afterEach(async () => {
  await w?.stop();
});

async function namespace(name: string, permitted?: string): Promise<void> {
  await w.core.createNamespace({ body: { metadata: { name, ...(permitted ? { annotations: { [KEY]: permitted } } : {}) } } });
}

/** team-a's identity, binding and pod; team-b's AzureIdentity naming the same Azure identity, its binding and pod. */
async function attack(permitTeamA: boolean): Promise<{ id: string; clientId: string }> {
  const a = w.msi('team-a-id');
  await namespace('team-a', permitTeamA ? a.id : undefined);
  await namespace('team-b');
  await w.createIdentity('mine', { type: 0, resourceID: a.id, clientID: a.clientId }, { namespace: 'team-a' });
  await w.createBinding('ba', { azureIdentity: 'mine', selector: 'a-app' }, 'team-a');
  await w.createPod('victim', NODES.vmss0, 'a-app', 'team-a');
  await w.createIdentity('stolen', { type: 0, resourceID: a.id, clientID: a.clientId }, { namespace: 'team-b' });
  await w.createBinding('bb', { azureIdentity: 'stolen', selector: 'b-app' }, 'team-b');
  // On the VM, so an attachment made for team-b shows on its own target.
  await w.createPod('attacker', NODES.vm, 'b-app', 'team-b');
  return a;
}

const names = async () => (await w.assigned()).map((a) => `${a.podNamespace}/${a.pod}:${a.state}`).sort();

describe('MIC namespace identity policy (issue 10 row 6)', () => {
  it("enforce: team-b's AzureIdentity naming team-a's identity is not assigned, with an IdentityNotPermitted event; an admin's annotation permits it", async () => {
    const a = await attack(true);
    await w.startMic({ flags: ['--namespace-identity-policy=enforce'] });

    await eventually(async () => expect(await names()).toEqual(['team-a/victim:Assigned']));
    await eventually(async () => {
      const events = (await w.events('IdentityNotPermitted')).filter((e) => e.kind === 'AzureIdentity' && e.name === 'stolen');
      expect(events).toHaveLength(1);
      expect(events[0]!.type).toBe('Warning');
      expect(events[0]!.message).toContain(`has no ${KEY} annotation`);
      expect(events[0]!.message).toContain(`add "${a.id.toLowerCase()}"`);
    });
    // The cycle that assigned team-a's pod also judged team-b's: nothing for it, nothing on its VM.
    expect(await names()).toEqual(['team-a/victim:Assigned']);
    expect(w.vmIds()).toEqual([]);
    expect(w.vmssIds()).toEqual([a.id.toLowerCase()]);

    // A cluster admin permits it: MIC reacts to the Namespace change alone.
    await w.core.patchNamespace(
      { name: 'team-b', body: { metadata: { annotations: { [KEY]: a.id } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    await eventually(async () => expect(await names()).toEqual(['team-a/victim:Assigned', 'team-b/attacker:Assigned']));
    expect(w.vmIds()).toEqual([a.id.toLowerCase()]);

    // And withdraws it: the assignment goes, and the identity leaves the VM.
    await w.core.patchNamespace(
      { name: 'team-b', body: { metadata: { annotations: { [KEY]: null } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    await eventually(async () => expect(await names()).toEqual(['team-a/victim:Assigned']));
    await eventually(() => expect(w.vmIds()).toEqual([]));
  });

  it("enforce: a binding cannot hand team-a's permitted identity to a team-b pod carrying team-a's selector", async () => {
    const a = w.msi('team-a-id');
    await namespace('team-a', a.id);
    await namespace('team-b');
    await w.createIdentity('mine', { type: 0, resourceID: a.id, clientID: a.clientId }, { namespace: 'team-a' });
    await w.createBinding('ba', { azureIdentity: 'mine', selector: 'a-app' }, 'team-a');
    await w.createPod('victim', NODES.vmss0, 'a-app', 'team-a');
    await w.createPod('intruder', NODES.vm, 'a-app', 'team-b');
    await w.startMic({ flags: ['--namespace-identity-policy=enforce'] });
    await eventually(async () => expect(await names()).toEqual(['team-a/victim:Assigned']));
    await eventually(async () =>
      expect((await w.events('IdentityNotPermitted')).map((e) => `${e.kind}/${e.name}`)).toContain('Pod/intruder'),
    );
    expect(await names()).toEqual(['team-a/victim:Assigned']);
    expect(w.vmIds()).toEqual([]);
  });

  it("off (the default): the old behaviour, MIC assigns team-b's AzureIdentity naming team-a's identity", async () => {
    const a = await attack(false);
    await w.startMic();
    await eventually(async () => expect(await names()).toEqual(['team-a/victim:Assigned', 'team-b/attacker:Assigned']));
    expect(w.vmIds()).toEqual([a.id.toLowerCase()]);
    expect(await w.events('IdentityNotPermitted')).toEqual([]);
  });
});
