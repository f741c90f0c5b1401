// The chart's monitoring objects, rendered, and the metric names their PromQL reads: shared by the chart, promtool
// and Prometheus e2e tests.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { renderChart, type Obj } from './helm-render.js';

export const CHART = join(import.meta.dirname, '..', '..', 'charts', 'aad-pod-identity');
export const RELEASE = 'aad-pod-identity';

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
export interface RuleGroup {
  name: string;
  rules: AlertRule[];
}

/** Renders the chart with `values` over monitoring fully enabled and returns its objects. */
export function renderMonitoring(values: Obj = {}): Obj[] {
  const monitoring = (values['monitoring'] ?? {}) as Obj;
  const on = (key: string) => ({ enabled: true, ...((monitoring[key] ?? {}) as Obj) });
  return renderChart(CHART, {
    releaseName: RELEASE,
    namespace: RELEASE,
    values: {
      ...values,
      monitoring: { ...monitoring, serviceMonitor: on('serviceMonitor'), prometheusRule: on('prometheusRule'), dashboard: on('dashboard') },
    },
  }).objects;
}

/** The PrometheusRule's rule groups (its `spec`, which is a Prometheus rule file's top level). */
export function ruleGroups(objects: Obj[]): RuleGroup[] {
  const rule = objects.find((o) => o['kind'] === 'PrometheusRule');
  if (rule === undefined) throw new Error('no PrometheusRule rendered');
  return (rule['spec'] as { groups: RuleGroup[] }).groups;
}

/** The dashboard ConfigMap's JSON, parsed. */
export function dashboard(objects: Obj[]): { panels: { title: string; type: string; targets?: { expr: string }[] }[]; templating: { list: { name: string; query?: unknown }[] } } {
  const cm = objects.find((o) => o['kind'] === 'ConfigMap' && (o['metadata'] as Obj)['name'] === `${RELEASE}-dashboard`);
  if (cm === undefined) throw new Error('no dashboard ConfigMap rendered');
  return JSON.parse((cm['data'] as Record<string, string>)['aad-pod-identity.json'] ?? '') as ReturnType<typeof dashboard>;
}

/** Every PromQL expression the rules and the dashboard (panels and template variables) evaluate. */
export function expressions(objects: Obj[]): string[] {
  const d = dashboard(objects);
  const out = ruleGroups(objects).flatMap((g) => g.rules.map((r) => r.expr));
  for (const p of d.panels) for (const t of p.targets ?? []) out.push(t.expr);
  for (const v of d.templating.list) {
    const q = v.query as { query?: string } | string | undefined;
    const text = typeof q === 'string' ? q : q?.query;
    if (text !== undefined && text.startsWith('label_values(')) out.push(text);
  }
  return out;
}

// PromQL words that are not metric names: functions, aggregations, keywords.
const NOT_METRICS = new Set([
  'sum', 'max', 'min', 'avg', 'count', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'rate',
  'increase', 'irate', 'absent', 'histogram_quantile', 'label_values', 'and', 'or', 'unless', 'bool', 'offset',
  'topk', 'bottomk', 'scalar', 'vector', 'time', 'deriv', 'changes', 'resets', 'delta', 'clamp_min', 'clamp_max',
]);

/**
 * Metric names in PromQL: identifiers outside label matchers, `[...]` ranges, strings and `by (...)` lists, minus
 * PromQL's own words; and the first argument of label_values(). Numbers and durations are skipped.
 */
export function metricNames(expr: string): Set<string> {
  const names = new Set<string>();
  // Drop strings, label matchers and range selectors, then grouping clauses.
  let s = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\{[^}]*\}/g, ' ').replace(/\[[^\]]*\]/g, ' ');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0];
    if (NOT_METRICS.has(word) || /^(\$|__)/.test(word)) continue;
    names.add(word);
  }
  const lv = /label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,/.exec(expr);
  if (lv?.[1] !== undefined) names.add(lv[1]);
  names.delete('job');
  return names;
}

/** Debian's prometheus package (promtool and prometheus) is installed. */
export const prometheusInstalled = spawnSync('promtool', ['--version'], { encoding: 'utf8' }).status === 0 && spawnSync('prometheus', ['--version'], { encoding: 'utf8' }).status === 0;

/**
 * Whether the tests that need Prometheus's binaries are skipped: only outside CI (there a missing binary fails the
 * run), with a visible message, as the suite does for its other tools.
 */
export function skipWithoutPrometheus(file: string): boolean {
  const skip = !prometheusInstalled && !process.env['CI'];
  if (skip) console.warn(`${file}: SKIPPED, Debian's prometheus package (promtool) not installed (apt-get install --no-install-recommends prometheus)`);
  return skip;
}

/** Runs promtool; throws with a clear message when it is not installed (.ci/run installs Debian's prometheus). */
export function promtool(args: string[], cwd?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8', timeout: 60_000 });
  if (r.error !== undefined) {
    throw new Error(`promtool could not run (${r.error.message}): install Debian's prometheus package (apt-get install --no-install-recommends prometheus), as .ci/run does`);
  }
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
