// Static checks of config/deploy: the manifests start binaries that accept their arguments, probe and publish the
// ports those arguments choose, and carry verbatim copies of config/crd. test/integration/deploy.test.ts loads
// them into the API emulator.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseMicConfig } from '../../src/mic/config.js';
import { parseNmiConfig } from '../../src/nmi/config.js';

const ROOT = join(import.meta.dirname, '..', '..');
const DEPLOY = join(ROOT, 'config', 'deploy');

// Loosely typed on purpose: fixtures read from YAML, and a wrong path fails the assertion that reads it.
type Obj = Record<string, any>;

function docs(file: string): Obj[] {
  return parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8'))
    .map((d) => d.toJS() as Obj | null)
    .filter((d): d is Obj => d !== null);
}
function one(all: Obj[], kind: string, name?: string): Obj {
  const found = all.filter((d) => d['kind'] === kind && (name === undefined || d['metadata']?.name === name));
  expect(found, `${kind} ${name ?? ''}`).toHaveLength(1);
  return found[0] as Obj;
}

/** What the kubelet would give the container: env from values and field refs, then $(VAR) expanded in args. */
function containerStart(workload: Obj, podName: string) {
  const pod = workload['spec'].template;
  const container = pod.spec.containers[0] as Obj;
  const fields: Record<string, string> = {
    'metadata.namespace': workload['metadata'].namespace,
    'metadata.name': podName,
    'spec.nodeName': 'aks-nodepool1-12345678-vmss000000',
    'status.podIP': '10.240.0.4',
  };
  const env: Record<string, string> = { HOSTNAME: podName };
  for (const e of (container['env'] ?? []) as Obj[]) {
    env[e['name']] = e['value'] ?? fields[e['valueFrom']?.fieldRef?.fieldPath] ?? '';
  }
  const args = ((container['args'] ?? []) as string[]).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => env[v] ?? m));
  return { container, pod, env, args };
}

function crdSources(): Obj[] {
  return ['azureidentity', 'azureidentitybinding', 'azureassignedidentity', 'azurepodidentityexception'].map(
    (f) => parse(readFileSync(join(ROOT, 'config', 'crd', `${f}.yaml`), 'utf8')) as Obj,
  );
}

describe.each(['deployment-rbac.yaml', 'managed-mode-deployment.yaml'])('%s', (file) => {
  const all = docs(file);

  it('embeds exact copies of the four CRDs of config/crd', () => {
    const embedded = all.filter((d) => d['kind'] === 'CustomResourceDefinition');
    expect(embedded).toEqual(crdSources());
  });

  it('creates the namespace it deploys into, before anything namespaced', () => {
    const ns = one(all, 'Namespace')['metadata'].name;
    expect(all[0]?.['kind']).toBe('Namespace');
    const nmi = one(all, 'DaemonSet', 'nmi');
    expect(nmi['metadata'].namespace).toBe(ns);
  });

  it('starts NMI with arguments it accepts, on the ports its probes and Service use', () => {
    const { container, pod, env, args } = containerStart(one(all, 'DaemonSet', 'nmi'), 'nmi-abcde');
    const parsed = parseNmiConfig(args, env);
    expect(parsed.ok ? [] : parsed.errors).toEqual([]);
    if (!parsed.ok) return;
    const c = parsed.value;
    expect(c.node).toBe('aks-nodepool1-12345678-vmss000000');
    expect(c.httpProbePort).toBe(8085);
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: c.httpProbePort });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: c.httpProbePort });
    const ports = (container.ports as Obj[]).map((p) => p['containerPort']);
    expect(ports).toEqual([c.httpProbePort, c.prometheusPort]);
    const svc = one(all, 'Service', 'nmi-metrics');
    expect(svc['spec'].ports[0].targetPort).toBe(c.prometheusPort);
    expect(svc['metadata'].annotations['prometheus.io/port']).toBe(String(c.prometheusPort));
    for (const [k, v] of Object.entries(svc['spec'].selector as Record<string, string>)) expect(pod.metadata.labels[k]).toBe(v);
    expect(pod.spec.hostNetwork).toBe(true);
    expect(pod.spec.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(pod.spec.priorityClassName).toBe('system-node-critical');
    // Its own startup taint first (so it survives a narrower list), then everything, as the original.
    expect(pod.spec.tolerations).toEqual([{ key: c.startupTaint, operator: 'Exists' }, { operator: 'Exists' }]);
    expect(c.startupTaint).toBe('aadpodidentity.k8s.io/nmi-not-ready');
    const nmiRole = one(all, 'ClusterRole', 'aad-pod-id-nmi-role');
    expect(nmiRole['rules']).toContainEqual({ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] });
    expect(container.securityContext.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
    expect(container.volumeMounts.map((m: Obj) => m['mountPath'])).toContain('/run/xtables.lock');
    if (file === 'managed-mode-deployment.yaml') {
      expect(c.operationMode).toBe('managed');
      expect(c.forceNamespaced).toBe(true);
      // Managed mode has no MIC: no pod is taken for one.
      expect(c.micNamespace).toBe('');
    } else {
      expect(c.operationMode).toBe('standard');
      // NMI recognises MIC by who it runs as: exactly MIC's namespace and ServiceAccount.
      const mic = one(all, 'Deployment', 'mic');
      expect(c.micNamespace).toBe(mic['metadata'].namespace);
      expect(c.micServiceAccount).toBe(mic['spec'].template.spec.serviceAccountName);
    }
  });

  it('binds each ClusterRole and Role to a service account the workloads use', () => {
    const accounts = new Set(all.filter((d) => d['kind'] === 'ServiceAccount').map((d) => `${d['metadata'].namespace}/${d['metadata'].name}`));
    const roles = new Set(all.filter((d) => /Role$/.test(d['kind'])).map((d) => `${d['kind']}/${d['metadata'].name}`));
    for (const b of all.filter((d) => /RoleBinding$/.test(d['kind']))) {
      expect(roles.has(`${b['roleRef'].kind}/${b['roleRef'].name}`), b['metadata'].name).toBe(true);
      for (const s of b['subjects'] as Obj[]) expect(accounts.has(`${s['namespace']}/${s['name']}`)).toBe(true);
    }
    for (const w of all.filter((d) => d['kind'] === 'Deployment' || d['kind'] === 'DaemonSet')) {
      expect(accounts.has(`${w['metadata'].namespace}/${w['spec'].template.spec.serviceAccountName}`)).toBe(true);
    }
  });
});

