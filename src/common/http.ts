// The plain HTTP listeners MIC and NMI run beside their main work: the probe (/healthz, /readyz) and metrics
// (/metrics) servers, the profiling endpoint, and how each of them listens and closes.
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

export interface HttpListener {
  /** `http://host:port` as a client on this machine reaches it (`127.0.0.1` for all interfaces given as ''). */
  readonly url: string;
  readonly server: Server;
  /** Stops accepting, then closes every connection (see closeServer). Idempotent. */
  close(): Promise<void>;
}

/** Creates a server for `listener` and listens on host:port ('' host: every interface; port 0: any free one). */
export async function startHttpListener(listener: RequestListener, host: string, port: number): Promise<HttpListener> {
  const server = createServer(listener);
  const url = await listen(server, host, port);
  let closed: Promise<void> | undefined;
  return { url, server, close: () => (closed ??= closeServer(server)) };
}

/** Listens on host:port and resolves the URL to reach it; rejects with the listen error (EADDRINUSE, EACCES…). */
export async function listen(server: Server, host: string, port: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const onListening = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (host === '') server.listen(port, onListening);
    else server.listen(port, host, onListening);
  });
  const addr = server.address() as AddressInfo;
  const h = host === '' ? '127.0.0.1' : addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return `http://${h}:${addr.port}`;
}

const IDLE_SWEEP_MS = 20;

/**
 * Stops accepting connections and resolves once the server is closed. Idle keep-alive connections go at once;
 * requests in flight get `graceMs` to finish (default 0: probes and scrapes are cheap to retry) before their
 * connections are closed too, so a stuck client never holds up a stop.
 */
export function closeServer(server: Server, graceMs = 0): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => {
      clearTimeout(force);
      clearInterval(idle);
      resolve();
    });
    server.closeIdleConnections();
    // A request that finishes during the grace leaves a keep-alive connection behind: close it once it is idle.
    const idle = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
    const force = setTimeout(() => server.closeAllConnections(), Math.max(0, graceMs));
    idle.unref();
    force.unref();
  });
}

export interface ProbeOptions {
  /** /healthz is always 200, as the original's: its body says whether this replica acts (`Active` / `Not Active`). */
  readonly active: () => boolean;
  /** /readyz: 200 `ready` when true, else 503 with `notReadyText`. */
  readonly ready: () => boolean;
  readonly notReadyText: string;
  /** More paths (e.g. NMI's /status), tried before the standard ones. */
  readonly routes?: Readonly<Record<string, RequestListener>>;
}

/** The probe listener: /healthz, /readyz, the extra routes, 404 for anything else. */
export function probeListener(opts: ProbeOptions): RequestListener {
  return (req, res) => {
    const path = pathOf(req);
    const route = opts.routes?.[path];
    if (route !== undefined) return route(req, res);
    if (path === '/healthz') return sendText(res, 200, opts.active() ? 'Active' : 'Not Active');
    if (path === '/readyz') {
      const ready = opts.ready();
      return sendText(res, ready ? 200 : 503, ready ? 'ready' : opts.notReadyText);
    }
    res.writeHead(404).end();
  };
}

/** What /metrics serves: a prom-client Registry fits. */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

/** GET /metrics from `source`, 404 for any other path. */
export function metricsListener(source: MetricsSource, logger: Logger): RequestListener {
  return (req, res) => {
    if (pathOf(req) !== '/metrics') return void res.writeHead(404).end();
    sendMetrics(res, source.metrics(), source.contentType, logger);
  };
}

/** Writes collected metrics text, or 500 (with a log line) when collection failed. */
export function sendMetrics(res: ServerResponse, text: Promise<string>, contentType: string, logger: Logger): void {
  text.then(
    (body) => {
      res.writeHead(200, { 'content-type': contentType });
      res.end(body);
    },
    (err: unknown) => {
      logger.warn({ err }, 'metrics collection failed');
      res.writeHead(500).end();
    },
  );
}

/** The request's path without its query. */
export function pathOf(req: IncomingMessage): string {
  return (req.url ?? '/').split('?')[0] ?? '/';
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain' });
  res.end(text);
}
