// Everything that is not a token path goes to IMDS (upstream-behaviour §3.7): same method, normalised path, query,
// headers and body; status, headers and body copied back. A transport failure answers 500.

import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { isOriginForm } from '../core/routes.js';
import type { MetadataProxy } from '../ports.js';

const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host',
]);

export interface ImdsProxyOptions {
  /** e.g. `http://169.254.169.254:80`. */
  readonly imdsEndpoint: string;
  readonly timeoutMs?: number;
  readonly logger: Logger;
}

export function createImdsProxy(options: ImdsProxyOptions): MetadataProxy {
  const base = new URL(options.imdsEndpoint);
  if (base.protocol !== 'http:') throw new Error(`IMDS endpoint must be http: ${options.imdsEndpoint}`);
  const timeoutMs = options.timeoutMs ?? 30_000;

  return {
    forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
      return new Promise((resolve) => {
        const path = upstreamTarget(req.url ?? '');
        if (path === undefined) {
          options.logger.warn({ path: req.url }, 'refused to proxy a request target that is not origin-form');
          res.writeHead(400, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
          res.end('Invalid request\n');
          resolve();
          return;
        }
        const headers: Record<string, string | string[]> = {};
        for (const [name, value] of Object.entries(req.headers)) {
          if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
        }
        headers.host = base.host;
        const upstream = httpRequest(
          {
            protocol: base.protocol,
            hostname: base.hostname,
            port: base.port || 80,
            method: req.method,
            path,
            headers,
            timeout: timeoutMs,
          },
          (answer) => {
            const out: Record<string, string | string[]> = {};
            for (const [name, value] of Object.entries(answer.headers)) {
              if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
            }
            res.writeHead(answer.statusCode ?? 502, out);
            answer.pipe(res);
            answer.once('end', resolve);
            answer.once('error', () => {
              res.destroy();
              resolve();
            });
          },
        );
        upstream.once('timeout', () => upstream.destroy(new Error(`IMDS did not answer within ${timeoutMs} ms`)));
        upstream.once('error', (error) => {
          options.logger.warn({ err: error, path: req.url }, 'proxying to IMDS failed');
          if (!res.headersSent) {
            const text = `failed to reach the instance metadata service: ${error.message}\n`;
            res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
            res.end(text);
          } else {
            res.destroy();
          }
          resolve();
        });
        req.pipe(upstream);
      });
    },
  };
}

const PARSE_BASE = 'http://imds.invalid';

/**
 * The path and query to send upstream, parsed and normalised (WHATWG URL), never the raw target; undefined unless the
 * target is origin-form and names no other host.
 */
export function upstreamTarget(rawTarget: string): string | undefined {
  if (!isOriginForm(rawTarget)) return undefined;
  let url: URL;
  try {
    url = new URL(rawTarget, PARSE_BASE);
  } catch {
    return undefined;
  }
  if (url.origin !== PARSE_BASE) return undefined;
  return `${url.pathname}${url.search}`;
}
