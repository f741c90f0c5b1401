// Pure checks on normalised objects. Each returns the reasons the object cannot be used ([] = usable), worded
// for a user reading `kubectl describe` events or MIC's log: which field, what is wrong, what is expected.
import { identityMode, type AzureIdentity, type AzureIdentityBinding, type AzurePodIdentityException } from './types.js';

export function validateAzureIdentity(id: AzureIdentity): string[] {
  const reasons: string[] = [];
  const mode = identityMode(id);
  if (mode === null) {
    reasons.push(`spec.mode must be Attached (the default) or Federated, got ${id.invalidMode || '(empty)'}`);
  }
  const federated = mode === 'Federated';
  switch (id.type) {
    case null:
      reasons.push(
        `spec.type must be 0 (user-assigned managed identity), 1 (service principal with secret) or ` +
          `2 (service principal with certificate), got ${id.invalidType}`,
      );
      break;
    case 0: {
      if (federated && id.clientID === '') {
        reasons.push('spec.clientID is empty; a Federated identity is exchanged at Azure AD under its client ID');
      } else {
        reasons.push(...checkClientID(id.clientID));
      }
      const parsed = parseUserAssignedIdentityID(id.resourceID);
      if ('error' in parsed) {
        reasons.push(
          federated && id.resourceID.trim() === ''
            ? 'spec.resourceID is empty; a Federated identity needs its ARM ID, where MIC keeps its federated credentials'
            : `spec.resourceID ${parsed.error}`,
        );
      }
      break;
    }
    case 1:
    case 2: {
      const what = id.type === 1 ? 'a service principal (type 1)' : 'a service principal with certificate (type 2)';
      if (federated) {
        reasons.push(
          `spec.mode Federated needs a user-assigned managed identity (type 0), not ${what}: ` +
            `remove spec.mode (or set it to Attached) to use the service principal's own credential`,
        );
      }
      reasons.push(...checkClientID(id.clientID));
      if (id.tenantID.trim() === '') reasons.push(`spec.tenantID is empty; ${what} needs its tenant`);
      if (id.clientPassword === null || id.clientPassword.name === '') {
        reasons.push(`spec.clientPassword.name is empty; ${what} needs the Secret holding its credential`);
      }
      if (id.clientPassword === null || id.clientPassword.namespace === '') {
        reasons.push(`spec.clientPassword.namespace is empty; the Secret is looked up in that namespace`);
      }
      break;
    }
    default: {
      const never: never = id.type;
      reasons.push(`unhandled identity type ${String(never)}`);
    }
  }
  return reasons;
}

export function validateBinding(binding: AzureIdentityBinding): string[] {
  const reasons: string[] = [];
  if (binding.azureIdentity === '') {
    reasons.push('spec.azureIdentity is empty; it must name an AzureIdentity in the same namespace');
  }
  if (binding.selector === '') {
    reasons.push('spec.selector is empty; pods match when their aadpodidbinding label equals it');
  } else if (!isLabelValue(binding.selector)) {
    reasons.push(
      `spec.selector ${JSON.stringify(binding.selector)} is not a valid label value, so no pod label can equal it ` +
        `(at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit)`,
    );
  }
  return reasons;
}

export function validateException(exception: AzurePodIdentityException): string[] {
  return Object.keys(exception.podLabels).length === 0
    ? ['spec.podLabels is empty; the exception matches no pod']
    : [];
}

export interface UserAssignedIdentityID {
  readonly subscriptionID: string;
  readonly resourceGroup: string;
  readonly name: string;
}

const EXPECTED_SHAPE =
  '/subscriptions/<subscription>/resourcegroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>';
/** Fixed segments by position (0-based, after the leading '/'); compared case-insensitively as ARM does. */
const FIXED: ReadonlyArray<readonly [number, string]> = [
  [0, 'subscriptions'],
  [2, 'resourcegroups'],
  [4, 'providers'],
  [5, 'Microsoft.ManagedIdentity'],
  [6, 'userAssignedIdentities'],
];

/**
 * Parses a user-assigned identity's ARM ID. Stricter than the original's regex: exactly eight non-empty
 * segments, so trailing paths, doubled slashes and missing names are reported instead of matched loosely.
 * The error text follows the field name, e.g. `spec.resourceID ${error}`.
 */
export function parseUserAssignedIdentityID(resourceID: string): UserAssignedIdentityID | { error: string } {
  if (resourceID.trim() === '') {
    return { error: `is empty; a user-assigned identity (type 0) needs its ARM ID, ${EXPECTED_SHAPE}` };
  }
  const quoted = JSON.stringify(resourceID);
  if (/\s/.test(resourceID)) return { error: `${quoted} contains whitespace` };
  if (!resourceID.startsWith('/')) return { error: `${quoted} must start with /subscriptions/` };
  const segments = resourceID.slice(1).split('/');
  const empty = segments.findIndex((s) => s === '');
  if (empty !== -1) {
    return {
      error:
        empty === segments.length - 1
          ? `${quoted} ends with '/'`
          : `${quoted} has an empty segment (a doubled '/') at position ${empty + 1}`,
    };
  }
  for (const [index, expected] of FIXED) {
    const actual = segments[index];
    if (actual === undefined) break;
    if (actual.toLowerCase() !== expected.toLowerCase()) {
      return { error: `${quoted} has '${actual}' where '${expected}' is expected; the shape is ${EXPECTED_SHAPE}` };
    }
  }
  if (segments.length !== 8) {
    const what = segments.length < 8 ? 'too few' : 'extra';
    return { error: `${quoted} has ${what} segments (${segments.length}, expected 8): ${EXPECTED_SHAPE}` };
  }
  return { subscriptionID: segments[1], resourceGroup: segments[3], name: segments[7] };
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isGuid(text: string): boolean {
  return GUID.test(text);
}

function checkClientID(clientID: string): string[] {
  if (clientID === '') return ['spec.clientID is empty; it must be the identity\'s client (application) ID'];
  // The value is not echoed: client IDs only ever appear redacted in logs and events.
  if (!isGuid(clientID)) return [`spec.clientID is not a GUID (expected 8-4-4-4-12 hex digits), got ${clientID.length} characters`];
  return [];
}

/** Kubernetes label value rule (IsValidLabelValue), non-empty. */
function isLabelValue(value: string): boolean {
  return value.length <= 63 && /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(value);
}
