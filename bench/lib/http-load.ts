// Closed-loop HTTP load and one-shot requests from a given source address, shared by the NMI and federation
// benchmarks (undici; each caller sends its next request as soon as the last one answered).
import { Agent } from 'undici';

export interface LoadResult {
  readonly clients: number;
  readonly requests: number;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
}

/** One GET from `fromIp` on a connection of its own; `timeoutMs` bounds the wait for headers and for the body. */
export async function once(origin: string, fromIp: string, path: string, timeoutMs?: number): Promise<{ status: number; body: string }> {
  const agent = new Agent({ localAddress: fromIp });
  try {
    const timeouts = timeoutMs === undefined ? {} : { headersTimeout: timeoutMs, bodyTimeout: timeoutMs };
    const res = await agent.request({ origin, path, method: 'GET', headers: { Metadata: 'true' }, ...timeouts });
    return { status: res.statusCode, body: await res.body.text() };
  } finally {
    await agent.close();
  }
}

/** Closed loop: `clients` callers each send the next request as soon as the last answered, for `durationMs`. */
export async function load(origin: string, fromIp: string, path: string, clients: number, durationMs: number): Promise<LoadResult> {
  const agent = new Agent({ localAddress: fromIp, connections: clients, pipelining: 1, keepAliveTimeout: 30_000 });
  const headers = { Metadata: 'true' };
  const run = async (until: number, record: number[] | undefined) => {
    let errors = 0;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (performance.now() < until) {
          const started = performance.now();
          const res = await agent.request({ origin, path, method: 'GET', headers });
          await res.body.dump();
          if (res.statusCode !== 200) errors++;
          record?.push(performance.now() - started);
        }
      }),
    );
    return errors;
  };
  try {
    await run(performance.now() + Math.min(1000, durationMs / 3), undefined); // warm-up: connections, JIT
    const latencies: number[] = [];
    const started = performance.now();
    const errors = await run(started + durationMs, latencies);
    const elapsed = performance.now() - started;
    latencies.sort((a, b) => a - b);
    return {
      clients,
      requests: latencies.length,
      rps: (latencies.length / elapsed) * 1000,
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      errors,
    };
  } finally {
    await agent.close();
  }
}

export function medianRun(runs: readonly LoadResult[]): LoadResult {
  const sorted = [...runs].sort((a, b) => a.rps - b.rps);
  return sorted[Math.floor(sorted.length / 2)] as LoadResult;
}

/** Value at quantile `q` of an ascending array (index floor(q·n), capped at the last). */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}
