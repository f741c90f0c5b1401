// `npm run sandbox -- --demo`: a guided walk through the sandbox that checks every step it announces.
// AzureIdentity (legacy capitalised fields) + AzureIdentityBinding from examples/demo → a labelled pod → its
// program (unmodified @azure/identity) gets a token → the AzureAssignedIdentity and the VMSS identity list → the
// pod is deleted → the identity is released → an identity whose resource group the cluster principal holds no role on
// fails with LinkedAuthorizationFailed → an admin grants Managed Identity Operator (a real PUT roleAssignments) → it
// is attached and the pod gets its token → the first identity is switched to Federated (spec.mode): a new pod gets
// its token through the federated credential MIC wrote, and no VM or VMSS is PATCHed. Resolves true only if every
// step did what it said.

import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import type { Sandbox } from './index.js';
import { realClock } from '../common/clock.js';

export interface DemoOptions {
  readonly repoRoot: string;
  /** Where the narration goes (one line per call). */
  readonly say: (line: string) => void;
  readonly stepTimeoutMs?: number;
}

const GROUP = 'aadpodidentity.k8s.io';

export async function runDemo(sandbox: Sandbox, opts: DemoOptions): Promise<boolean> {
  const { say } = opts;
  const timeoutMs = opts.stepTimeoutMs ?? 60_000;
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(sandbox.endpoints.kubeconfig);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const identity = sandbox.endpoints.identities[0];
  if (!identity) {
    say('✗ the sandbox has no user-assigned identity to demonstrate with');
    return false;
  }
  let ok = true;
  const check = (passed: boolean, good: string, bad: string): boolean => {
    say(passed ? `✓ ${good}` : `✗ ${bad}`);
    ok &&= passed;
    return passed;
  };
  const manifest = async (file: string): Promise<Record<string, unknown>> => {
    const text = await readFile(join(opts.repoRoot, 'examples', 'demo', file), 'utf8');
    const filled = text.replaceAll('${IDENTITY_RESOURCE_ID}', identity.id).replaceAll('${IDENTITY_CLIENT_ID}', identity.clientId);
    return parseYaml(filled) as Record<string, unknown>;
  };
  const aaisFor = async (podName: string): Promise<Array<{ name: string; state: string; node: string }>> => {
    const list = (await custom.listClusterCustomObject({ group: GROUP, version: 'v1', plural: 'azureassignedidentities' })) as {
      items?: Array<{ metadata?: { name?: string }; spec?: { pod?: string; podNamespace?: string; nodename?: string }; status?: { status?: string } }>;
    };
    return (list.items ?? [])
      .filter((a) => a.spec?.pod === podName && a.spec.podNamespace === 'default')
            // No status object at all: just created through the main resource, which reads as Created.
      .map((a) => ({ name: a.metadata?.name ?? '', state: a.status === undefined ? 'Created' : (a.status.status ?? ''), node: a.spec?.nodename ?? '' }));
  };
  const aaisOfPod = () => aaisFor('demo-app');
  const computeIdentities = (): string[] => {
    const { compute, computeNames } = sandbox.endpoints.azure;
    const names = compute === 'vmss' ? computeNames.slice(0, 1) : computeNames;
    return names.flatMap((n) => {
      const info = compute === 'vmss' ? sandbox.azure.getVmss(sandbox.resourceGroup, n) : sandbox.azure.getVm(sandbox.resourceGroup, n);
      return (info?.identity.userAssignedIdentities ?? []).map((id) => id.toLowerCase());
    });
  };
  const computeLabel = sandbox.endpoints.azure.compute === 'vmss' ? `VMSS ${sandbox.endpoints.azure.computeNames[0]}` : 'the VMs';

  say(`Sandbox: ${sandbox.endpoints.network} network, ${sandbox.endpoints.nodes.length} nodes (${sandbox.endpoints.azure.compute}), state in ${sandbox.stateDir}`);
  say('');
  say('1. AzureIdentity from examples/demo/azureidentity-legacy.yaml (legacy fields Type, ResourceID, ClientID)');
  const azureIdentity = await manifest('azureidentity-legacy.yaml');
  await custom.createNamespacedCustomObject({ group: GROUP, version: 'v1', namespace: 'default', plural: 'azureidentities', body: azureIdentity });
  const stored = (await custom.getNamespacedCustomObject({ group: GROUP, version: 'v1', namespace: 'default', plural: 'azureidentities', name: 'demo-identity' })) as {
    spec?: Record<string, unknown>;
  };
  check(stored.spec?.ResourceID === identity.id, `created AzureIdentity default/demo-identity for ${identity.name} (client id ${identity.clientId})`, 'the API server did not keep the legacy ResourceID field');

  say('2. AzureIdentityBinding from examples/demo/azureidentitybinding.yaml (selector "demo")');
  await custom.createNamespacedCustomObject({
    group: GROUP,
    version: 'v1',
    namespace: 'default',
    plural: 'azureidentitybindings',
    body: await manifest('azureidentitybinding.yaml'),
  });
  check(true, 'created AzureIdentityBinding default/demo-identity-binding', '');

  say('3. A pod labelled aadpodidbinding=demo (examples/demo/pod.yaml)');
  await core.createNamespacedPod({ namespace: 'default', body: (await manifest('pod.yaml')) as k8s.V1Pod });
  const pod = await sandbox.kubelet.waitForPod('default/demo-app', timeoutMs);
  check(true, `pod default/demo-app is Running on ${pod.node} with IP ${pod.ip}${pod.netns ? ` (network namespace ${pod.netns})` : ''}`, '');

  say('4. The pod asks for a token: new ManagedIdentityCredential().getToken("https://management.azure.com/.default")');
  const run = await sandbox.execInPod('default/demo-app', ['node', join(opts.repoRoot, 'examples', 'pod-token.mjs'), '--timeout-ms', String(timeoutMs)], {
    timeoutMs: timeoutMs + 10_000,
  });
  const result = parseLine(run.stdout);
  if (check(result?.ok === true, 'the pod got a token', `the pod got no token: ${result?.message ?? run.stderr.trim().slice(0, 300)}`)) {
    const claims = result?.claims ?? {};
    say(`   appid (client id): ${claims.appid}`);
    say(`   oid (principal id): ${claims.oid}`);
    say(`   xms_mirid: ${claims.xms_mirid}`);
    say(`   aud: ${claims.aud}`);
    check(
      claims.appid === identity.clientId && claims.xms_mirid?.toLowerCase() === identity.id.toLowerCase(),
      `the token is ${identity.name}'s, the pod's bound identity`,
      `the token is not ${identity.name}'s (expected appid ${identity.clientId})`,
    );
  }

  say('5. The AzureAssignedIdentity and the identities on the node');
  const aais = await waitFor(async () => {
    const list = await aaisOfPod();
    return list.length === 1 && list[0]?.state === 'Assigned' ? list : undefined;
  }, timeoutMs);
  check(aais !== undefined, `AzureAssignedIdentity ${aais?.[0]?.name} is Assigned (node ${aais?.[0]?.node})`, 'no Assigned AzureAssignedIdentity for the pod');
  const attached = computeIdentities();
  for (const id of attached) say(`   ${computeLabel}: ${id}`);
  check(attached.includes(identity.id.toLowerCase()), `${identity.name} is attached to ${computeLabel}`, `${identity.name} is not attached to ${computeLabel}`);

  say('6. Delete the pod');
  await core.deleteNamespacedPod({ namespace: 'default', name: 'demo-app' });
  const released = await waitFor(async () => ((await aaisOfPod()).length === 0 && !computeIdentities().includes(identity.id.toLowerCase()) ? true : undefined), timeoutMs);
  check(released === true, `the AzureAssignedIdentity is gone and ${identity.name} was released from ${computeLabel}`, `${identity.name} was not released after the pod was deleted`);

  say('7. An identity in a resource group where the cluster principal holds no role (team-identities/team-identity)');
  const { subscriptionId, clusterPrincipal } = sandbox.endpoints.azure;
  const teamGroup = sandbox.azure.createResourceGroup('team-identities');
  const team = sandbox.azure.createUserAssignedIdentity('team-identities', 'team-identity');
  await custom.createNamespacedCustomObject({
    group: GROUP,
    version: 'v1',
    namespace: 'default',
    plural: 'azureidentities',
    body: { apiVersion: `${GROUP}/v1`, kind: 'AzureIdentity', metadata: { name: 'team-identity' }, spec: { type: 0, resourceID: team.id, clientID: team.clientId } },
  });
  await custom.createNamespacedCustomObject({
    group: GROUP,
    version: 'v1',
    namespace: 'default',
    plural: 'azureidentitybindings',
    body: { apiVersion: `${GROUP}/v1`, kind: 'AzureIdentityBinding', metadata: { name: 'team-identity-binding' }, spec: { azureIdentity: 'team-identity', selector: 'team' } },
  });
  const teamPod = (await manifest('pod.yaml')) as k8s.V1Pod;
  teamPod.metadata = { ...teamPod.metadata, name: 'team-app', labels: { aadpodidbinding: 'team' } };
  await core.createNamespacedPod({ namespace: 'default', body: teamPod });
  await sandbox.kubelet.waitForPod('default/team-app', timeoutMs);
  const refusal = await waitFor(async () => {
    const events = await core.listNamespacedEvent({ namespace: 'default' });
    return events.items.find((e) => e.involvedObject.name === 'team-identity-binding' && (e.message ?? '').includes('LinkedAuthorizationFailed'));
  }, timeoutMs);
  if (check(refusal !== undefined, 'ARM refused to attach it: MIC reports LinkedAuthorizationFailed', 'no LinkedAuthorizationFailed event for team-identity-binding')) {
    const msg = refusal?.message ?? '';
    const at = msg.indexOf('however,');
    say(`   event (${refusal?.reason}): …${at >= 0 ? msg.slice(at, at + 400) : msg.slice(0, 400)}`);
  }
  const teamAai = async () => (await aaisFor('team-app'))[0]?.state;
  const pending = await waitFor(async () => ((await teamAai()) === 'Created' ? true : undefined), timeoutMs);
  check(pending === true, 'its AzureAssignedIdentity stays Created (NMI serves no token for it)', `the AzureAssignedIdentity is ${(await teamAai()) ?? 'missing'}, not Created`);

  say('8. The admin grants Managed Identity Operator on that resource group, over ARM as `az role assignment create` does:');
  say(`   az role assignment create --role "Managed Identity Operator" --assignee-object-id ${clusterPrincipal.objectId} --assignee-principal-type ServicePrincipal --scope ${teamGroup.id}`);
  const adminOid = randomUUID();
  sandbox.azure.grantRole(adminOid, 'User Access Administrator', `/subscriptions/${subscriptionId}`);
  const put = await armPut(sandbox, adminOid, `${teamGroup.id}/providers/Microsoft.Authorization/roleAssignments/${randomUUID()}?api-version=2022-04-01`, {
    properties: {
      roleDefinitionId: `/subscriptions/${subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/f1a07417-d97a-45cb-824c-7a7467783830`,
      principalId: clusterPrincipal.objectId,
      principalType: 'ServicePrincipal',
    },
  });
  check(put.status === 201, `PUT roleAssignments answered ${put.status} Created`, `PUT roleAssignments answered ${put.status}: ${put.text.slice(0, 200)}`);
  const assigned = await waitFor(async () => ((await teamAai()) === 'Assigned' ? true : undefined), timeoutMs);
  check(assigned === true, "MIC's next cycle attached team-identity: its AzureAssignedIdentity is Assigned", 'team-identity was not attached after the grant');
  const teamRun = await sandbox.execInPod('default/team-app', ['node', join(opts.repoRoot, 'examples', 'pod-token.mjs'), '--timeout-ms', String(timeoutMs)], {
    timeoutMs: timeoutMs + 10_000,
  });
  const teamToken = parseLine(teamRun.stdout);
  check(
    teamToken?.ok === true && teamToken.claims?.appid === team.clientId,
    `default/team-app got a token for team-identity (appid ${team.clientId})`,
    `default/team-app got no token for team-identity: ${teamToken?.message ?? teamRun.stderr.trim().slice(0, 300)}`,
  );

  say('9. Federated mode: switch demo-identity to spec.mode Federated, one identity at a time (docs/federated.md)');
  say('   kubectl patch azureidentity demo-identity --type merge -p \'{"spec":{"mode":"Federated"}}\'');
  sandbox.azure.clearRequestLog();
  await custom.patchNamespacedCustomObject(
    { group: GROUP, version: 'v1', namespace: 'default', plural: 'azureidentities', name: 'demo-identity', body: { spec: { mode: 'Federated' } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
  );
  const fedPod = (await manifest('pod.yaml')) as k8s.V1Pod;
  fedPod.metadata = { ...fedPod.metadata, name: 'demo-fed-app' };
  await core.createNamespacedPod({ namespace: 'default', body: fedPod });
  await sandbox.kubelet.waitForPod('default/demo-fed-app', timeoutMs);
  const fedAssigned = await waitFor(async () => ((await aaisFor('demo-fed-app'))[0]?.state === 'Assigned' ? true : undefined), timeoutMs);
  check(fedAssigned === true, 'pod default/demo-fed-app (service account default) has an Assigned AzureAssignedIdentity', 'the federated AzureAssignedIdentity never became Assigned');
  const credentials = sandbox.azure.listFederatedCredentials(identity.id);
  for (const c of credentials) say(`   federated credential ${c.name}: issuer ${c.issuer}, subject ${c.subject}, audiences ${c.audiences.join(',')}`);
  check(
    credentials.some((c) => c.subject === 'system:serviceaccount:default:default' && c.issuer === sandbox.endpoints.serviceAccountIssuer.issuer),
    `MIC wrote ${identity.name} a federated credential for system:serviceaccount:default:default`,
    `${identity.name} has no federated credential for the pod's service account`,
  );
  const fedRun = await sandbox.execInPod('default/demo-fed-app', ['node', join(opts.repoRoot, 'examples', 'pod-token.mjs'), '--timeout-ms', String(timeoutMs)], {
    timeoutMs: timeoutMs + 10_000,
  });
  const fedToken = parseLine(fedRun.stdout);
  check(
    fedToken?.ok === true && fedToken.claims?.appid === identity.clientId && fedToken.claims.xms_mirid?.toLowerCase() === identity.id.toLowerCase(),
    `the same unmodified program got ${identity.name}'s token (appid ${fedToken?.claims?.appid}), by federating the pod's service account at Azure AD`,
    `default/demo-fed-app got no token for ${identity.name}: ${fedToken?.message ?? fedRun.stderr.trim().slice(0, 300)}`,
  );
  const armLog = sandbox.azure.requestLog();
  const patches = armLog.filter((e) => e.operation === 'vm_patch' || e.operation === 'vmss_patch');
  const puts = armLog.filter((e) => e.operation === 'fic_put');
  say(`   Azure since the switch: ${puts.length} federated credential PUT(s), ${patches.length} VM/VMSS PATCH(es), ${armLog.filter((e) => e.operation === 'imds_token').length} IMDS token call(s)`);
  check(
    patches.length === 0 && !computeIdentities().includes(identity.id.toLowerCase()),
    `no VM or VMSS was PATCHed and ${identity.name} is attached to nothing`,
    `${patches.length} VM/VMSS PATCH(es) for a federated identity`,
  );

  say('');
  say(ok ? 'Demo passed: every step did what it said.' : 'Demo FAILED: see the ✗ lines above and the logs in ' + join(sandbox.stateDir, 'logs'));
  return ok;
}

/** PUT to the sandbox's ARM as the principal `objectId` (a token minted by the emulator's AAD), trusting its CA. */
async function armPut(sandbox: Sandbox, objectId: string, path: string, body: unknown): Promise<{ status: number; text: string }> {
  const token = await sandbox.azure.issueToken({ objectId });
  return new Promise((resolve, reject) => {
    const req = request(
      `${sandbox.azure.url}${path}`,
      { method: 'PUT', ca: sandbox.azure.caPem, headers: { authorization: `Bearer ${token.accessToken}`, 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

interface PodTokenLine {
  readonly ok?: boolean;
  readonly message?: string;
  readonly claims?: { appid?: string; oid?: string; aud?: string; xms_mirid?: string };
}

function parseLine(stdout: string): PodTokenLine | undefined {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as PodTokenLine;
  } catch {
    return undefined;
  }
}

async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = realClock.now() + timeoutMs;
  while (realClock.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await realClock.sleep(200);
  }
  return undefined;
}
