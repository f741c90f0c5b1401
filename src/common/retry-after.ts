// The one reader of server-requested delays. `Retry-After` is delta-seconds or an HTTP-date (RFC 9110 §10.2.3,
// with the three date forms of §5.6.7); Azure also sends `retry-after-ms` / `x-ms-retry-after-ms` in milliseconds,
// which are more precise and so win when present (as the Azure SDKs' throttling policy reads them).

/** Anything headers come in: a Fetch `Headers`-like getter, or a plain record (client-node keeps them as one). */
export type HeaderSource =
  | { get(name: string): string | null | undefined }
  | Readonly<Record<string, string | readonly string[] | undefined>>;

/** Azure's millisecond headers, in the order they are read; then `Retry-After`. */
const MS_HEADERS = ['retry-after-ms', 'x-ms-retry-after-ms'] as const;

// A delta this large is meant as "a very long time" (RFC 9111 §1.2.2 caps delta-seconds at 2^31).
const MAX_DELTA_SECONDS = 2_147_483_648;

/**
 * The delay a response asks for, in ms from `nowMs`: `retry-after-ms`, then `x-ms-retry-after-ms`, then `Retry-After`.
 * Undefined when none is present or parsable; a malformed one is skipped in favour of the next.
 */
export function retryAfterFromHeaders(headers: HeaderSource | null | undefined, nowMs: number): number | undefined {
  if (headers === null || headers === undefined) return undefined;
  for (const name of MS_HEADERS) {
    const ms = parseRetryAfterMs(headerValue(headers, name));
    if (ms !== undefined) return ms;
  }
  return parseRetryAfter(headerValue(headers, 'retry-after'), nowMs);
}

/**
 * A `Retry-After` value in ms from `nowMs`: delta-seconds (digits only), or an HTTP-date (IMF-fixdate, RFC 850 or
 * asctime), 0 for a date already past. Undefined when absent, empty or malformed (`-3`, `1.5`, `soon`, a bare year).
 */
export function parseRetryAfter(value: string | null | undefined, nowMs: number): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (v === '') return undefined;
  if (/^\d+$/.test(v)) return Math.min(Number(v), MAX_DELTA_SECONDS) * 1000;
  const at = parseHttpDate(v, nowMs);
  return at === undefined ? undefined : Math.max(0, at - nowMs);
}

/** `retry-after-ms`: a non-negative number of milliseconds (Azure may send a fraction). */
export function parseRetryAfterMs(value: string | null | undefined): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (!/^\d+(?:\.\d+)?$/.test(v)) return undefined;
  return Math.ceil(Math.min(Number(v), MAX_DELTA_SECONDS * 1000));
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAY = '(?:mon|tue|wed|thu|fri|sat|sun)';
const LONG_DAY = '(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)';
const MONTH = '(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)';
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';
// Sun, 06 Nov 1994 08:49:37 GMT
const IMF_FIXDATE = new RegExp(`^${DAY}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`, 'i');
// Sunday, 06-Nov-94 08:49:37 GMT
const RFC850_DATE = new RegExp(`^${LONG_DAY}, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`, 'i');
// Sun Nov  6 08:49:37 1994
const ASCTIME_DATE = new RegExp(`^${DAY} ${MONTH} ( \\d|\\d{2}) ${TIME} (\\d{4})$`, 'i');

/** Epoch ms of an HTTP-date, or undefined when it is not one of the three forms or names an impossible time. */
function parseHttpDate(v: string, nowMs: number): number | undefined {
  let m = IMF_FIXDATE.exec(v);
  if (m) return utc(Number(m[3]), m[2], m[1], m[4], m[5], m[6]);
  m = RFC850_DATE.exec(v);
  if (m) return utc(twoDigitYear(Number(m[3]), nowMs), m[2], m[1], m[4], m[5], m[6]);
  m = ASCTIME_DATE.exec(v);
  if (m) return utc(Number(m[6]), m[1], m[2], m[3], m[4], m[5]);
  return undefined;
}

function utc(year: number, month: string | undefined, day: string | undefined, h: string | undefined, min: string | undefined, s: string | undefined): number | undefined {
  const mon = MONTHS.indexOf((month ?? '').toLowerCase());
  const [d, hh, mm, ss] = [day, h, min, s].map((x) => Number((x ?? '').trim()));
  if (mon < 0 || d === undefined || hh === undefined || mm === undefined || ss === undefined) return undefined;
  // 60 is a leap second (RFC 9110 allows it); Date.UTC rolls it into the next minute, which is what it means.
  if (d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60) return undefined;
  const at = Date.UTC(year, mon, d, hh, mm, ss);
  // 31 Feb and the like: Date.UTC would roll into March.
  return new Date(at).getUTCDate() === d || ss === 60 ? at : undefined;
}

/** RFC 9110: a two-digit year more than 50 years in the future is the most recent past year with those digits. */
function twoDigitYear(yy: number, nowMs: number): number {
  const current = new Date(nowMs).getUTCFullYear();
  let year = Math.floor(current / 100) * 100 + yy;
  if (year > current + 50) year -= 100;
  return year;
}

function headerValue(headers: HeaderSource, name: string): string | undefined {
  if (typeof headers.get === 'function') {
    const v = (headers as { get(n: string): string | null | undefined }).get(name);
    return typeof v === 'string' ? v : undefined;
  }
  const record = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
  for (const key of Object.keys(record)) {
    if (key.toLowerCase() !== name) continue;
    const v = record[key];
    return typeof v === 'string' ? v : Array.isArray(v) ? (v as readonly string[])[0] : undefined;
  }
  return undefined;
}
