// The images' entrypoints, run without Docker: compile cmd/ and src/ as the Dockerfile's build stage does, then start
// `node dist/cmd/<binary>.js` with the container args from config/deploy/deployment-rbac.yaml ($(VAR) expanded from the
// container env as the kubelet does) inside a network namespace of the test's own, next to the emulators.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { lineFrom } from '../helpers/child-lines.js';
import { sh, shouldSkipNetns } from '../helpers/netns.js';

const skip = shouldSkipNetns('image entrypoints');
const ROOT = join(import.meta.dirname, '..', '..');

interface Container {
  args: string[];
  env: Record<string, string>;
}

/** The container of a Deployment/DaemonSet in the plain manifests, args expanded with its env (fieldRefs filled in). */
function containerOf(kind: string, name: string, fieldRefs: Record<string, string>): Container {
  const docs = parseAllDocuments(readFileSync(join(ROOT, 'config/deploy/deployment-rbac.yaml'), 'utf8')).map((d) => d.toJSON());
  const workload = docs.find((d) => d?.kind === kind && d?.metadata?.name === name);
  if (!workload) throw new Error(`${kind}/${name} not found in deployment-rbac.yaml`);
  const container = workload.spec.template.spec.containers[0];
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    env[e.name] = e.value ?? fieldRefs[e.valueFrom?.fieldRef?.fieldPath ?? ''] ?? '';
  }
  const args = (container.args ?? []).map((a: string) => a.replace(/\$\((\w+)\)/g, (_m, v: string) => env[v] ?? ''));
  return { args, env };
}

