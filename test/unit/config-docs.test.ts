import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { flagsMarkdownTable, type FlagDefs } from '../../src/common/flags.js';
import { MIC_FLAGS } from '../../src/mic/config.js';
import { NMI_FLAGS } from '../../src/nmi/config.js';

const ROOT = join(import.meta.dirname, '..', '..');

function block(file: string, name: string): string {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const m = new RegExp(`<!-- BEGIN ${name} FLAGS -->\\n([\\s\\S]*?)<!-- END ${name} FLAGS -->`).exec(text);
  return m?.[1] ?? '';
}

describe.each([
  ['docs/flags.md', 'MIC', MIC_FLAGS],
  ['docs/flags.md', 'NMI', NMI_FLAGS],
  ['README.md', 'MIC', MIC_FLAGS],
  ['README.md', 'NMI', NMI_FLAGS],
] as [string, string, FlagDefs][])('%s for %s', (file, name, defs) => {
  it('lists every defined flag', () => {
    const text = block(file, name);
    for (const def of Object.values(defs)) expect(text, def.name).toContain(`| \`--${def.name}\` |`);
  });

  it('is the table generated from the definitions (paste the received block between the markers to fix)', () => {
    expect(block(file, name)).toBe(flagsMarkdownTable(defs));
  });
});
