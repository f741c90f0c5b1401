// Boolean query parameters of the API emulator, read as apimachinery's Convert_Slice_string_To_bool does.

import { describe, expect, it } from 'vitest';
import { queryBool } from '../../src/sandbox/apiserver/http.js';

describe('queryBool', () => {
  const read = (query: string): boolean => queryBool(new URLSearchParams(query), 'watch');

  it('is false when the parameter is absent, 0, or false in any case', () => {
    for (const q of ['', 'limit=1', 'watch=0', 'watch=false', 'watch=False', 'watch=FALSE', 'watch=fAlSe']) expect([q, read(q)]).toEqual([q, false]);
  });

  it('is true for any other value, including True from the Python client and an empty value', () => {
    for (const q of ['watch=true', 'watch=True', 'watch=1', 'watch=yes', 'watch=', 'watch', 'watch=00', 'watch=no']) expect([q, read(q)]).toEqual([q, true]);
  });

  it('reads the first value when the parameter is repeated', () => {
    expect(read('watch=false&watch=true')).toBe(false);
    expect(read('watch=true&watch=false')).toBe(true);
  });
});
