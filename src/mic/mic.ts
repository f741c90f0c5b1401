// MIC's composition root: kube clients behind one write rate limiter, the AAI writer, events, metrics, the
// controller, leader election (Endpoints + Lease), and the probe and metrics servers. startMic() is used in-process by tests,
// the sandbox and cmd/mic.ts alike; it never reads the environment.
import { createServer } from 'node:http';
import { closeServer, listen, metricsListener, probeListener } from '../common/http.js';
import type { CoreV1Event } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { watchConfigFile, type ConfigFileWatch } from '../azure/cloud-config-watch.js';
import { KNOWN_CLOUD_AUTHORITIES, type AzureCloudConfig } from '../azure/cloud-config.js';
import { allowedAuthoritySet } from '../crds/credential-policy.js';
import { EventRecorder, LeaderElector, RateLimiter, type EventClient } from '../kube/index.js';
import type { KubeAccess } from '../kube/access.js';
import { endpointsClient, leaseClient } from '../kube/resourcelock.js';
import { kubeEventSink } from './adapters/events.js';
import { AssignedStatusRoute, kubeAssignedIdentityWriter } from './adapters/kube-assigned.js';
import { kubeHttp } from '../kube/http.js';
import type { ArmOperation } from './arm/batch.js';
import type { MicConfig } from './config.js';
import { MicController } from './controller.js';
import { createMicMetrics } from './metrics.js';
import type { ArmPort } from './ports.js';
import { discoverServiceAccountIssuer } from '../kube/issuer.js';
import type { FederatedCredentialPort } from './federation/credentials.js';
import { FederationRunner } from './federation/runner.js';
import { realClock } from '../common/clock.js';

/** Observer the ARM workers call after every ARM request (feeds the cloud-provider metrics). */
export type ArmCallObserver = (operation: ArmOperation, durationMs: number, error?: unknown) => void;

export interface MicDeps {
  /** A kubeconfig (loadKubeAccess, or client-node's KubeConfig). */
  readonly kubeConfig: KubeAccess;
  readonly logger: Logger;
  /** Builds the ARM workers (arm/wiring.ts in production), wiring `onCall` and the hold backoff into them. */
  readonly armClient: (onCall: ArmCallObserver, holds?: { readonly retryBaseMs?: number; readonly maxRetryDelayMs?: number }) => ArmPort;
  /** Client ID of the cluster identity (azure.json userAssignedIdentityID): never detached, as in the original. */
  readonly clusterIdentityClientId?: string;
  /** The cloud config's AAD authority (MIC's own): an identity's adEndpoint may name it, besides the known clouds'. */
  readonly cloudAuthority?: string;
  /** azure.json (`--cloudconfig`) to watch, so a rotated credential takes effect without a restart. */
  readonly cloudConfigFile?: CloudConfigFileDeps;
  /**
   * Federated identity credential writes (@azure/arm-msi, with the compute client's ARM credential, endpoint and CA:
   * arm/wiring.ts federatedCredentialPort). Needed with --enable-federated-identities.
   */
  readonly federatedCredentials?: FederatedCredentialPort;
  /** Knobs for tests and benchmarks; production uses the defaults. */
  readonly tuning?: MicTuning;
}

export interface CloudConfigFileDeps {
  readonly path: string;
  /** The text start-up built the current config from. */
  readonly initialText: string;
  /** Parses new text into a config, throwing CloudConfigError (or any error) if it is not usable. */
  parse(text: string): AzureCloudConfig;
  /** Makes a valid config live (reloadableArm().reload); returns the azure.json keys that changed. */
  apply(cloud: AzureCloudConfig): readonly string[];
  /** Fallback poll period; default 10 s. */
  readonly pollIntervalMs?: number;
}

export interface MicTuning {
  readonly minCycleIntervalMs?: number;
  readonly ownWriteTtlMs?: number;
  readonly watchTimeoutSeconds?: number;
  readonly reflectorBackoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly retryBaseMs?: number;
  readonly maxRetryDelayMs?: number;
  /** Backoff of the federated credential writer (default 1 s doubling to 30 s). */
  readonly federationBackoff?: { readonly initialMs: number; readonly maxMs: number };
}

export interface MicHandle {
  /** `http://host:port` of the probe server (/healthz, /readyz). */
  readonly probeUrl: string;
  /** `http://host:port/metrics`. */
  readonly metricsUrl: string;
  readonly registry: Registry;
  /** This replica holds the leader election locks (Endpoints and Lease, or the Lease only). */
  isLeader(): boolean;
  /** Leading, synced and reconciling (what /healthz reports as `Active`). */
  isActive(): boolean;
  /** Informer caches have listed once (what /readyz reports). */
  isReady(): boolean;
  /** Resolves when nothing is queued and no write or ARM call runs (tests, benchmarks). */
  idle(): Promise<void>;
  /** Stops acting, releases the locks, stops informers and servers. */
  stop(): Promise<void>;
}