describe.each(['deployment-rbac.yaml', 'managed-mode-deployment.yaml'])('%s NMI secret access', (file) => {
  it("lets NMI get Secrets cluster-wide, as the original and the chart's default (rbac.secretNamespaces empty), and nothing more", () => {
    const all = docs(file);
    const role = one(all, 'ClusterRole', 'aad-pod-id-nmi-secret-reader');
    expect(role['rules']).toEqual([{ apiGroups: [''], resources: ['secrets'], verbs: ['get'] }]);
    const binding = one(all, 'ClusterRoleBinding', 'aad-pod-id-nmi-secret-reader');
    expect(binding['roleRef']).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'aad-pod-id-nmi-secret-reader' });
    expect(binding['subjects']).toEqual([{ kind: 'ServiceAccount', name: 'aad-pod-id-nmi-service-account', namespace: 'aad-pod-identity' }]);
    expect(all.filter((d) => d['kind'] === 'RoleBinding' && d['roleRef'].name === 'aad-pod-id-nmi-secret-reader')).toEqual([]);
  });
});

describe('deployment-rbac.yaml MIC', () => {
  const all = docs('deployment-rbac.yaml');
  const mic = one(all, 'Deployment', 'mic');

  it("starts MIC with arguments it accepts, leader-elected where the original's MIC is (default/aad-pod-identity-mic), on the probed ports", () => {
    const { container, env, args } = containerStart(mic, 'mic-5d8c9f7b6-x2x9q');
    const parsed = parseMicConfig(args, env);
    expect(parsed.ok ? [] : parsed.errors).toEqual([]);
    if (!parsed.ok) return;
    const c = parsed.value;
    expect(c.podNamespace).toBe(mic['metadata'].namespace);
    expect(c.leaderElection).toMatchObject({ namespace: 'default', name: 'aad-pod-identity-mic', resourceLock: 'endpointsleases' });
    expect(c.leaderElection.instance).toBe('mic-5d8c9f7b6-x2x9q');
    expect(c.cloudconfig).toBe('/etc/kubernetes/azure.json');
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: c.httpProbePort });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: c.httpProbePort });
    expect((container.ports as Obj[]).map((p) => p['containerPort'])).toEqual([c.httpProbePort, c.prometheusPort]);
    const svc = one(all, 'Service', 'mic-metrics');
    expect(svc['spec'].ports[0].targetPort).toBe(c.prometheusPort);
    expect(container.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    expect(container.volumeMounts[0].mountPath).toBe(c.cloudconfig);
    expect(mic['spec'].replicas).toBe(2);
  });

  it("lets MIC write only its own Endpoints and Lease locks, in the original's lock namespace, and ConfigMaps in its own", () => {
    const election = one(all, 'Role', 'aad-pod-id-mic-leader-election');
    expect(election['metadata'].namespace).toBe('default');
    for (const [group, resource] of [['coordination.k8s.io', 'leases'], ['', 'endpoints']] as const) {
      expect(election['rules']).toContainEqual({ apiGroups: [group], resources: [resource], verbs: ['create'] });
      expect(election['rules']).toContainEqual({ apiGroups: [group], resources: [resource], resourceNames: ['aad-pod-identity-mic'], verbs: ['get', 'update'] });
    }
    expect(election['rules']).toHaveLength(4);
    const own = one(all, 'Role', 'aad-pod-id-mic-role');
    expect(own['metadata'].namespace).toBe(mic['metadata'].namespace);
    expect(own['rules']).toEqual([{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'create', 'update'] }]);
    const cluster = one(all, 'ClusterRole', 'aad-pod-id-mic-role');
    expect(JSON.stringify(cluster['rules'])).not.toContain('leases');
    expect(JSON.stringify(cluster['rules'])).not.toContain('endpoints');
    expect(JSON.stringify(cluster['rules'])).not.toContain('secrets');
  });

  it("has the MIC exception match MIC's pods in MIC's namespace", () => {
    const exceptions = docs('mic-exception.yaml');
    const ex = one(exceptions, 'AzurePodIdentityException', 'mic-exception');
    expect(ex['metadata'].namespace).toBe(mic['metadata'].namespace);
    const labels = mic['spec'].template.metadata.labels as Record<string, string>;
    for (const [k, v] of Object.entries(ex['spec'].podLabels as Record<string, string>)) expect(labels[k]).toBe(v);
  });

  it('uses images tagged with the package version', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const f of readdirSync(DEPLOY)) {
      for (const m of readFileSync(join(DEPLOY, f), 'utf8').matchAll(/image:\s*(\S+)/g)) {
        expect(m[1]).toMatch(new RegExp(`^ghcr\\.io/aad-pod-identity-ts/aad-pod-identity-ts/(mic|nmi):v${pkg.version.replace(/\./g, '\\.')}$`));
      }
    }
  });
});

