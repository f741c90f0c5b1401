// NMI's composition root: informers feed the pod index and identity state, the token server answers pods, the
// iptables loop keeps interception in place, and probes/metrics report. start() / stop(); cmd/nmi.ts owns the process.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
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
import { podViewFrom, type AzureAssignedIdentity, type PodView } from '../crds/types.js';
import { Reflector, type KubeObject } from '../kube/index.js';
import { podViewFreshness } from './adapters/pod-freshness.js';
import { createImdsProxy } from './adapters/proxy.js';
import { createAuditTrail, type AuditMode, type AuditTrail } from './audit.js';
import { tokenIssuerFrom } from './adapters/token-issuer.js';
import { NmiIdentityState, type IdentityKind } from './identity-state.js';
import { CHAIN, createIptables, type InterceptTarget, type Iptables } from './iptables.js';
import { createMetricsListener } from './metrics-endpoint.js';
import { createNmiMetrics } from './metrics.js';
import { PodIndex } from './pod-index.js';
import { createNmiServer } from './server.js';
import type { NmiConfig } from './config.js';
import { realClock, type Clock } from '../common/clock.js';
import { closeServer, listen, probeListener } from '../common/http.js';
import { removeStartupTaint, type StartupTaintOutcome } from './startup-taint.js';
import {
  countingSecretReader,
  createFederatedTokenSource,
  createTokenProvider,
  kubeServiceAccountTokenPort,
  kubeSecretReader,
  tokenRequestIdentityFrom,
  type TokenProvider,
} from './tokens/index.js';
import { identityMode, type AzureIdentity } from '../crds/types.js';
import { EventRecorder } from '../kube/events.js';
import type { PodEvents } from './ports.js';

/** What NMI needs besides its flags: the cluster, where its lines go, and knobs for tests. */
export interface NmiDeps {
  readonly kubeConfig: KubeConfig;
  readonly logger: Logger;
  /** Where audit records go (default: this NMI's logger, each line marked `audit: true`). */
  readonly auditLogger?: Logger;
  /** What the kubenet guard found at start (reported on the probe port's /status); default 'unknown'. */
  readonly kubenet?: KubenetStatus;
  /** Extra CA for service-principal authorities (the emulator's); real clouds need none. */
  readonly authorityCaPem?: string;
  /**
   * Federated identities (`--enable-federated-identities`): the cluster's tenant and Azure AD authority, from NMI's
   * cloud config (azure.json), never from an AzureIdentity (a tenant naming the authority could collect the pods'
   * service-account tokens). Required when the flag is on.
   */
  readonly federation?: {
    readonly tenantId: string;
    readonly authorityHost: string;
    /** Longest one request waits in-call for a new credential to propagate (default 10 s); tests shorten it. */
    readonly maxPropagationWaitMs?: number;
    readonly propagationRetryMs?: number;
    /** How long after the first "no matching record" it still counts as propagation (default 5 min). */
    readonly propagationWindowMs?: number;
  };
  readonly clock?: Clock;
  /** Knobs for tests and benchmarks; production uses the defaults. */
  readonly tuning?: NmiTuning;
}

