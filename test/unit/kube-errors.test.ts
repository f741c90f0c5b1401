import { ApiException } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import {
  describeError,
  httpStatus,
  isAlreadyExists,
  isConflict,
  isGone,
  isNotFound,
  isRetryable,
  retryAfterMs,
  statusReason,
} from '../../src/kube/errors.js';
import { parseTime } from '../../src/kube/leader.js';

const status = (code: number, reason: string): string =>
  JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason, code, message: `${reason}!` });
const apiErr = (code: number, reason: string, headers: Record<string, string> = {}): ApiException<string> =>
  new ApiException(code, `HTTP-Code: ${code}`, status(code, reason), headers);

function fetchFailed(code: string): TypeError {
  return new TypeError('fetch failed', { cause: Object.assign(new Error(`connect ${code}`), { code }) });
}

describe('error classification', () => {
  it('tells a stale-update conflict from a create that found the name taken', () => {
    expect(isConflict(apiErr(409, 'Conflict'))).toBe(true);
    expect(isAlreadyExists(apiErr(409, 'Conflict'))).toBe(false);
    expect(isAlreadyExists(apiErr(409, 'AlreadyExists'))).toBe(true);
    expect(isConflict(apiErr(409, 'AlreadyExists'))).toBe(false);
  });

  it('reads the status from ApiException, client-node watch errors and watch ERROR Status objects', () => {
    expect(isNotFound(apiErr(404, 'NotFound'))).toBe(true);
    expect(isGone(Object.assign(new Error('Gone'), { statusCode: 410 }))).toBe(true);
    expect(isGone({ kind: 'Status', code: 410, reason: 'Expired' })).toBe(true);
    expect(statusReason({ kind: 'Status', code: 410, reason: 'Expired' })).toBe('Expired');
    expect(httpStatus(new Error('x'))).toBeUndefined();
    expect(statusReason(new ApiException(500, 'm', 'not json', {}))).toBeUndefined();
  });

  it('retries throttling, server errors and socket failures but not client errors', () => {
    expect(isRetryable(apiErr(429, 'TooManyRequests'))).toBe(true);
    expect(isRetryable(apiErr(500, 'InternalError'))).toBe(true);
    expect(isRetryable(apiErr(503, 'ServiceUnavailable'))).toBe(true);
    expect(isRetryable(apiErr(404, 'NotFound'))).toBe(false);
    expect(isRetryable(apiErr(422, 'Invalid'))).toBe(false);
    expect(isRetryable(fetchFailed('ECONNREFUSED'))).toBe(true);
    expect(isRetryable(new TypeError('terminated', { cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }) }))).toBe(true);
    expect(isRetryable(new DOMException('timeout', 'TimeoutError'))).toBe(true);
    expect(isRetryable(new Error('bug'))).toBe(false);
  });

  it('reads Retry-After and describes errors for logs', () => {
    expect(retryAfterMs(apiErr(429, 'TooManyRequests', { 'retry-after': '2' }))).toBe(2000);
    expect(retryAfterMs(apiErr(429, 'TooManyRequests'))).toBeUndefined();
    expect(describeError(apiErr(409, 'Conflict'))).toBe('HTTP 409 Conflict');
    expect(describeError(fetchFailed('ECONNREFUSED'))).toBe('TypeError: fetch failed (ECONNREFUSED)');
  });

  it('parses Lease times whether client-node returns a string or a Date', () => {
    expect(parseTime('2026-11-22T14:55:37.542000Z')).toBe(Date.parse('2026-11-22T14:55:37.542Z'));
    expect(parseTime(new Date(5))).toBe(5);
    expect(parseTime(undefined)).toBeUndefined();
    expect(parseTime('garbage')).toBeUndefined();
  });
});