export async function startMic(config: MicConfig, deps: MicDeps): Promise<MicHandle> {
  const log = deps.logger.child({ component: 'mic', instance: config.leaderElection.instance });
  const metrics = createMicMetrics();
  const kc = deps.kubeConfig;
  const limiter = new RateLimiter({ qps: config.clientQps, burst: config.clientBurst });
  const http = kubeHttp(kc);
  // Events are writes too: through the same limiter and connection pool.
  const eventClient: EventClient = {
    createNamespacedEvent: limiter.wrap(async (p: { namespace: string; body: CoreV1Event }) => {
      await http.send('POST', `/api/v1/namespaces/${encodeURIComponent(p.namespace)}/events`, p.body);
      return p.body;
    }),
    patchNamespacedEvent: limiter.wrap(async (p: { name: string; namespace: string; body: object }) => {
      await http.send('PATCH', `/api/v1/namespaces/${encodeURIComponent(p.namespace)}/events/${encodeURIComponent(p.name)}`, p.body, 'application/merge-patch+json');
      return p.body as CoreV1Event;
    }),
  };
  const recorder = new EventRecorder({
    client: eventClient,
    component: 'aadpodidentity.k8s.io',
    host: config.leaderElection.instance,
    log,
  });

  // Where AAI status is written (status subresource or main resource) depends on the installed CRD.
  const statusRoute = new AssignedStatusRoute(http, log);
  const learnStatusRoute = (signal?: AbortSignal): Promise<void> =>
    statusRoute.discover(signal).then(
      () => undefined,
      (err: unknown) => log.warn({ err }, 'cannot read discovery for the AzureAssignedIdentity CRD; will retry on the first status write'),
    );

  let controller: MicController | undefined;
  const events = kubeEventSink(recorder, { log, enabled: () => controller?.acting === true });
  const tuning = deps.tuning ?? {};
  const arm = deps.armClient(
    (operation, durationMs, error) => {
      metrics.armCall(operation, durationMs / 1000, error !== undefined);
      if (error !== undefined) metrics.armFailure(operation, error);
    },
    {
      ...(tuning.retryBaseMs !== undefined ? { retryBaseMs: tuning.retryBaseMs } : {}),
      ...(tuning.maxRetryDelayMs !== undefined ? { maxRetryDelayMs: tuning.maxRetryDelayMs } : {}),
    },
  );
  const federation = await federationFor(config, deps, log);
  const immutable = new Set(config.immutableUserMsis.map((id) => id.toLowerCase()));
  if (deps.clusterIdentityClientId) immutable.add(deps.clusterIdentityClientId.toLowerCase());

  controller = new MicController({
    kubeConfig: kc,
    log,
    metrics,
    events,
    policy: {
      forceNamespaced: config.forceNamespaced,
      immutableClientIds: immutable,
      immutableResourceIds: new Set(),
      credentials: {
        allowCrossNamespaceSecrets: config.allowCrossNamespaceSecrets,
        allowedAuthorities: allowedAuthoritySet([
          ...KNOWN_CLOUD_AUTHORITIES,
          ...(deps.cloudAuthority ? [deps.cloudAuthority] : []),
          ...config.allowedAdEndpoints,
        ]),
      },
      namespaceIdentityPolicy: config.namespaceIdentityPolicy,
      federation: { enabled: config.enableFederatedIdentities, issuer: federation?.issuer ?? '' },
    },
    ...(federation !== undefined ? { federation } : {}),
    executor: {
      writer: kubeAssignedIdentityWriter(http, limiter, statusRoute),
      arm,
      createDeleteBatch: config.createDeleteBatch,
      ...(tuning.retryBaseMs !== undefined ? { retryBaseMs: tuning.retryBaseMs } : {}),
    },
    syncRetryMs: config.syncRetryMs,
    azureCheckIntervalMs: config.identityAssignmentReconcileIntervalMs,
    ...(tuning.minCycleIntervalMs !== undefined ? { minCycleIntervalMs: tuning.minCycleIntervalMs } : {}),
    ...(tuning.ownWriteTtlMs !== undefined ? { ownWriteTtlMs: tuning.ownWriteTtlMs } : {}),
    ...(tuning.watchTimeoutSeconds !== undefined ? { watchTimeoutSeconds: tuning.watchTimeoutSeconds } : {}),
    ...(tuning.reflectorBackoff !== undefined ? { reflectorBackoff: tuning.reflectorBackoff } : {}),
  });
  const mic = controller;
  metrics.setAssignedStates(() => mic.assignedStateCounts());

  const le = config.leaderElection;
  const leaderHttp = kubeHttp(kc, 4);
  const leader = new LeaderElector({
    // Its own few request slots: a renewal never queues behind thousands of AAI writes.
    client: leaseClient(leaderHttp),
    // The original MIC locks with an Endpoints object of the same name: hold it too, so the two never act at once.
    ...(le.resourceLock === 'endpointsleases' ? { endpoints: endpointsClient(leaderHttp) } : {}),
    namespace: le.namespace,
    name: le.name,
    identity: le.instance,
    leaseDurationMs: le.durationMs,
    renewDeadlineMs: le.renewDeadlineMs,
    retryPeriodMs: le.retryPeriodMs,
    log,
    onStartedLeading: async (signal) => {
      metrics.newLeader();
      // The CRD may have changed while this replica was standing by.
      await learnStatusRoute(signal);
      await mic.startActing(signal);
    },
    // The leadership signal has aborted by now: the controller has already stopped acting.
    onStoppedLeading: () => log.info('lost leadership; not acting'),
    onNewLeader: (holder) => log.info({ leader: holder }, 'leader observed'),
  });

  const probe = createServer(probeListener({ active: () => mic.acting, ready: () => mic.hasSynced, notReadyText: 'caches not synced' }));
  const metricsServer = createServer(metricsListener(metrics.registry, log));

  const cloudWatch = deps.cloudConfigFile ? watchCloudConfig(deps.cloudConfigFile, config, recorder, metrics, log, immutable) : undefined;

  const probeUrl = await listen(probe, config.probeBindAddress, config.httpProbePort);
  const metricsBase = await listen(metricsServer, config.metricsBindAddress, config.prometheusPort);
  void learnStatusRoute();
  mic.start();
  leader.start();
  log.info({ probeUrl, metricsUrl: `${metricsBase}/metrics`, lock: `${le.resourceLock} ${le.namespace}/${le.name}` }, 'MIC started');

  let stopped: Promise<void> | undefined;
  return {
    probeUrl,
    metricsUrl: `${metricsBase}/metrics`,
    registry: metrics.registry,
    isLeader: () => leader.isLeader,
    isActive: () => mic.acting,
    isReady: () => mic.hasSynced,
    idle: () => mic.idle(),
    stop: () => {
      stopped ??= (async () => {
        cloudWatch?.close();
        await leader.stop();
        await mic.stop();
        await Promise.all([closeServer(probe), closeServer(metricsServer)]);
        log.info('MIC stopped');
      })();
      return stopped;
    },
  };
}

