// NMI's Prometheus metrics with the original's names (upstream-behaviour §2.10). Label values that a caller controls
// are bounded, so a pod cannot grow the series count without limit. Two registries: `registry` has every series,
// with the callers' namespace and resource; `anonymousRegistry` has the same metrics without those labels, for
// scrapers without the metrics bearer token (pods on the node can reach :9090: issue 10 row 12).

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { NmiMetrics } from './ports.js';

const MAX_LABEL_VALUES = 200;
const OVERFLOW = 'other';

/** Labels that name a tenant's namespace or what it asks for: only in the full view. */
export const TENANT_LABELS: readonly string[] = ['namespace', 'resource'];

export interface NmiMetricsRegistry extends NmiMetrics {
  /** Every series, tenant labels included. */
  readonly registry: Registry;
  /** The same metrics without TENANT_LABELS. */
  readonly anonymousRegistry: Registry;
  setTokenCacheStats(read: () => { hits: number; misses: number; upstreamCalls: number; refreshes: number; entries: number }): void;
}

export function createNmiMetrics(): NmiMetricsRegistry {
  const registry = new Registry();
  const anonymousRegistry = new Registry();
  const buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100];
  const duration = new Histogram({
    name: 'aadpodidentity_nmi_operations_duration_seconds',
    help: 'Duration of NMI operations, by route (not raw path), status code, pod namespace and resource',
    labelNames: ['operation_type', 'status_code', 'namespace', 'resource'],
    buckets,
    registers: [registry],
  });
  const anonymousDuration = new Histogram({
    name: 'aadpodidentity_nmi_operations_duration_seconds',
    help: 'Duration of NMI operations, by route (not raw path) and status code (namespace and resource only with the metrics bearer token)',
    labelNames: ['operation_type', 'status_code'],
    buckets,
    registers: [anonymousRegistry],
  });
  const kubeErrors = new Counter({
    name: 'aadpodidentity_kubernetes_api_operations_errors_count',
    help: 'Kubernetes API operation errors',
    labelNames: ['operation_type'],
    registers: [registry, anonymousRegistry],
  });
  const children = new Map<string, ReturnType<typeof duration.labels>>();
  const anonymousChildren = new Map<string, ReturnType<typeof anonymousDuration.labels>>();
  const namespaces = boundedValues();
  const resources = boundedValues();
  let cacheStats: (() => { hits: number; misses: number; upstreamCalls: number; refreshes: number; entries: number }) | undefined;
  new Gauge({
    name: 'aadpodidentity_nmi_token_cache',
    help: 'Token cache counters since start: hits, misses, upstream_calls, refreshes, and current size',
    labelNames: ['kind'],
    registers: [registry, anonymousRegistry],
    collect() {
      const s = cacheStats?.();
      if (s === undefined) return;
      this.set({ kind: 'hits' }, s.hits);
      this.set({ kind: 'misses' }, s.misses);
      this.set({ kind: 'upstream_calls' }, s.upstreamCalls);
      this.set({ kind: 'refreshes' }, s.refreshes);
      this.set({ kind: 'entries' }, s.entries);
    },
  });

  return {
    registry,
    anonymousRegistry,
    observeRequest(route, status, namespace, resource, seconds) {
      // One labelled child per series, looked up by a joined key: prom-client's label hashing was a hot-path cost.
      const ns = namespaces(namespace);
      const res = resources(resource);
      const key = `${route}\u0000${status}\u0000${ns}\u0000${res}`;
      let series = children.get(key);
      if (series === undefined) {
        series = duration.labels({ operation_type: route, status_code: String(status), namespace: ns, resource: res });
        children.set(key, series);
      }
      series.observe(seconds);
      const anonymousKey = `${route}\u0000${status}`;
      let anonymous = anonymousChildren.get(anonymousKey);
      if (anonymous === undefined) {
        anonymous = anonymousDuration.labels({ operation_type: route, status_code: String(status) });
        anonymousChildren.set(anonymousKey, anonymous);
      }
      anonymous.observe(seconds);
    },
    countKubeError(operation) {
      kubeErrors.inc({ operation_type: operation });
    },
    setTokenCacheStats(read) {
      cacheStats = read;
    },
  };
}

function boundedValues(): (value: string) => string {
  const seen = new Set<string>();
  return (value) => {
    if (seen.has(value)) return value;
    if (seen.size >= MAX_LABEL_VALUES) return OVERFLOW;
    seen.add(value);
    return value;
  };
}
