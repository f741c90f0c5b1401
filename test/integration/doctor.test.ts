// `doctor` and the kubectl plugin against the loopback sandbox, run as an admin runs them (child processes): healthy
// exits 0; an identity whose clientID is not Azure's, a role withheld from the cluster principal, and VM Contributor
// revoked each exit 1 with the exact fix; `kubectl aad-pod-identity` is found on PATH and explains a pod.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, REPO_ROOT, startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

const KUBECTL = '/usr/bin/kubectl';
const haveKubectl = existsSync(KUBECTL);
if (!haveKubectl && !process.env.CI) console.warn(`doctor.test.ts: kubectl plugin tests SKIPPED, ${KUBECTL} not found`);
const BIN = join(REPO_ROOT, 'bin');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, [...args], { cwd: REPO_ROOT, env, timeout: 90_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('doctor on the loopback sandbox', () => {
  let t: TestSandbox;
  let dir: string;
  const doctor = (...args: string[]) => run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'cmd', 'doctor.ts'), '--sandbox', t.sandbox.stateDir, ...args]);
  const principal = () => t.sandbox.endpoints.azure.clusterPrincipal;
  const group = () => `/subscriptions/${t.sandbox.endpoints.azure.subscriptionId}/resourceGroups/${t.sandbox.resourceGroup}`;

  beforeAll(async () => {
    t = await startTestSandbox({ network: 'loopback', nodes: 2, mic: { replicas: 1 } });
    dir = await mkdtemp(join(tmpdir(), 'doctor-test-'));
    const id = t.sandbox.endpoints.identities[0]!;
    await t.createIdentity('default', 'demo-identity', { type: 0, resourceID: id.id, clientID: id.clientId });
    await t.createBinding('default', 'demo-identity-binding', 'demo-identity', 'demo');
    await t.startPod('default', 'demo-app', 'demo');
    await eventually(async () => (await t.assignedFor('default', 'demo-app')).some((x) => (x.status as { status?: string } | undefined)?.status === 'Assigned'), 30_000, 'demo-app Assigned');
  }, 120_000);

  afterAll(async () => {
    await t?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('passes every check on a healthy sandbox and exits 0', async () => {
    const r = await doctor();
    if (process.env.DOCTOR_PRINT) console.log(r.stdout);
    expect(r.stderr).toBe('');
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).not.toContain('✗');
    for (const line of [
      '✓ CRD azureassignedidentities.aadpodidentity.k8s.io serves v1',
      '✓ MIC leader default/mic-0 holds Lease default/aad-pod-identity-mic and is Ready',
      '✓ MIC leader default/mic-0 /healthz: Active',
      '✓ AzureIdentity default/demo-identity: sandbox-identity-1 exists, clientID matches',
      `✓ AzureIdentity default/demo-identity (sandbox-identity-1): the cluster principal may Microsoft.ManagedIdentity/userAssignedIdentities/assign/action`,
      '✓ node resource group sandbox-nodes: the cluster principal may Microsoft.Compute/virtualMachineScaleSets/write',
    ]) expect(r.stdout).toContain(line);
    for (const node of t.sandbox.endpoints.nodes) expect(r.stdout).toContain(`✓ node ${node.name}: NMI pod kube-system/nmi-${node.name} is Ready`);
    expect(r.stdout).toMatch(/All \d+ checks passed\./);
  }, 60_000);

  it('fails on an AzureIdentity whose clientID is not its identity\'s and prints the patch that fixes it', async () => {
    const id = t.sandbox.endpoints.identities[1]!;
    const wrong = '00000000-1111-2222-3333-444444444444';
    await t.createIdentity('default', 'wrong-client', { type: 0, resourceID: id.id, clientID: wrong });
    await t.createBinding('default', 'wrong-client-binding', 'wrong-client', 'wrong-client');
    try {
      const r = await doctor();
      if (process.env.DOCTOR_PRINT) console.log(r.stdout);
      expect(r.code, r.stdout).toBe(1);
      expect(r.stdout).toContain(`✗ AzureIdentity default/wrong-client: spec.clientID ${wrong} ≠ the identity's clientId ${id.clientId}`);
      expect(r.stdout).toContain(`kubectl patch azureidentity -n default wrong-client --type merge -p '{"spec":{"clientID":"${id.clientId}"}}'`);
      const json = JSON.parse((await doctor('--json')).stdout) as { ok: boolean; checks: Array<{ check: string; status: string }> };
      expect(json.ok).toBe(false);
      expect(json.checks.filter((c) => c.status === 'fail').map((c) => c.check)).toEqual(['identity']);
    } finally {
      await t.deleteCustom('default', 'azureidentitybindings', 'wrong-client-binding');
      await t.deleteCustom('default', 'azureidentities', 'wrong-client');
    }
  }, 60_000);

  it('fails when the cluster principal holds no role that allows assigning an identity, prints the az command, passes once granted', async () => {
    // Identities kept in another resource group, where nobody granted the cluster principal anything.
    t.sandbox.azure.createResourceGroup('team-identities');
    const other = t.sandbox.azure.createUserAssignedIdentity('team-identities', 'team-id');
    await t.createIdentity('default', 'team-id', { type: 0, resourceID: other.id, clientID: other.clientId });
    await t.createBinding('default', 'team-id-binding', 'team-id', 'team-id');
    try {
      const r = await doctor();
      if (process.env.DOCTOR_PRINT) console.log(r.stdout);
      expect(r.code, r.stdout).toBe(1);
      expect(r.stdout).toContain('✗ AzureIdentity default/team-id (team-id): the cluster principal may not Microsoft.ManagedIdentity/userAssignedIdentities/assign/action');
      expect(r.stdout).toContain(`az role assignment create --assignee ${principal().clientId} --role "Managed Identity Operator" --scope ${other.id}`);

      t.sandbox.azure.grantRole(principal().objectId, 'Managed Identity Operator', other.id);
      const after = await doctor();
      expect(after.code, after.stdout).toBe(0);
      expect(after.stdout).toContain('✓ AzureIdentity default/team-id: team-id exists, clientID matches');
    } finally {
      await t.deleteCustom('default', 'azureidentitybindings', 'team-id-binding');
      await t.deleteCustom('default', 'azureidentities', 'team-id');
    }
  }, 90_000);

  it('checks a Federated identity for the credential write (Managed Identity Contributor), not for Managed Identity Operator', async () => {
    t.sandbox.azure.createResourceGroup('fed-identities');
    const fed = t.sandbox.azure.createUserAssignedIdentity('fed-identities', 'fed-id');
    await t.createIdentity('default', 'fed-id', { type: 0, resourceID: fed.id, clientID: fed.clientId, mode: 'Federated' });
    await t.createBinding('default', 'fed-id-binding', 'fed-id', 'fed-id');
    try {
      // Operator lets MIC attach it, which federation never does: not enough to write its credentials.
      t.sandbox.azure.grantRole(principal().objectId, 'Managed Identity Operator', fed.id);
      const r = await doctor();
      expect(r.code, r.stdout).toBe(1);
      expect(r.stdout).toContain(
        '✗ AzureIdentity default/fed-id (fed-id, Federated): the cluster principal may not Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write',
      );
      expect(r.stdout).toContain(`az role assignment create --assignee ${principal().clientId} --role "Managed Identity Contributor" --scope ${fed.id}`);

      t.sandbox.azure.grantRole(principal().objectId, 'Managed Identity Contributor', fed.id);
      const after = await doctor();
      expect(after.code, after.stdout).toBe(0);
      expect(after.stdout).toContain('✓ AzureIdentity default/fed-id (fed-id, Federated): the cluster principal may Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write');
    } finally {
      await t.deleteCustom('default', 'azureidentitybindings', 'fed-id-binding');
      await t.deleteCustom('default', 'azureidentities', 'fed-id');
    }
  }, 90_000);

  it('fails when Virtual Machine Contributor on the node resource group is withheld and prints the az command', async () => {
    expect(t.sandbox.azure.revokeRole(principal().objectId, 'Virtual Machine Contributor', group())).toBeGreaterThan(0);
    try {
      const r = await doctor();
      if (process.env.DOCTOR_PRINT) console.log(r.stdout);
      expect(r.code, r.stdout).toBe(1);
      expect(r.stdout).toContain('✗ node resource group sandbox-nodes: the cluster principal may not Microsoft.Compute/virtualMachineScaleSets/write');
      expect(r.stdout).toContain(`az role assignment create --assignee ${principal().clientId} --role "Virtual Machine Contributor" --scope ${group()}`);
    } finally {
      t.sandbox.azure.grantRole(principal().objectId, 'Virtual Machine Contributor', group());
    }
  }, 60_000);

  it('exits 2 on a usage error', async () => {
    const r = await doctor('--skip', 'everything');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--skip: unknown check everything');
    expect((await doctor('--context', 'nope')).code).toBe(2);
  }, 30_000);

  describe.skipIf(!haveKubectl && !process.env.CI)('as a kubectl plugin', () => {
    const kubectlEnv = () => ({ ...process.env, PATH: `${BIN}:${process.env.PATH ?? ''}`, KUBECONFIG: t.sandbox.endpoints.kubeconfig, HOME: dir });

    it('is listed by kubectl plugin list', async () => {
      const r = await run(KUBECTL, ['plugin', 'list'], kubectlEnv());
      expect(r.stdout, r.stderr).toContain(join(BIN, 'kubectl-aad_pod_identity'));
    }, 30_000);

    it('explains a pod with the current kubectl context: kubectl aad-pod-identity explain default/demo-app', async () => {
      const r = await run(KUBECTL, ['aad-pod-identity', 'explain', 'default/demo-app'], kubectlEnv());
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('Pod default/demo-app: works: the pod gets a token');
      // kubectl's -n, and a context that does not exist is a usage error.
      const n = await run(KUBECTL, ['aad-pod-identity', 'explain', 'demo-app', '-n', 'default'], kubectlEnv());
      expect(n.code, n.stderr).toBe(0);
      const bad = await run(KUBECTL, ['aad-pod-identity', 'explain', '--context', 'nope', 'default/demo-app'], kubectlEnv());
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('context "nope" does not exist');
    }, 60_000);

    it('runs doctor: kubectl aad-pod-identity doctor', async () => {
      const r = await run(KUBECTL, ['aad-pod-identity', 'doctor', '--sandbox', t.sandbox.stateDir], kubectlEnv());
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/All \d+ checks passed\./);
      const help = await run(KUBECTL, ['aad-pod-identity', '--help'], kubectlEnv());
      expect(help.stdout).toContain('usage: kubectl aad-pod-identity explain');
    }, 60_000);
  });
});
