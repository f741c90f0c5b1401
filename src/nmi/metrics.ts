// NMI's Prometheus metrics with the original's names (upstream-behaviour §2.10). Label values that a caller controls
// are bounded, so a pod cannot grow the series count without limit. Two views: `registry` has every series, with the
// callers' namespace and resource; `anonymousMetrics()` is the same registry with TENANT_LABELS summed away at scrape
// time, for scrapers without the metrics bearer token (pods on the node can reach :9090: issue 10 row 12). Summing
// at scrape time keeps the request path to one observation, and strips those labels from any metric added later.

import { Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { NmiMetrics } from './ports.js';

const MAX_LABEL_VALUES = 200;
const OVERFLOW = 'other';

/** Labels that name a tenant's namespace or what it asks for: only in the full view. */
export const TENANT_LABELS: readonly string[] = ['namespace', 'resource'];

export interface NmiMetricsRegistry extends NmiMetrics {
  /** Every series, tenant labels included. */
  readonly registry: Registry;
  /** The exposition text of `registry` without TENANT_LABELS (series that differ only in them are summed). */
  anonymousMetrics(): Promise<string>;
  setTokenCacheStats(read: () => { hits: number; misses: number; upstreamCalls: number; refreshes: number; entries: number }): void;
}

// Every bucket bound of the original (pkg/metrics/metrics.go) is kept, so dashboards selecting an `le` still find
// it; finer bounds below are ours, because cached answers take well under a millisecond.
const NMI_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100];
// Waits are bounded by the retry budget (--retry-attempts-for-created/-assigned × --find-identity-retry-interval).
const WAIT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120];
const IMDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 3, 4, 5, 10];

/**
 * `operation_type` of the NMI histogram: the original used the request's URL path and recorded only its two token
 * handlers; we give those their canonical path (bounded: case and trailing-slash variants fold into it) and the
 * routes it did not record our route names.
 */
const OPERATION_TYPE: Readonly<Record<string, string>> = {
  token: '/metadata/identity/oauth2/token',
  'host-token': '/host/token',
};

export function createNmiMetrics(): NmiMetricsRegistry {
  const registry = new Registry();
  const duration = new RequestDurations(
    'aadpodidentity_nmi_operations_duration_seconds',
    'Duration of NMI requests, by operation (token path, or our route name), status code, pod namespace and resource',
    NMI_BUCKETS,
    registry,
  );
  const imdsErrors = new Counter({
    name: 'aadpodidentity_imds_operations_errors_count',
    help: 'Failed token requests to IMDS (managed identities) or AAD (service principals)',
    labelNames: ['operation_type'],
    registers: [registry],
  });
  const imdsDuration = new Histogram({
    name: 'aadpodidentity_imds_operations_duration_seconds',
    help: 'Duration of token requests to IMDS (managed identities) or AAD (service principals); cache hits make none',
    labelNames: ['operation_type'],
    buckets: IMDS_BUCKETS,
    registers: [registry],
  });
  const kubeErrors = new Counter({
    name: 'aadpodidentity_kubernetes_api_operations_errors_count',
    help: 'Kubernetes API operation errors',
    labelNames: ['operation_type'],
    registers: [registry],
  });
  const identityWaits = new Histogram({
    name: 'aadpodidentity_nmi_identity_wait_duration_seconds',
    help: 'Token requests that waited for their identity to be assigned, by result (ready, timeout: the retry budget ran out)',
    labelNames: ['result'],
    buckets: WAIT_BUCKETS,
    registers: [registry],
  });
  const children = new Map<string, RequestSeries>();
  const namespaces = boundedValues();
  const resources = boundedValues();
  let cacheStats: (() => { hits: number; misses: number; upstreamCalls: number; refreshes: number; entries: number }) | undefined;
  new Gauge({
    name: 'aadpodidentity_nmi_token_cache',
    help: 'Token cache counters since start: hits, misses, upstream_calls, refreshes, and current size',
    labelNames: ['kind'],
    registers: [registry],
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
    anonymousMetrics: async () => renderWithout(await registry.getMetricsAsJSON(), TENANT_LABELS),
    observeRequest(route, status, namespace, resource, seconds) {
      // One series object per label set, looked up by a joined key: prom-client's label hashing on every observe was
      // the largest NMI-specific cost of a cached answer (bench/README.md).
      const ns = namespaces(namespace);
      const res = resources(resource);
      const key = `${route}\u0000${status}\u0000${ns}\u0000${res}`;
      let series = children.get(key);
      if (series === undefined) {
        series = duration.series({ operation_type: OPERATION_TYPE[route] ?? route, status_code: String(status), namespace: ns, resource: res });
        children.set(key, series);
      }
      series.observe(seconds);
    },
    countKubeError(operation) {
      kubeErrors.inc({ operation_type: operation });
    },
    observeUpstream(operation, seconds, failed) {
      imdsDuration.observe({ operation_type: operation }, seconds);
      if (failed) imdsErrors.inc({ operation_type: operation });
    },
    observeIdentityWait(result, seconds) {
      identityWaits.observe({ result }, seconds);
    },
    setTokenCacheStats(read) {
      cacheStats = read;
    },
  };
}

/** What prom-client's registry reads from a metric's get(), as its Histogram returns it. */
interface RenderedHistogram {
  readonly name: string;
  readonly help: string;
  readonly type: 'histogram';
  readonly values: ReadonlyArray<{ readonly labels: Readonly<Record<string, string | number>>; readonly value: number; readonly metricName: string }>;
  readonly aggregator: 'sum';
}

/** One label set's counts: per bucket (not cumulative), the sum and the count. */
class RequestSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (seconds <= bounds[i]) {
        this.counts[i]++;
        return;
      }
    }
  }
}

