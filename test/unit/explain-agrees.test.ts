// explain must say what MIC does: over random snapshots (the MIC core property tests' worlds, widened with deleting
// objects, refused credentials, namespace policies and clashing AAI names), for every pod, the identities explain
// says the pod gets and the bindings it marks ✓ are exactly MIC's desired assignments for that pod (on a node MIC knows).
import { describe, expect, it } from 'vitest';
import { parseNamespacePolicy, PERMITTED_IDENTITIES_ANNOTATION } from '../../src/crds/namespace-policy.js';
import type { AzureIdentity, AzureIdentityBinding, PodView } from '../../src/crds/types.js';
import { explain, type ExplainInput } from '../../src/explain/analyze.js';
import { computeDesired, type ClusterSnapshot, type MicPolicy, type Skip } from '../../src/mic/core/index.js';
import { binding, cid, identity } from './mic-core.builders.js';
import { randomWorld, rng } from './mic-core.random.js';

interface Case {
  snapshot: ClusterSnapshot;
  policy: MicPolicy;
}

const NAMESPACES = ['alpha', 'beta', 'default'];

/** randomWorld, plus what it never makes: deleting objects, service principals MIC refuses, an enforced policy. */
function widenedWorld(seed: number): Case {
  const w = randomWorld(seed, true);
  const r = rng(seed * 7919 + 17);
  const identities: AzureIdentity[] = w.snapshot.identities.map((i) => (r.chance(0.08) ? { ...i, deleting: true } : i));
  for (const ns of NAMESPACES) {
    if (r.chance(0.4)) {
      const sp = identity(ns, r.pick(['i1', 'sp']), { type: 1 });
      const crossNs = r.chance(0.5);
      identities.push({
        ...sp,
        uid: `${sp.uid}-sp`,
        clientPassword: { name: 's', namespace: crossNs ? 'elsewhere' : ns },
        adEndpoint: r.chance(0.3) ? 'https://evil.example' : '',
      });
    }
  }
  // At most one identity per namespace/name, as the API server keeps them.
  const unique = [...new Map(identities.map((i) => [`${i.namespace}/${i.name}`, i])).values()];
  const bindings: AzureIdentityBinding[] = w.snapshot.bindings.map((b) => (r.chance(0.08) ? { ...b, deleting: true } : b));
  if (r.chance(0.3)) bindings.push(binding(r.pick(NAMESPACES), 'sp-b', 'sp', r.pick(['s1', 's2'])));
  if (r.chance(0.2)) bindings.push(binding(r.pick(NAMESPACES), 'empty', 'i1', ''));
  const pods: PodView[] = w.snapshot.pods.map((p) =>
    r.chance(0.05) ? { ...p, labels: { aadpodidbinding: '' } } : r.chance(0.05) ? { ...p, phase: 'Failed' } : p,
  );
  const enforce = r.chance(0.35);
  const namespacePolicies = new Map(
    NAMESPACES.map((ns) => {
      const entries = [cid('i1'), cid('i2'), cid('i3')].filter(() => r.chance(0.5));
      return [ns, r.chance(0.2) ? undefined : parseNamespacePolicy({ [PERMITTED_IDENTITIES_ANNOTATION]: entries.join(',') })];
    }),
  );
  return {
    snapshot: { ...w.snapshot, identities: unique, bindings, pods, ...(enforce ? { namespacePolicies } : {}) },
    policy: {
      ...w.policy,
      namespaceIdentityPolicy: enforce ? 'enforce' : 'off',
      credentials: { allowCrossNamespaceSecrets: r.chance(0.3), allowedAuthorities: new Set(['https://login.microsoftonline.com']) },
    },
  };
}

/** What explain is given for one pod of the snapshot, as gather.ts would read it from that cluster. */
function inputFor(c: Case, pod: PodView): ExplainInput {
  const node = c.snapshot.nodes.find((n) => n.name === pod.nodeName);
  return {
    pod,
    bindings: c.snapshot.bindings,
    identities: c.snapshot.identities,
    assigned: c.snapshot.assigned.filter((a) => a.pod === pod.name && a.podNamespace === pod.namespace),
    exceptions: [],
    forceNamespaced: c.policy.forceNamespaced,
    credentials: c.policy.credentials,
    ...(c.policy.namespaceIdentityPolicy === 'enforce'
      ? { namespacePolicy: { mode: 'enforce' as const, policies: c.snapshot.namespacePolicies ?? new Map() } }
      : {}),
    node: pod.nodeName === '' ? undefined : (node ?? null),
    arm: { kind: 'unavailable', reason: 'not asked' },
    ignored: [],
  };
}

