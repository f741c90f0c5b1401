// MIC's Prometheus metrics with the original's names (upstream-behaviour §2.10), one Registry per MIC instance so
// that two replicas in one process (tests) do not share series. Durations are in seconds.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { realClock } from '../common/clock.js';
import type { AssignedIdentityState } from '../crds/types.js';
import type { ArmOperation } from './arm/batch.js';
import { classifyArmError } from './arm/errors.js';
import type { KubeOperation, MicMetrics } from './ports.js';

export interface MicMetricsRegistry extends MicMetrics {
  readonly registry: Registry;
  /** azure.json changed: `applied` (a new credential/config is live) or `invalid` (the previous one stays). */
  cloudConfigReload(result: 'applied' | 'invalid'): void;
  /** A failed ARM call, counted by `reason` (armFailureReason) next to the original's per-operation counter. */
  armFailure(operation: ArmOperation, err: unknown): void;
  /** Where the `aadpodidentity_assigned_identities` gauge reads the informer's AzureAssignedIdentities by state. */
  setAssignedStates(read: () => Readonly<Record<string, number>> | undefined): void;
}

/** States the assigned-identities gauge always reports (0 when none), so an alert on one never sees "no data". */
const AAI_STATES: readonly AssignedIdentityState[] = ['Created', 'Assigned', 'Unassigned'];

// ARM error codes worth their own `reason` value; any other code is folded into its status class, so the label
// stays bounded whatever ARM (or a proxy in front of it) answers.
const KNOWN_ARM_CODES = new Set([
  'AuthorizationFailed',
  'InvalidAuthenticationToken',
  'ExpiredAuthenticationToken',
  'OperationNotAllowed',
  'InvalidParameter',
  'Conflict',
]);

/**
 * The `reason` of a failed ARM call: `throttled` (429), `LinkedAuthorizationFailed` / `FailedIdentityOperation`
 * (the identity could not be attached), `NotFound`, a known ARM code, or `server_error` / `client_error` / `network`.
 */
export function armFailureReason(err: unknown): string {
  const c = classifyArmError(err, realClock.now());
  switch (c.kind) {
    case 'throttled':
      return 'throttled';
    case 'identity':
      return c.code;
    case 'notFound':
      return 'NotFound';
    case 'retryable':
    case 'fatal':
      if (c.code !== undefined && KNOWN_ARM_CODES.has(c.code)) return c.code;
      if (c.status === undefined) return 'network';
      return c.status >= 500 ? 'server_error' : 'client_error';
  }
}

const P = 'aadpodidentity_';
// Every bucket bound of the original (pkg/metrics/metrics.go) is kept, so dashboards selecting an `le` still find
// it; the finer bounds below its lowest are ours (our writes take milliseconds, our cycles plan from memory).
const WRITE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 3, 4, 5, 10];
const CYCLE_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 900, 1200];
// The original's cloud-provider buckets are its cycle buckets.
const ARM_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 900, 1200];

export function createMicMetrics(): MicMetricsRegistry {
  const registry = new Registry();
  const histogram = (name: string, help: string, buckets: number[], labelNames: string[] = []) =>
    new Histogram({ name: P + name, help, buckets, labelNames, registers: [registry] });
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    new Counter({ name: P + name, help, labelNames, registers: [registry] });

  const assigned = {
    addition: {
      duration: histogram('assigned_identity_addition_duration_seconds', 'Duration of AzureAssignedIdentity creations', WRITE_BUCKETS),
      count: counter('assigned_identity_addition_count', 'AzureAssignedIdentities created'),
    },
    deletion: {
      duration: histogram('assigned_identity_deletion_duration_seconds', 'Duration of AzureAssignedIdentity deletions', WRITE_BUCKETS),
      count: counter('assigned_identity_deletion_count', 'AzureAssignedIdentities deleted'),
    },
    update: {
      duration: histogram('assigned_identity_update_duration_seconds', 'Duration of AzureAssignedIdentity updates', WRITE_BUCKETS),
      count: counter('assigned_identity_update_count', 'AzureAssignedIdentities updated'),
    },
  };
  const cycleDuration = histogram('mic_cycle_duration_seconds', 'Duration of one MIC reconcile cycle (planning and dispatch)', CYCLE_BUCKETS);
  const cycleCount = counter('mic_cycle_count', 'MIC reconcile cycles');
  const leaderCount = counter('mic_new_leader_election_count', 'Times this MIC replica became leader');
  const armErrors = counter('cloud_provider_operations_errors_count', 'Failed ARM operations', ['operation_type']);
  const armDuration = histogram('cloud_provider_operations_duration_seconds', 'Duration of ARM operations', ARM_BUCKETS, ['operation_type']);
  const kubeErrors = counter('kubernetes_api_operations_errors_count', 'Failed Kubernetes API operations', ['operation_type']);
  const armFailures = counter(
    'cloud_provider_operations_errors_by_reason_count',
    'Failed ARM operations by reason: throttled, LinkedAuthorizationFailed, FailedIdentityOperation, NotFound, an ARM error code, server_error, client_error, network',
    ['operation_type', 'reason'],
  );
  let assignedStates: (() => Readonly<Record<string, number>> | undefined) | undefined;
  new Gauge({
    name: P + 'assigned_identities',
    help: 'AzureAssignedIdentities in the informer cache by status.status (Created: not yet attached in Azure)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const read = assignedStates?.();
      if (read === undefined) return;
      for (const state of AAI_STATES) this.set({ state }, read[state] ?? 0);
    },
  });
  const cloudReloads = counter('mic_cloud_config_reload_count', 'Changes of the cloud config file (azure.json) seen, by result', ['result']);

  return {
    registry,
    observeAssigned(kind, seconds) {
      assigned[kind].duration.observe(seconds);
      assigned[kind].count.inc();
    },
    kubeError(operation: KubeOperation) {
      kubeErrors.inc({ operation_type: operation });
    },
    cycle(seconds) {
      cycleDuration.observe(seconds);
      cycleCount.inc();
    },
    newLeader() {
      leaderCount.inc();
    },
    cloudConfigReload(result) {
      cloudReloads.inc({ result });
    },
    armFailure(operation, err) {
      armFailures.inc({ operation_type: operation, reason: armFailureReason(err) });
    },
    setAssignedStates(read) {
      assignedStates = read;
    },
    armCall(operation: ArmOperation, seconds, failed) {
      armDuration.observe({ operation_type: operation }, seconds);
      if (failed) armErrors.inc({ operation_type: operation });
    },
  };
}
