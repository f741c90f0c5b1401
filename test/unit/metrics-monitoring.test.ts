// MIC's metrics that the chart's alerts read (issue 14 item 4): ARM failures by a bounded reason, and the
// AzureAssignedIdentities by state.
import { RestError } from '@azure/core-rest-pipeline';
import { describe, expect, it } from 'vitest';
import { armFailureReason, createMicMetrics } from '../../src/mic/metrics.js';

const armError = (status: number, code?: string, message = 'refused') => new RestError(message, { statusCode: status, ...(code ? { code } : {}) });

describe('ARM failure reasons', () => {
  it('names throttling, missing roles and known ARM codes, and folds everything else into a status class', () => {
    expect(armFailureReason(armError(429, 'TooManyRequests'))).toBe('throttled');
    expect(armFailureReason(armError(403, 'LinkedAuthorizationFailed'))).toBe('LinkedAuthorizationFailed');
    expect(armFailureReason(armError(400, 'FailedIdentityOperation'))).toBe('FailedIdentityOperation');
    expect(armFailureReason(armError(403, 'AuthorizationFailed'))).toBe('AuthorizationFailed');
    expect(armFailureReason(armError(401, 'ExpiredAuthenticationToken'))).toBe('ExpiredAuthenticationToken');
    expect(armFailureReason(armError(404, 'ResourceNotFound'))).toBe('NotFound');
    expect(armFailureReason(armError(503, 'ServiceUnavailable'))).toBe('server_error');
    // A code ARM (or a proxy) made up never becomes a label value of its own.
    expect(armFailureReason(armError(400, 'SomethingNew-1234'))).toBe('client_error');
    expect(armFailureReason(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))).toBe('network');
  });

  it('counts failures by operation and reason', async () => {
    const m = createMicMetrics();
    m.armFailure('vmss_update', armError(429));
    m.armFailure('vmss_update', armError(429));
    m.armFailure('vmss_get', armError(403, 'LinkedAuthorizationFailed'));
    const text = await m.registry.metrics();
    expect(text).toContain('aadpodidentity_cloud_provider_operations_errors_by_reason_count{operation_type="vmss_update",reason="throttled"} 2');
    expect(text).toContain('aadpodidentity_cloud_provider_operations_errors_by_reason_count{operation_type="vmss_get",reason="LinkedAuthorizationFailed"} 1');
  });
});

describe('AzureAssignedIdentities by state', () => {
  it('reports every state (0 when none) once the cache has listed, nothing before', async () => {
    const m = createMicMetrics();
    let counts: Record<string, number> | undefined;
    m.setAssignedStates(() => counts);
    expect(await m.registry.metrics()).not.toMatch(/^aadpodidentity_assigned_identities\{/m);
    counts = { Created: 2, Assigned: 5 };
    const text = await m.registry.metrics();
    expect(text).toContain('aadpodidentity_assigned_identities{state="Created"} 2');
    expect(text).toContain('aadpodidentity_assigned_identities{state="Assigned"} 5');
    expect(text).toContain('aadpodidentity_assigned_identities{state="Unassigned"} 0');
  });
});