interface Disagreement {
  readonly seed: number;
  readonly pod: string;
  readonly explainIdentities: string[];
  readonly micIdentities: string[];
  readonly explainBindings: string[];
  readonly micBindings: string[];
  /** MIC's skip codes for this pod and for the objects its bindings name: what explain missed. */
  readonly codes: string[];
}

/** Why MIC assigns differently through each binding explain and MIC disagree on: MIC's own skip code. */
function causes(c: Case, skipped: readonly Skip[], pod: PodView, known: ReadonlySet<string>, explained: string[], mic: string[]): string[] {
  const podSkips = skipped.filter((s) => s.subject.kind === 'Pod' && s.subject.namespace === pod.namespace && s.subject.name === pod.name);
  const podWide = podSkips.find((s) => ['PodNotScheduled', 'PodDeleting', 'PodFinished'].includes(s.code) || s.reason.startsWith('label '));
  if (podWide !== undefined) return [podWide.code === 'NoMatchingBinding' ? 'NoMatchingBinding (empty label)' : podWide.code];
  if (!known.has(pod.nodeName)) return ['NodeNotFound'];
  const differing = [...explained.filter((b) => !mic.includes(b)), ...mic.filter((b) => !explained.includes(b))];
  return [
    ...new Set(
      differing.map((key) => {
        const b = c.snapshot.bindings.find((x) => `${x.namespace}/${x.name}` === key);
        if (b === undefined) return '(unknown binding)';
        const of = (kind: string, ns: string, name: string) =>
          skipped.find((s) => s.subject.kind === kind && s.subject.namespace === ns && s.subject.name === name);
        const cause =
          of('AzureIdentityBinding', b.namespace, b.name)?.code === 'IdentityNotFound'
            ? (of('AzureIdentity', b.namespace, b.azureIdentity)?.code ?? 'IdentityNotFound')
            : (of('AzureIdentityBinding', b.namespace, b.name)?.code ??
              podSkips.find((s) => s.reason.startsWith(`binding ${b.namespace}/${b.name} `))?.code ??
              '(no skip)');
        return mic.includes(key) ? `explain misses MIC's assignment via ${cause}` : cause;
      }),
    ),
  ].sort();
}

function disagreements(seeds: Iterable<number>): Disagreement[] {
  const out: Disagreement[] = [];
  for (const seed of seeds) {
    const c = widenedWorld(seed);
    const desired = computeDesired(c.snapshot, c.policy);
    const known = new Set(c.snapshot.nodes.map((n) => n.name));
    for (const pod of c.snapshot.pods) {
      // MIC's plan makes no AAI on a node its cache does not know (NodeNotFound).
      const mine = desired.assignments.filter((d) => d.pod === pod.name && d.podNamespace === pod.namespace && known.has(d.nodeName));
      const micIdentities = [...new Set(mine.map((d) => `${d.identity.namespace}/${d.identity.name}`))].sort();
      const micBindings = mine.map((d) => `${d.binding.namespace}/${d.binding.name}`).sort();
      const report = explain(inputFor(c, pod));
      const explainIdentities = report.identities.map((i) => `${i.namespace}/${i.name}`).sort();
      const explainBindings = report.bindings.filter((b) => b.matched && b.reasons.length === 0).map((b) => `${b.namespace}/${b.name}`).sort();
      if (JSON.stringify([explainIdentities, explainBindings]) === JSON.stringify([micIdentities, micBindings])) continue;
      const codes = causes(c, desired.skipped, pod, known, explainBindings, micBindings);
      out.push({ seed, pod: `${pod.namespace}/${pod.name}`, explainIdentities, micIdentities, explainBindings, micBindings, codes: [...new Set(codes)].sort() });
    }
  }
  return out;
}

describe('explain agrees with MIC (random snapshots)', () => {
  it("names, for every pod, exactly the identities and bindings MIC's computeDesired assigns", () => {
    const seeds = Array.from({ length: 400 }, (_, i) => i + 1);
    const found = disagreements(seeds);
    const byCode = new Map<string, number>();
    for (const d of found) for (const code of d.codes.length > 0 ? d.codes : ['(no skip)']) byCode.set(code, (byCode.get(code) ?? 0) + 1);
    const summary = [...byCode].sort((a, b) => b[1] - a[1]).map(([code, n]) => `${code}: ${n}`).join(', ');
    expect(found, `${found.length} pods disagree (${summary}); first: ${JSON.stringify(found.slice(0, 3))}`).toEqual([]);
  });
});