export interface NmiTuning {
  /** One IMDS attempt's timeout. */
  readonly imdsTimeoutMs?: number;
  readonly watchTimeoutSeconds?: number;
  /** Prepended to every iptables command (e.g. `ip netns exec NODE`). */
  readonly iptablesPrefix?: readonly string[];
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

export async function startNmi(config: NmiConfig, deps: NmiDeps): Promise<NmiHandle> {
  const { kubeConfig } = deps;
  const clock = deps.clock ?? realClock;
  const tuning = deps.tuning ?? {};
  const log = deps.logger.child({ component: 'nmi', node: config.node });
  const metrics = createNmiMetrics();
  const pods = new PodIndex({ nodeName: config.node });
  const identities = new NmiIdentityState();
  const core = kubeConfig.makeApiClient(CoreV1Api);
  if (config.enableFederatedIdentities && (deps.federation === undefined || deps.federation.tenantId === '')) {
    throw new Error('--enable-federated-identities needs the tenant: give --cloudconfig (azure.json with tenantId) or env TENANT_ID');
  }
  const federated =
    config.enableFederatedIdentities && deps.federation !== undefined
      ? createFederatedTokenSource({
          // Only for pods NMI's own pod index places at the caller's IP on this node (the server's caller check).
          serviceAccountTokens: kubeServiceAccountTokenPort(core),
          tenantId: deps.federation.tenantId,
          authorityHost: deps.federation.authorityHost,
          ...(deps.authorityCaPem ? { caPem: deps.authorityCaPem } : {}),
          ...(deps.federation.maxPropagationWaitMs !== undefined ? { maxPropagationWaitMs: deps.federation.maxPropagationWaitMs } : {}),
          ...(deps.federation.propagationRetryMs !== undefined ? { propagationRetryMs: deps.federation.propagationRetryMs } : {}),
          ...(deps.federation.propagationWindowMs !== undefined ? { propagationWindowMs: deps.federation.propagationWindowMs } : {}),
          clock,
          logger: log,
        })
      : undefined;
  const tokens = createTokenProvider({
    imds: { endpoint: config.imdsEndpoint, ...(tuning.imdsTimeoutMs ? { attemptTimeoutMs: tuning.imdsTimeoutMs } : {}) },
    secrets: countingSecretReader(kubeSecretReader(core), () => metrics.countKubeError('get_secret')),
    servicePrincipal: {
      ...(deps.authorityCaPem ? { caPem: deps.authorityCaPem } : {}),
      allowedAuthorities: config.allowedAdEndpoints ?? [],
      allowCrossNamespaceSecrets: config.allowCrossNamespaceSecrets === true,
    },
    cache: {
      maxEntries: config.tokenCacheSize,
      refreshBeforeExpiryMs: config.tokenRefreshBeforeMs,
      maxConcurrentFetches: config.maxConcurrentTokenFetches,
      missLimit: { ratePerSecond: config.podTokenMissRate, burst: config.podTokenMissBurst },
    },
    // Under the namespace policy a managed identity is fetched by the resource ID the policy checked, never by a
    // client ID the tenant wrote, and the token must be for the client ID the AzureIdentity declares.
    verifyManagedIdentity: config.namespaceIdentityPolicy === 'enforce',
    onUpstream: (operation, seconds, failed) => metrics.observeUpstream(operation, seconds, failed),
    ...(federated !== undefined ? { federated } : {}),
    logger: log,
  });
  // Events only for federated refusals (the pod's owner reads why its token was refused on its pod).
  const recorder = federated !== undefined ? new EventRecorder({ client: core, component: 'aad-pod-identity-nmi', host: config.node, log, now: () => clock.now() }) : undefined;
  const podEvents: PodEvents | undefined =
    recorder === undefined
      ? undefined
      : { warning: (pod, reason, message) => void recorder.warning({ apiVersion: 'v1', kind: 'Pod', name: pod.name, namespace: pod.namespace, uid: pod.uid }, reason, message) };
  metrics.setTokenCacheStats(() => tokens.stats());

  // The startup taint comes off only once active(): rules in place and caches synced (onReady runs at both).
  const taintStop = new AbortController();
  let taintOutcome: Promise<StartupTaintOutcome> | undefined;
  let resolveTaint: (outcome: StartupTaintOutcome) => void = () => undefined;
  const taintHandled = new Promise<StartupTaintOutcome>((resolve) => (resolveTaint = resolve));
  if (!config.startupTaint) resolveTaint('absent');
  const onReady = () => {
    if (!config.startupTaint || taintOutcome !== undefined || !active()) return;
    taintOutcome = removeStartupTaint({ core, node: config.node, key: config.startupTaint, log, signal: taintStop.signal });
    void taintOutcome.then(resolveTaint);
  };

  // Filled by the Namespace informer only under --namespace-identity-policy=enforce.
  const namespacePolicies = new Map<string, NamespacePolicy | undefined>();
  const reflectors = informers(config, tuning, kubeConfig, log, pods, identities, tokens, metrics, namespacePolicies);
  for (const r of reflectors) r.start();
  const podReflector = reflectors[0]; // informers() puts the pods' first
  const freshness = podViewFreshness({
    kubeConfig,
    node: config.node,
    lastHeardMs: () => podReflector.lastHeardMs,
    maxStalenessMs: config.podViewMaxStalenessMs,
  });

  let iptables: Iptables | undefined;
  let iptablesActive = !config.manageIptables;
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
      if (first && config.enableConntrackDeletion) {
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
      const retryMs = Math.min(config.iptUpdateIntervalMs, 250 * 2 ** Math.min(iptFailures, 8));
      log.error({ err: error, failures: iptFailures, retryMs }, 'iptables sync failed');
      if (!stopping) setTimeout(() => void syncIptables(false), retryMs).unref();
    }
  };