/**
 * The request histogram as prom-client renders a Histogram (same families, `le` first, cumulative buckets, `+Inf`,
 * `_sum`, `_count`), registered in the registry as a metric of its own: observing is an array increment, with no
 * label validation or hashing per request as prom-client's Histogram does on every `observe`.
 */
class RequestDurations {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly all: RequestSeries[] = [];

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  series(labels: Readonly<Record<string, string>>): RequestSeries {
    const series = new RequestSeries(labels, this.bounds);
    this.all.push(series);
    return series;
  }

  get(): Promise<RenderedHistogram> {
    const values: RenderedHistogram['values'][number][] = [];
    for (const s of this.all) {
      if (s.count === 0) continue;
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += s.counts[i];
        values.push({ labels: { le, ...s.labels }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' });
  }

  reset(): void {
    for (const s of this.all) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
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

/**
 * Prometheus text exposition (format 0.0.4) of these metrics with `dropped` labels removed: values of series left
 * with the same labels are added, which is right for counters, histogram buckets/sums/counts and the gauges here.
 */
export function renderWithout(metrics: readonly MetricObjectWithValues<MetricValue<string>>[], dropped: readonly string[]): string {
  const drop = new Set(dropped);
  const lines: string[] = [];
  for (const metric of metrics) {
    lines.push(`# HELP ${metric.name} ${escapeHelp(metric.help)}`, `# TYPE ${metric.name} ${metric.type}`);
    const series = new Map<string, { line: string; value: number }>();
    for (const v of metric.values) {
      const name = (v as { metricName?: string }).metricName ?? metric.name;
      const labels = Object.entries(v.labels as Record<string, string | number | undefined>)
        .filter(([k, value]) => !drop.has(k) && value !== undefined)
        .map(([k, value]) => `${k}="${escapeLabel(String(value))}"`)
        .join(',');
      const line = labels === '' ? name : `${name}{${labels}}`;
      const seen = series.get(line);
      if (seen === undefined) series.set(line, { line, value: v.value });
      else seen.value += v.value;
    }
    for (const { line, value } of series.values()) lines.push(`${line} ${formatValue(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabel(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}
