/**
 * `npm run soak -- --minutes N`: jest refuses options it does not know, so this takes --minutes
 * and hands it to faults/soak.ts as SOAK_MINUTES.
 */
const { spawnSync } = require('node:child_process');
const { join } = require('node:path');

const args = process.argv.slice(2);
let minutes = '30';
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  if (arg === '--minutes') minutes = args[++i] ?? '';
  else if (arg.startsWith('--minutes=')) minutes = arg.slice('--minutes='.length);
  else {
    console.error(`unknown argument ${arg}; usage: npm run soak -- --minutes N`);
    process.exit(2);
  }
}
if (!(Number(minutes) > 0)) {
  console.error(`--minutes takes a positive number, not "${minutes}"`);
  process.exit(2);
}
const root = join(__dirname, '..');
const run = spawnSync(
  process.execPath,
  [require.resolve('jest/bin/jest'), '--config', 'faults/soak.jest.config.js', '--runInBand', '--forceExit'],
  { cwd: root, stdio: 'inherit', env: { ...process.env, SOAK_MINUTES: String(Number(minutes)) } },
);
process.exit(run.status ?? 1);
