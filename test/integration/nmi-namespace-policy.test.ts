// Issue 10 row 6, NMI side, against both emulators: team-b names team-a's Azure identity in its own AzureIdentity.
// With --namespace-identity-policy=enforce NMI refuses the token even when an AzureAssignedIdentity for it exists
// (written by hand here, as if MIC had been bypassed); with the policy off it is served, as the original did.
import * as k8s from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { GROUP, Plurals, VERSION } from '../../src/crds/names.js';
import { PERMITTED_IDENTITIES_ANNOTATION as KEY } from '../../src/crds/namespace-policy.js';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type WorldIdentity } from '../helpers/nmi-world.js';

const tokenPath = `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}`;

let world: NmiWorld | undefined;
afterEach(async () => {
  await world?.stop();
  world = undefined;
});

/** An AzureIdentity in `namespace` whose spec a tenant wrote: any resource ID and client ID it likes. */
async function tenantIdentity(w: NmiWorld, namespace: string, name: string, spec: { resourceID: string; clientID: string }): Promise<WorldIdentity> {
  const cr = (await w.custom.createNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace,
    plural: Plurals.AzureIdentity,
    body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'AzureIdentity', metadata: { name, namespace }, spec: { type: 0, ...spec } },
  })) as Record<string, unknown>;
  return { cr, name, namespace, clientId: spec.clientID, principalId: '', resourceId: spec.resourceID };
}

/** A cluster admin's change: the Namespace annotation listing what the namespace may use (undefined removes it). */
async function permit(w: NmiWorld, namespace: string, value: string | undefined): Promise<void> {
  await w.core.patchNamespace(
    { name: namespace, body: { metadata: { annotations: { [KEY]: value ?? null } } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
  );
  await w.until((n) => (value === undefined ? n.namespacePolicies.get(namespace) === undefined : n.namespacePolicies.get(namespace) !== undefined), `policy of ${namespace}`);
}

/** team-a's identity and pod, and team-b's pod with an AzureIdentity naming team-a's resource and client IDs. */
async function attackWorld(mode: 'off' | 'enforce') {
  const w = (world = await startNmiWorld({ nmi: { namespaceIdentityPolicy: mode } }));
  const a = await w.managedIdentity('a', { namespace: 'team-a' });
  const victim = await w.pod('victim', '127.0.1.31', { namespace: 'team-a' });
  await w.assign(victim, a);
  const attacker = await w.pod('attacker', '127.0.1.32', { namespace: 'team-b' });
  const stolen = await tenantIdentity(w, 'team-b', 'stolen', { resourceID: a.resourceId, clientID: a.clientId });
  // MIC would refuse this one; the AAI is written by hand, as anyone with write access to AAIs could.
  await w.assign(attacker, stolen);
  return { w, a, victim, attacker };
}

describe('NMI namespace identity policy (issue 10 row 6)', () => {
  it("enforce: team-b's pod gets 403 for an AzureIdentity naming team-a's identity, even with an Assigned AAI; team-a's pod works once permitted", async () => {
    const { w, a, victim, attacker } = await attackWorld('enforce');
    await permit(w, 'team-a', a.resourceId);

    const refused = await w.call(attacker.ip, tokenPath);
    expect(refused.status).toBe(403);
    expect(refused.body).toContain(KEY);
    expect(refused.body).not.toContain('access_token');
    expect(refused.body).not.toContain('team-a');
    expect(refused.body).not.toContain(a.resourceId);

    const ok = await w.call(victim.ip, tokenPath);
    expect(ok.status, ok.body).toBe(200);
    expect(decodeToken(accessTokenOf(ok)).oid).toBe(a.principalId);

    // /host/token (host-network callers naming a pod) applies the same check.
    const host = (pod: { namespace: string; name: string }) =>
      w.call('127.0.0.1', `/host/token/?resource=${encodeURIComponent(VAULT)}`, { headers: { podns: pod.namespace, podname: pod.name } });
    const hostRefused = await host(attacker);
    expect(hostRefused.status).toBe(403);
    expect(hostRefused.body).toContain(KEY);
    expect((await host(victim)).status).toBe(200);

    // Even if team-b's own annotation were widened to name team-a's identity, only an admin could do it: then it works.
    await permit(w, 'team-b', a.resourceId);
    const widened = await w.call(attacker.ip, tokenPath);
    expect(widened.status, widened.body).toBe(200);
  });

  it('enforce: a namespace without the annotation permits nothing, and removing it stops the cached token too', async () => {
    const { w, victim } = await attackWorld('enforce');
    const none = await w.call(victim.ip, tokenPath);
    expect(none.status).toBe(403);
    expect(none.body).toContain(KEY);

    await permit(w, 'team-a', '/subscriptions/*/resourceGroups/*/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*');
    expect((await w.call(victim.ip, tokenPath)).status).toBe(200);
    // The token is now cached (the warm path); revoking the permission must still refuse it.
    await permit(w, 'team-a', undefined);
    expect((await w.call(victim.ip, tokenPath)).status).toBe(403);
  });

  it("enforce: a permitted resource ID with another identity's client ID is refused (IMDS is asked by resource ID)", async () => {
    const w = (world = await startNmiWorld({ nmi: { namespaceIdentityPolicy: 'enforce' } }));
    const a = await w.managedIdentity('a', { namespace: 'team-a' });
    const b = await w.managedIdentity('b', { namespace: 'team-b' });
    await permit(w, 'team-a', a.resourceId);
    await permit(w, 'team-b', b.resourceId);
    const attacker = await w.pod('attacker', '127.0.1.33', { namespace: 'team-b' });
    // team-b's own (permitted) resource ID, team-a's client ID: by client_id IMDS would answer with team-a's token.
    const swapped = await tenantIdentity(w, 'team-b', 'swapped', { resourceID: b.resourceId, clientID: a.clientId });
    await w.assign(attacker, swapped);
    const refused = await w.call(attacker.ip, tokenPath);
    expect(refused.status).toBe(403);
    expect(refused.body).not.toContain('access_token');
    expect(refused.body).not.toContain(b.clientId);
    // Not cached: the same request is refused again, and a correct identity in team-b still works.
    expect((await w.call(attacker.ip, tokenPath)).status).toBe(403);
    const honest = await w.pod('honest', '127.0.1.34', { namespace: 'team-b' });
    await w.assign(honest, b);
    const ok = await w.call(honest.ip, tokenPath);
    expect(ok.status, ok.body).toBe(200);
    expect(decodeToken(accessTokenOf(ok)).oid).toBe(b.principalId);
  });

  it("off (the default): the old behaviour, team-b's pod gets team-a's token (why multi-tenant clusters must enforce)", async () => {
    const { w, a, attacker } = await attackWorld('off');
    const reply = await w.call(attacker.ip, tokenPath);
    expect(reply.status, reply.body).toBe(200);
    expect(decodeToken(accessTokenOf(reply)).oid).toBe(a.principalId);
  });
});
