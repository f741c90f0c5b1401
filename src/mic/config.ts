// MIC's command line: every flag of the original (same names, same defaults, except --clientQps) plus ours,
// parsed once into a frozen MicConfig. Only cmd/mic.ts passes process.argv/process.env in.
import { bindAddressErrors, COMMON_FLAGS, commonSettings, type CommonSettings } from '../common/common-flags.js';
import { parseAllowedAdEndpoints } from '../crds/credential-policy.js';
import { ignoredFlagsGiven, klogCompatFlags, parseBaseUrl, parseFlags, usage, type FlagDefs } from '../common/flags.js';

export interface LeaderElectionConfig {
  /** This replica's identity in the Lease (the pod name). */
  readonly instance: string;
  readonly namespace: string;
  /** Name of the Lease object. */
  readonly name: string;
  readonly durationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  /** `endpointsleases`: the original's Endpoints lock and our Lease, both held (upgrades); `leases`: the Lease only. */
  readonly resourceLock: 'endpointsleases' | 'leases';
}

export interface MicConfig extends CommonSettings {
  /** `--help` was given: print `micUsage()` and exit 0; nothing else in this object is validated. */
  readonly help: boolean;
  /** `--version` was given: print the version and exit 0; nothing else in this object is validated. */
  readonly version: boolean;
  /** Path to azure.json; undefined means the environment variables of the original's "admin secret" mode. */
  readonly cloudconfig: string | undefined;
  /** MIC's own namespace (env MIC_POD_NAMESPACE, required, as the original's): MIC's Events about itself go on its Pod here. */
  readonly podNamespace: string;
  readonly syncRetryMs: number;
  readonly leaderElection: LeaderElectionConfig;
  readonly httpProbePort: number;
  readonly prometheusPort: number;
  /** Deprecated no-op for MIC in the original; kept so manifests that pass it still start. */
  readonly enableScaleFeatures: boolean;
  readonly createDeleteBatch: number;
  readonly clientQps: number;
  readonly clientBurst: number;
  /** Client ids never unassigned from a VM/VMSS, lower-cased. */
  readonly immutableUserMsis: readonly string[];
  readonly updateUserMsiMaxRetry: number;
  readonly updateUserMsiRetryIntervalMs: number;
  readonly identityAssignmentReconcileIntervalMs: number;
  /** ARM endpoint override (the emulator in tests); undefined means the cloud's endpoint from azure.json. */
  readonly armEndpoint: string | undefined;
  /** Upper bound on concurrent ARM operations across all VMs and VMSSs. */
  readonly armMaxConcurrency: number;
  /** Poll interval of ARM long-running operations. */
  readonly armPollIntervalMs: number;
  /** Assign service principal identities whose clientPassword Secret is in another namespace than the identity. */
  readonly allowCrossNamespaceSecrets: boolean;
  /** Authority origins (https://host[:port]) an adEndpoint may name besides the known clouds' and MIC's own cloud's. */
  readonly allowedAdEndpoints: readonly string[];
  /** --enable-federated-identities: AzureIdentities with spec.mode Federated get federated credentials, never a VM. */
  readonly enableFederatedIdentities: boolean;
  /** --service-account-issuer, byte for byte; empty: read from the API server's discovery document at start. */
  readonly serviceAccountIssuer: string;
}

export type MicConfigResult =
  | { readonly ok: true; readonly value: MicConfig }
  | { readonly ok: false; readonly errors: readonly string[] };

const TYPE_UPGRADE_REMOVED =
  'MIC does no one-time type upgrade; it reads the pre-v1.6 capitalised fields (ResourceID, ClientID, Selector, ...) on every ' +
  "read (NMI too) and puts a 'legacy fields' Warning event on each such AzureIdentity and binding. Drop the flag; to rewrite those objects in camelCase, see docs/migrating.md";

