import { request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';
import type { JWK } from 'jose';
import type { Clock } from '../../common/clock.js';

/** How Azure AD's side of the emulator reads an external issuer's OIDC metadata. */
export interface IssuerKeysOptions {
  readonly clock: Clock;
  /** How long a fetched discovery document + key set is used before it is fetched again. */
  readonly ttlMs: number;
  /** Bound on each HTTP fetch (connect to last byte): an issuer that never answers is "unreachable", not a hang. */
  readonly timeoutMs: number;
  /** CA certificates (PEM) trusted for issuer TLS besides the public roots. */
  readonly trustedCas: () => readonly string[];
}

export type KeyLookup =
  | { readonly ok: true; readonly keys: readonly JWK[] }
  | { readonly ok: false; readonly reason: 'unreachable'; readonly detail: string }
  | { readonly ok: false; readonly reason: 'kid_not_found'; readonly detail: string };

interface Entry {
  readonly fetchedAt: number;
  readonly keys: readonly JWK[];
}

const MAX_KEYS = 100; // Azure AD keeps the first 100 signing keys an issuer publishes
const MAX_DOCUMENT_BYTES = 1024 * 1024;

/**
 * Discovery document and JWKS per issuer, fetched over real HTTPS, cached for `ttlMs`, fetched again when a token
 * names a key id the cached set lacks (rotation); concurrent fetches for one issuer are collapsed into one.
 */
export class IssuerKeys {
  readonly #opts: IssuerKeysOptions;
  readonly #cache = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<Entry>>();

  constructor(opts: IssuerKeysOptions) {
    this.#opts = opts;
  }

  /** The keys a token from `issuer` with header `kid` may be verified with (all keys when `kid` is absent). */
  async keysFor(issuer: string, kid: string | undefined): Promise<KeyLookup> {
    const pick = (e: Entry): JWK[] => e.keys.filter((k) => kid === undefined || k.kid === kid);
    const cached = this.#cache.get(issuer);
    if (cached && this.#opts.clock.now() - cached.fetchedAt < this.#opts.ttlMs && pick(cached).length > 0) {
      return { ok: true, keys: pick(cached) };
    }
    let entry: Entry;
    try {
      entry = await this.#refresh(issuer);
    } catch (err) {
      return { ok: false, reason: 'unreachable', detail: (err as Error).message };
    }
    const keys = pick(entry);
    if (keys.length === 0) return { ok: false, reason: 'kid_not_found', detail: kid ?? '' };
    return { ok: true, keys };
  }

  /** Forgets every cached issuer (tests, or an admin "flush"). */
  clear(): void {
    this.#cache.clear();
  }

  #refresh(issuer: string): Promise<Entry> {
    const pending = this.#inflight.get(issuer);
    if (pending) return pending;
    const p = this.#fetchEntry(issuer).finally(() => this.#inflight.delete(issuer));
    this.#inflight.set(issuer, p);
    return p;
  }

  async #fetchEntry(issuer: string): Promise<Entry> {
    const discoveryUrl = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    const discovery = await this.#getJson(discoveryUrl);
    if (typeof discovery !== 'object' || discovery === null || Array.isArray(discovery)) throw new Error('discovery document is not a JSON object');
    const doc = discovery as Record<string, unknown>;
    if (doc.issuer !== issuer) throw new Error(`discovery document issuer ${JSON.stringify(doc.issuer)} is not ${JSON.stringify(issuer)}`);
    if (typeof doc.jwks_uri !== 'string') throw new Error('discovery document has no jwks_uri');
    const jwks = await this.#getJson(doc.jwks_uri);
    const keys = typeof jwks === 'object' && jwks !== null && Array.isArray((jwks as { keys?: unknown }).keys) ? (jwks as { keys: unknown[] }).keys : undefined;
    if (!keys) throw new Error('jwks has no keys array');
    const entry: Entry = {
      fetchedAt: this.#opts.clock.now(),
      keys: keys.filter((k): k is JWK => typeof k === 'object' && k !== null && (k as JWK).kty === 'RSA').slice(0, MAX_KEYS),
    };
    this.#cache.set(issuer, entry);
    return entry;
  }

  #getJson(url: string): Promise<unknown> {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return Promise.reject(new Error(`not a URL: ${url}`));
    }
    if (parsed.protocol !== 'https:') return Promise.reject(new Error(`not https: ${url}`));
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        parsed,
        { method: 'GET', ca: [...rootCertificates, ...this.#opts.trustedCas()], headers: { accept: 'application/json' }, signal: AbortSignal.timeout(this.#opts.timeoutMs) },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_DOCUMENT_BYTES) req.destroy(new Error(`${url}: document too large`));
            else chunks.push(c);
          });
          res.on('error', reject);
          res.on('end', () => {
            if (res.statusCode !== 200) return reject(new Error(`${url}: HTTP ${res.statusCode ?? '?'}`));
            try {
              resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown);
            } catch (err) {
              reject(new Error(`${url}: not JSON (${(err as Error).message})`));
            }
          });
        },
      );
      req.on('error', (err) => reject(new Error(`${url}: ${err.message}`)));
      req.end();
    });
  }
}
