// NMI's /metrics listener. Pods on the node can reach :9090 (NMI is hostNetwork), so without credentials it serves
// the anonymous view (no namespace or resource labels); the full view needs `Authorization: Bearer <token>` equal to
// the contents of --metrics-bearer-token-file. A wrong or unverifiable token gets 401, so a misconfigured scraper
// shows up as a failing target instead of silently losing labels. Without a token file there is no full view.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { realClock } from '../common/clock.js';
import { pathOf, sendMetrics } from '../common/http.js';

export interface MetricsEndpointOptions {
  readonly metrics: { readonly registry: Registry; anonymousMetrics(): Promise<string> };
  /** '' or undefined: anonymous view only, whatever the request carries. */
  readonly bearerTokenFile?: string | undefined;
  readonly logger: Logger;
  /** For tests: the clock used to rate-limit the 401 warnings. */
  readonly now?: () => number;
}

const WARN_EVERY_MS = 60_000;

export function createMetricsListener(opts: MetricsEndpointOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const tokenFile = opts.bearerTokenFile ?? '';
  const expected = tokenFile === '' ? undefined : fileTokenDigest(tokenFile);
  const now = opts.now ?? realClock.now;
  let lastWarn = -Infinity;
  const warn = (reason: string) => {
    if (now() - lastWarn < WARN_EVERY_MS) return;
    lastWarn = now();
    opts.logger.warn({ reason, tokenFile }, 'metrics request refused (401); check the scraper\'s bearer token against --metrics-bearer-token-file');
  };

  const serve = (res: ServerResponse, full: boolean) =>
    sendMetrics(res, full ? opts.metrics.registry.metrics() : opts.metrics.anonymousMetrics(), opts.metrics.registry.contentType, opts.logger);
  const refuse = (res: ServerResponse, reason: string) => {
    warn(reason);
    res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="nmi-metrics"' });
    res.end('unauthorized\n');
  };

  return (req, res) => {
    if (pathOf(req) !== '/metrics') return void res.writeHead(404).end();
    const header = req.headers.authorization;
    if (expected === undefined || header === undefined) return serve(res, false);
    const presented = /^Bearer[ \t]+([^ \t]+)[ \t]*$/i.exec(header)?.[1];
    if (presented === undefined) return refuse(res, 'the Authorization header is not a bearer token');
    expected().then(
      (digest) => {
        if (digest === undefined) return refuse(res, 'the bearer token file is unreadable or empty');
        if (!timingSafeEqual(sha256(presented), digest)) return refuse(res, 'wrong bearer token');
        serve(res, true);
      },
      (error: unknown) => {
        opts.logger.warn({ err: error, tokenFile }, 'reading the metrics bearer token failed');
        refuse(res, 'the bearer token file is unreadable');
      },
    );
  };
}

/** Why a bearer token file cannot be used (unreadable, empty), or undefined when it can: checked once at start. */
export function bearerTokenFileProblem(path: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    return `--metrics-bearer-token-file: cannot read ${path}: ${(error as { code?: string }).code ?? String(error)}`;
  }
  return text.trim() === '' ? `--metrics-bearer-token-file: ${path} is empty` : undefined;
}

/**
 * The SHA-256 of the file's trimmed contents (a Secret written with `echo` ends in a newline), re-read when the file
 * changes (a Secret update swaps the mounted file: new inode or mtime), or undefined while it is unreadable or empty.
 * Comparing digests keeps timingSafeEqual's buffers the same length whatever the caller sends.
 */
function fileTokenDigest(path: string): () => Promise<Buffer | undefined> {
  let signature = '';
  let digest: Buffer | undefined;
  return async () => {
    let current: string;
    try {
      const st = await stat(path);
      current = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch {
      signature = '';
      digest = undefined;
      return undefined;
    }
    if (current !== signature) {
      const text = await readFile(path, 'utf8').catch(() => undefined);
      digest = text === undefined || text.trim() === '' ? undefined : sha256(text.trim());
      // An unreadable file is tried again on the next request; a read one only once it changes.
      signature = text === undefined ? '' : current;
    }
    return digest;
  };
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