export const MIC_FLAGS = {
  ...COMMON_FLAGS,
  cloudconfig: {
    kind: 'string',
    name: 'cloudconfig',
    default: '',
    help: 'Path to cloud config e.g. azure.json file (environment variables of the admin secret when empty)',
  },
  syncRetryDuration: {
    kind: 'duration',
    name: 'syncRetryDuration',
    default: 3_600_000,
    minMs: 1,
    help: 'The interval at which the sync loop periodically checks for errors and reconciles',
  },
  leaderElectionInstance: {
    kind: 'string',
    name: 'leader-election-instance',
    default: '',
    env: 'HOSTNAME',
    help: "Leader election instance name (default is the hostname, that is the pod's name)",
  },
  leaderElectionNamespace: {
    kind: 'string',
    name: 'leader-election-namespace',
    default: 'default',
    help: 'Namespace of the leader election lock objects (Endpoints and Lease)',
  },
  leaderElectionName: {
    kind: 'string',
    name: 'leader-election-name',
    default: 'aad-pod-identity-mic',
    help: 'Name of the leader election lock objects (Endpoints and Lease)',
  },
  leaderElectionDuration: {
    kind: 'duration',
    name: 'leader-election-duration',
    default: 15_000,
    minMs: 1,
    help: 'Leader election lease duration',
  },
  leaderElectionRenewDeadline: {
    kind: 'duration',
    name: 'leader-election-renew-deadline',
    default: 0,
    help: 'How long the leader keeps retrying to renew before giving up (0: half the lease duration, as the original)',
  },
  leaderElectionRetryPeriod: {
    kind: 'duration',
    name: 'leader-election-retry-period',
    default: 0,
    help: 'Interval between attempts to acquire or renew the lease (0: a quarter of the lease duration, as the original)',
  },
  leaderElectionResourceLock: {
    kind: 'string',
    name: 'leader-election-resource-lock',
    default: 'endpointsleases',
    choices: ['endpointsleases', 'leases'],
    help:
      "endpointsleases: hold the original's Endpoints lock and a Lease (client-go's multi-lock), so no original MIC acts " +
      'at the same time; leases: the Lease only, once no original MIC can run (after a release with endpointsleases)',
  },
  httpProbePort: { kind: 'int', name: 'http-probe-port', default: 8080, min: 0, max: 65535, help: 'HTTP liveness and readiness probe port (/healthz, /readyz)' },
  prometheusPort: { kind: 'int', name: 'prometheus-port', default: 8888, min: 0, max: 65535, help: 'Prometheus port for metrics (/metrics)' },
  enableScaleFeatures: {
    kind: 'bool',
    name: 'enableScaleFeatures',
    default: false,
    help: 'Deprecated for MIC and without effect; accepted so existing manifests start',
  },
  createDeleteBatch: {
    kind: 'int',
    name: 'createDeleteBatch',
    default: 20,
    min: 1,
    help: 'Per node/VMSS concurrent create/delete operations on the API server',
  },
  clientQps: {
    kind: 'number',
    name: 'clientQps',
    default: 50,
    positive: true,
    help: 'Client QPS used for throttling calls to the kube-apiserver (the original defaulted to 5)',
  },
  clientBurst: {
    kind: 'int',
    name: 'clientBurst',
    default: 100,
    min: 1,
    help: 'Client burst allowed above --clientQps for calls to the kube-apiserver',
  },
  immutableUserMsis: {
    kind: 'list',
    name: 'immutable-user-msis',
    default: [],
    help: 'Comma-separated client IDs of identities never removed from the underlying VM/VMSS',
  },
  // The original's one-time rewrite of pre-v1.6 objects into camelCase. We read the capitalised spellings on every
  // read instead (src/crds/normalize.ts), and MIC has no write access to identities, bindings or exceptions.
  configMapName: {
    kind: 'string',
    name: 'config-map-name',
    default: '',
    help: 'ConfigMap of the type upgrade',
    removed: TYPE_UPGRADE_REMOVED,
  },
  typeUpgradeStatusKey: {
    kind: 'string',
    name: 'type-upgrade-status-key',
    default: '',
    help: 'ConfigMap key of the type upgrade',
    removed: TYPE_UPGRADE_REMOVED,
  },
  enableTypeUpgrade: {
    kind: 'bool',
    name: 'enable-type-upgrade',
    default: false,
    help: `Only =false is accepted (what MIC does anyway); =true is refused: ${TYPE_UPGRADE_REMOVED}`,
  },
  updateUserMsiMaxRetry: {
    kind: 'int',
    name: 'update-user-msi-max-retry',
    default: 2,
    min: 0,
    help: 'The maximum number of retries of a VM/VMSS identity update',
  },
  updateUserMsiRetryInterval: {
    kind: 'duration',
    name: 'update-user-msi-retry-interval',
    default: 1000,
    help: 'The duration to wait before retrying a VM/VMSS identity update',
  },
  identityAssignmentReconcileInterval: {
    kind: 'duration',
    name: 'identity-assignment-reconcile-interval',
    default: 180_000,
    help: 'The interval between reconciling identity assignment on Azure from the existing AzureAssignedIdentities (0 disables)',
  },
  armEndpoint: {
    kind: 'string',
    name: 'arm-endpoint',
    default: '',
    help: "Azure Resource Manager endpoint overriding the cloud's (https URL, e.g. an emulator)",
  },
  armPollInterval: {
    kind: 'duration',
    name: 'arm-poll-interval',
    default: 5_000,
    minMs: 1,
    help: 'How often a VM/VMSS identity update that ARM runs as a long-running operation is polled (the original: 5s)',
  },
  armMaxConcurrency: {
    kind: 'int',
    name: 'arm-max-concurrency',
    default: 10,
    min: 1,
    help: 'Maximum concurrent ARM operations across all VMs and VMSSs',
  },
  allowCrossNamespaceSecrets: {
    kind: 'bool',
    name: 'allow-cross-namespace-secrets',
    default: false,
    help: "Assign service principal identities whose clientPassword Secret is in another namespace than the identity (off: skipped with an event; set the same on NMI)",
  },
  allowedAdEndpoints: {
    kind: 'list',
    name: 'allowed-ad-endpoints',
    default: [],
    help: "AAD authorities (comma-separated https URLs) an AzureIdentity adEndpoint may name besides the known clouds' and the cloud config's; other identities are skipped with an event (set the same on NMI)",
  },
  enableFederatedIdentities: {
    kind: 'bool',
    name: 'enable-federated-identities',
    default: false,
    help:
      'Federate AzureIdentities with spec.mode Federated: MIC writes a federated identity credential per service account ' +
      'their pods run as and never attaches them to a VM (off: such identities are skipped with an event, never attached)',
  },
  serviceAccountIssuer: {
    kind: 'string',
    name: 'service-account-issuer',
    default: '',
    help:
      "The cluster's service-account issuer URL the federated credentials name, exactly as its tokens carry it " +
      "(empty: read from the API server's /.well-known/openid-configuration at start)",
  },
  ...klogCompatFlags(),
} as const satisfies FlagDefs;

