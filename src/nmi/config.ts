// NMI's command line: every flag of the original (same names, same defaults) plus ours, parsed once into a frozen
// NmiConfig. Only cmd/nmi.ts passes process.argv/process.env in.
import { isIPv4 } from 'node:net';
import { bindAddressErrors, COMMON_FLAGS, commonSettings, type CommonSettings } from '../common/common-flags.js';
import { parseAllowedAdEndpoints } from '../crds/credential-policy.js';
import type { AuditMode } from './audit.js';
import { ignoredFlagsGiven, klogCompatFlags, parseBaseUrl, parseFlags, usage, type FlagDefs } from '../common/flags.js';

export type OperationMode = 'standard' | 'managed';

export interface NmiConfig extends CommonSettings {
  /** `--help` was given: print `nmiUsage()` and exit 0; nothing else in this object is validated. */
  readonly help: boolean;
  /** `--version` was given: print the version and exit 0; nothing else in this object is validated. */
  readonly version: boolean;
  /** Address the token server listens on (the iptables DNAT target; 127.0.0.1 when this is 0.0.0.0). */
  readonly nmiListenAddress: string;
  readonly nmiPort: number;
  /** Address pods' metadata traffic is intercepted for (iptables `-d`). */
  readonly metadataIp: string;
  /** Port pods' metadata traffic is intercepted for (iptables `--dport`). */
  readonly metadataPort: number;
  /** Where NMI itself sends IMDS requests (tokens for managed identities, proxied paths), no trailing slash. */
  readonly imdsEndpoint: string;
  /** This node's name (`--node`, or env NODE_NAME). */
  readonly node: string;
  readonly iptUpdateIntervalMs: number;
  readonly iptablesBinary: string;
  /** MIC's namespace: its pods running as `micServiceAccount` get the node's identity without a binding ('' = none). */
  readonly micNamespace: string;
  readonly micServiceAccount: string;
  readonly httpProbePort: number;
  readonly prometheusPort: number;
  /** Contents a scraper sends as `Authorization: Bearer` to get the series with namespace and resource labels. */
  readonly metricsBearerTokenFile: string;
  readonly retryAttemptsForCreated: number;
  readonly retryAttemptsForAssigned: number;
  readonly findIdentityRetryIntervalMs: number;
  readonly enableScaleFeatures: boolean;
  readonly blockInstanceMetadata: boolean;
  readonly metadataHeaderRequired: boolean;
  readonly operationMode: OperationMode;
  readonly allowNetworkPluginKubenet: boolean;
  readonly kubeletConfig: string;
  /** CNI conf dir read by the kubenet guard ('' skips the CNI check). */
  readonly cniConfDir: string;
  readonly setRetryAfterHeader: boolean;
  readonly enableConntrackDeletion: boolean;
  /** Fetch tokens ahead of time for identities assigned to pods on this node. */
  readonly prefetch: boolean;
  /** Resources prefetched for each assigned identity. */
  readonly prefetchResources: readonly string[];
  /** Program iptables (off only in the loopback sandbox). */
  readonly manageIptables: boolean;
  /** `--uninstall-iptables`: remove the aad-metadata chain and its jump, then exit (nothing else is started). */
  readonly uninstallIptables: boolean;
  /** Taint key removed from this node once the rules are in place and the caches synced; '' disables. */
  readonly startupTaint: string;
  /** Most (identity, resource) tokens kept; 0 disables the cache. */
  readonly tokenCacheSize: number;
  /** A cached token is refreshed this long before it expires, and never served closer to expiry than this. */
  readonly tokenRefreshBeforeMs: number;
  /** Read an identity's clientPassword Secret even when it is in another namespace than the identity. */
  readonly allowCrossNamespaceSecrets: boolean;
  /** Authority origins (https://host[:port]) an adEndpoint may name besides the known clouds' AAD authorities. */
  readonly allowedAdEndpoints: readonly string[];
  /** A pod view not confirmed by the API server for longer than this is not trusted (live GET of each caller, or 503). */
  readonly podViewMaxStalenessMs: number;
  /** Token requests one pod may have waiting (not answered from the cache at once); beyond it 429. */
  readonly maxWaitingRequestsPerPod: number;
  /** Token requests waiting on this node in all; at the cap the pod holding the most makes room for others. */
  readonly maxWaitingRequests: number;
  /** Upstream (IMDS/AAD) token calls running at once at most. */
  readonly maxConcurrentTokenFetches: number;
  /** Cache misses (upstream fetches) per second one pod may start; 0: no per-pod limit. */
  readonly podTokenMissRate: number;
  /** Cache misses one pod may start at once before the rate applies. */
  readonly podTokenMissBurst: number;
  /** TCP connections one pod may keep open to the token server. */
  readonly maxConnectionsPerPod: number;
  /** TCP connections open to the token server in all; at the cap the pod holding the most makes room. */
  readonly maxConnections: number;
  /** `--audit-log`: which token requests get an audit record (docs/audit.md). */
  readonly auditLog: AuditMode;
  /** How often aggregated audit records (counted cache hits, repeated refusals) are written. */
  readonly auditFlushIntervalMs: number;
  /** Audit records go to this file (JSON lines, appended); '' writes them to stdout with the logs, marked `audit: true`. */
  readonly auditLogFile: string;
  /**
   * `--enable-federated-identities`: a Federated AzureIdentity's tokens come from exchanging the calling pod's own
   * service-account token at Azure AD (needs create on serviceaccounts/token); off: such a pod gets 403.
   */
  readonly enableFederatedIdentities: boolean;
  /** azure.json NMI reads the tenant and cloud (Azure AD authority) from for federated identities; undefined: env. */
  readonly cloudconfig: string | undefined;
}