  const audit = createAuditTrail({
    mode: config.auditLog,
    flushIntervalMs: config.auditFlushIntervalMs,
    logger: deps.auditLogger ?? log.child({ audit: true }),
  });
  const server = createNmiServer(
    { config, pods, identities, tokens: tokenIssuerFrom(tokens), logger: log, metrics, namespacePolicies, freshness, audit, clock,
      ...(podEvents !== undefined ? { podEvents } : {}),
      proxy: createImdsProxy({ imdsEndpoint: config.imdsEndpoint, logger: log }) },
    { perCaller: config.maxConnectionsPerPod, total: config.maxConnections },
  );
  const url = await listen(server, config.nmiListenAddress, config.nmiPort);
  const port = Number(new URL(url).port);

  if (config.manageIptables) {
    iptables = createIptables(
      { metadataIp: config.metadataIp, metadataPort: config.metadataPort, nmiHost: config.nmiListenAddress, nmiPort: port },
      { binary: config.iptablesBinary, ...(tuning.iptablesPrefix ? { commandPrefix: tuning.iptablesPrefix } : {}) },
    );
    await syncIptables(true);
    iptTimer = setInterval(() => void syncIptables(false), config.iptUpdateIntervalMs);
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
    if (rulesCheck === undefined || clock.now() - rulesCheck.atMs >= 1000) {
      const state = rules.inPlace().then(
        (ok) => (ok ? 'in-place' : 'missing') as NmiStatus['rules'],
        (error: unknown) => {
          log.warn({ err: error }, 'iptables check for /status failed');
          return 'unknown' as const;
        },
      );
      rulesCheck = { atMs: clock.now(), state };
    }
    return rulesCheck.state;
  };

