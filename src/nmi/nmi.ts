// NMI's composition root: informers feed the pod index and identity state, the token server answers pods, the
// iptables loop keeps interception in place, and probes/metrics report. start() / stop(); cmd/nmi.ts owns the process.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import {
  normalizeAssignedIdentity,
  normalizeAzureIdentity,
  normalizeBinding,
  normalizeException,
} from '../crds/normalize.js';
import { collectionPath, nodeLabelSelector, Plurals } from '../crds/names.js';
import { parseNamespacePolicy, type NamespacePolicies, type NamespacePolicy } from '../crds/namespace-policy.js';
import { podViewFrom } from '../crds/types.js';
import { Reflector, type KubeObject } from '../kube/index.js';
import { podViewFreshness } from './adapters/pod-freshness.js';
import { createImdsProxy } from './adapters/proxy.js';
import { createAuditTrail, type AuditMode, type AuditTrail } from './audit.js';
import { tokenIssuerFrom } from './adapters/token-issuer.js';
import { NmiIdentityState } from './identity-state.js';
import { limitConnections } from './connection-limit.js';
import { CHAIN, createIptables, type InterceptTarget, type Iptables } from './iptables.js';
import { createMetricsListener } from './metrics-endpoint.js';
import { createNmiMetrics } from './metrics.js';
import { PodIndex } from './pod-index.js';
import { createNmiRequestListener, handleExpectContinue, type NmiServerConfig } from './server.js';
import { removeStartupTaint, type StartupTaintOutcome } from './startup-taint.js';
import { countingSecretReader, createTokenProvider, kubeSecretReader, tokenRequestIdentityFrom, type TokenProvider } from './tokens/index.js';

export interface NmiOptions extends NmiServerConfig {
  readonly node: string;
  readonly listenAddress: string;
  readonly port: number;
  readonly probeAddress: string;
  readonly probePort: number;
  readonly metricsAddress: string;
  readonly metricsPort: number;
  /** File whose contents a scraper must send as `Authorization: Bearer` for the series with tenant labels. */
  readonly metricsBearerTokenFile?: string;
  readonly imdsEndpoint: string;
  readonly enableScaleFeatures: boolean;
  /** Program iptables (false in the loopback sandbox and in tests without root). */
  readonly manageIptables: boolean;
  readonly intercept: Omit<InterceptTarget, 'nmiHost' | 'nmiPort'>;
  readonly iptablesBinary: string;
  readonly iptablesPrefix?: readonly string[];
  readonly iptUpdateIntervalMs: number;
  readonly enableConntrackDeletion: boolean;
  readonly prefetch: boolean;
  readonly prefetchResources: readonly string[];
  readonly tokenCacheSize: number;
  readonly tokenRefreshBeforeMs: number;
  /** Extra CA for service-principal authorities (the emulator's); real clouds need none. */
  readonly authorityCaPem?: string;
  /** `--allowed-ad-endpoints`: authorities an adEndpoint may name besides the known clouds' (default none). */
  readonly allowedAdEndpoints?: readonly string[];
  /** `--allow-cross-namespace-secrets`: a clientPassword Secret may be in another namespace (default false). */
  readonly allowCrossNamespaceSecrets?: boolean;
  readonly imdsTimeoutMs?: number;
  readonly watchTimeoutSeconds?: number;
  /** What the kubenet guard found at start (reported on the probe port's /status); default 'unknown'. */
  readonly kubenet?: KubenetStatus;
  /** Taint key removed from this node once active() (`--startup-taint`); empty or absent: none. */
  readonly startupTaint?: string;
  /**
   * A pod view the API server has not confirmed (list, event or bookmark) for longer than this is not trusted: each
   * caller is checked with a live GET before it is served, or gets 503 (default 120 s: API servers bookmark every minute).
   */
  readonly podViewMaxStalenessMs?: number;
  /** Upstream token calls at once (default 16). */
  readonly maxConcurrentTokenFetches?: number;
  /** Cache misses per second one pod may start (default 10; 0: unlimited), and its burst (default 20). */
  readonly podTokenMissRate?: number;
  readonly podTokenMissBurst?: number;
  /** TCP connections one pod IP may keep open to the token server (default 1024), and all of them (default 8192). */
  readonly maxConnectionsPerPod?: number;
  readonly maxConnections?: number;
  /** `--audit-log` (default aggregate) and `--audit-flush-interval` (default 10 s): see audit.ts. */
  readonly auditLog?: AuditMode;
  readonly auditFlushIntervalMs?: number;
  /** Where audit records go (default: this NMI's logger, each line marked `audit: true`). */
  readonly auditLogger?: Logger;
}