// Every replica reloads (a standby must be ready to act with the new credential). Events go on this MIC's Pod.
function watchCloudConfig(
  file: CloudConfigFileDeps,
  config: MicConfig,
  recorder: EventRecorder,
  metrics: ReturnType<typeof createMicMetrics>,
  log: Logger,
  immutableClientIds: Set<string>,
): ConfigFileWatch {
  const pod = { apiVersion: 'v1', kind: 'Pod', namespace: config.podNamespace, name: config.leaderElection.instance };
  return watchConfigFile({
    path: file.path,
    initialText: file.initialText,
    parse: (text) => file.parse(text),
    onValid: (cloud) => {
      const changed = file.apply(cloud);
      if (changed.length === 0) return;
      // A new cluster identity is never detached either; the previous one stays protected until restart.
      if (cloud.auth.kind === 'managedIdentity' && cloud.auth.userAssignedIdentityId) {
        immutableClientIds.add(cloud.auth.userAssignedIdentityId.toLowerCase());
      }
      metrics.cloudConfigReload('applied');
      log.info({ cloudconfig: file.path, changed }, 'cloud config reloaded: later ARM calls use it');
      void recorder.normal(pod, 'cloud config reloaded', `${file.path} changed (${changed.join(', ')}); later ARM calls use it`);
    },
    onInvalid: (error) => {
      metrics.cloudConfigReload('invalid');
      const reason = error instanceof Error ? error.message : String(error);
      log.error({ cloudconfig: file.path, reason }, 'cloud config changed but is not usable; keeping the previous one');
      void recorder.warning(pod, 'cloud config invalid', `${reason}; MIC keeps using the previous cloud config until the file is fixed`);
    },
    ...(file.pollIntervalMs !== undefined ? { pollIntervalMs: file.pollIntervalMs } : {}),
  });
}


/**
 * The federated credential writer, when --enable-federated-identities is on and the issuer is known (the flag's value
 * byte for byte, else the API server's discovery document). With no issuer, MIC still runs: every Federated identity
 * is skipped with an event naming --service-account-issuer (the core's FederationIssuerUnknown).
 */
async function federationFor(config: MicConfig, deps: MicDeps, log: Logger): Promise<FederationRunner | undefined> {
  if (!config.enableFederatedIdentities) return undefined;
  let issuer = config.serviceAccountIssuer;
  if (issuer === '') {
    try {
      issuer = await discoverServiceAccountIssuer(deps.kubeConfig);
      log.info({ issuer }, 'service-account issuer discovered from the API server');
    } catch (err) {
      log.error({ err }, 'federated identities are skipped: no service-account issuer; set --service-account-issuer');
      return undefined;
    }
  }
  if (deps.federatedCredentials === undefined) {
    throw new Error('--enable-federated-identities needs a federated credential port (MicDeps.federatedCredentials)');
  }
  const backoff = deps.tuning?.federationBackoff;
  return new FederationRunner({
    port: deps.federatedCredentials,
    clock: realClock,
    issuer,
    log: log.child({ component: 'federation' }),
    ...(backoff !== undefined ? { writer: { backoff } } : {}),
  });
}
