// Which handler a request path goes to, in the original's order (upstream-behaviour §3.2), with the path-bypass
// guard made stricter: anything that looks like the token endpoint but is not its exact form is refused, never proxied
// (CVE-2022-23551 and its case/encoding/dot-segment cousins).

export type Route =
  | { readonly kind: 'token' }
  | { readonly kind: 'invalid'; readonly reason: string }
  | { readonly kind: 'host-token' }
  | { readonly kind: 'instance-blocked' }
  | { readonly kind: 'proxy' };

export interface RoutePolicy {
  readonly blockInstanceMetadata: boolean;
}

const TOKEN_PATH = /^\/metadata\/identity\/oauth2\/token\/?$/i;
const CANONICAL_TOKEN_PATH = /^\/metadata\/identity\/oauth2\/token\/?$/;
const TOKEN_LOOKALIKE = /\/metadata\/identity.*oauth2.*token/;
// Every other IMDS identity endpoint (e.g. credential issuance) would hand out the node's identity: never proxied.
const IDENTITY_PREFIX = /^\/metadata\/identity(\/|$)/;
const INSTANCE_PREFIX = /^\/metadata\/instance(\/|$)/;
const HOST_TOKEN_PREFIX = /^\/host\/token(\/|$)/;
const MAX_DECODE_ROUNDS = 4;
// The hot path's answer, made once.
const TOKEN_ROUTE: Route = { kind: 'token' };

/** Routes a raw request target (path without query, exactly as received on the wire). */
export function routeRequest(rawPath: string, policy: RoutePolicy): Route {
  // The canonical token path has nothing to decode: answered first, it is the hot path.
  if (isCanonicalTokenPath(rawPath)) {
    return TOKEN_ROUTE;
  }
  if (!isOriginForm(rawPath)) {
    // Absolute-form, `//host/...`, `*` and the like: what they name is not ours to guess, nor to forward.
    return { kind: 'invalid', reason: 'request target is not origin-form (a path with a single leading slash)' };
  }
  const normalised = normalisePath(rawPath);
  if (normalised === undefined) {
    return { kind: 'invalid', reason: 'request path cannot be decoded' };
  }
  if (hasDotSegment(rawPath)) {
    // No IMDS path has one; resolving them is the upstream's business and must not decide what we forward.
    return { kind: 'invalid', reason: 'request path has a dot segment' };
  }
  if (TOKEN_LOOKALIKE.test(normalised)) {
    return { kind: 'invalid', reason: 'request path looks like the token endpoint but is not its canonical form' };
  }
  if (IDENTITY_PREFIX.test(normalised)) {
    return { kind: 'invalid', reason: 'identity endpoints other than the token path are not served' };
  }
  if (HOST_TOKEN_PREFIX.test(rawPath)) {
    return { kind: 'host-token' };
  }
  if (policy.blockInstanceMetadata && INSTANCE_PREFIX.test(normalised)) {
    return { kind: 'instance-blocked' };
  }
  return { kind: 'proxy' };
}

/** A single leading `/` (not `//` or `/\\`, which URL parsers read as a host): RFC 9112 origin-form. */
export function isOriginForm(rawPath: string): boolean {
  if (rawPath.charCodeAt(0) !== 47) return false;
  const second = rawPath.charCodeAt(1);
  return second !== 47 && second !== 92;
}

/** A `.` or `..` segment in the path once decoded, with backslashes read as slashes. */
function hasDotSegment(rawPath: string): boolean {
  let path = rawPath;
  for (let round = 0; round < MAX_DECODE_ROUNDS && path.includes('%'); round++) {
    try {
      path = decodeURIComponent(path);
    } catch {
      return true;
    }
  }
  return path.replace(/\\/g, '/').split('/').some((segment) => segment === '.' || segment === '..');
}

/** The token route: `/metadata` segment in any case (as the original), the rest exact, optional trailing slash. */
function isCanonicalTokenPath(rawPath: string): boolean {
  if (!TOKEN_PATH.test(rawPath)) return false;
  const rest = rawPath.slice('/metadata'.length);
  return CANONICAL_TOKEN_PATH.test(`/metadata${rest}`);
}

/**
 * Lower-cased path with percent-encoding undone (repeatedly, so double encoding cannot hide a segment), backslashes
 * read as slashes, repeated slashes collapsed and dot segments resolved: the form an upstream server might act on.
 * Returns undefined when the path cannot be decoded.
 */
export function normalisePath(rawPath: string): string | undefined {
  let path = rawPath;
  for (let round = 0; round < MAX_DECODE_ROUNDS && path.includes('%'); round++) {
    try {
      path = decodeURIComponent(path);
    } catch {
      return undefined;
    }
  }
  if (path.includes('%') && /%[0-9a-f]{2}/i.test(path)) return undefined;
  path = path.replace(/\\/g, '/').toLowerCase();
  const out: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      out.pop();
      continue;
    }
    out.push(segment);
  }
  const trailing = path.endsWith('/') && out.length > 0 ? '/' : '';
  return `/${out.join('/')}${trailing}`;
}
