// A watch request as client-node's Watch makes it (same callback and done contract), on undici.request's Node
// stream instead of fetch: client-node's runs every chunk through WHATWG streams, Readable.fromWeb and readline and
// re-arms a timer per chunk, which at thousands of events a second was a large share of MIC's garbage.
import { HttpMethod, RequestContext } from '@kubernetes/client-node/dist/gen/http/http.js';
import { request, type Dispatcher } from 'undici';
import type { KubeAccess } from './access.js';

export class KubeWatch {
  /** Inactivity timeout: no byte for this long ends the watch with a TimeoutError. */
  requestTimeoutMs = 30_000;

  constructor(private readonly access: KubeAccess) {}

  /**
   * Starts `GET path?watch=true`; `callback(type, object)` per event line; `done(err)` once: null when the server
   * closed the stream, a TimeoutError after inactivity, an Error with `statusCode` for a non-200 answer.
   */
  async watch(
    path: string,
    queryParams: Readonly<Record<string, string | number | boolean | undefined>>,
    callback: (type: string, obj: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const cluster = this.access.getCurrentCluster();
    if (!cluster) throw new Error('No currently active cluster');
    const url = new URL(cluster.server + path);
    url.searchParams.set('watch', 'true');
    for (const [k, v] of Object.entries(queryParams)) if (v !== undefined) url.searchParams.set(k, String(v));
    const controller = new AbortController();
    const ctx = new RequestContext(url.toString(), HttpMethod.GET);
    await this.access.applySecurityAuthentication(ctx);

    let finished = false;
    let timedOut = false;
    let lastData = 0;
    let timer: NodeJS.Timeout | undefined;
    const finish = (err: unknown): void => {
      if (finished) return;
      finished = true;
      if (timer !== undefined) clearTimeout(timer);
      controller.abort();
      done(timedOut ? new DOMException('The operation was aborted due to timeout', 'TimeoutError') : err);
    };
    // One timer, re-armed only when it fires early (not per chunk).
    const arm = (ms: number): void => {
      timer = setTimeout(() => {
        const idle = performance.now() - lastData;
        if (idle < this.requestTimeoutMs) return arm(this.requestTimeoutMs - idle);
        timedOut = true;
        finish(null);
      }, ms);
      timer.unref();
    };
    lastData = performance.now();
    arm(this.requestTimeoutMs);

    try {
      const dispatcher = ctx.getDispatcher() as Dispatcher | undefined;
      const res = await request(url, {
        method: 'GET',
        headers: ctx.getHeaders(),
        signal: controller.signal,
        ...(dispatcher !== undefined ? { dispatcher } : {}),
      });
      if (res.statusCode !== 200) {
        res.body.destroy();
        const error = new Error(`watch ${path}: HTTP ${res.statusCode}`) as Error & { statusCode: number };
        error.statusCode = res.statusCode;
        throw error;
      }
      lastData = performance.now();
      res.body.setEncoding('utf8');
      let rest = '';
      res.body.on('data', (chunk: string) => {
        lastData = performance.now();
        let text = rest === '' ? chunk : rest + chunk;
        let nl = text.indexOf('\n');
        let start = 0;
        while (nl !== -1) {
          if (nl > start) deliver(text.slice(start, nl));
          start = nl + 1;
          nl = text.indexOf('\n', start);
        }
        text = text.slice(start);
        rest = text;
      });
      res.body.on('end', () => {
        if (rest.trim() !== '') deliver(rest);
        finish(null);
      });
      res.body.on('error', finish);
      res.body.on('close', () => finish(null));
    } catch (err) {
      finish(err);
    }
    return controller;

    function deliver(line: string): void {
      let event: { type?: unknown; object?: unknown };
      try {
        event = JSON.parse(line) as { type?: unknown; object?: unknown };
      } catch {
        return; // as client-node: a line that is not JSON is skipped
      }
      if (finished) return;
      try {
        callback(String(event.type), event.object);
      } catch (err) {
        finish(err); // this watch ends with the handler's error (client-node's swallowed it)
      }
    }
  }
}
