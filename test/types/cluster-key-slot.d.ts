// The package ships no types; this is the part of its CommonJS surface the tests use.
declare module 'cluster-key-slot' {
  function calculateSlot(key: string | Buffer): number;
  namespace calculateSlot {
    function generateMulti(keys: Array<string | Buffer>): number;
  }
  export = calculateSlot;
}