/**
 * The kubenet guard's finding: 'not-kubenet' (a CNI network that is not bridge-shaped), 'kubenet-allowed'
 * (kubenet-shaped, run anyway with --allow-network-plugin-kubenet), 'unknown' (nothing said either way).
 */
export type KubenetStatus = 'not-kubenet' | 'kubenet-allowed' | 'unknown';

/**
 * GET /status on the probe port, for `doctor`. Pods can reach this port, so it holds node facts only: never a
 * pod, identity or tenant name. rules: 'in-place' (checked now, at most once a second), 'missing' (chain, rules
 * or the PREROUTING jump not as NMI makes them), 'not-managed' (--manage-iptables=false), 'unknown' (check failed).
 */
export interface NmiStatus {
  readonly rules: 'in-place' | 'missing' | 'not-managed' | 'unknown';
  readonly synced: boolean;
  readonly kubenet: KubenetStatus;
}

export interface NmiHandle {
  readonly url: string;
  readonly probeUrl: string;
  readonly metricsUrl: string;
  readonly tokens: TokenProvider;
  readonly pods: PodIndex;
  readonly identities: NmiIdentityState;
  /** The Namespace policies NMI enforces (empty unless --namespace-identity-policy=enforce). */
  readonly namespacePolicies: NamespacePolicies;
  /** The audit trail (`flush()` writes the counted records now). */
  readonly audit: AuditTrail;
  /** Milliseconds since the API server last confirmed the pod view (a list, an event or a bookmark). */
  podViewAgeMs(): number;
  /** True once the caches synced and (when managed) the iptables rules are in place. */
  active(): boolean;
  /** Settles when the startup taint is handled: removed, absent (or disabled), or stopped first. */
  startupTaint(): Promise<StartupTaintOutcome>;
  /** Stops serving; the iptables rules stay in place (fail closed): only `nmi --uninstall-iptables` removes them. */
  stop(): Promise<void>;
}

