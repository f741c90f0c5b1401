// The chart's alert rules through Debian's promtool (issue 14 item 6): `check rules --lint-fatal` on the rendered
// PrometheusRule's groups, `test rules` with test/fixtures/prometheus/alerts.test.yaml (input series → expected
// alerts, annotations expanded), and every metric a rule or the dashboard reads exists in MIC's or NMI's registry.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { Registry } from 'prom-client';
import { createMicMetrics } from '../../src/mic/metrics.js';
import { createNmiMetrics } from '../../src/nmi/metrics.js';
import { expressions, metricNames, promtool, renderMonitoring, ruleGroups, skipWithoutPrometheus } from '../helpers/monitoring.js';

const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'prometheus', 'alerts.test.yaml');
const dir = mkdtempSync(join(tmpdir(), 'aad-rules-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeRules(name: string, values = {}): string {
  const file = join(dir, name);
  writeFileSync(file, stringify({ groups: ruleGroups(renderMonitoring(values)) }));
  return file;
}

/** Series names a registry exposes: histograms as their _bucket, _sum and _count. */
async function exposed(registry: Registry): Promise<Set<string>> {
  const names = new Set<string>();
  for (const m of await registry.getMetricsAsJSON()) {
    if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    else names.add(m.name);
  }
  return names;
}

describe.skipIf(skipWithoutPrometheus('prometheus-rules.test.ts'))('promtool', () => {
  it('checks the rendered rules (standard and managed mode) with lint errors fatal', () => {
    for (const [file, count] of [
      [writeRules('standard.yaml'), 12],
      [writeRules('managed.yaml', { operationMode: 'managed' }), 6],
    ] as const) {
      const r = promtool(['check', 'rules', '--lint-fatal', file]);
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`SUCCESS: ${count} rules found`);
    }
  });

  it('fails a broken rule (the check can fail)', () => {
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, stringify({ groups: [{ name: 'g', rules: [{ alert: 'X', expr: 'sum(rate(aadpodidentity_mic_cycle_count[5m]) by' }] }] }));
    const r = promtool(['check', 'rules', '--lint-fatal', file]);
    expect(r.status).not.toBe(0);
  });

  it('passes the rule unit tests: each alert fires on its fault, with its annotations, and not before its `for`', () => {
    writeRules('rules.yaml');
    copyFileSync(FIXTURE, join(dir, 'alerts.test.yaml'));
    const r = promtool(['test', 'rules', 'alerts.test.yaml'], dir);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('SUCCESS');
  });

  it('unit-tests every alert the chart ships', () => {
    const tested = new Set([...readFileSync(FIXTURE, 'utf8').matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    for (const rule of ruleGroups(renderMonitoring()).flatMap((g) => g.rules)) expect(tested.has(rule.alert), rule.alert).toBe(true);
  });
});

describe('metric names in the rules and the dashboard', () => {
  it('all exist in the MIC or NMI registry (histograms by _bucket/_sum/_count), or are Prometheus\'s own `up`', async () => {
    const known = new Set(['up', ...(await exposed(createMicMetrics().registry)), ...(await exposed(createNmiMetrics().registry))]);
    const exprs = expressions(renderMonitoring());
    const used = new Set(exprs.flatMap((e) => [...metricNames(e)]));
    expect(used.size).toBeGreaterThan(15);
    const missing = [...used].filter((n) => !known.has(n));
    expect(missing, `names not in any registry: ${missing.join(', ')}`).toEqual([]);
  });

  it('the name parser finds names (it could fail)', () => {
    expect([...metricNames('histogram_quantile(0.99, sum by (le, job) (rate(foo_bucket{a="b{c}"}[$__rate_interval]))) / on (job) group_left () bar > 1')].sort()).toEqual(['bar', 'foo_bucket']);
    expect([...metricNames('label_values(aadpodidentity_mic_cycle_count, job)')]).toEqual(['aadpodidentity_mic_cycle_count']);
    expect([...metricNames('absent(up{job="x"} == 1)')]).toEqual(['up']);
  });
});
