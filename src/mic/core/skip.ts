// What the core declined to do, and why: the shell turns these into log lines and Kubernetes Events, and
// `explain` shows them per pod. A skip is data, never an exception.

export type SubjectKind = 'Pod' | 'Node' | 'AzureIdentity' | 'AzureIdentityBinding' | 'AzureAssignedIdentity';

export interface SubjectRef {
  readonly kind: SubjectKind;
  /** '' for cluster-scoped subjects (nodes). */
  readonly namespace: string;
  readonly name: string;
}

/** Stable, machine-readable cause; `reason` is the human sentence. */
export type SkipCode =
  | 'PodNotScheduled'
  | 'PodDeleting'
  | 'PodFinished'
  | 'NoMatchingBinding'
  | 'BindingInvalid'
  | 'BindingDeleting'
  | 'IdentityNotFound'
  | 'IdentityInvalid'
  | 'IdentityDeleting'
  /** A service principal whose clientPassword Secret is in another namespace (--allow-cross-namespace-secrets). */
  | 'CrossNamespaceSecret'
  /** A service principal whose adEndpoint is not an allowed authority (--allowed-ad-endpoints). */
  | 'AdEndpointNotAllowed'
  | 'IdentityNotPermitted'
  | 'NamespaceMismatch'
  | 'NameConflict'
  | 'NodeNotFound'
  | 'NodeWithoutTarget'
  | 'PreviousStillDeleting'
  /** A Federated identity while MIC runs without --enable-federated-identities: neither attached nor federated. */
  | 'FederationDisabled'
  /** A Federated identity while no service-account issuer is known (--service-account-issuer, or discovery failed). */
  | 'FederationIssuerUnknown'
  /** The federated credential for the pod's service account is not known to exist yet: the AAI stays Created. */
  | 'FederatedCredentialPending'
  /** The identity already carries Azure's 20 federated credentials: none for this service account, AAI stays Created. */
  | 'FederatedCredentialLimit'
  /** The federated credential could not be written (Azure refused it, or the identity is gone): AAI stays Created. */
  | 'FederatedCredentialFailed';

export interface Skip {
  readonly subject: SubjectRef;
  readonly code: SkipCode;
  readonly reason: string;
}

export function skip(kind: SubjectKind, namespace: string, name: string, code: SkipCode, reason: string): Skip {
  return { subject: { kind, namespace, name }, code, reason };
}

/** Deterministic order: subject kind, namespace, name, then code and reason. */
export function compareSkips(a: Skip, b: Skip): number {
  return (
    cmp(a.subject.kind, b.subject.kind) ||
    cmp(a.subject.namespace, b.subject.namespace) ||
    cmp(a.subject.name, b.subject.name) ||
    cmp(a.code, b.code) ||
    cmp(a.reason, b.reason)
  );
}

/** Code-unit string order: locale-independent and fast, which is all determinism needs. */
export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
