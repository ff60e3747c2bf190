/** `npm run faults`: the fault suite, against real Redis servers and hub processes it starts itself. */
module.exports = {
  testEnvironment: 'node',
  rootDir: '..',
  roots: ['<rootDir>/faults'],
  testMatch: ['**/*.faults.ts'],
  transform: { '^.+\\.[tj]s$': ['@swc/jest'] },
  transformIgnorePatterns: ['/node_modules/(?!(jose)/)'],
  testTimeout: 120_000,
  maxWorkers: 1,
};