export type NmiConfigResult =
  | { readonly ok: true; readonly value: NmiConfig }
  | { readonly ok: false; readonly errors: readonly string[] };

export const NMI_FLAGS = {
  ...COMMON_FLAGS,
  nmiListenAddress: { kind: 'string', name: 'nmi-listen-address', default: '127.0.0.1', help: 'NMI listen address' },
  nmiPort: { kind: 'int', name: 'nmi-port', default: 2579, min: 0, max: 65535, help: 'NMI application port' },
  metadataIp: {
    kind: 'string',
    name: 'metadata-ip',
    default: '169.254.169.254',
    help: "Instance metadata address intercepted for pods (iptables rule's destination)",
  },
  metadataPort: {
    kind: 'int',
    name: 'metadata-port',
    default: 80,
    min: 1,
    max: 65535,
    help: "Instance metadata port intercepted for pods (iptables rule's destination port)",
  },
  imdsEndpoint: {
    kind: 'string',
    name: 'imds-endpoint',
    default: '',
    help: 'Base URL NMI sends its own instance metadata requests to (default http://<metadata-ip>:<metadata-port>)',
  },
  node: { kind: 'string', name: 'node', default: '', env: 'NODE_NAME', help: 'Name of the node this NMI serves (required)' },
  iptUpdateIntervalSec: {
    kind: 'seconds',
    name: 'ipt-update-interval-sec',
    default: 60_000,
    minMs: 1,
    help: 'Update interval of iptables, in seconds (a duration such as 500ms is accepted too)',
  },
  iptablesBinary: {
    kind: 'string',
    name: 'iptables-binary',
    default: 'iptables',
    help: "iptables command to run (e.g. iptables-legacy or iptables-nft, to match the node's backend)",
  },
  micNamespace: {
    kind: 'string',
    name: 'MICNamespace',
    default: '',
    help: "MIC's namespace: pods there running as --mic-service-account get the node's own identities (empty: none; the original's default was 'default')",
  },
  micServiceAccount: {
    kind: 'string',
    name: 'mic-service-account',
    default: 'aad-pod-identity-mic',
    help: "MIC's ServiceAccount in --MICNamespace, by which NMI recognises MIC's pods",
  },
  httpProbePort: {
    kind: 'int',
    name: 'http-probe-port',
    default: 8080,
    min: 0,
    max: 65535,
    help: 'HTTP health and readiness probe port (/healthz, /readyz); the manifests use 8085',
  },
  prometheusPort: { kind: 'int', name: 'prometheus-port', default: 9090, min: 0, max: 65535, help: 'Prometheus port for metrics (/metrics)' },
  metricsBearerTokenFile: {
    kind: 'string',
    name: 'metrics-bearer-token-file',
    default: '',
    help: "File holding a token; /metrics requests with 'Authorization: Bearer <token>' get the series with namespace and resource labels, a wrong token 401. Without it (or without the header) /metrics has no tenant labels; re-read when the file changes",
  },
  retryAttemptsForCreated: {
    kind: 'int',
    name: 'retry-attempts-for-created',
    default: 16,
    min: 0,
    help: 'Number of retries in NMI to find assigned identity in CREATED state',
  },
  retryAttemptsForAssigned: {
    kind: 'int',
    name: 'retry-attempts-for-assigned',
    default: 4,
    min: 0,
    help: 'Number of retries in NMI to find assigned identity in ASSIGNED state',
  },
  findIdentityRetryInterval: {
    kind: 'seconds',
    name: 'find-identity-retry-interval',
    default: 5000,
    help: 'Retry interval to find assigned identities, in seconds (a duration such as 200ms is accepted too)',
  },
  enableScaleFeatures: {
    kind: 'bool',
    name: 'enableScaleFeatures',
    default: true,
    help: 'Watch only the AzureAssignedIdentities labelled with this node',
  },
  blockInstanceMetadata: {
    kind: 'bool',
    name: 'block-instance-metadata',
    default: false,
    help: 'Block instance metadata endpoints (403 on /metadata/instance)',
  },
  metadataHeaderRequired: {
    kind: 'bool',
    name: 'metadata-header-required',
    default: true,
    help: 'Metadata header required for querying Azure Instance Metadata service',
  },
  operationMode: {
    kind: 'string',
    name: 'operation-mode',
    default: 'standard',
    choices: ['standard', 'managed'],
    lowercase: true,
    help: 'NMI operation mode',
  },
  allowNetworkPluginKubenet: {
    kind: 'bool',
    name: 'allow-network-plugin-kubenet',
    default: false,
    help: 'Allow running aad-pod-identity in cluster with kubenet',
  },
  kubeletConfig: {
    kind: 'string',
    name: 'kubelet-config',
    default: '/etc/default/kubelet',
    help: "Path to kubelet default config (an EnvironmentFile; the kubenet guard reads --network-plugin from it as the kubelet's flag parser would)",
  },
  cniConfDir: {
    kind: 'string',
    name: 'cni-conf-dir',
    default: '/etc/cni/net.d',
    help: "CNI conf dir the kubenet guard reads: kubenet-shaped when the runtime's network (first valid .conf/.conflist/.json by name) starts with the bridge plugin; '' skips this check",
  },
  setRetryAfterHeader: {
    kind: 'bool',
    name: 'set-retry-after-header',
    default: false,
    help: 'Answer 503 with Retry-After: 20 instead of 404 when no identity is found for the pod (standard and managed mode)',
  },
  enableConntrackDeletion: {
    kind: 'bool',
    name: 'enable-conntrack-deletion',
    default: false,
    help: 'Delete conntrack entries of pre-existing connections to the metadata endpoint after the first iptables sync',
  },
  prefetch: {
    kind: 'bool',
    name: 'prefetch',
    default: true,
    help: 'Fetch tokens ahead of time for identities assigned to pods on this node, for resources already asked for',
  },
  prefetchResources: {
    kind: 'list',
    name: 'prefetch-resources',
    default: ['https://management.azure.com'],
    help: 'Resources whose tokens are fetched ahead of time when an identity is assigned to a pod on this node (as the SDKs send them: no /.default, no trailing slash)',
  },
  manageIptables: {
    kind: 'bool',
    name: 'manage-iptables',
    default: true,
    help: 'Program the aad-metadata nat chain; false only where interception is done otherwise (local sandbox in loopback mode)',
  },
  uninstallIptables: {
    kind: 'bool',
    name: 'uninstall-iptables',
    default: false,
    help: 'Remove the aad-metadata nat chain and its PREROUTING jump, then exit: the uninstall step (a stopping NMI keeps its rules, so pods never reach the node\'s IMDS)',
  },
  startupTaint: {
    kind: 'string',
    name: 'startup-taint',
    default: 'aadpodidentity.k8s.io/nmi-not-ready',
    help: "Taint key (any value, any effect) NMI removes from its node once its iptables rules are in place and its caches synced; empty disables",
  },
  tokenCacheSize: {
    kind: 'int',
    name: 'token-cache-size',
    default: 10_000,
    min: 0,
    help: 'Most tokens kept in the cache, one per (pod identity, resource); the least recently used is evicted beyond it. 0 disables the cache (every request fetches from IMDS/AAD, as the original; --prefetch then does nothing)',
  },
  tokenRefreshBefore: {
    kind: 'duration',
    name: 'token-refresh-before',
    default: 300_000,
    help: 'Refresh a cached token this long before it expires; a token closer to expiry is never served',
  },
  allowCrossNamespaceSecrets: {
    kind: 'bool',
    name: 'allow-cross-namespace-secrets',
    default: false,
    help: "Read a service principal identity's clientPassword Secret even when it is in another namespace than the identity (off: refused before the Secret is read)",
  },
  allowedAdEndpoints: {
    kind: 'list',
    name: 'allowed-ad-endpoints',
    default: [],
    help: 'AAD authorities (comma-separated https URLs) an AzureIdentity adEndpoint may name besides the known clouds\' (login.microsoftonline.com, .us, .de, login.chinacloudapi.cn); any other adEndpoint is refused before any connection',
  },
  podViewMaxStaleness: {
    kind: 'duration',
    name: 'pod-view-max-staleness',
    default: 120_000,
    minMs: 1_000,
    help: "Trust the pod watch for this long after the API server's last event or bookmark; beyond it each caller is confirmed with a live GET of its pod before it is served, or gets 503",
  },
  maxWaitingRequestsPerPod: {
    kind: 'int',
    name: 'max-waiting-requests-per-pod',
    default: 1024,
    min: 1,
    help: 'Token requests one pod may have waiting (for its identity to be assigned, or for a token fetch); beyond it 429 with Retry-After',
  },
  maxWaitingRequests: {
    kind: 'int',
    name: 'max-waiting-requests',
    default: 2048,
    min: 1,
    help: "Token requests waiting on this node in all (bounds NMI's memory); at the cap a pod holding fewer than the busiest pod still gets in, and the busiest pod's newest request gets 429",
  },
  maxConcurrentTokenFetches: {
    kind: 'int',
    name: 'max-concurrent-token-fetches',
    default: 16,
    min: 1,
    help: 'Upstream token calls (IMDS, Azure AD) running at once at most; more wait their turn',
  },
  podTokenMissRate: {
    kind: 'number',
    name: 'pod-token-miss-rate',
    default: 10,
    help: 'Token cache misses (upstream token calls) per second one pod may start, beyond its burst; over it 429 with Retry-After; 0 disables the limit',
  },
  podTokenMissBurst: {
    kind: 'int',
    name: 'pod-token-miss-burst',
    default: 20,
    min: 1,
    help: 'Token cache misses one pod may start at once before --pod-token-miss-rate applies',
  },
  maxConnectionsPerPod: {
    kind: 'int',
    name: 'max-connections-per-pod',
    default: 1024,
    min: 1,
    help: 'TCP connections one pod may keep open to the token server; beyond it new ones are closed at once',
  },
  maxConnections: {
    kind: 'int',
    name: 'max-connections',
    default: 8192,
    min: 1,
    help: "TCP connections open to the token server in all (bounds NMI's memory); at the cap a pod holding fewer than the busiest pod still connects, and the busiest pod's newest connection is closed",
  },
  auditLog: {
    kind: 'string',
    name: 'audit-log',
    default: 'aggregate',
    choices: ['off', 'aggregate', 'all'],
    lowercase: true,
    help: 'Audit record of token requests (docs/audit.md): aggregate writes every upstream issuance and the first of each refusal at once and counts cache hits and repeated refusals into one record per --audit-flush-interval; all writes one record per request; off none',
  },
  auditFlushInterval: {
    kind: 'duration',
    name: 'audit-flush-interval',
    default: 10_000,
    minMs: 100,
    help: 'With --audit-log=aggregate, how often counted cache hits and repeated refusals are written as one record each (with their count)',
  },
  auditLogFile: {
    kind: 'string',
    name: 'audit-log-file',
    default: '',
    help: "File audit records are appended to as JSON lines (created with its directory); empty: stdout, as JSON lines with 'audit': true beside the logs",
  },
  enableFederatedIdentities: {
    kind: 'bool',
    name: 'enable-federated-identities',
    default: false,
    help: "Serve AzureIdentities with spec.mode Federated: exchange a short-lived token of the calling pod's own service account (TokenRequest bound to the pod; NMI needs create on serviceaccounts/token) at Azure AD, tenant and authority from --cloudconfig; off: such pods get 403 and the log names this flag",
  },
  cloudconfig: {
    kind: 'string',
    name: 'cloudconfig',
    default: '',
    help: 'With --enable-federated-identities: azure.json NMI reads tenantId and cloud from (the Azure AD authority; AZURE_AUTHORITY_HOST overrides it); empty: env TENANT_ID and CLOUD. Nothing else in it is used',
  },
  ...klogCompatFlags(),
} as const satisfies FlagDefs;

