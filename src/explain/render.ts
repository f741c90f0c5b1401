// explain's human-readable output: short sections, a ✓/✗ per line, the verdict first.

import type { ExplainReport } from './analyze.js';

export function renderExplain(r: ExplainReport): string {
  const out: string[] = [];
  const p = r.pod;
  out.push(`Pod ${p.namespace}/${p.name}: ${r.verdict}`);
  out.push(`  node ${p.node || '(unscheduled)'}, IP ${p.podIP || '(none)'}, phase ${p.phase || '(unknown)'}, label aadpodidbinding=${p.label ?? '(absent)'}`);
  if (r.exception) out.push(`  exception ${r.exception} applies: NMI gives this pod the node's identity`);
  out.push('');
  out.push('Bindings');
  if (r.bindings.length === 0) out.push('  (none in the cluster)');
  for (const b of r.bindings) {
    const head = `${b.namespace}/${b.name} (selector "${b.selector}", identity ${b.identity})`;
    out.push(`  ${b.matched && b.reasons.length === 0 ? '✓' : '✗'} ${head}${b.reasons.length > 0 ? `: ${b.reasons.join('; ')}` : ': matches'}`);
  }
  out.push('');
  out.push('Identities for this pod');
  if (r.identities.length === 0) out.push('  (none)');
  for (const i of r.identities) {
    const node = i.onNode === undefined ? '' : i.onNode ? ', on the node in ARM' : ', NOT on the node in ARM';
    const principal = i.principalId === undefined ? '' : `, principal id ${i.principalId} (object_id)`;
    out.push(`  ${i.namespace}/${i.name}: ${i.type}, client id ${i.clientID}${principal}, assignment ${i.assignment}${node}`);
    if (i.resourceID) out.push(`    ${i.resourceID}`);
    if (i.clientIdMismatch !== undefined) out.push(`    ✗ ${i.clientIdMismatch}`);
  }
  out.push('');
  out.push('AzureAssignedIdentities');
  if (r.assigned.length === 0) out.push('  (none)');
  for (const a of r.assigned) out.push(`  ${a.name}: ${a.state} (identity ${a.identity}, node ${a.node})`);
  out.push('');
  out.push('MIC (its own core, on what explain read)');
  if (r.mic.refusal !== undefined) out.push(`  ✗ assigns nothing to this pod: ${r.mic.refusal}`);
  else if (r.mic.assignments.length === 0) out.push('  assigns no identity to this pod (see the bindings above)');
  for (const a of r.mic.assignments) out.push(`  wants AzureAssignedIdentity ${a.aai} (identity ${a.identity}, binding ${a.binding})`);
  for (const step of r.mic.next) out.push(`  next: ${step}`);
  for (const w of r.mic.waiting) out.push(`  waiting: ${w}`);
  out.push('');
  if (r.arm.kind === 'ok') {
    out.push(`ARM: ${r.arm.target} has ${r.arm.userAssigned.length} user-assigned identit${r.arm.userAssigned.length === 1 ? 'y' : 'ies'}${r.arm.systemAssigned ? ' and a system-assigned identity' : ''}`);
    for (const id of r.arm.userAssigned) out.push(`  ${id}`);
  } else out.push(`ARM: not checked (${r.arm.reason})`);
  out.push('');
  out.push(`NMI now: ${r.nmi.summary}`);
  if (r.ignored.length > 0) {
    out.push('');
    out.push('Ignored objects (could not be read)');
    for (const o of r.ignored) out.push(`  ${o.kind} ${o.name}: ${o.problems.join('; ')}`);
  }
  return `${out.join('\n')}\n`;
}
