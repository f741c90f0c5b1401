// Loads every manifest of config/deploy into the Kubernetes API emulator, the way an operator would (kubectl apply
// when kubectl is installed, else client-node), and checks the RBAC rules against what the server serves.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KubeConfig, KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServerHandle } from '../../src/sandbox/apiserver/index.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const DEPLOY = join(ROOT, 'config', 'deploy');
const KUBECTL = process.env['DEPLOY_TEST_KUBECTL'] ?? '/usr/bin/kubectl';
// CRDs first, then the exceptions that need them, as docs/install.md tells operators.
const ORDER: Record<string, readonly string[]> = {
  standard: ['deployment-rbac.yaml', 'mic-exception.yaml'],
  managed: ['managed-mode-deployment.yaml'],
};

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}
interface DiscoveredResource {
  name: string;
  verbs: string[];
}

let server: ApiServerHandle;
let dir: string;
let kubeconfigPath: string;

beforeEach(async () => {
  server = await startApiServer();
  dir = mkdtempSync(join(tmpdir(), 'deploy-test-'));
  kubeconfigPath = join(dir, 'kubeconfig');
  await server.writeKubeconfig(kubeconfigPath);
});

afterEach(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

function manifests(file: string): KubernetesObject[] {
  return parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8'))
    .map((d) => d.toJS() as KubernetesObject | null)
    .filter((d): d is KubernetesObject => d !== null);
}

async function apply(file: string): Promise<void> {
  if (existsSync(KUBECTL)) {
    await run(KUBECTL, ['--kubeconfig', kubeconfigPath, 'apply', '-f', join(DEPLOY, file)], { timeout: 60_000 });
    return;
  }
  const client = objectApi();
  for (const obj of manifests(file)) await client.create(obj);
}

function objectApi(): KubernetesObjectApi {
  const kc = new KubeConfig();
  kc.loadFromString(server.kubeconfigYaml);
  return KubernetesObjectApi.makeApiClient(kc);
}

async function discovery(group: string): Promise<DiscoveredResource[]> {
  const base = group === '' ? `${server.url}/api/v1` : await preferredVersionPath(group);
  const res = await fetch(base);
  expect(res.status, base).toBe(200);
  return ((await res.json()) as { resources: DiscoveredResource[] }).resources;
}

async function preferredVersionPath(group: string): Promise<string> {
  const res = await fetch(`${server.url}/apis/${group}`);
  expect(res.status, `group ${group} is served`).toBe(200);
  const body = (await res.json()) as { preferredVersion: { groupVersion: string } };
  return `${server.url}/apis/${body.preferredVersion.groupVersion}`;
}

describe.each(Object.keys(ORDER))('%s mode manifests', (mode) => {
  it('are accepted by the API server and every object can be read back', async () => {
    const files = ORDER[mode] ?? [];
    for (const file of files) await apply(file);
    const client = objectApi();
    for (const file of files) {
      for (const obj of manifests(file)) {
        const got = await client.read({
          apiVersion: obj.apiVersion ?? '',
          kind: obj.kind ?? '',
          metadata: { name: obj.metadata?.name ?? '', namespace: obj.metadata?.namespace },
        });
        expect(got.metadata?.uid, `${obj.kind}/${obj.metadata?.name}`).toBeTruthy();
      }
    }
  });

  it('grant RBAC only on resources and verbs the server serves', async () => {
    const files = ORDER[mode] ?? [];
    for (const file of files) await apply(file);
    const rules = files
      .flatMap(manifests)
      .filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')
      .flatMap((o) => (o as KubernetesObject & { rules: Rule[] }).rules);
    expect(rules.length).toBeGreaterThan(0);
    const problems: string[] = [];
    for (const rule of rules) {
      for (const group of rule.apiGroups) {
        const served = await discovery(group);
        for (const resource of rule.resources) {
          const found = served.find((r) => r.name === resource);
          if (!found) {
            problems.push(`${group || 'core'}/${resource} is not served`);
            continue;
          }
          for (const verb of rule.verbs) {
            if (!found.verbs.includes(verb)) problems.push(`${group || 'core'}/${resource} does not support ${verb}`);
          }
        }
      }
    }
    expect(problems).toEqual([]);
  });
});