describe('nmi-uninstall-iptables.yaml', () => {
  it('runs `nmi --uninstall-iptables` on every node with what iptables needs, then idles unprivileged', () => {
    const ds = one(docs('nmi-uninstall-iptables.yaml'), 'DaemonSet', 'aad-pod-id-nmi-uninstall-iptables');
    const pod = ds['spec'].template.spec as Obj;
    expect(pod['hostNetwork']).toBe(true);
    expect(pod['tolerations']).toEqual([{ operator: 'Exists' }]);
    const [init] = pod['initContainers'] as Obj[];
    const parsed = parseNmiConfig(init?.['args'] ?? [], {});
    expect(parsed.ok ? parsed.value.uninstallIptables : parsed.errors).toBe(true);
    expect(init?.['securityContext'].capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
    expect((init?.['volumeMounts'] as Obj[]).map((m) => m['mountPath'])).toEqual(['/run/xtables.lock']);
    const [idle] = pod['containers'] as Obj[];
    expect(idle?.['securityContext'].capabilities).toEqual({ drop: ['ALL'] });
    expect(idle?.['securityContext'].runAsNonRoot).toBe(true);
  });
});

describe('nmi-federation-rbac.yaml (issue 13 item 6)', () => {
  it('grants NMI create on serviceaccounts/token (and events) only in the opt-in file, bound to the NMI service account', () => {
    const all = docs('nmi-federation-rbac.yaml');
    expect(one(all, 'ClusterRole', 'aad-pod-id-nmi-federation')['rules']).toEqual([
      { apiGroups: [''], resources: ['serviceaccounts/token'], verbs: ['create'] },
      { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
    ]);
    const binding = one(all, 'ClusterRoleBinding', 'aad-pod-id-nmi-federation');
    expect(binding['roleRef']).toMatchObject({ kind: 'ClusterRole', name: 'aad-pod-id-nmi-federation' });
    for (const file of ['deployment-rbac.yaml', 'managed-mode-deployment.yaml']) {
      const base = docs(file);
      const sa = one(base, 'ServiceAccount', 'aad-pod-id-nmi-service-account')['metadata'];
      expect(binding['subjects']).toEqual([{ kind: 'ServiceAccount', name: sa.name, namespace: sa.namespace }]);
      // The default manifests never let NMI mint service-account tokens.
      const rules = base.filter((d) => d['kind'] === 'ClusterRole' || d['kind'] === 'Role').flatMap((d) => (d['rules'] ?? []) as Array<{ resources: string[] }>);
      expect(rules.some((r) => r.resources.includes('serviceaccounts/token')), file).toBe(false);
    }
  });
});