/** Parse NMI's command line and environment into a frozen NmiConfig, or every problem found. */
export function parseNmiConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): NmiConfigResult {
  const parsed = parseFlags(NMI_FLAGS, argv, env);
  if (!parsed.ok) return parsed;
  const f = parsed.value.values;
  const help = parsed.value.helpRequested;
  const errors: string[] = [];

  const common = commonSettings(f, env, ignoredFlagsGiven(NMI_FLAGS, parsed.value.explicit));
  const forceNamespaced = common.forceNamespaced;
  const operationMode: OperationMode = f.operationMode === 'managed' ? 'managed' : 'standard';
  if (operationMode === 'managed' && !forceNamespaced) {
    errors.push('--operation-mode=managed requires namespaced mode: add --forceNamespaced (or env FORCENAMESPACED=true)');
  }
  if (f.node === '' && !f.uninstallIptables) {
    errors.push('--node is required: pass --node=$(NODE_NAME) with NODE_NAME from fieldRef spec.nodeName, or set env NODE_NAME');
  }
  if (!isIPv4(f.metadataIp)) errors.push(`--metadata-ip: expected an IPv4 address, got '${f.metadataIp}'`);
  // The listen address is also the DNAT target, and the original's pod lookup is IPv4 only.
  if (!isIPv4(f.nmiListenAddress)) {
    errors.push(`--nmi-listen-address: expected an IPv4 address, got '${f.nmiListenAddress}'`);
  }
  if (f.iptablesBinary.trim() === '') errors.push('--iptables-binary: must not be empty');
  if (f.startupTaint !== '' && !isTaintKey(f.startupTaint)) {
    errors.push(
      `--startup-taint: expected a taint key (a qualified name such as aadpodidentity.k8s.io/nmi-not-ready, no value or effect), got '${f.startupTaint}'`,
    );
  }

  let imdsEndpoint = `http://${f.metadataIp}:${f.metadataPort}`;
  if (f.imdsEndpoint !== '') {
    const url = parseBaseUrl(f.imdsEndpoint, ['http:', 'https:']);
    if (url.ok) imdsEndpoint = url.value;
    else errors.push(`--imds-endpoint: ${url.error}`);
  }
  errors.push(...bindAddressErrors(f));
  const allowedAdEndpoints = parseAllowedAdEndpoints(f.allowedAdEndpoints, errors);
  if (!Number.isFinite(f.podTokenMissRate) || f.podTokenMissRate < 0) {
    errors.push(`--pod-token-miss-rate: expected a number of misses per second, 0 or more (0 disables the limit), got ${f.podTokenMissRate}`);
  }

  if (errors.length > 0 && !help && !f.version) return { ok: false, errors };

  const config: NmiConfig = {
    ...common,
    help,
    nmiListenAddress: f.nmiListenAddress,
    nmiPort: f.nmiPort,
    metadataIp: f.metadataIp,
    metadataPort: f.metadataPort,
    imdsEndpoint,
    node: f.node,
    iptUpdateIntervalMs: f.iptUpdateIntervalSec,
    iptablesBinary: f.iptablesBinary,
    micNamespace: f.micNamespace,
    micServiceAccount: f.micServiceAccount,
    httpProbePort: f.httpProbePort,
    prometheusPort: f.prometheusPort,
    metricsBearerTokenFile: f.metricsBearerTokenFile,
    retryAttemptsForCreated: f.retryAttemptsForCreated,
    retryAttemptsForAssigned: f.retryAttemptsForAssigned,
    findIdentityRetryIntervalMs: f.findIdentityRetryInterval,
    enableScaleFeatures: f.enableScaleFeatures,
    blockInstanceMetadata: f.blockInstanceMetadata,
    metadataHeaderRequired: f.metadataHeaderRequired,
    operationMode,
    allowNetworkPluginKubenet: f.allowNetworkPluginKubenet,
    kubeletConfig: f.kubeletConfig,
    cniConfDir: f.cniConfDir,
    setRetryAfterHeader: f.setRetryAfterHeader,
    enableConntrackDeletion: f.enableConntrackDeletion,
    prefetch: f.prefetch,
    prefetchResources: f.prefetchResources,
    manageIptables: f.manageIptables,
    uninstallIptables: f.uninstallIptables,
    startupTaint: f.startupTaint,
    tokenCacheSize: f.tokenCacheSize,
    tokenRefreshBeforeMs: f.tokenRefreshBefore,
    allowCrossNamespaceSecrets: f.allowCrossNamespaceSecrets,
    allowedAdEndpoints,
    podViewMaxStalenessMs: f.podViewMaxStaleness,
    maxWaitingRequestsPerPod: f.maxWaitingRequestsPerPod,
    maxWaitingRequests: f.maxWaitingRequests,
    maxConcurrentTokenFetches: f.maxConcurrentTokenFetches,
    podTokenMissRate: f.podTokenMissRate,
    podTokenMissBurst: f.podTokenMissBurst,
    maxConnectionsPerPod: f.maxConnectionsPerPod,
    maxConnections: f.maxConnections,
    auditLog: f.auditLog === 'off' ? 'off' : f.auditLog === 'all' ? 'all' : 'aggregate',
    auditFlushIntervalMs: f.auditFlushInterval,
    auditLogFile: f.auditLogFile,
    enableFederatedIdentities: f.enableFederatedIdentities,
    cloudconfig: f.cloudconfig === '' ? undefined : f.cloudconfig,
  };
  return { ok: true, value: Object.freeze(config) };
}

// A Kubernetes qualified name: optional DNS-subdomain prefix and '/', then a name of at most 63 characters.
const QUALIFIED_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

function isTaintKey(key: string): boolean {
  const slash = key.indexOf('/');
  const prefix = slash < 0 ? '' : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  return QUALIFIED_NAME.test(key) && prefix.length <= 253 && name.length <= 63;
}

/** `--help` text for NMI. */
export function nmiUsage(): string {
  return usage('nmi', NMI_FLAGS);
}
