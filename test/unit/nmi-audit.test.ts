import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createAuditTrail, newAuditFacts } from '../../src/nmi/audit.js';
import type { AzureIdentity, PodView } from '../../src/crds/types.js';

function trail(mode: 'aggregate' | 'all') {
  const lines: Array<Record<string, unknown>> = [];
  let t = Date.parse('2026-01-01T00:00:00Z');
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const audit = createAuditTrail({ mode, logger, flushIntervalMs: 3_600_000, now: () => t });
  return { audit, lines, tick: (ms: number) => (t += ms) };
}

const pod = { uid: 'uid-1', name: 'api', namespace: 'orders' } as PodView;
const identity = { namespace: 'orders', name: 'orders-id', clientID: 'c', resourceID: '/r', type: 0 } as AzureIdentity;

describe('AuditTrail', () => {
  it('counts warm-path hits per (pod, identity, resource) into one record per flush, with mean and max latency', () => {
    const { audit, lines, tick } = trail('aggregate');
    audit.hit(pod, identity, 'https://vault.azure.net', 1);
    tick(500);
    audit.hit(pod, identity, 'https://vault.azure.net', 3);
    // The informer replaced the identity object: still the same identity, merged at the flush.
    audit.hit(pod, { ...identity }, 'https://vault.azure.net', 2);
    audit.hit(pod, identity, 'https://management.azure.com', 1);
    expect(lines).toEqual([]);
    tick(1000);
    audit.flush();
    expect(lines.map((l) => [l['resource'], l['count'], l['latencyMs'], l['latencyMaxMs'], l['windowMs']])).toEqual([
      ['https://vault.azure.net', 3, 2, 3, 1500],
      ['https://management.azure.com', 1, 1, 1, 1000],
    ]);
    expect(lines[0]).toMatchObject({ decision: 'issued', path: 'binding', cache: 'hit', pod: { uid: 'uid-1' }, firstAt: '2026-01-01T00:00:00.000Z', lastAt: '2026-01-01T00:00:00.500Z' });
  });

  it('writes a miss at once, and the first of a refusal at once with its repeats counted', () => {
    const { audit, lines } = trail('aggregate');
    const miss = { ...newAuditFacts('10.0.0.1'), pod, identity, path: 'binding' as const, cache: 'miss' as const, resource: 'r' };
    audit.answered(miss, 200, 5);
    audit.answered(miss, 200, 5);
    const refused = { ...newAuditFacts('10.0.0.9'), refusal: 'unknown-caller' as const, resource: 'r' };
    for (let i = 0; i < 4; i++) audit.answered(refused, 500, 1);
    expect(lines.map((l) => [l['decision'], l['cache'] ?? l['reason'], l['count']])).toEqual([
      ['issued', 'miss', 1],
      ['issued', 'miss', 1],
      ['refused', 'unknown-caller', 1],
    ]);
    audit.flush();
    expect(lines.slice(3).map((l) => [l['reason'], l['count'], l['remote']])).toEqual([['unknown-caller', 3, '10.0.0.9']]);
  });

  it('all: a record per hit', () => {
    const { audit, lines } = trail('all');
    audit.hit(pod, identity, 'r', 1);
    audit.hit(pod, identity, 'r', 1);
    expect(lines.map((l) => l['count'])).toEqual([1, 1]);
  });
});