export async function startNmi(options: NmiOptions, kubeConfig: KubeConfig, logger: Logger): Promise<NmiHandle> {
  const log = logger.child({ component: 'nmi', node: options.node });
  const metrics = createNmiMetrics();
  const pods = new PodIndex({ nodeName: options.node });
  const identities = new NmiIdentityState();
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const tokens = createTokenProvider({
    imds: { endpoint: options.imdsEndpoint, ...(options.imdsTimeoutMs ? { attemptTimeoutMs: options.imdsTimeoutMs } : {}) },
    secrets: countingSecretReader(kubeSecretReader(core), () => metrics.countKubeError('get_secret')),
    servicePrincipal: {
      ...(options.authorityCaPem ? { caPem: options.authorityCaPem } : {}),
      allowedAuthorities: options.allowedAdEndpoints ?? [],
      allowCrossNamespaceSecrets: options.allowCrossNamespaceSecrets === true,
    },
    cache: {
      maxEntries: options.tokenCacheSize,
      refreshBeforeExpiryMs: options.tokenRefreshBeforeMs,
      maxConcurrentFetches: options.maxConcurrentTokenFetches ?? 16,
      missLimit: { ratePerSecond: options.podTokenMissRate ?? 10, burst: options.podTokenMissBurst ?? 20 },
    },
    // Under the namespace policy a managed identity is fetched by the resource ID the policy checked, never by a
    // client ID the tenant wrote, and the token must be for the client ID the AzureIdentity declares.
    verifyManagedIdentity: options.namespaceIdentityPolicy === 'enforce',
    onUpstream: (operation, seconds, failed) => metrics.observeUpstream(operation, seconds, failed),
    logger: log,
  });
  metrics.setTokenCacheStats(() => tokens.stats());

  // The startup taint comes off only once active(): rules in place and caches synced (onReady runs at both).
  const taintStop = new AbortController();
  let taintOutcome: Promise<StartupTaintOutcome> | undefined;
  let resolveTaint: (outcome: StartupTaintOutcome) => void = () => undefined;
  const taintHandled = new Promise<StartupTaintOutcome>((resolve) => (resolveTaint = resolve));
  if (!options.startupTaint) resolveTaint('absent');
  const onReady = () => {
    if (!options.startupTaint || taintOutcome !== undefined || !active()) return;
    taintOutcome = removeStartupTaint({ core, node: options.node, key: options.startupTaint, log, signal: taintStop.signal });
    void taintOutcome.then(resolveTaint);
  };

  // Filled by the Namespace informer only under --namespace-identity-policy=enforce.
  const namespacePolicies = new Map<string, NamespacePolicy | undefined>();
  const reflectors = informers(options, kubeConfig, log, pods, identities, tokens, metrics, namespacePolicies);
  for (const r of reflectors) r.start();
  const podReflector = reflectors[0] as Reflector; // informers() puts the pods' first
  const freshness = podViewFreshness({
    kubeConfig,
    node: options.node,
    lastHeardMs: () => podReflector.lastHeardMs,
    maxStalenessMs: options.podViewMaxStalenessMs ?? 120_000,
  });

  let iptables: Iptables | undefined;
  let iptablesActive = !options.manageIptables;
  let iptTimer: NodeJS.Timeout | undefined;
  let stopping = false;
  let iptFailures = 0;
  let synced = false;
  const active = () => synced && iptablesActive;
  const syncIptables = async (first: boolean) => {
    if (iptables === undefined || stopping) return;
    try {
      const changed = await iptables.ensure();
      if (changed.createdChain || changed.rewroteRules || changed.fixedJump) log.info(changed, 'iptables rules repaired');
      if (first && options.enableConntrackDeletion) {
        const flushed = await iptables.flushConntrack();
        log.info({ flushed }, 'conntrack entries for the metadata address deleted');
      }
      iptablesActive = true;
      iptFailures = 0;
      onReady();
    } catch (error) {
      // Without the rule pods would reach the real IMDS: report not ready and retry soon, not at the next interval.
      iptablesActive = false;
      iptFailures++;
      const retryMs = Math.min(options.iptUpdateIntervalMs, 250 * 2 ** Math.min(iptFailures, 8));
      log.error({ err: error, failures: iptFailures, retryMs }, 'iptables sync failed');
      if (!stopping) setTimeout(() => void syncIptables(false), retryMs).unref();
    }
  };

  const audit = createAuditTrail({
    mode: options.auditLog ?? 'aggregate',
    flushIntervalMs: options.auditFlushIntervalMs ?? 10_000,
    logger: options.auditLogger ?? log.child({ audit: true }),
  });
  const app = createNmiRequestListener({ config: options, pods, identities, tokens: tokenIssuerFrom(tokens), logger: log, metrics, namespacePolicies, freshness, audit,
    proxy: createImdsProxy({ imdsEndpoint: options.imdsEndpoint, logger: log }) });
  const server = createServer(app);
  limitConnections(server, { perCaller: options.maxConnectionsPerPod ?? 1024, total: options.maxConnections ?? 8192, logger: log });
  handleExpectContinue(server, app, options);
  server.keepAliveTimeout = 65_000;
  const url = await listen(server, options.listenAddress, options.port);
  const port = Number(new URL(url).port);

  if (options.manageIptables) {
    iptables = createIptables(
      { ...options.intercept, nmiHost: options.listenAddress, nmiPort: port },
      { binary: options.iptablesBinary, ...(options.iptablesPrefix ? { commandPrefix: options.iptablesPrefix } : {}) },
    );
    await syncIptables(true);
    iptTimer = setInterval(() => void syncIptables(false), options.iptUpdateIntervalMs);
  }

  void Promise.all(reflectors.map((r) => r.synced())).then((all) => {
    synced = all.every(Boolean);
    if (synced) log.info({ pods: pods.size }, 'caches synced');
    onReady();
  });

  // At most one iptables read a second, however often pods ask: the probe port is open to them.
  let rulesCheck: { atMs: number; state: Promise<NmiStatus['rules']> } | undefined;
  const rulesState = (): Promise<NmiStatus['rules']> => {
    const rules = iptables;
    if (rules === undefined) return Promise.resolve('not-managed');
    if (rulesCheck === undefined || Date.now() - rulesCheck.atMs >= 1000) {
      const state = rules.inPlace().then(
        (ok) => (ok ? 'in-place' : 'missing') as NmiStatus['rules'],
        (error: unknown) => {
          log.warn({ err: error }, 'iptables check for /status failed');
          return 'unknown' as const;
        },
      );
      rulesCheck = { atMs: Date.now(), state };
    }
    return rulesCheck.state;
  };

  const probe = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/status') {
      void rulesState().then((rules) => {
        const body: NmiStatus = { rules, synced, kubenet: options.kubenet ?? 'unknown' };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      });
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      return res.end(active() ? 'Active' : 'Not Active');
    }
    if (path === '/readyz') {
      res.writeHead(active() ? 200 : 503, { 'content-type': 'text/plain' });
      return res.end(active() ? 'ready' : 'not ready');
    }
    res.writeHead(404).end();
  });
  const probeUrl = await listen(probe, options.probeAddress, options.probePort);
  const metricsServer = createServer(createMetricsListener({ metrics, bearerTokenFile: options.metricsBearerTokenFile, logger: log }));
  const metricsUrl = await listen(metricsServer, options.metricsAddress, options.metricsPort);
  tokens.start(Math.min(30_000, Math.max(1_000, options.tokenRefreshBeforeMs / 4)));
  log.info({ url, probeUrl, metricsUrl, mode: options.operationMode }, 'NMI started');

  return {
    url,
    probeUrl,
    metricsUrl,
    tokens,
    pods,
    identities,
    namespacePolicies,
    audit,
    podViewAgeMs: () => Date.now() - podReflector.lastHeardMs,
    active,
    startupTaint: () => taintHandled,
    async stop() {
      stopping = true;
      taintStop.abort();
      resolveTaint('stopped');
      if (iptTimer) clearInterval(iptTimer);
      // The rules stay: with NMI gone, pods' metadata traffic is DNATed to a closed port (refused), never to the
      // node's IMDS. Only `nmi --uninstall-iptables` removes them.
      if (iptables !== undefined) log.info({ chain: CHAIN }, 'iptables rules kept: metadata connections are refused until NMI is back');
      tokens.stop();
      await Promise.all(reflectors.map((r) => r.stop()));
      await Promise.all([close(server), close(probe), close(metricsServer)]);
      // After the last request was answered: what was counted since the last flush is written, not lost.
      audit.stop();
      log.info('NMI stopped');
    },
  };
}

