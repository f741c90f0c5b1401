// Federated mode end to end on the netns sandbox: a pod in its own network namespace runs an unmodified
// @azure/identity ManagedIdentityCredential against 169.254.169.254; real iptables send it to NMI, which exchanges a
// token of the pod's own service account (TokenRequest bound to the pod) at the emulator's Azure AD through the
// federated identity credential MIC wrote. No identity is attached to any VM or VMSS, and no VM/VMSS is PATCHed.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shouldSkipNetns } from '../helpers/netns.js';
import { eventually, hostNetworkState, startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

const skip = shouldSkipNetns('federated mode (netns sandbox)');

describe.skipIf(skip)('federated mode on the netns sandbox', () => {
  let t: TestSandbox;
  let before: Awaited<ReturnType<typeof hostNetworkState>>;

  beforeAll(async () => {
    before = await hostNetworkState();
    t = await startTestSandbox({
      network: 'netns',
      nodes: 1,
      nmi: { args: ['--enable-federated-identities'] },
      mic: { args: () => ['--enable-federated-identities'] },
    });
    // Federated credential writes need Managed Identity Contributor (Operator only reads them).
    const { subscriptionId, resourceGroup, clusterPrincipal } = t.sandbox.endpoints.azure;
    t.sandbox.azure.grantRole(clusterPrincipal.objectId, 'Managed Identity Contributor', `/subscriptions/${subscriptionId}/resourceGroups/${resourceGroup}`);
  }, 120_000);

  afterAll(async () => {
    const name = t?.sandbox.network.name;
    await t?.stop();
    if (name) expect(await hostNetworkState(name)).toEqual({ namespaces: [], natRules: [], links: [] });
    expect((await hostNetworkState()).natRules).toEqual(before.natRules);
  }, 120_000);

  it("gives an unmodified @azure/identity client in a pod its Federated identity's token through real iptables, with no VM identity and no PATCH", async () => {
    const ns = 'fed-e2e';
    await t.createNamespace(ns);
    const id = t.sandbox.createIdentity(`${ns}-web-${randomUUID().slice(0, 6)}`);
    t.sandbox.azure.clearRequestLog();
    await t.createCustom(ns, 'azureidentities', { kind: 'AzureIdentity', metadata: { name: 'web', namespace: ns }, spec: { type: 0, resourceID: id.id, clientID: id.clientId, mode: 'Federated' } });
    await t.createBinding(ns, 'web-binding', 'web', 'web');
    await t.startPod(ns, 'app', 'web');
    await eventually(async () => {
      const list = await t.assignedFor(ns, 'app');
      return list.length === 1 && (list[0]?.status as { status?: string } | undefined)?.status === 'Assigned' ? list : undefined;
    }, 30_000, 'Assigned AAI for app');
    const token = await eventually(async () => {
      const r = await t.podToken(ns, 'app', { timeoutMs: 20_000 });
      return r.ok ? r : undefined;
    }, 45_000, 'a federated token in the pod');
    expect(token.claims).toMatchObject({ appid: id.clientId, oid: id.principalId, xms_mirid: id.id });
    expect(t.computeIdentities()).not.toContain(id.id.toLowerCase());
    const log = t.sandbox.azure.requestLog();
    expect(log.filter((e) => e.operation === 'vm_patch' || e.operation === 'vmss_patch')).toEqual([]);
    expect(log.filter((e) => e.operation === 'imds_token')).toEqual([]);
    expect(log.some((e) => e.operation === 'aad_token' && e.status === 200)).toBe(true);
  }, 120_000);
});
