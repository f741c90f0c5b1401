// kubectl (v1.32) as an independent client of the API emulator: apply CRDs, create/apply/get/delete.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKubelet } from '../../src/sandbox/kubelet.js';
import { createLoopbackNetwork } from '../../src/sandbox/network/loopback.js';
import { CRD_DIR, startTestApiServer, type TestApiServer } from '../helpers/apiserver.js';

const KUBECTL = '/usr/bin/kubectl';
const haveKubectl = existsSync(KUBECTL);
// In CI a missing kubectl must fail the run, so the suite is never skipped there.
const skip = !haveKubectl && !process.env.CI;
if (skip) console.warn(`kubectl.test.ts: SKIPPED, ${KUBECTL} not found (install kubectl to run these tests)`);

const run = promisify(execFile);

const IDENTITY = (name: string, clientID: string) => `apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata:
  name: ${name}
spec:
  type: 0
  resourceID: /subscriptions/sub/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}
  clientID: ${clientID}
`;

describe.skipIf(skip)('kubectl against the API emulator', () => {
  let world: TestApiServer;
  let dir: string;
  let kubeconfig: string;

  async function kubectl(...args: string[]): Promise<string> {
    const { stdout } = await run(KUBECTL, ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args], {
      env: { ...process.env, HOME: dir, KUBECONFIG: kubeconfig },
      timeout: 60_000,
    });
    return stdout;
  }

  beforeAll(async () => {
    world = await startTestApiServer();
    dir = await mkdtemp(join(tmpdir(), 'kubectl-'));
    kubeconfig = join(dir, 'kubeconfig');
    await world.server.writeKubeconfig(kubeconfig);
  });
  afterAll(async () => {
    await world?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('applies the CRD directory, creates and lists an AzureIdentity with its printer columns, and deletes it', async () => {
    const applied = await kubectl('apply', '-f', CRD_DIR);
    for (const plural of ['azureidentities', 'azureidentitybindings', 'azureassignedidentities', 'azurepodidentityexceptions']) {
      expect(applied).toContain(`customresourcedefinition.apiextensions.k8s.io/${plural}.aadpodidentity.k8s.io created`);
    }

    const manifest = join(dir, 'identity.yaml');
    await writeFile(manifest, IDENTITY('demo-id', '11111111-2222-3333-4444-555555555555'));
    expect(await kubectl('create', '-f', manifest)).toContain('azureidentity.aadpodidentity.k8s.io/demo-id created');

    const table = (await kubectl('get', 'azureidentities')).trim().split('\n');
    // MODE is ours (issue 13): an identity without spec.mode is Attached, and kubectl leaves an unset CRD column blank.
    expect(table[0]!.split(/\s+/)).toEqual(['NAME', 'TYPE', 'CLIENTID', 'MODE', 'AGE']);
    expect(table[1]!.split(/\s+/).slice(0, 3)).toEqual(['demo-id', '0', '11111111-2222-3333-4444-555555555555']);
    const modeAt = table[0]!.indexOf('MODE');
    expect(table[1]!.slice(modeAt, table[0]!.indexOf('AGE')).trim()).toBe('');
    expect(table[1]!.split(/\s+/)[3]).toMatch(/^\d+s$/);

    await writeFile(manifest, IDENTITY('fed-id', '11111111-2222-3333-4444-666666666666') + '  mode: Federated\n');
    await kubectl('create', '-f', manifest);
    const fed = (await kubectl('get', 'azureidentity', 'fed-id')).trim().split('\n');
    expect(fed[1]!.split(/\s+/).slice(0, 4)).toEqual(['fed-id', '0', '11111111-2222-3333-4444-666666666666', 'Federated']);
    await kubectl('delete', 'azureidentity', 'fed-id');

    expect(await kubectl('delete', 'azureidentity', 'demo-id')).toContain('azureidentity.aadpodidentity.k8s.io "demo-id" deleted');
    const custom = world.kc.makeApiClient(k8s.CustomObjectsApi);
    const left = (await custom.listNamespacedCustomObject({ group: 'aadpodidentity.k8s.io', version: 'v1', namespace: 'default', plural: 'azureidentities' })) as { items: unknown[] };
    expect(left.items).toEqual([]);
  });

  it('re-applies a changed manifest as a patch, and the server keeps the last-applied annotation', async () => {
    const manifest = join(dir, 'applied.yaml');
    await writeFile(manifest, IDENTITY('applied-id', 'aaaaaaaa-0000-0000-0000-000000000001'));
    expect(await kubectl('apply', '-f', manifest)).toContain('azureidentity.aadpodidentity.k8s.io/applied-id created');
    await writeFile(manifest, IDENTITY('applied-id', 'bbbbbbbb-0000-0000-0000-000000000002'));
    expect(await kubectl('apply', '-f', manifest)).toContain('azureidentity.aadpodidentity.k8s.io/applied-id configured');
    expect(await kubectl('get', 'azureidentity', 'applied-id', '-o', 'jsonpath={.spec.clientID}')).toBe('bbbbbbbb-0000-0000-0000-000000000002');
    const annotation = await kubectl('get', 'azureidentity', 'applied-id', '-o', String.raw`jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}`);
    expect(annotation).toContain('bbbbbbbb-0000-0000-0000-000000000002');
    const patches = world.server.requestLog().filter((e) => e.method === 'PATCH' && e.path.endsWith('/azureidentities/applied-id'));
    expect(patches.map((p) => p.status)).toEqual([200]);
  });

  it('prints pods created through client-node with get -o json, and a kubectl-created pod reaches client-node', async () => {
    const core = world.kc.makeApiClient(k8s.CoreV1Api);
    await core.createNamespacedPod({ namespace: 'default', body: { metadata: { name: 'web', labels: { app: 'web' } }, spec: { nodeName: 'node-a', containers: [{ name: 'c', image: 'nginx' }] } } });
    const list = JSON.parse(await kubectl('get', 'pods', '-o', 'json')) as { items: { metadata: { name: string; uid: string }; spec: { nodeName: string } }[] };
    expect(list.items.map((p) => [p.metadata.name, p.spec.nodeName])).toEqual([['web', 'node-a']]);

    const podManifest = join(dir, 'pod.yaml');
    await writeFile(podManifest, 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-kubectl\nspec:\n  containers:\n  - name: c\n    image: busybox\n');
    await kubectl('create', '-f', podManifest);
    const pods = await kubectl('get', 'pods');
    expect(pods.split('\n')[0]!.split(/\s+/)).toEqual(['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']);
    expect(pods).toMatch(/from-kubectl\s+0\/1\s+Pending/);
    await kubectl('delete', 'pod', 'from-kubectl', 'web');
    expect((await core.listNamespacedPod({ namespace: 'default' })).items).toEqual([]);
  });
  it("annotates a Namespace with the permitted-identities policy (what a cluster admin runs), and a watch sees the change", async () => {
    const core = world.kc.makeApiClient(k8s.CoreV1Api);
    // From a manifest: `kubectl create namespace NAME` sends protobuf, which the emulator does not speak.
    const nsManifest = join(dir, 'namespace.yaml');
    await writeFile(nsManifest, 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n');
    expect(await kubectl('create', '-f', nsManifest)).toContain('namespace/team-a created');
    const list = await core.listNamespace({});
    const watch = new k8s.Watch(world.kc);
    const seen = new Promise<Record<string, string>>((resolve, reject) => {
      void watch
        .watch('/api/v1/namespaces', { resourceVersion: list.metadata?.resourceVersion, fieldSelector: 'metadata.name=team-a' }, (type, obj: k8s.V1Namespace) => {
          if (type === 'MODIFIED' && obj.metadata?.annotations) resolve(obj.metadata.annotations);
        }, (err) => { if (err) reject(err as Error); })
        .then((req) => seen.finally(() => req.abort()));
    });
    const id = '/subscriptions/s/resourceGroups/team-a/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*';
    expect(await kubectl('annotate', 'namespace', 'team-a', `aadpodidentity.k8s.io/permitted-identities=${id}`)).toContain('namespace/team-a annotated');
    expect(await seen).toMatchObject({ 'aadpodidentity.k8s.io/permitted-identities': id });
    const printed = await kubectl('get', 'namespace', 'team-a', '-o', String.raw`jsonpath={.metadata.annotations.aadpodidentity\.k8s\.io/permitted-identities}`);
    expect(printed).toBe(id);
    expect(await kubectl('annotate', 'namespace', 'team-a', 'aadpodidentity.k8s.io/permitted-identities-')).toContain('namespace/team-a annotated');
    expect((await core.readNamespace({ name: 'team-a' })).metadata?.annotations ?? {}).toEqual({});
  });

  it('shows the priority-1 columns with -o wide: pod IP and node, node addresses, OS image, kernel and runtime', async () => {
    const kubelet = createKubelet({
      apiUrl: world.server.url,
      token: world.kc.getCurrentUser()!.token!,
      nodes: [{ name: 'wide-node', providerID: 'azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/wide-node', labels: { 'node-role.kubernetes.io/worker': '' } }],
      network: createLoopbackNetwork(),
      log: pino({ level: 'silent' }),
    });
    try {
      await kubelet.start();
      const podManifest = join(dir, 'wide-pod.yaml');
      await writeFile(podManifest, 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: wide\nspec:\n  nodeName: wide-node\n  containers:\n  - name: c\n    image: busybox\n');
      await kubectl('create', '-f', podManifest);
      const attachment = await kubelet.waitForPod('default/wide');

      // kubectl's columns are separated by at least two spaces; "NOMINATED NODE" holds one.
      const cols = (line: string) => line.trim().split(/\s{2,}/);
      const pods = (await kubectl('get', 'pods', '-o', 'wide')).trim().split('\n');
      expect(cols(pods[0]!)).toEqual(['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE', 'IP', 'NODE', 'NOMINATED NODE', 'READINESS GATES']);
      const row = cols(pods.find((l) => l.startsWith('wide '))!);
      expect([row[0], row[1], row[2], row[3], row[5], row[6], row[7], row[8]]).toEqual(['wide', '1/1', 'Running', '0', attachment.ip, 'wide-node', '<none>', '<none>']);
      expect(cols((await kubectl('get', 'pods')).split('\n')[0]!)).toEqual(['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']);

      const nodes = (await kubectl('get', 'nodes', 'wide-node', '-o', 'wide')).trim().split('\n');
      expect(cols(nodes[0]!)).toEqual(['NAME', 'STATUS', 'ROLES', 'AGE', 'VERSION', 'INTERNAL-IP', 'EXTERNAL-IP', 'OS-IMAGE', 'KERNEL-VERSION', 'CONTAINER-RUNTIME']);
      const node = cols(nodes[1]!);
      const info = (await world.kc.makeApiClient(k8s.CoreV1Api).readNode({ name: 'wide-node' })).status!.nodeInfo!;
      expect([node[0], node[1], node[2], node[4], node[5], node[6], node[7], node[8], node[9]]).toEqual(
        ['wide-node', 'Ready', 'agent,worker', info.kubeletVersion, '127.0.0.1', '<none>', info.osImage, info.kernelVersion, info.containerRuntimeVersion],
      );
      expect(cols((await kubectl('get', 'nodes', 'wide-node')).split('\n')[0]!)).toEqual(['NAME', 'STATUS', 'ROLES', 'AGE', 'VERSION']);
      await kubectl('delete', 'pod', 'wide');
    } finally {
      await kubelet.stop();
    }
  });
});