describe.skipIf(skip)('image entrypoints', () => {
  const ns = `aadt-${process.pid % 10000}xep`;
  const work = mkdtempSync(join(ROOT, '.tmp-entrypoints-'));
  const children: ChildProcess[] = [];

  const inNs = (argv: string[], env: Record<string, string> = {}) => {
    const child = spawn('ip', ['netns', 'exec', ns, 'env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    return child;
  };

  const fetchInNs = async (url: string): Promise<{ status: number; body: string }> => {
    const script = `fetch(${JSON.stringify(url)}).then(async r => console.log(JSON.stringify({status: r.status, body: await r.text()}))).catch(e => console.log(JSON.stringify({status: 0, body: String(e)})))`;
    const out = await sh(['ip', 'netns', 'exec', ns, 'node', '-e', script], 10_000);
    return JSON.parse(out.stdout.trim());
  };

  beforeAll(async () => {
    // The Dockerfile's build stage: only cmd/ and src/ are compiled, to dist/.
    writeFileSync(
      join(work, 'tsconfig.json'),
      JSON.stringify({ extends: '../tsconfig.json', compilerOptions: { outDir: 'dist', rootDir: '..', sourceMap: false }, include: ['../cmd', '../src'] }),
    );
    const compiled = await sh([join(ROOT, 'node_modules/.bin/tsc'), '-p', join(work, 'tsconfig.json')], 120_000);
    expect(compiled.stdout + compiled.stderr).toBe('');
    expect(compiled.code).toBe(0);
    expect((await sh(['ip', 'netns', 'add', ns])).code).toBe(0);
    await sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  }, 180_000);

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await sh(['ip', 'netns', 'del', ns]);
    rmSync(work, { recursive: true, force: true });
    expect((await sh(['ip', 'netns', 'list'])).stdout).not.toContain(ns);
  });

  it('ships the admin commands compiled: doctor, explain and the kubectl plugin entry answer --help, and a usage error exits 2', async () => {
    for (const [entry, usage] of [
      ['doctor.js', 'usage: npm run doctor --'],
      ['explain.js', 'usage: npm run explain --'],
      ['kubectl-plugin.js', 'usage: kubectl aad-pod-identity explain'],
    ] as const) {
      const help = await sh(['node', join(work, 'dist/cmd', entry), '--help'], 30_000);
      expect(help.code, help.stderr).toBe(0);
      expect(help.stdout).toContain(usage);
    }
    const bad = await sh(['node', join(work, 'dist/cmd/kubectl-plugin.js'), 'doctor', '--kubeconfig', join(work, 'missing')], 30_000);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('cannot load kubeconfig');
  }, 60_000);

  it('starts NMI with the DaemonSet args: probes, metrics, iptables rules that stay on SIGTERM, and --uninstall-iptables removes them', async () => {
    const kubeconfig = join(work, 'kubeconfig');
    const api = inNs(['node', '--import', 'tsx', join(ROOT, 'cmd/apiserver.ts'), '--crd-dir', join(ROOT, 'config/crd'), '--kubeconfig-out', kubeconfig]);
    await lineFrom(api, (l) => l.includes('"ready"'), 'apiserver');

    const { args, env } = containerOf('DaemonSet', 'nmi', { 'spec.nodeName': 'node-1' });
    expect(args).toContain('--node=node-1');
    const nmi = inNs(['node', join(work, 'dist/cmd/nmi.js'), ...args], { ...env, KUBECONFIG: kubeconfig });
    const ready = JSON.parse(await lineFrom(nmi, (l) => l.includes('"ready"'), 'nmi'));
    expect(ready.url).toBe('http://127.0.0.1:2579');

    let health = await fetchInNs('http://127.0.0.1:8085/healthz');
    for (let i = 0; i < 50 && health.body !== 'Active'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      health = await fetchInNs('http://127.0.0.1:8085/healthz');
    }
    expect(health).toEqual({ status: 200, body: 'Active' });
    const metrics = await fetchInNs('http://127.0.0.1:9090/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('aadpodidentity_nmi_operations_duration_seconds');

    const chain = await sh(['ip', 'netns', 'exec', ns, 'iptables', '-w', '5', '-t', 'nat', '-S', 'aad-metadata']);
    expect(chain.stdout.trim().split('\n')).toEqual([
      '-N aad-metadata',
      '-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579',
      '-A aad-metadata -j RETURN',
    ]);

    const exited = new Promise<number | null>((r) => nmi.once('exit', (code) => r(code)));
    nmi.kill('SIGTERM');
    expect(await exited).toBe(0);
    // Fail closed: a stopped NMI leaves the chain in place; only the uninstall mode removes it.
    const kept = await sh(['ip', 'netns', 'exec', ns, 'iptables', '-w', '5', '-t', 'nat', '-S', 'aad-metadata']);
    expect(kept.stdout.trim().split('\n')).toEqual(chain.stdout.trim().split('\n'));

    const uninstall = inNs(['node', join(work, 'dist/cmd/nmi.js'), '--uninstall-iptables'], env);
    const uninstalled = new Promise<number | null>((r) => uninstall.once('exit', (code) => r(code)));
    expect(JSON.parse(await lineFrom(uninstall, (l) => l.includes('"uninstalled"'), 'nmi --uninstall-iptables'))).toEqual({
      uninstalled: true,
      chain: 'aad-metadata',
      existed: true,
    });
    expect(await uninstalled).toBe(0);
    const after = await sh(['ip', 'netns', 'exec', ns, 'iptables', '-w', '5', '-t', 'nat', '-S']);
    expect(after.stdout).not.toContain('aad-metadata');
    api.kill('SIGTERM');
  }, 60_000);

  it('starts MIC with the Deployment args: leads, reports Active, serves metrics, and exits 0 on SIGTERM', async () => {
    const kubeconfig = join(work, 'kubeconfig-mic');
    const api = inNs(['node', '--import', 'tsx', join(ROOT, 'cmd/apiserver.ts'), '--crd-dir', join(ROOT, 'config/crd'), '--kubeconfig-out', kubeconfig]);
    await lineFrom(api, (l) => l.includes('"ready"'), 'apiserver');
    const createNs = inNs(['node', '--import', 'tsx', '-e', `
      import('@kubernetes/client-node').then(async (k8s) => {
        const kc = new k8s.KubeConfig(); kc.loadFromFile(${JSON.stringify(kubeconfig)});
        await kc.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name: 'aad-pod-identity' } } });
        console.log('created');
      });`]);
    await lineFrom(createNs, (l) => l.includes('created'), 'namespace creation');

    // MIC's own service principal in the emulated tenant, and azure.json naming it, as on an AKS node.
    const caFile = join(work, 'azure-ca.pem');
    const state = join(work, 'azure-state.json');
    const clientId = '3b4c5d6e-0000-4000-8000-00000000c11d';
    writeFileSync(state, JSON.stringify({
      resourceGroups: ['nodes'],
      servicePrincipals: [{ clientId, secret: 'mic-secret' }],
      roleAssignments: [
        { principal: clientId, role: 'Virtual Machine Contributor', scope: 'nodes' },
        { principal: clientId, role: 'Managed Identity Operator', scope: 'nodes' },
      ],
    }));
    const azure = inNs(['node', '--import', 'tsx', join(ROOT, 'cmd/azure-emulator.ts'), '--state-file', state, '--ca-out', caFile]);
    const azureReady = JSON.parse(await lineFrom(azure, (l) => l.includes('"ready"'), 'azure emulator'));
    const azureJson = join(work, 'azure.json');
    writeFileSync(azureJson, JSON.stringify({
      cloud: 'AzurePublicCloud', tenantId: azureReady.tenantId, aadClientId: clientId, aadClientSecret: 'mic-secret',
      subscriptionId: azureReady.subscriptionId, resourceGroup: 'nodes', vmType: 'vmss',
    }));

    const { args, env } = containerOf('Deployment', 'mic', { 'metadata.namespace': 'aad-pod-identity', 'metadata.name': 'mic-7f9c-abcde' });
    expect(args).toContain('--leader-election-instance=mic-7f9c-abcde');
    // The one difference from the manifest: azure.json is the test's file, and ARM and AAD are the emulator's.
    // Plus the profiling endpoint and a klog flag of the original's, both accepted.
    const micArgs = [
      ...args.map((a) => (a.startsWith('--cloudconfig=') ? `--cloudconfig=${azureJson}` : a)),
      `--arm-endpoint=${azureReady.url}`,
      '--enableProfile',
      '--vmodule=mic=4',
    ];
    const mic = inNs(['node', join(work, 'dist/cmd/mic.js'), ...micArgs], {
      ...env, KUBECONFIG: kubeconfig, AZURE_AUTHORITY_HOST: azureReady.url, NODE_EXTRA_CA_CERTS: caFile,
    });
    let output = '';
    mic.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    mic.stdout?.on('data', (d: Buffer) => (output += d.toString()));

    let health = await fetchInNs('http://127.0.0.1:8080/healthz');
    for (let i = 0; i < 100 && health.body !== 'Active'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      health = await fetchInNs('http://127.0.0.1:8080/healthz');
    }
    if (health.body !== 'Active') throw new Error(`MIC never became Active; azure: ${JSON.stringify(azureReady)}; MIC said: ${output.slice(-3000)}`);
    expect((await fetchInNs('http://127.0.0.1:8080/readyz')).status).toBe(200);
    const metrics = await fetchInNs('http://127.0.0.1:8888/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('aadpodidentity_mic_new_leader_election_count');
    expect(output).toContain('klog flags have no effect here');
    expect(output).toContain('--vmodule');
    const cpu = await fetchInNs('http://127.0.0.1:6060/debug/pprof/profile?seconds=0.2');
    expect(cpu.status).toBe(200);
    expect((JSON.parse(cpu.body) as { nodes: unknown[] }).nodes.length).toBeGreaterThan(0);

    // azure.json changes under the running binary: a broken file is refused, a rotated secret is taken.
    const reloads = async (result: string): Promise<number> => {
      const m = /aadpodidentity_mic_cloud_config_reload_count\{result="(\w+)"\} (\d+)/g;
      const body = (await fetchInNs('http://127.0.0.1:8888/metrics')).body;
      for (const hit of body.matchAll(m)) if (hit[1] === result) return Number(hit[2]);
      return 0;
    };
    const waitFor = async (result: string): Promise<void> => {
      for (let i = 0; i < 100 && (await reloads(result)) < 1; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await reloads(result)).toBe(1);
    };
    writeFileSync(azureJson, '{"cloud": "AzurePublicCloud", "tenantId": ');
    await waitFor('invalid');
    writeFileSync(azureJson, JSON.stringify({
      cloud: 'AzurePublicCloud', tenantId: azureReady.tenantId, aadClientId: clientId, aadClientSecret: 'mic-secret-rotated',
      subscriptionId: azureReady.subscriptionId, resourceGroup: 'nodes', vmType: 'vmss',
    }));
    await waitFor('applied');
    expect(output).toContain('cloud config reloaded');
    expect(output).not.toContain('mic-secret-rotated');

    const exited = new Promise<number | null>((r) => mic.once('exit', (code) => r(code)));
    mic.kill('SIGTERM');
    expect(await exited).toBe(0);
    api.kill('SIGTERM');
    azure.kill('SIGTERM');
  }, 90_000);
});
