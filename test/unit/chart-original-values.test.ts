import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { coalesceValues, renderChart, type Obj, type RenderOptions } from '../helpers/helm-render.js';

// Issue 11 items 2 and 4: `helm upgrade` from the original chart (4.1.x) with its values, and the same object names.
// The expectations below are what the original's templates render for the same release and values (read from its
// charts/aad-pod-identity/templates at 4.1.18); where ours differ on purpose, the difference is listed and pinned.
const ROOT = join(import.meta.dirname, '..', '..');
const CHART = join(ROOT, 'charts', 'aad-pod-identity');
const ORIGINAL_DEFAULTS = parse(readFileSync(join(ROOT, 'test', 'fixtures', 'original-chart', 'values.yaml'), 'utf8')) as Obj;
const OURS = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { version: string; appVersion: string };
const NS = 'identity';

/** The original's default values.yaml as a user's values file, less the three image values naming its images. */
function originalValues(extra: Obj = {}): Obj {
  const v = structuredClone(ORIGINAL_DEFAULTS) as Record<string, Record<string, unknown>>;
  delete v['image']!['repository'];
  delete v['mic']!['tag'];
  delete v['nmi']!['tag'];
  return coalesceValues(v, extra);
}

function render(values: Obj, opts: Partial<RenderOptions> = {}) {
  return renderChart(CHART, { releaseName: 'pod-identity', namespace: NS, values, isUpgrade: true, ...opts });
}

