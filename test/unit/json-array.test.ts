import { splitJsonArray } from '../../src/wire/json-array';

const split = (text: string): string[] | undefined =>
  splitJsonArray(Buffer.from(text))?.slices.map((slice) => slice.toString());

describe('splitting a JSON array into its elements', () => {
  it("keeps each element's exact bytes, whatever its strings hold", () => {
    expect(split('[{"a":"],[{,"},{"b":"\\"]\\\\"} , 1,"x,y" ,[1,[2]],null]')).toEqual([
      '{"a":"],[{,"}',
      '{"b":"\\"]\\\\"}',
      '1',
      '"x,y"',
      '[1,[2]]',
      'null',
    ]);
    expect(split(' \n[ {"é":"ü"} ]\n')).toEqual(['{"é":"ü"}']);
    expect(split('[]')).toEqual([]);
  });

  it('gives the parsed values alongside', () => {
    expect(splitJsonArray(Buffer.from('[{"kind":"agui"},2]'))?.values).toEqual([{ kind: 'agui' }, 2]);
  });

  it('is undefined for anything but a valid JSON array', () => {
    for (const text of ['{"a":1}', '[1,', '1', '', '[1] x']) expect(split(text)).toBeUndefined();
  });
});
