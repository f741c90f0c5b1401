import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { parse, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { MIC_FLAGS } from '../../src/mic/config.js';
import { NMI_FLAGS } from '../../src/nmi/config.js';
import { renderChart } from '../helpers/helm-render.js';

// No Helm binary exists on our machines (none in Debian or npm that installs without downloading), so the chart
// is checked statically: values against the schema, every referenced value, CRD copies, and the flags it passes.
const ROOT = join(import.meta.dirname, '..', '..');
const CHART = join(ROOT, 'charts', 'aad-pod-identity');
const TEMPLATES = join(CHART, 'templates');

const values = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as Record<string, unknown>;
const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as object;
const templates = readdirSync(TEMPLATES).map((name) => ({ name, text: readFileSync(join(TEMPLATES, name), 'utf8') }));

function validator() {
  return new Ajv({ allErrors: true, strict: true }).compile(schema);
}

describe('chart values', () => {
  it('values.yaml validates against values.schema.json', () => {
    const validate = validator();
    expect(validate(values), JSON.stringify(validate.errors)).toBe(true);
  });

  it('the schema rejects values the templates cannot render', () => {
    const validate = validator();
    const bad = (patch: Record<string, unknown>) => validate({ ...values, ...patch });
    expect(bad({ operationMode: 'bogus' })).toBe(false);
    expect(bad({ mic: { ...(values['mic'] as object), syncRetryDuration: '5' } })).toBe(false);
    expect(bad({ nmi: { ...(values['nmi'] as object), probePort: 'http' } })).toBe(false);
    expect(bad({ azureIdentities: { id1: { clientID: 'c', binding: { name: 'b' } } } })).toBe(false);
    expect(bad({ unknownTopLevel: true })).toBe(false);
    expect(bad({ azureIdentities: { id1: { clientID: 'c', type: 0, binding: { selector: 'app' } } } })).toBe(true);
  });

  it('every .Values path a template reads is declared in values.yaml', () => {
    // Older original charts' values, read only to honour or refuse them (listed in a values.yaml comment).
    const legacy = new Set(['forceNameSpaced', 'azureIdentity', 'azureIdentityBinding', 'installCRDs']);
    const missing: string[] = [];
    for (const t of templates) {
      for (const m of t.text.matchAll(/\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
        const path = (m[1] ?? '').slice(1).split('.');
        if (!declared(values, path) && !legacy.has(path[0] ?? '')) missing.push(`${t.name}: .Values.${path.join('.')}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('keeps the original chart value names where they mean the same', () => {
    const mic = values['mic'] as Record<string, unknown>;
    const nmi = values['nmi'] as Record<string, unknown>;
    for (const key of ['forceNamespaced', 'installMICException', 'adminsecret', 'operationMode', 'customUserAgent', 'rbac', 'azureIdentities']) {
      expect(values).toHaveProperty(key);
    }
    for (const key of ['replicas', 'leaderElection', 'probePort', 'syncRetryDuration', 'immutableUserMSIs', 'createDeleteBatch', 'clientQps', 'prometheusPort', 'cloudConfig', 'customCloud', 'updateUserMSIMaxRetry', 'updateUserMSIRetryInterval', 'identityAssignmentReconcileInterval']) {
      expect(mic).toHaveProperty(key);
    }
    for (const key of ['ipTableUpdateTimeIntervalInSeconds', 'micNamespace', 'probePort', 'retryAttemptsForCreated', 'retryAttemptsForAssigned', 'findIdentityRetryIntervalInSeconds', 'enableScaleFeatures', 'blockInstanceMetadata', 'metadataHeaderRequired', 'allowNetworkPluginKubenet', 'kubeletConfig', 'setRetryAfterHeader', 'enableConntrackDeletion']) {
      expect(nmi).toHaveProperty(key);
    }
    expect(nmi['probePort']).toBe('8085');
  });
});

describe('chart contents', () => {
  it('ships CRDs byte-for-byte equal to config/crd', () => {
    const source = readdirSync(join(ROOT, 'config', 'crd')).filter((f) => f.endsWith('.yaml')).sort();
    expect(readdirSync(join(CHART, 'crds')).sort()).toEqual(source);
    for (const f of source) {
      expect(readFileSync(join(CHART, 'crds', f), 'utf8'), f).toBe(readFileSync(join(ROOT, 'config', 'crd', f), 'utf8'));
    }
  });

  it('passes MIC and NMI only flags they define', () => {
    const micNames = new Set<string>(Object.values(MIC_FLAGS).map((d) => d.name));
    const nmiNames = new Set<string>(Object.values(NMI_FLAGS).map((d) => d.name));
    const used = (file: string) => [...(templates.find((t) => t.name === file)?.text ?? '').matchAll(/"--([A-Za-z][\w-]*)[="]/g)].map((m) => m[1] ?? '');
    const micUsed = used('mic-deployment.yaml');
    const nmiUsed = used('nmi-daemonset.yaml');
    expect(micUsed.length).toBeGreaterThan(10);
    expect(nmiUsed.length).toBeGreaterThan(15);
    expect(micUsed.filter((n) => !micNames.has(n))).toEqual([]);
    expect(nmiUsed.filter((n) => !nmiNames.has(n))).toEqual([]);
  });

  it('lets NMI remove its startup taint: it always tolerates the key, and may get and patch nodes while it is set', () => {
    const nmi = values['nmi'] as Record<string, unknown>;
    expect(nmi['startupTaint']).toBe(NMI_FLAGS.startupTaint.default);
    const ds = templates.find((t) => t.name === 'nmi-daemonset.yaml')?.text ?? '';
    expect(ds).toContain('- "--startup-taint={{ .Values.nmi.startupTaint }}"');
    expect(ds).toMatch(/\{\{- with \.Values\.nmi\.startupTaint \}\}\s*#[^\n]*\n\s*- key: \{\{ \. \| quote \}\}\s*operator: Exists/);
    const rbac = templates.find((t) => t.name === 'nmi-rbac.yaml')?.text ?? '';
    expect(rbac).toMatch(/\{\{- if \.Values\.nmi\.startupTaint \}\}[^{]*resources: \["nodes"\]\s*verbs: \["get", "patch"\]\s*\{\{- end \}\}/);
  });

  it('versions the images as the package', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const chart = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { appVersion: string; version: string };
    expect(chart.appVersion).toBe(`v${pkg.version}`);
    expect((values['mic'] as { tag: string }).tag).toBe(chart.appVersion);
    expect((values['nmi'] as { tag: string }).tag).toBe(chart.appVersion);
  });

  it('mounts the metrics bearer token Secret where --metrics-bearer-token-file points, only when one is named', () => {
    const text = templates.find((t) => t.name === 'nmi-daemonset.yaml')?.text ?? '';
    const arg = /\{\{- if \.Values\.nmi\.metricsBearerTokenSecret\.name \}\}\n\s*- "--metrics-bearer-token-file=([^"]+)"\n\s*\{\{- end \}\}/.exec(text);
    expect(arg, 'the flag, guarded by the Secret name').not.toBeNull();
    const file = arg![1]!;
    const mount = /\{\{- if \.Values\.nmi\.metricsBearerTokenSecret\.name \}\}\n\s*- name: metrics-token\n\s*mountPath: (\S+)\n\s*readOnly: true\n\s*\{\{- end \}\}/.exec(text);
    expect(mount, 'the read-only mount, guarded by the Secret name').not.toBeNull();
    const volume = /- name: metrics-token\n\s*secret:\n\s*secretName: \{\{ \.name \}\}\n\s*items:\n\s*- key: \{\{ \.key \}\}\n\s*path: (\S+)/.exec(text);
    expect(volume, 'the Secret volume with the key projected to a fixed file name').not.toBeNull();
    expect(file).toBe(`${mount![1]}/${volume![1]}`);
    const nmi = values['nmi'] as { metricsBearerTokenSecret: { name: string; key: string } };
    expect(nmi.metricsBearerTokenSecret).toEqual({ name: '', key: 'token' });
    const validate = validator();
    const secret = (s: object) => validate({ ...values, nmi: { ...nmi, metricsBearerTokenSecret: s } });
    expect(secret({ name: 'nmi-scrape', key: 'token' })).toBe(true);
    expect(secret({ name: 'Bad_Name', key: 'token' })).toBe(false);
    expect(secret({ name: 'nmi-scrape', key: '../x' })).toBe(false);
  });

  it('mounts the CNI conf dir the kubenet guard reads, read-only, where --cni-conf-dir points', () => {
    const text = templates.find((t) => t.name === 'nmi-daemonset.yaml')?.text ?? '';
    expect(text).toContain('- "--cni-conf-dir={{ .Values.nmi.cniConfDir }}"');
    expect(text).toMatch(/- name: cni-conf\n\s*mountPath: \{\{ \. \}\}\n\s*readOnly: true/);
    expect(text).toMatch(/- name: cni-conf\n\s*hostPath:\n\s*path: \{\{ \. \}\}\n\s*type: DirectoryOrCreate/);
    expect((values['nmi'] as { cniConfDir: string }).cniConfDir).toBe('/etc/cni/net.d');
  });

  it('balances template control blocks in every file', () => {
    for (const t of templates) {
      const opens = [...t.text.matchAll(/\{\{-?\s*(if|range|with|define)\b/g)].length;
      const ends = [...t.text.matchAll(/\{\{-?\s*end\s*-?\}\}/g)].length;
      expect(ends, t.name).toBe(opens);
    }
  });
});

describe('chart RBAC for tenants (issue 10 row 4)', () => {
  const roles = staticDocs('user-facing-clusterroles.yaml').filter((d) => d['kind'] === 'ClusterRole');
  const aggregatesTo = (role: Record<string, any>, to: string) => role['metadata']?.labels?.[`rbac.authorization.k8s.io/aggregate-to-${to}`] === 'true';
  const verbsOn = (role: Record<string, any>, resource: string): string[] =>
    ((role['rules'] ?? []) as Record<string, any>[])
      .filter((r) => (r['apiGroups'] as string[]).some((g) => g === 'aadpodidentity.k8s.io' || g === '*'))
      .filter((r) => (r['resources'] as string[]).some((x) => x === resource || x === '*'))
      .flatMap((r) => r['verbs'] as string[]);

  it('gives the edit and admin roles no write verb on AzurePodIdentityExceptions, only get/list/watch', () => {
    const userFacing = roles.filter((r) => aggregatesTo(r, 'edit') || aggregatesTo(r, 'admin'));
    expect(userFacing.length).toBeGreaterThanOrEqual(2);
    const granted = new Set(userFacing.flatMap((r) => verbsOn(r, 'azurepodidentityexceptions')));
    expect([...granted].sort()).toEqual(['get', 'list', 'watch']);
    // Identities and bindings stay theirs to write.
    expect(new Set(userFacing.flatMap((r) => verbsOn(r, 'azureidentitybindings')))).toContain('create');
  });

  it('keeps exceptions readable to the view role', () => {
    const view = roles.filter((r) => aggregatesTo(r, 'view'));
    expect(new Set(view.flatMap((r) => verbsOn(r, 'azurepodidentityexceptions')))).toEqual(new Set(['get', 'list', 'watch']));
  });

  it('tells NMI the ServiceAccount MIC runs as, from the same helper, in standard mode only', () => {
    const nmi = templates.find((t) => t.name === 'nmi-daemonset.yaml')?.text ?? '';
    const mic = templates.find((t) => t.name === 'mic-deployment.yaml')?.text ?? '';
    expect(nmi).toContain('- "--mic-service-account={{ include "aad-pod-identity.mic.serviceAccountName" . }}"');
    expect(mic).toContain('serviceAccountName: {{ include "aad-pod-identity.mic.serviceAccountName" . }}');
    const standardOnly = /\{\{- if eq \.Values\.operationMode "standard" \}\}\n\s*- "--MICNamespace=[^\n]*\n\s*- "--mic-service-account=[^\n]*\n\s*\{\{- end \}\}/;
    expect(nmi).toMatch(standardOnly);
  });
});

/** A template's YAML with its directives dropped: whole-line actions removed, inline ones replaced by a placeholder. */
function staticDocs(file: string): Record<string, any>[] {
  const text = templates.find((t) => t.name === file)?.text ?? '';
  const yamlText = text
    .split('\n')
    .filter((line) => !/^\s*\{\{.*\}\}\s*$/.test(line))
    .map((line) => line.replace(/\{\{[^}]*\}\}/g, 'x'))
    .join('\n');
  return parseAllDocuments(yamlText).map((d) => d.toJS() as Record<string, any>).filter((d) => d !== null);
}

/** True when `path` exists in `root`, or passes through a map left open for users (`{}` or null). */
function declared(root: unknown, path: readonly string[]): boolean {
  let node: unknown = root;
  for (const key of path) {
    if (node === null) return true;
    if (typeof node !== 'object' || Array.isArray(node)) return false;
    const record = node as Record<string, unknown>;
    if (Object.keys(record).length === 0) return true;
    if (!(key in record)) return false;
    node = record[key];
  }
  return true;
}

describe('chart: namespace identity policy (issue 10 row 6)', () => {
  it('accepts off and enforce only, and passes the flag to both MIC and NMI', () => {
    const validate = validator();
    expect(validate({ ...values, namespaceIdentityPolicy: 'enforce' })).toBe(true);
    expect(validate({ ...values, namespaceIdentityPolicy: 'on' })).toBe(false);
    for (const file of ['mic-deployment.yaml', 'nmi-daemonset.yaml']) {
      expect(templates.find((t) => t.name === file)?.text).toContain('"--namespace-identity-policy={{ . }}"');
    }
  });

  it('grants MIC and NMI read access to Namespaces only when the policy is enforced', () => {
    for (const file of ['mic-rbac.yaml', 'nmi-rbac.yaml']) {
      const text = templates.find((t) => t.name === file)?.text ?? '';
      expect(text, file).toMatch(
        /\{\{- if eq \(toString \.Values\.namespaceIdentityPolicy\) "enforce" \}\}\n(?:\s*#.*\n)?\s*- apiGroups: \[""\]\n\s*resources: \["namespaces"\]\n\s*verbs: \["get", "list", "watch"\]\n\s*\{\{- end \}\}/,
      );
    }
  });
});

describe('chart: NMI audit trail (issue 14 item 5)', () => {
  const nmiArgs = (values: Record<string, unknown>) => {
    const { objects } = renderChart(CHART, { releaseName: 'pod-identity', namespace: 'identity', values });
    const ds = objects.find((o) => o['kind'] === 'DaemonSet') as { spec: { template: { spec: { containers: Array<{ name: string; args: string[] }> } } } };
    return ds.spec.template.spec.containers.find((c) => c.name === 'nmi')?.args ?? [];
  };

  it('leaves NMI its default (aggregate) unless nmi.auditLog / nmi.auditFlushInterval are set', () => {
    expect(nmiArgs({}).filter((a) => a.startsWith('--audit'))).toEqual([]);
    expect(nmiArgs({ nmi: { auditLog: 'all', auditFlushInterval: '30s' } })).toEqual(expect.arrayContaining(['--audit-log=all', '--audit-flush-interval=30s']));
  });

  it('rejects an audit mode NMI does not have', () => {
    expect(() => nmiArgs({ nmi: { auditLog: 'sampled' } })).toThrow();
  });
});

describe('chart: azureIdentities[].mode (issue 13)', () => {
  const RID = '/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1';
  const identities = (entry: Record<string, unknown>) => {
    const { objects } = renderChart(CHART, { releaseName: 'pod-identity', namespace: 'identity', values: { azureIdentities: { id1: entry } } });
    return objects.filter((o) => o['kind'] === 'AzureIdentity') as Array<{ spec: Record<string, unknown> }>;
  };

  it('renders no mode unless one is given, and passes Federated through', () => {
    expect(identities({ type: 0, resourceID: RID, clientID: 'c' })[0]?.spec).not.toHaveProperty('mode');
    expect(identities({ type: 0, resourceID: RID, clientID: 'c', mode: 'Federated' })[0]?.spec['mode']).toBe('Federated');
  });

  it('refuses Federated on a service principal, and the schema refuses an unknown mode', () => {
    expect(() => identities({ type: 1, clientID: 'c', tenantID: 't', clientPassword: { name: 's' }, mode: 'Federated' })).toThrow(/needs type 0/);
    const validate = validator();
    expect(validate({ ...values, azureIdentities: { id1: { clientID: 'c', mode: 'Projected' } } })).toBe(false);
    expect(validate({ ...values, azureIdentities: { id1: { clientID: 'c', mode: 'Federated' } } })).toBe(true);
  });
});

describe('chart: federation values, MIC part (issue 13)', () => {
  const micArgs = (values: Record<string, unknown>) => {
    const { objects } = renderChart(CHART, { releaseName: 'pod-identity', namespace: 'identity', values });
    const dep = objects.find((o) => o['kind'] === 'Deployment') as { spec: { template: { spec: { containers: Array<{ name: string; args: string[] }> } } } };
    return dep.spec.template.spec.containers.find((c) => c.name === 'mic')?.args ?? [];
  };

  it('passes MIC no federation flag by default (federation.enabled: false)', () => {
    expect(values['federation']).toEqual({ enabled: false, serviceAccountIssuer: '' });
    expect(micArgs({}).filter((a) => a.includes('federated') || a.includes('issuer'))).toEqual([]);
  });

  it('federation.enabled passes --enable-federated-identities, and the issuer only when set', () => {
    expect(micArgs({ federation: { enabled: true } })).toContain('--enable-federated-identities');
    expect(micArgs({ federation: { enabled: true } }).some((a) => a.startsWith('--service-account-issuer'))).toBe(false);
    expect(micArgs({ federation: { enabled: true, serviceAccountIssuer: 'https://oidc.example/abc/' } })).toContain(
      '--service-account-issuer=https://oidc.example/abc/',
    );
    expect(MIC_FLAGS.enableFederatedIdentities.name).toBe('enable-federated-identities');
    expect(MIC_FLAGS.serviceAccountIssuer.name).toBe('service-account-issuer');
  });

  it('the schema refuses a non-boolean enabled, an unknown key and a non-https issuer', () => {
    const validate = validator();
    expect(validate({ ...values, federation: { enabled: true, serviceAccountIssuer: 'https://oidc.example/x' } })).toBe(true);
    expect(validate({ ...values, federation: { enabled: 'yes' } })).toBe(false);
    expect(validate({ ...values, federation: { enabled: true, issuer: 'https://x' } })).toBe(false);
    expect(validate({ ...values, federation: { enabled: true, serviceAccountIssuer: 'http://oidc.example' } })).toBe(false);
  });
});

describe('chart: NMI in federated mode (issue 13 item 6)', () => {
  const render = (values: Record<string, unknown>) => renderChart(CHART, { releaseName: 'pod-identity', namespace: 'identity', values }).objects;
  type Rule = { apiGroups: string[]; resources: string[]; verbs: string[] };
  const nmiRules = (objects: Record<string, unknown>[]) =>
    ((objects.find((o) => o['kind'] === 'ClusterRole' && (o['metadata'] as { name: string }).name === 'aad-pod-identity-nmi') as { rules: Rule[] } | undefined)?.rules ?? []);
  const nmiContainer = (objects: Record<string, unknown>[]) => {
    const ds = objects.find((o) => o['kind'] === 'DaemonSet') as { spec: { template: { spec: { containers: Array<Record<string, unknown> & { name: string; args: string[] }>; volumes: Array<{ name: string; hostPath?: { path: string } }> } } } };
    return { container: ds.spec.template.spec.containers.find((c) => c.name === 'nmi'), volumes: ds.spec.template.spec.volumes };
  };
  const mintsTokens = (rules: Rule[]) => rules.some((r) => r.resources.includes('serviceaccounts/token') && r.verbs.includes('create'));

  it('gives NMI neither TokenRequest nor the flag unless federation.enabled', () => {
    expect(values['federation']).toMatchObject({ enabled: false });
    const objects = render({});
    expect(nmiRules(objects).length).toBeGreaterThan(0);
    expect(mintsTokens(nmiRules(objects))).toBe(false);
    const { container, volumes } = nmiContainer(objects);
    expect(container?.args.filter((a) => a.startsWith('--enable-federated') || a.startsWith('--cloudconfig'))).toEqual([]);
    expect(volumes.some((v) => v.name === 'k8s-azure-file')).toBe(false);
  });

  it('with federation.enabled: create on serviceaccounts/token and events, the flag, and azure.json mounted read-only for the tenant', () => {
    const objects = render({ federation: { enabled: true } });
    const rules = nmiRules(objects);
    expect(mintsTokens(rules)).toBe(true);
    expect(rules.find((r) => r.resources.includes('serviceaccounts/token'))).toEqual({ apiGroups: [''], resources: ['serviceaccounts/token'], verbs: ['create'] });
    expect(rules.some((r) => r.resources.includes('events') && r.verbs.includes('create'))).toBe(true);
    const { container, volumes } = nmiContainer(objects);
    expect(container?.args).toEqual(expect.arrayContaining(['--enable-federated-identities', '--cloudconfig=/etc/kubernetes/azure.json']));
    expect(container?.['volumeMounts']).toEqual(expect.arrayContaining([{ name: 'k8s-azure-file', mountPath: '/etc/kubernetes/azure.json', readOnly: true }]));
    expect(volumes).toEqual(expect.arrayContaining([{ name: 'k8s-azure-file', hostPath: { path: '/etc/kubernetes/azure.json', type: 'File' } }]));
  });

  it('with an admin secret: only the tenant and cloud reach NMI, never the client secret', () => {
    const objects = render({ federation: { enabled: true }, adminsecret: { cloud: 'AzurePublicCloud', subscriptionID: 's', resourceGroup: 'rg', vmType: 'vmss', tenantID: 't', clientID: 'c', clientSecret: 'x', useMSI: 'false', userAssignedMSIClientID: '' } });
    const { container, volumes } = nmiContainer(objects);
    expect(container?.args).toContain('--enable-federated-identities');
    expect(container?.args.some((a) => a.startsWith('--cloudconfig'))).toBe(false);
    const env = (container?.['env'] as Array<{ name: string; valueFrom?: { secretKeyRef?: { key: string } } }>).filter((e) => e.valueFrom?.secretKeyRef);
    expect(env.map((e) => [e.name, e.valueFrom?.secretKeyRef?.key])).toEqual([['CLOUD', 'Cloud'], ['TENANT_ID', 'TenantID']]);
    expect(volumes.some((v) => v.name === 'k8s-azure-file')).toBe(false);
  });
});