type K8s = { kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: any };
const key = (o: K8s) => `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
const find = (objects: Obj[], k: string) => (objects as K8s[]).find((o) => key(o) === k);

/** Objects the original's templates render with its default values, in release namespace NS, for any release name. */
const ORIGINAL_OBJECTS = [
  `ServiceAccount ${NS}/aad-pod-identity-mic`,
  `ServiceAccount ${NS}/aad-pod-identity-nmi`,
  'ClusterRole aad-pod-identity-mic',
  'ClusterRole aad-pod-identity-nmi',
  'ClusterRoleBinding aad-pod-identity-mic',
  'ClusterRoleBinding aad-pod-identity-nmi',
  `Deployment ${NS}/aad-pod-identity-mic`,
  `DaemonSet ${NS}/aad-pod-identity-nmi`,
  `AzurePodIdentityException ${NS}/mic`,
  'AzurePodIdentityException kube-system/aks-addon-exception',
];
/** Ours besides: metrics Services, NMI's Secret read split out, MIC's lock and ConfigMap rights namespaced, a PDB. */
const OUR_EXTRA_OBJECTS = [
  `Service ${NS}/aad-pod-identity-mic-metrics`,
  `Service ${NS}/aad-pod-identity-nmi-metrics`,
  'ClusterRole aad-pod-identity-nmi-secrets',
  'ClusterRoleBinding aad-pod-identity-nmi-secrets',
  `Role ${NS}/aad-pod-identity-mic`,
  `RoleBinding ${NS}/aad-pod-identity-mic`,
  // The original's Endpoints lock and our Lease, in the original's lock namespace (`default`).
  'Role default/aad-pod-identity-mic-leader-election',
  'RoleBinding default/aad-pod-identity-mic-leader-election',
  `PodDisruptionBudget ${NS}/mic-pdb`,
];

describe("the original chart's values (issue 11 item 2)", () => {
  const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as object;
  const ourDefaults = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as Obj;
  const validate = new Ajv({ allErrors: true, strict: true }).compile(schema);

  it("passes our schema as a values file: the original's default values.yaml, unchanged", () => {
    const merged = coalesceValues(ourDefaults, ORIGINAL_DEFAULTS);
    expect(validate(merged), JSON.stringify(validate.errors)).toBe(true);
    // As --reuse-values passes them too: the original's defaults in place of ours.
    expect(validate(ORIGINAL_DEFAULTS), JSON.stringify(validate.errors)).toBe(true);
  });

  it("stops on the original's images, naming the value, rather than running them with our flags", () => {
    expect(() => render(ORIGINAL_DEFAULTS)).toThrow(/image\.repository is the original aad-pod-identity's registry/);
    expect(() => render(originalValues({ mic: { tag: 'v1.8.17' } }))).toThrow(/mic\.tag=v1\.8\.17 is a release of the original/);
    expect(() => render(originalValues({ nmi: { tag: 'v1.7.5' } }))).toThrow(/nmi\.tag=v1\.7\.5/);
    expect(render(originalValues({ image: { repository: 'registry.example/mirror' } })).objects.length).toBeGreaterThan(0);
  });

  it('stops under `helm upgrade --reuse-values` (the original chart\'s defaults replace ours) and says what to run instead', () => {
    expect(() => render({}, { chartValues: ORIGINAL_DEFAULTS })).toThrow(/--reuse-values.*--reset-then-reuse-values/s);
  });

  it('accepts rbac.pspEnabled=false as a no-op and refuses true, saying why', () => {
    const off = render(originalValues({ rbac: { pspEnabled: false } }));
    expect(off.objects.filter((o) => o['kind'] === 'PodSecurityPolicy')).toEqual([]);
    expect(() => render(originalValues({ rbac: { pspEnabled: true } }))).toThrow(/rbac\.pspEnabled=true: this chart ships no PodSecurityPolicies/);
    expect(validate({ ...ourDefaults, rbac: { pspEnabled: 'yes' } })).toBe(false);
  });

  it('accepts installCRDs=false (charts 2.1-3.x) and refuses true with the annotate command that keeps the CRDs', () => {
    expect(render(originalValues({ installCRDs: false })).objects.length).toBeGreaterThan(0);
    expect(() => render(originalValues({ installCRDs: true }))).toThrow(/installCRDs=true.*kubectl annotate crd azureidentities\.aadpodidentity\.k8s\.io .*helm\.sh\/resource-policy=keep/s);
  });

  it('refuses to upgrade a release that owns its CRDs (Helm would delete them and every identity), unless they are kept', () => {
    const crd = (annotations: Record<string, string>) => ({ metadata: { name: 'azureidentities.aadpodidentity.k8s.io', annotations } });
    const owned = { 'meta.helm.sh/release-name': 'pod-identity', 'meta.helm.sh/release-namespace': NS };
    const lookup = (annotations: Record<string, string>) => (_v: string, kind: string, _ns: string, name: string) =>
      kind === 'CustomResourceDefinition' && name === 'azureidentities.aadpodidentity.k8s.io' ? crd(annotations) : undefined;
    expect(() => render(originalValues(), { lookup: lookup(owned) })).toThrow(/CRD azureidentities\.aadpodidentity\.k8s\.io belongs to release pod-identity/);
    expect(render(originalValues(), { lookup: lookup({ ...owned, 'helm.sh/resource-policy': 'keep' }) }).objects.length).toBeGreaterThan(0);
    expect(render(originalValues(), { lookup: lookup({ 'meta.helm.sh/release-name': 'other' }) }).objects.length).toBeGreaterThan(0);
  });

  it('honours clientPassword in the original\'s documented form, a JSON string, and as a map', () => {
    const sp = (clientPassword: unknown) =>
      originalValues({
        azureIdentities: {
          'azure-identity': { namespace: '', name: '', type: 1, clientID: 'c1', tenantID: 't1', clientPassword, auxiliaryTenantIDs: ['t2'], binding: { name: 'azure-identity-binding', selector: 'demo' } },
        },
      });
    for (const form of ['{"name":"sp-secret","namespace":"apps"}', { name: 'sp-secret', namespace: 'apps' }]) {
      const values = sp(form);
      expect(validate(coalesceValues(ourDefaults, values)), JSON.stringify(validate.errors)).toBe(true);
      const { objects } = render(values);
      const id = find(objects, `AzureIdentity ${NS}/azure-identity`);
      expect(id?.['spec']).toEqual({ type: 1, clientID: 'c1', tenantID: 't1', clientPassword: { name: 'sp-secret', namespace: 'apps' }, auxiliaryTenantIDs: ['t2'] });
      expect(find(objects, `AzureIdentityBinding ${NS}/azure-identity-binding`)?.['spec']).toEqual({ azureIdentity: 'azure-identity', selector: 'demo' });
    }
    expect(() => render(sp('{"name":"sp-secret",}'))).toThrow(/azureIdentities\.azure-identity\.clientPassword is not a JSON object/);
    expect(() => render(sp('sp-secret'))).toThrow(/clientPassword.*must match pattern/);
    expect(() => render(sp('{"name":"s","key":"k"}'))).toThrow(/clientPassword has "key"/);
    expect(() => render(sp('{"namespace":"apps"}'))).toThrow(/clientPassword needs the Secret's name/);
    expect(() => render(originalValues({ azureIdentities: { x: { type: 1, clientID: 'c', clientPassword: '{"name":"s"}', binding: { selector: 's' } } } }))).toThrow(/azureIdentities\.x\.tenantID is required/);
  });

  it("renders a type 0 identity as the original's example does, in the release namespace by default", () => {
    const resourceID = '/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id';
    const { objects } = render(originalValues({ azureIdentities: { 'azure-identity': { namespace: '', name: '', type: 0, resourceID, clientID: 'c0', binding: { name: 'azure-identity-binding', selector: 'demo' } } } }));
    expect(find(objects, `AzureIdentity ${NS}/azure-identity`)?.['spec']).toEqual({ type: 0, resourceID, clientID: 'c0' });
    expect(find(objects, `AzureIdentityBinding ${NS}/azure-identity-binding`)?.['metadata'].labels).toMatchObject({ 'app.kubernetes.io/instance': 'pod-identity' });
    expect(() => render(originalValues({ azureIdentities: { y: { type: 0, clientID: 'c', binding: { selector: 's' } } } }))).toThrow(/azureIdentities\.y\.resourceID is required for type 0/);
  });

  it("honours older charts' forceNameSpaced and azureIdentity/azureIdentityBinding", () => {
    const env = (objects: Obj[], k: string) =>
      (find(objects, k)?.['spec'].template.spec.containers[0].env as { name: string; value?: string }[]).find((e) => e.name === 'FORCENAMESPACED')?.value;
    for (const forceNameSpaced of ['true', true]) {
      const { objects } = render(originalValues({ forceNameSpaced, forceNamespaced: 'false' }));
      expect(env(objects, `Deployment ${NS}/aad-pod-identity-mic`)).toBe('true');
      expect(env(objects, `DaemonSet ${NS}/aad-pod-identity-nmi`)).toBe('true');
    }
    expect(env(render(originalValues({ forceNameSpaced: 'false', forceNamespaced: 'true' })).objects, `DaemonSet ${NS}/aad-pod-identity-nmi`)).toBe('true');
    expect(env(render(originalValues({ forceNameSpaced: 'false' })).objects, `DaemonSet ${NS}/aad-pod-identity-nmi`)).toBe('false');

    const resourceID = '/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/old';
    const old = { azureIdentity: { enabled: true, name: 'azure-identity', namespace: 'apps', type: 0, resourceID, clientID: 'c' }, azureIdentityBinding: { name: 'azure-identity-binding', selector: 'demo' } };
    const { objects } = render(originalValues(old));
    expect(find(objects, 'AzureIdentity apps/azure-identity')?.['spec']).toEqual({ type: 0, resourceID, clientID: 'c' });
    expect(find(objects, 'AzureIdentityBinding apps/azure-identity-binding')?.['spec']).toEqual({ azureIdentity: 'azure-identity', selector: 'demo' });
    const disabled = render(originalValues({ ...old, azureIdentity: { ...old.azureIdentity, enabled: false } }));
    expect(disabled.objects.filter((o) => o['kind'] === 'AzureIdentity')).toEqual([]);
  });

  it("passes every flag-bearing value of the original's as the original's templates pass it", () => {
    const values = originalValues({
      forceNamespaced: 'true',
      customUserAgent: 'ua',
      mic: {
        logVerbosity: 3, loggingFormat: 'json', leaderElection: { instance: 'i', namespace: 'lns', name: 'ln', duration: '20s' }, probePort: '8081',
        syncRetryDuration: '1h', immutableUserMSIs: ['a', 'b'], createDeleteBatch: '10', clientQps: '7', prometheusPort: '8889',
        updateUserMSIMaxRetry: '3', updateUserMSIRetryInterval: '2s', identityAssignmentReconcileInterval: '4m', customCloud: { enabled: true, configPath: '/etc/c.json' },
      },
      nmi: {
        logVerbosity: 2, loggingFormat: 'json', ipTableUpdateTimeIntervalInSeconds: '30', micNamespace: 'micns', probePort: '8086', retryAttemptsForCreated: '5',
        retryAttemptsForAssigned: '6', findIdentityRetryIntervalInSeconds: '7', enableScaleFeatures: false, prometheusPort: '9091', blockInstanceMetadata: 'true',
        metadataHeaderRequired: false, allowNetworkPluginKubenet: true, kubeletConfig: '/etc/kl', setRetryAfterHeader: true, enableConntrackDeletion: true,
      },
    });
    const { objects } = render(values);
    const container = (k: string) => find(objects, k)?.['spec'].template.spec.containers[0] as { args: string[]; env: { name: string; value?: string }[] };
    const mic = container(`Deployment ${NS}/aad-pod-identity-mic`);
    // The original passes -v=N; ours --v=N (the same flag).
    expect(mic.args).toEqual(expect.arrayContaining([
      '--cloudconfig=/etc/kubernetes/azure.json', '--log-format=json', '--v=3', '--leader-election-instance=i', '--leader-election-namespace=lns',
      '--leader-election-name=ln', '--leader-election-duration=20s', '--http-probe-port=8081', '--createDeleteBatch=10', '--clientQps=7',
      '--immutable-user-msis=a,b', '--prometheus-port=8889', '--syncRetryDuration=1h', '--update-user-msi-max-retry=3',
      '--update-user-msi-retry-interval=2s', '--identity-assignment-reconcile-interval=4m', '--custom-user-agent=ua',
    ]));
    expect(mic.env).toEqual(expect.arrayContaining([{ name: 'FORCENAMESPACED', value: 'true' }, { name: 'AZURE_ENVIRONMENT_FILEPATH', value: '/etc/c.json' }]));
    const nmi = container(`DaemonSet ${NS}/aad-pod-identity-nmi`);
    expect(nmi.args).toEqual(expect.arrayContaining([
      '--node=$(NODE_NAME)', '--http-probe-port=8086', '--ipt-update-interval-sec=30', '--MICNamespace=micns', '--retry-attempts-for-created=5',
      '--retry-attempts-for-assigned=6', '--find-identity-retry-interval=7', '--enableScaleFeatures=false', '--prometheus-port=9091',
      '--block-instance-metadata=true', '--metadata-header-required=false', '--log-format=json', '--v=2', '--allow-network-plugin-kubenet=true',
      '--kubelet-config=/etc/kl', '--custom-user-agent=ua', '--set-retry-after-header=true', '--enable-conntrack-deletion=true',
    ]));
    expect(nmi.env).toEqual(expect.arrayContaining([{ name: 'FORCENAMESPACED', value: 'true' }]));
  });
});

describe("the original chart's object names, labels and RBAC (issue 11 item 4)", () => {
  for (const release of ['aad-pod-identity', 'pod-identity', 'my-release']) {
    it(`renders the original's objects under the same names for release "${release}", and only listed extras`, () => {
      const { objects, notes } = render(originalValues(), { releaseName: release });
      expect((objects as K8s[]).map(key).sort()).toEqual([...ORIGINAL_OBJECTS, ...OUR_EXTRA_OBJECTS].sort());
      expect(notes).toContain(`app.kubernetes.io/instance=${release}`);
    });
  }

  it("carries the original's labels and the selectors a Deployment and DaemonSet cannot change", () => {
    const { objects } = render(originalValues(), { releaseName: 'my-release' });
    const common = { 'app.kubernetes.io/name': 'aad-pod-identity', 'app.kubernetes.io/instance': 'my-release', 'app.kubernetes.io/managed-by': 'Helm', 'helm.sh/chart': `aad-pod-identity-${OURS.version}` };
    for (const k of ORIGINAL_OBJECTS.filter((n) => !n.startsWith('AzurePodIdentityException'))) {
      const component = k.includes('-mic') ? 'mic' : 'nmi';
      expect(find(objects, k)?.metadata.labels, k).toMatchObject({ ...common, 'app.kubernetes.io/component': component });
    }
    const mic = find(objects, `Deployment ${NS}/aad-pod-identity-mic`)!;
    const nmi = find(objects, `DaemonSet ${NS}/aad-pod-identity-nmi`)!;
    expect(mic['spec'].selector).toEqual({ matchLabels: { 'app.kubernetes.io/name': 'aad-pod-identity', 'app.kubernetes.io/instance': 'my-release', 'app.kubernetes.io/component': 'mic' } });
    expect(nmi['spec'].selector).toEqual({ matchLabels: { 'app.kubernetes.io/name': 'aad-pod-identity', 'app.kubernetes.io/instance': 'my-release', 'app.kubernetes.io/component': 'nmi' } });
    expect(mic['spec'].template.metadata.labels).toMatchObject({ ...common, 'app.kubernetes.io/component': 'mic' });
    expect(nmi['spec'].template.metadata.labels).toMatchObject({ ...common, 'app.kubernetes.io/component': 'nmi', tier: 'node' });
    expect(nmi.metadata.labels).toMatchObject({ tier: 'node' });
    expect(mic['spec'].template.spec.serviceAccountName).toBe('aad-pod-identity-mic');
    expect(nmi['spec'].template.spec.serviceAccountName).toBe('aad-pod-identity-nmi');
    expect(nmi['spec'].template.spec.containers[0].args).toContain('--mic-service-account=aad-pod-identity-mic');
  });

  it("binds the original's ClusterRoles to the original's ServiceAccounts", () => {
    const { objects } = render(originalValues(), { releaseName: 'my-release' });
    for (const c of ['mic', 'nmi']) {
      const binding = find(objects, `ClusterRoleBinding aad-pod-identity-${c}`)!;
      expect(binding['subjects']).toEqual([{ kind: 'ServiceAccount', name: `aad-pod-identity-${c}`, namespace: NS }]);
      expect(binding['roleRef']).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `aad-pod-identity-${c}` });
    }
  });

  it("grants what the original's ClusterRoles grant, less and more only as docs/migrating.md lists", () => {
    const { objects } = render(originalValues());
    const ALL = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];
    const tuples = (rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[], scope = '') =>
      new Set(rules.flatMap((r) => r.apiGroups.flatMap((g) => r.resources.flatMap((res) => (r.verbs.includes('*') ? ALL : r.verbs).map((v) => `${scope}${g || 'core'}/${res}:${v}`)))));
    const rulesOf = (k: string) => (find(objects, k)?.['rules'] ?? []) as Parameters<typeof tuples>[0];
    const diff = (ours: Set<string>, original: Set<string>) => ({ removed: [...original].filter((t) => !ours.has(t)).sort(), added: [...ours].filter((t) => !original.has(t)).sort() });

    // The original's nmi-clusterrole.yaml with its default values (allowAccessToSecrets, standard mode).
    const originalNmi = tuples([
      { apiGroups: ['apiextensions.k8s.io'], resources: ['customresourcedefinitions'], verbs: ['get', 'list'] },
      { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: [''], resources: ['secrets'], verbs: ['get'] },
      { apiGroups: ['aadpodidentity.k8s.io'], resources: ['azureidentitybindings', 'azureidentities', 'azurepodidentityexceptions'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['aadpodidentity.k8s.io'], resources: ['azureassignedidentities'], verbs: ['get', 'list', 'watch'] },
    ]);
    const ourNmi = new Set([...tuples(rulesOf('ClusterRole aad-pod-identity-nmi')), ...tuples(rulesOf('ClusterRole aad-pod-identity-nmi-secrets'))]);
    expect(find(objects, 'ClusterRoleBinding aad-pod-identity-nmi-secrets')?.['subjects']).toEqual([{ kind: 'ServiceAccount', name: 'aad-pod-identity-nmi', namespace: NS }]);
    expect(diff(ourNmi, originalNmi)).toEqual({
      removed: ['apiextensions.k8s.io/customresourcedefinitions:get', 'apiextensions.k8s.io/customresourcedefinitions:list'],
      added: ['core/nodes:get', 'core/nodes:patch'], // removing its startup taint (nmi.startupTaint)
    });

    // The original's mic-clusterrole.yaml ("post" is no Kubernetes verb and granted nothing).
    const originalMic = tuples([
      { apiGroups: ['apiextensions.k8s.io'], resources: ['customresourcedefinitions'], verbs: ['*'] },
      { apiGroups: [''], resources: ['pods', 'nodes'], verbs: ['list', 'watch'] },
      { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
      { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'create', 'update'] },
      { apiGroups: [''], resources: ['endpoints'], verbs: ['create', 'get', 'update'] },
      { apiGroups: ['aadpodidentity.k8s.io'], resources: ['azureidentitybindings', 'azureidentities'], verbs: ['get', 'list', 'watch', 'update'] },
      { apiGroups: ['aadpodidentity.k8s.io'], resources: ['azurepodidentityexceptions'], verbs: ['list', 'update'] },
      { apiGroups: ['aadpodidentity.k8s.io'], resources: ['azureassignedidentities'], verbs: ['*'] },
    ]);
    const ourMic = new Set([
      ...tuples(rulesOf('ClusterRole aad-pod-identity-mic')),
      ...tuples(rulesOf(`Role ${NS}/aad-pod-identity-mic`), `${NS}:`),
      // get/update limited to the lock's name (resourceNames); create cannot be.
      ...tuples(rulesOf('Role default/aad-pod-identity-mic-leader-election'), 'default:'),
    ]);
    expect(diff(ourMic, originalMic)).toEqual({
      removed: [
        'aadpodidentity.k8s.io/azureassignedidentities:deletecollection',
        'aadpodidentity.k8s.io/azureidentities:update',
        'aadpodidentity.k8s.io/azureidentitybindings:update',
        'aadpodidentity.k8s.io/azurepodidentityexceptions:list',
        'aadpodidentity.k8s.io/azurepodidentityexceptions:update',
        ...ALL.map((v) => `apiextensions.k8s.io/customresourcedefinitions:${v}`).sort(),
        'core/configmaps:create', 'core/configmaps:get', 'core/configmaps:update',
        'core/endpoints:create', 'core/endpoints:get', 'core/endpoints:update',
      ].sort(),
      added: [
        'aadpodidentity.k8s.io/azureassignedidentities/status:get', 'aadpodidentity.k8s.io/azureassignedidentities/status:patch', 'aadpodidentity.k8s.io/azureassignedidentities/status:update',
        'default:coordination.k8s.io/leases:create', 'default:coordination.k8s.io/leases:get', 'default:coordination.k8s.io/leases:update',
        'default:core/endpoints:create', 'default:core/endpoints:get', 'default:core/endpoints:update',
        `${NS}:core/configmaps:create`, `${NS}:core/configmaps:get`, `${NS}:core/configmaps:update`,
      ].sort(),
    });
  });

  it('keeps the exceptions under their original names and namespaces, and follows nameOverride as the original did', () => {
    const { objects } = render(originalValues({ nameOverride: 'podid' }), { releaseName: 'my-release' });
    expect(find(objects, `AzurePodIdentityException ${NS}/mic`)?.['spec']).toEqual({ podLabels: { 'app.kubernetes.io/component': 'mic' } });
    expect(find(objects, 'AzurePodIdentityException kube-system/aks-addon-exception')?.['spec']).toEqual({ podLabels: { 'kubernetes.azure.com/managedby': 'aks' } });
    expect((objects as K8s[]).map(key)).toEqual(expect.arrayContaining([`Deployment ${NS}/podid-mic`, `DaemonSet ${NS}/podid-nmi`, 'ClusterRole podid-mic', `ServiceAccount ${NS}/podid-nmi`]));
  });

  it("names the PDB mic-pdb, the user-facing roles <fullname>-view/-edit and the admin Secret aad-pod-identity-mic, as the original", () => {
    const adminsecret = { cloud: 'AzurePublicCloud', subscriptionID: 's', resourceGroup: 'rg', vmType: 'vmss', tenantID: 't', clientID: 'c', clientSecret: 'p' };
    const { objects } = render(originalValues({ mic: { podDisruptionBudget: { minAvailable: 1 } }, rbac: { createUserFacingClusterRoles: true }, adminsecret }), { releaseName: 'my-release' });
    expect(find(objects, `PodDisruptionBudget ${NS}/mic-pdb`)?.['spec']).toMatchObject({ minAvailable: 1 });
    const noPdb = originalValues() as { mic: Record<string, unknown> };
    noPdb.mic['podDisruptionBudget'] = null; // as docs/migrating.md says: null drops ours
    expect((render(noPdb).objects as K8s[]).filter((o) => o.kind === 'PodDisruptionBudget')).toEqual([]);
    expect((objects as K8s[]).map(key)).toEqual(expect.arrayContaining(['ClusterRole my-release-aad-pod-identity-view', 'ClusterRole my-release-aad-pod-identity-edit', `Secret ${NS}/aad-pod-identity-mic`]));
    const env = find(objects, `Deployment ${NS}/aad-pod-identity-mic`)?.['spec'].template.spec.containers[0].env as { name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
    expect(env.find((e) => e.name === 'CLIENT_SECRET')?.valueFrom?.secretKeyRef).toMatchObject({ name: 'aad-pod-identity-mic', key: 'ClientSecret' });
    // "set to true when using a User Managed Identity", as the original's values.yaml says: a boolean or a string.
    for (const useMSI of [true, 'true']) {
      const msi = render(originalValues({ adminsecret: { ...adminsecret, clientID: 'msi', clientSecret: 'msi', useMSI, userAssignedMSIClientID: 'u' } }));
      const data = find(msi.objects, `Secret ${NS}/aad-pod-identity-mic`)?.['data'] as Record<string, string>;
      expect(Buffer.from(data['UseMSI']!, 'base64').toString()).toBe('true');
      expect(Buffer.from(data['UserAssignedMSIClientID']!, 'base64').toString()).toBe('u');
    }
  });

  it("renders managed mode's objects as the original: no MIC, NMI namespaced, the AKS add-on exception only", () => {
    const { objects } = render(originalValues({ operationMode: 'managed' }));
    const keys = (objects as K8s[]).map(key);
    expect(keys.filter((k) => k.includes('-mic') || k.endsWith('/mic'))).toEqual([]);
    expect(keys).toEqual(expect.arrayContaining([`DaemonSet ${NS}/aad-pod-identity-nmi`, 'AzurePodIdentityException kube-system/aks-addon-exception']));
    expect(find(objects, `DaemonSet ${NS}/aad-pod-identity-nmi`)?.['spec'].template.spec.containers[0].args).toEqual(expect.arrayContaining(['--operation-mode=managed', '--forceNamespaced']));
  });

  it('reads installMICException "false" (a string) as false, where the original installed the exceptions anyway', () => {
    for (const off of ['false', false]) {
      expect((render(originalValues({ installMICException: off })).objects as K8s[]).filter((o) => o.kind === 'AzurePodIdentityException')).toEqual([]);
    }
  });

  it('leaves out ServiceAccounts and ClusterRoles with rbac.enabled=false, and exceptions with installMICException="false"', () => {
    const keys = (render(originalValues({ rbac: { enabled: false }, installMICException: 'false' })).objects as K8s[]).map(key);
    expect(keys.filter((k) => /^(ServiceAccount|ClusterRole|ClusterRoleBinding|Role|RoleBinding|AzurePodIdentityException) /.test(k))).toEqual([]);
    expect(keys).toEqual(expect.arrayContaining([`Deployment ${NS}/aad-pod-identity-mic`, `DaemonSet ${NS}/aad-pod-identity-nmi`]));
  });
});
