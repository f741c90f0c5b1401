import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { flagsMarkdownTable, type FlagDefs } from '../../src/common/flags.js';
import { MIC_FLAGS } from '../../src/mic/config.js';
import { NMI_FLAGS } from '../../src/nmi/config.js';

const flagsDoc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'flags.md'), 'utf8');

function block(name: string): string {
  const m = new RegExp(`<!-- BEGIN ${name} FLAGS -->\\n([\\s\\S]*?)<!-- END ${name} FLAGS -->`).exec(flagsDoc);
  return m?.[1] ?? '';
}

describe.each([
  ['MIC', MIC_FLAGS],
  ['NMI', NMI_FLAGS],
] as [string, FlagDefs][])('docs/flags.md for %s', (name, defs) => {
  it('lists every defined flag', () => {
    const text = block(name);
    for (const def of Object.values(defs)) expect(text, def.name).toContain(`| \`--${def.name}\` |`);
  });

  it('is the table generated from the definitions (paste the received block between the markers to fix)', () => {
    expect(block(name)).toBe(flagsMarkdownTable(defs));
  });
});
