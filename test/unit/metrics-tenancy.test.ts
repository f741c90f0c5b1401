// What NMI's anonymous metrics view and MIC's metrics may carry as labels (issue 10 row 12): nothing that names a
// tenant. Label names are checked per metric, so a metric added later with a namespace label fails here.
import { describe, expect, it } from 'vitest';
import { createMicMetrics } from '../../src/mic/metrics.js';
import { createNmiMetrics, TENANT_LABELS } from '../../src/nmi/metrics.js';

async function labelNames(registry: { getMetricsAsJSON(): Promise<Array<{ name: string; values: Array<{ labels: Record<string, unknown> }> }>> }) {
  const out = new Map<string, Set<string>>();
  for (const m of await registry.getMetricsAsJSON()) {
    const names = out.get(m.name) ?? new Set<string>();
    for (const v of m.values) for (const k of Object.keys(v.labels)) names.add(k);
    out.set(m.name, names);
  }
  return out;
}

describe('metrics labels', () => {
  it('keeps namespace and resource out of NMI’s anonymous registry, and in its full one', async () => {
    const m = createNmiMetrics();
    m.setTokenCacheStats(() => ({ hits: 1, misses: 2, upstreamCalls: 3, refreshes: 0, entries: 1 }));
    m.observeRequest('token', 200, 'team-a', 'https://vault.azure.net', 0.01);
    m.observeRequest('proxy', 403, 'team-b', '', 0.01);
    m.countKubeError('watch');
    const anonymous = await labelNames(m.anonymousRegistry);
    expect([...anonymous.keys()].sort()).toEqual([...(await labelNames(m.registry)).keys()].sort());
    for (const [name, labels] of anonymous) for (const t of TENANT_LABELS) expect(labels.has(t), `${name} ${t}`).toBe(false);
    expect(await m.anonymousRegistry.metrics()).not.toMatch(/team-|vault/);
    expect(await m.registry.metrics()).toContain('namespace="team-a",resource="https://vault.azure.net"');
  });

  it('gives MIC’s metrics no label but operation_type, whose values are fixed operation names', async () => {
    const m = createMicMetrics();
    m.observeAssigned('addition', 0.1);
    m.kubeError('assigned_identity_addition');
    m.cycle(0.2);
    m.newLeader();
    m.armCall('vmss_update', 0.3, true);
    const seen = await labelNames(m.registry);
    for (const [name, labels] of seen) expect([...labels].filter((l) => l !== 'operation_type' && l !== 'le'), name).toEqual([]);
  });
});