function informers(
  options: NmiOptions,
  kubeConfig: KubeConfig,
  log: Logger,
  pods: PodIndex,
  identities: NmiIdentityState,
  tokens: TokenProvider,
  metrics: ReturnType<typeof createNmiMetrics>,
  namespacePolicies: Map<string, NamespacePolicy | undefined>,
): Reflector[] {
  const common = {
    kubeConfig,
    log,
    ...(options.watchTimeoutSeconds ? { watchTimeoutSeconds: options.watchTimeoutSeconds } : {}),
    onEvent: (e: { type: string; phase?: string }) => {
      if (e.type === 'error') metrics.countKubeError(e.phase === 'list' ? 'get_pod_list' : 'watch');
    },
  };
  const warn = (kind: string, obj: KubeObject, problems: readonly string[]) => {
    if (problems.length > 0) log.warn({ kind, name: obj.metadata?.name, namespace: obj.metadata?.namespace, problems }, 'object ignored');
  };
  const reflectors: Reflector[] = [
    new Reflector({
      ...common,
      path: '/api/v1/pods',
      name: 'pods',
      fieldSelector: `spec.nodeName=${options.node}`,
      handlers: {
        onAdd: (o) => upsertPod(o),
        onUpdate: (_o, n) => upsertPod(n),
        onDelete: (o) => pods.remove(o.metadata?.namespace ?? '', o.metadata?.name ?? ''),
      },
    }),
    new Reflector({
      ...common,
      path: collectionPath(Plurals.AzurePodIdentityException),
      name: 'azurepodidentityexceptions',
      handlers: {
        onAdd: (o) => upsertException(o),
        onUpdate: (_o, n) => upsertException(n),
        onDelete: (o) => identities.removeException(o.metadata?.namespace ?? '', o.metadata?.name ?? ''),
      },
    }),
  ];
  // Both modes: managed mode selects from AzureIdentities, and the node path never serves an identity one declares.
  const identityReflector = new Reflector({
    ...common,
    path: collectionPath(Plurals.AzureIdentity),
    name: 'azureidentities',
    handlers: {
      onAdd: (o) => upsertIdentity(o),
      onUpdate: (_o, n) => upsertIdentity(n),
      onDelete: (o) => {
        identities.removeIdentity(o.metadata?.namespace ?? '', o.metadata?.name ?? '');
        tokens.invalidateIdentity(o.metadata?.namespace ?? '', o.metadata?.name ?? '');
      },
    },
  });
  void identityReflector.synced().then((ok) => {
    if (ok) identities.markSynced('identities');
  });
  reflectors.push(identityReflector);
  // Both modes: managed mode selects from bindings; standard mode tells from them whether an assignment may still come.
  const bindingReflector = new Reflector({
    ...common,
    path: collectionPath(Plurals.AzureIdentityBinding),
    name: 'azureidentitybindings',
    handlers: {
      onAdd: (o) => upsertBinding(o),
      onUpdate: (_o, n) => upsertBinding(n),
      onDelete: (o) => identities.removeBinding(o.metadata?.namespace ?? '', o.metadata?.name ?? ''),
    },
  });
  void bindingReflector.synced().then((ok) => {
    if (ok) identities.markSynced('bindings');
  });
  reflectors.push(bindingReflector);
  if (options.operationMode === 'standard') {
    const assignedReflector = new Reflector({
      ...common,
      path: collectionPath(Plurals.AzureAssignedIdentity),
      name: 'azureassignedidentities',
      ...(options.enableScaleFeatures ? { labelSelector: nodeLabelSelector(options.node) } : {}),
      handlers: {
        onAdd: (o) => upsertAssigned(o),
        onUpdate: (_o, n) => upsertAssigned(n),
        onDelete: (o) => identities.removeAssigned(o.metadata?.namespace ?? '', o.metadata?.name ?? ''),
      },
    });
    void assignedReflector.synced().then((ok) => {
      if (ok) identities.markSynced('assigned');
    });
    reflectors.push(assignedReflector);
  } else {
    identities.markSynced('assigned'); // managed mode has no AAIs to wait for
  }
  if (options.namespaceIdentityPolicy === 'enforce') {
    reflectors.push(
      new Reflector({
        ...common,
        path: '/api/v1/namespaces',
        name: 'namespaces',
        handlers: {
          onAdd: (o) => upsertNamespace(o),
          onUpdate: (_o, n) => upsertNamespace(n),
          onDelete: (o) => namespacePolicies.delete(o.metadata?.name ?? ''),
        },
      }),
    );
  }
  return reflectors;

  function upsertNamespace(obj: KubeObject) {
    const name = obj.metadata?.name ?? '';
    if (name === '') return;
    const policy = parseNamespacePolicy(obj.metadata?.annotations ?? {});
    if (policy !== undefined && policy.problems.length > 0) {
      log.warn({ namespace: name, problems: policy.problems }, 'invalid permitted-identities annotation: the namespace may use no identity');
    }
    namespacePolicies.set(name, policy);
  }

  function upsertPod(obj: KubeObject) {
    const pod = podViewFrom(obj);
    if (pod !== null) pods.upsert(pod);
  }
  function upsertException(obj: KubeObject) {
    const n = normalizeException(obj);
    warn('AzurePodIdentityException', obj, n.problems);
    if (n.value !== null) identities.upsertException(n.value);
  }
  function upsertBinding(obj: KubeObject) {
    const n = normalizeBinding(obj);
    warn('AzureIdentityBinding', obj, n.problems);
    if (n.value !== null) identities.upsertBinding(n.value);
  }
  function upsertIdentity(obj: KubeObject) {
    const n = normalizeAzureIdentity(obj);
    warn('AzureIdentity', obj, n.problems);
    if (n.value === null) return;
    // No prefetch here: every NMI would fetch every identity of the cluster, not only its pods'.
    identities.upsertIdentity(n.value);
  }
  function upsertAssigned(obj: KubeObject) {
    const n = normalizeAssignedIdentity(obj);
    warn('AzureAssignedIdentity', obj, n.problems);
    if (n.value === null) return;
    identities.upsertAssigned(n.value);
    if ((n.value.state === 'Assigned' || n.value.state === '') && n.value.identityRef) prefetch(n.value.identityRef);
  }
  function prefetch(identity: NonNullable<ReturnType<typeof normalizeAzureIdentity>['value']>) {
    if (!options.prefetch || identity.type === null) return;
    for (const resource of options.prefetchResources) void tokens.prefetch(tokenRequestIdentityFrom(identity), resource);
  }
}

function listen(server: Server, host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address() as AddressInfo;
      resolve(`http://${address.address}:${address.port}`);
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