/** Parse MIC's command line and environment into a frozen MicConfig, or every problem found. */
export function parseMicConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): MicConfigResult {
  const parsed = parseFlags(MIC_FLAGS, argv, env);
  if (!parsed.ok) return parsed;
  const f = parsed.value.values;
  const help = parsed.value.helpRequested;
  const errors: string[] = [];

  const podNamespace = env['MIC_POD_NAMESPACE'] ?? '';
  // The original checks this after --version; we let --help/--version work anywhere, e.g. on a laptop.
  if (!help && !f.version && podNamespace === '') {
    errors.push(
      'MIC_POD_NAMESPACE is not set: add the pod namespace as env MIC_POD_NAMESPACE (valueFrom fieldRef metadata.namespace)',
    );
  }

  const durationMs = f.leaderElectionDuration;
  const renewDeadlineMs = f.leaderElectionRenewDeadline || durationMs / 2;
  const retryPeriodMs = f.leaderElectionRetryPeriod || durationMs / 4;
  // Same sanity rules as client-go's leader elector, so a bad combination fails at start, not at the first renew.
  if (renewDeadlineMs >= durationMs) {
    errors.push('--leader-election-renew-deadline: must be shorter than --leader-election-duration');
  }
  if (retryPeriodMs * 1.2 >= renewDeadlineMs) {
    errors.push('--leader-election-retry-period: must be shorter than --leader-election-renew-deadline / 1.2');
  }
  const instance = f.leaderElectionInstance;
  if (!help && !f.version && instance === '') {
    errors.push('--leader-election-instance: empty, and env HOSTNAME is not set to default it');
  }

  let armEndpoint: string | undefined;
  if (f.armEndpoint !== '') {
    // The ARM SDKs refuse to send bearer tokens over plain http, so an http endpoint could never work.
    const url = parseBaseUrl(f.armEndpoint, ['https:']);
    if (url.ok) armEndpoint = url.value;
    else errors.push(`--arm-endpoint: ${url.error}`);
  }
  if (f.enableTypeUpgrade) errors.push(`--enable-type-upgrade=true: no longer supported: ${TYPE_UPGRADE_REMOVED}`);
  errors.push(...bindAddressErrors(f));
  const allowedAdEndpoints = parseAllowedAdEndpoints(f.allowedAdEndpoints, errors);

  if (errors.length > 0 && !help && !f.version) return { ok: false, errors };

  const config: MicConfig = {
    ...commonSettings(f, env, ignoredFlagsGiven(MIC_FLAGS, parsed.value.explicit)),
    help,
    cloudconfig: f.cloudconfig === '' ? undefined : f.cloudconfig,
    podNamespace,
    syncRetryMs: f.syncRetryDuration,
    leaderElection: Object.freeze({
      instance,
      namespace: f.leaderElectionNamespace,
      name: f.leaderElectionName,
      durationMs,
      renewDeadlineMs,
      retryPeriodMs,
      resourceLock: f.leaderElectionResourceLock === 'leases' ? 'leases' : 'endpointsleases',
    }),
    httpProbePort: f.httpProbePort,
    prometheusPort: f.prometheusPort,
    enableScaleFeatures: f.enableScaleFeatures,
    createDeleteBatch: f.createDeleteBatch,
    clientQps: f.clientQps,
    clientBurst: f.clientBurst,
    immutableUserMsis: Object.freeze(f.immutableUserMsis.map((id) => id.toLowerCase())),
    updateUserMsiMaxRetry: f.updateUserMsiMaxRetry,
    updateUserMsiRetryIntervalMs: f.updateUserMsiRetryInterval,
    identityAssignmentReconcileIntervalMs: f.identityAssignmentReconcileInterval,
    armEndpoint,
    armMaxConcurrency: f.armMaxConcurrency,
    armPollIntervalMs: f.armPollInterval,
    allowCrossNamespaceSecrets: f.allowCrossNamespaceSecrets,
    allowedAdEndpoints,
    enableFederatedIdentities: f.enableFederatedIdentities,
    serviceAccountIssuer: f.serviceAccountIssuer,
  };
  return { ok: true, value: Object.freeze(config) };
}

/** `--help` text for MIC. */
export function micUsage(): string {
  return usage('mic', MIC_FLAGS);
}