  const statusRoute = (_req: IncomingMessage, res: ServerResponse): void => {
    void rulesState().then((rules) => {
      const body: NmiStatus = { rules, synced, kubenet: deps.kubenet ?? 'unknown' };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  };
  // /readyz follows `active` (rules in place and caches synced), as before.
  const probe = createServer(probeListener({ active, ready: active, notReadyText: 'not ready', routes: { '/status': statusRoute } }));
  const probeUrl = await listen(probe, (config.probeBindAddress || '0.0.0.0'), config.httpProbePort);
  const metricsServer = createServer(createMetricsListener({ metrics, bearerTokenFile: config.metricsBearerTokenFile || undefined, logger: log, now: () => clock.now() }));
  const metricsUrl = await listen(metricsServer, (config.metricsBindAddress || '0.0.0.0'), config.prometheusPort);
  tokens.start(Math.min(30_000, Math.max(1_000, config.tokenRefreshBeforeMs / 4)));
  log.info({ url, probeUrl, metricsUrl, mode: config.operationMode, federatedIdentities: federated !== undefined }, 'NMI started');

  return {
    url,
    probeUrl,
    metricsUrl,
    tokens,
    pods,
    identities,
    namespacePolicies,
    audit,
    podViewAgeMs: () => clock.now() - podReflector.lastHeardMs,
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
      await Promise.all([closeServer(server), closeServer(probe), closeServer(metricsServer)]);
      // After the last request was answered: what was counted since the last flush is written, not lost.
      audit.stop();
      log.info('NMI stopped');
    },
  };
}

function informers(
  config: NmiConfig,
  tuning: NmiTuning,
  kubeConfig: KubeConfig,
  log: Logger,
  pods: PodIndex,
  identities: NmiIdentityState,
  tokens: TokenProvider,
  metrics: ReturnType<typeof createNmiMetrics>,
  namespacePolicies: Map<string, NamespacePolicy | undefined>,
): Informer[] {
  const common = {
    kubeConfig,
    log,
    ...(tuning.watchTimeoutSeconds ? { watchTimeoutSeconds: tuning.watchTimeoutSeconds } : {}),
    onEvent: (e: { type: string; phase?: string }) => {
      if (e.type === 'error') metrics.countKubeError(e.phase === 'list' ? 'get_pod_list' : 'watch');
    },
  };
  const warn = (kind: string, obj: KubeObject, problems: readonly string[]) => {
    if (problems.length > 0) log.warn({ kind, name: obj.metadata?.name, namespace: obj.metadata?.namespace, problems }, 'object ignored');
  };
  const reflectors: Informer[] = [
    // The pods are kept once, as views in PodIndex's store, filled here; the handlers only tell it something changed.
    new Reflector<KubeObject, PodView>({
      ...common,
      path: '/api/v1/pods',
      name: 'pods',
      fieldSelector: `spec.nodeName=${config.node}`,
      transform: (raw) => pods.viewOf(podViewFrom(raw)),
      store: pods.store,
      handlers: {
        onAdd: () => pods.changed(),
        onUpdate: () => pods.changed(),
        onDelete: () => pods.changed(),
      },
    }),
    new Reflector({
      ...common,
      path: collectionPath(Plurals.AzurePodIdentityException),
      name: 'azurepodidentityexceptions',
      transform: (raw) => normalized('AzurePodIdentityException', raw, normalizeException(raw)),
      store: identities.exceptions.store,
      handlers: changes('exceptions'),
    }),
  ];
  // Both modes: managed mode selects from AzureIdentities, and the node path never serves an identity one declares.
  // No prefetch on an identity: every NMI would fetch every identity of the cluster, not only its pods'.
  const identityReflector = new Reflector({
    ...common,
    path: collectionPath(Plurals.AzureIdentity),
    name: 'azureidentities',
    transform: (raw) => normalized('AzureIdentity', raw, normalizeAzureIdentity(raw)),
    store: identities.identities.store,
    handlers: {
      ...changes('identities'),
      onDelete: (view) => {
        identities.changed('identities');
        tokens.invalidateIdentity(view.namespace, view.name);
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
    transform: (raw) => normalized('AzureIdentityBinding', raw, normalizeBinding(raw)),
    store: identities.bindings.store,
    handlers: changes('bindings'),
  });
  void bindingReflector.synced().then((ok) => {
    if (ok) identities.markSynced('bindings');
  });
  reflectors.push(bindingReflector);
  if (config.operationMode === 'standard') {
    const assignedReflector = new Reflector({
      ...common,
      path: collectionPath(Plurals.AzureAssignedIdentity),
      name: 'azureassignedidentities',
      ...(config.enableScaleFeatures ? { labelSelector: nodeLabelSelector(config.node) } : {}),
      transform: (raw) => normalized('AzureAssignedIdentity', raw, normalizeAssignedIdentity(raw)),
      store: identities.assigned.store,
      handlers: {
        onAdd: (view) => assignedChanged(view),
        onUpdate: (_old, view) => assignedChanged(view),
        onDelete: () => identities.changed('assigned'),
      },
    });
    void assignedReflector.synced().then((ok) => {
      if (ok) identities.markSynced('assigned');
    });
    reflectors.push(assignedReflector);
  } else {
    identities.markSynced('assigned'); // managed mode has no AAIs to wait for
  }
  if (config.namespaceIdentityPolicy === 'enforce') {
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

  /** A normalised object is the store's view; one that cannot be normalised is left out (logged once per change). */
  function normalized<V>(kind: string, raw: KubeObject, n: { value: V | null; problems: readonly string[] }): V | undefined {
    warn(kind, raw, n.problems);
    return n.value ?? undefined;
  }
  function changes(kind: IdentityKind) {
    const changed = () => identities.changed(kind);
    return { onAdd: changed, onUpdate: changed, onDelete: changed };
  }
  function assignedChanged(aai: AzureAssignedIdentity) {
    identities.changed('assigned');
    if ((aai.state === 'Assigned' || aai.state === '') && aai.identityRef) prefetch(aai.identityRef);
  }
  function prefetch(identity: AzureIdentity) {
    if (!config.prefetch || identity.type === null) return;
    // A Federated identity's token is a pod's service account's, fetched when the pod asks; never from IMDS. The live
    // AzureIdentity says (the AAI's copy may have lost spec.mode to pruning).
    const live = identities.identities.get(identity.namespace, identity.name);
    if (identities.declaredIdentities() === undefined || identityMode(live ?? identity) !== 'Attached') return;
    for (const resource of config.prefetchResources) void tokens.prefetch(tokenRequestIdentityFrom(identity), resource);
  }
}

/** What NMI does with each of its reflectors, whatever views they keep. */
type Informer = Pick<Reflector, 'start' | 'stop' | 'synced' | 'lastHeardMs'>;

