// doctor's human output: one line per check with ✓/✗, then the fixes of the failing ones.

import type { DoctorReport } from './doctor.js';

export function renderDoctor(report: DoctorReport): string {
  const lines = report.checks.map((c) => `${c.status === 'pass' ? '✓' : '✗'} ${c.summary}`);
  const failing = report.checks.filter((c) => c.status === 'fail');
  if (failing.length === 0) {
    lines.push('', `All ${report.checks.length} checks passed.`);
  } else {
    lines.push('', `${failing.length} of ${report.checks.length} checks failed. Fixes:`);
    for (const c of failing) {
      lines.push(`  ${c.summary}`);
      for (const f of c.fix) lines.push(`    ${f}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
